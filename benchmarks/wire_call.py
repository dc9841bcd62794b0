"""CPU of one log call through the sender's transport, in a tight loop.

The sender POSTs one event per call on a kept-alive connection and reads Brain's short
answer. This script makes the same call, with a 3 KB body, over and over against a
loopback server in another process that answers at once, and prints the calling
thread's CPU per call. The server answers in one of three ways:

* ``brain``: the head a gunicorn/Django server sends (Server, Date, Vary, Allow and
  the security headers, a dozen lines), with a ``Date`` that changes every second as a
  real server's does;
* ``unique``: the same head with a ``Date`` that differs on every answer, the worst
  case for remembering heads;
* ``short``: three header lines and no ``Date``.

Each call is ``wire.KeepAliveConnection.post`` with the session token, as the client
makes it for every event.

    python benchmarks/wire_call.py [--answer brain] [--calls 5000]

Timings on a shared machine are noisy; instructions are not. Under valgrind, count two
runs and divide the difference by the difference of calls (the server, another
process, is not traced)::

    valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        python benchmarks/wire_call.py --calls 2500     # then --calls 500:
    # instructions per call = (the first "Collected" - the second) / 2000
"""

from __future__ import annotations

import argparse
import itertools
import subprocess
import sys
import time
from email.utils import formatdate
from typing import Callable

from loopback import serve_answers

_BODY = b'{"status":1,"status_description":"ok"}'
_STAMP = b"Thu, 26 Nov 2026 17:32:01 GMT"
ANSWERS = {
    "short": (
        b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 38\r\n\r\n"
        + _BODY
    ),
    "brain": (
        b"HTTP/1.1 201 Created\r\nServer: gunicorn\r\nDate: " + _STAMP + b"\r\n"
        b"Connection: keep-alive\r\nContent-Type: application/json\r\nVary: Accept, Cookie\r\n"
        b"Allow: POST, OPTIONS\r\nX-Frame-Options: DENY\r\nContent-Length: 38\r\n"
        b"X-Content-Type-Options: nosniff\r\nReferrer-Policy: same-origin\r\n"
        b"Cross-Origin-Opener-Policy: same-origin\r\n\r\n" + _BODY
    ),
}
ANSWERS["unique"] = ANSWERS["brain"]


def serve(kind: str) -> None:
    """Answer every call at once on a port printed first, with a fresh Date."""
    counter = itertools.count()

    def answer() -> bytes:
        stamp = formatdate(usegmt=True).encode()
        if kind == "unique":
            stamp = stamp[:-4] + b".%09d GMT" % next(counter)
        return ANSWERS[kind].replace(_STAMP, stamp)

    serve_answers(answer)


def make_call(url: str) -> Callable[[], object]:
    from otas_capture.otas.wire import KeepAliveConnection

    body = b"x" * 3052
    token = "eyJhbGciOiJIUzI1NiJ9.eyJhIjoiYiJ9.sig"
    conn = KeepAliveConnection(
        url,
        "/api/v1/sdk/log",
        {"X-OTAS-SDK-KEY": "otas_abc_defghijkl", "Content-Type": "application/json"},
        5.0,
    )
    extra = (("X-OTAS-AGENT-SESSION-TOKEN", token),)
    return lambda: conn.post(body, extra)


def main() -> None:
    parser = argparse.ArgumentParser(description="CPU of one log call, in a tight loop.")
    parser.add_argument("--answer", choices=sorted(ANSWERS), default="brain")
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    argv = [sys.executable, __file__, "--serve", args.answer]
    server = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        call = make_call(f"http://127.0.0.1:{server.stdout.readline().strip()}")
        for _ in range(200):
            call()
        spent = time.thread_time()
        for _ in range(args.calls):
            call()
        spent = time.thread_time() - spent
        per_call = spent / max(args.calls, 1) * 1e6
        print(f"{args.answer} answer: {per_call:.1f} µs of CPU per call")
    finally:
        server.kill()
        server.wait()


if __name__ == "__main__":
    main()
