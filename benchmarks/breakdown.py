"""Where the sender's CPU goes, per event: building, JSON, HTTP, and the rest.

The real middleware captures ``--events`` requests of the benchmark's Flask app (1 KB
JSON in and out), back to back, and ships them to the bundled collector in another
process, over loopback, as Brain would receive them; ``flush()`` then waits for the
rest. The sender ships while the requests are captured (it has no batching to hold it
back), so everything below is counted over the whole run, from the first request to
the end of the flush. The CPU clock of the calling thread (``time.thread_time``) is
read around the pieces of the sender's work, from wrappers installed on the real
functions:

* ``EventBuilder.build``: the whole event, masking and JSON included;
* ``limits.dumps``: JSON serialisation alone (part of build);
* ``wire.KeepAliveConnection.post``: the HTTP call, answer included;

and the sender threads' own CPU clocks (``time.pthread_getcpuclockid``) give their total.
What is left after build and post is queueing, locks, token checks, counting, and
handing the interpreter lock between threads; running with ``--concurrency 1`` and
``4`` shows how much the hand-offs add. The process's whole CPU during the flush is
shown too, per event shipped during the flush (the application is idle then).

    python benchmarks/breakdown.py                           # 1 and 4 threads
    python benchmarks/breakdown.py --events 500 --rounds 3   # shorter
    python benchmarks/breakdown.py --instant                 # a server that answers at once

``--instant`` ships to a minimal loopback server (in another process) that answers
every call at once with Brain's 201, instead of the collector, which takes about a
millisecond per call: the difference is what waiting for each answer costs the
sender (its thread sleeps, other work runs, its caches go cold).

Runs in any environment with this checkout and Flask installed (benchmarks/.venv has
both). The wrappers cost about a microsecond each; they are the same in every run.
"""

from __future__ import annotations

import argparse
import io
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

from apps import PATH, REQUEST_BODY, make_flask_app  # noqa: E402
from loopback import serve_answers  # noqa: E402
from run import start_collector  # noqa: E402
from werkzeug.test import EnvironBuilder  # noqa: E402

from otas_capture import OtasMiddleware  # noqa: E402
from otas_capture.collector import DEMO_PROJECT_ID, DEMO_SDK_KEY, Collector  # noqa: E402
from otas_capture.contract import SESSION_TOKEN_HEADER  # noqa: E402
from otas_capture.event import build as event
from otas_capture.event import limits
from otas_capture.otas import wire

TOKEN_HEADER = SESSION_TOKEN_HEADER

_spent: dict[str, float] = {}
_lock = threading.Lock()


def timed(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.thread_time()
        try:
            return function(*args, **kwargs)
        finally:
            spent = time.thread_time() - start
            with _lock:
                _spent[name] = _spent.get(name, 0.0) + spent

    return wrapper


def install() -> None:
    wire.KeepAliveConnection.post = timed("post", wire.KeepAliveConnection.post)  # type: ignore[method-assign]
    event.EventBuilder.build = timed("build", event.EventBuilder.build)  # type: ignore[method-assign]
    event.dumps = limits.dumps = timed("json", limits.dumps)  # called from both


def sender_threads_cpu() -> float:
    total = 0.0
    for thread in threading.enumerate():
        if thread.name.startswith("otas-capture-sender") and thread.ident is not None:
            total += time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
    return total


def one_run(url: str, concurrency: int, events: int, token: str) -> dict[str, float]:
    middleware = OtasMiddleware(
        make_flask_app().wsgi_app,
        sdk_key=DEMO_SDK_KEY,
        project_id=DEMO_PROJECT_ID,
        brain_url=url,
        uasam_url=url,
        concurrency=concurrency,
        queue_size=events + 10,
        queue_max_bytes=(events + 10) * 16 * 1024,
    )
    base = EnvironBuilder(
        path=PATH,
        method="POST",
        data=REQUEST_BODY,
        content_type="application/json",
        headers={TOKEN_HEADER: token},
    ).get_environ()
    _spent.clear()
    threads_before = sender_threads_cpu()  # those of earlier runs have stopped
    for _ in range(events):
        environ = dict(base)
        environ["wsgi.input"] = io.BytesIO(REQUEST_BODY)
        result = middleware(environ, lambda status, headers, exc_info=None: None)
        b"".join(result)
        result.close()  # type: ignore[attr-defined]
    shipped_before_flush = middleware.stats()["sent"]
    wall, cpu = time.perf_counter(), time.process_time()
    if not middleware.flush(120):
        raise SystemExit("flush timed out")
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    threads = sender_threads_cpu() - threads_before
    sent = middleware.stats()["sent"]
    middleware.close(2)
    if sent != events:
        raise SystemExit(f"only {sent} of {events} events were sent")
    per = 1e6 / events
    build, post, dumps = _spent.get("build", 0.0), _spent.get("post", 0.0), _spent.get("json", 0)
    return {
        "build (event dict, masking)": (build - dumps) * per,
        "JSON (json.dumps + encode)": dumps * per,
        "HTTP call (send, answer)": post * per,
        "rest (queue, locks, token check, counting, hand-offs)": (threads - build - post) * per,
        "sender threads, total": threads * per,
        "process, total during flush (per event it shipped)": cpu
        * 1e6
        / max(1, events - shipped_before_flush),
        "events/s during flush": (events - shipped_before_flush) / wall,
    }


_ANSWER = (
    b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 38\r\n\r\n"
    b'{"status":1,"status_description":"ok"}'
)


def serve_instant() -> None:
    """Answer every log call at once with a 201, on a port it prints (keep-alive)."""
    serve_answers(lambda: _ANSWER)


class InstantServer:
    """``serve_instant`` in a process of its own, with the collector's ``url``/``stop``."""

    def __init__(self) -> None:
        argv = [sys.executable, str(Path(__file__).resolve()), "--serve-instant"]
        self._proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        assert self._proc.stdout is not None
        self.url = f"http://127.0.0.1:{self._proc.stdout.readline().strip()}"

    def stop(self) -> None:
        self._proc.kill()
        self._proc.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Where the sender's CPU goes, per event.")
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", default="1,4", help="thread counts to compare (1,4)")
    parser.add_argument(
        "--latency", type=float, default=0.0, help="seconds the collector adds to each call"
    )
    parser.add_argument(
        "--instant", action="store_true", help="ship to a server that answers at once"
    )
    parser.add_argument("--serve-instant", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_instant:
        serve_instant()
        return 0
    install()
    levels = [int(c) for c in args.concurrency.split(",")]
    collector = InstantServer() if args.instant else start_collector(args.latency)
    try:
        token = Collector().issue_token()
        one_run(collector.url, 1, 100, token)  # warm up
        runs: dict[int, list[dict[str, float]]] = {c: [] for c in levels}
        for round_number in range(args.rounds):
            for concurrency in levels[round_number % 2 :] + levels[: round_number % 2]:
                runs[concurrency].append(one_run(collector.url, concurrency, args.events, token))
    finally:
        collector.stop()
    print(
        f"{args.latency * 1000:g} ms added per call; "
        f"{args.events} events per run, {args.rounds} rounds, "
        "medians; µs of CPU per event\n"
    )
    print("| piece | " + " | ".join(f"{c} thread{'s' * (c > 1)}" for c in levels) + " |")
    print("|---|" + "---:|" * len(levels))
    for key in runs[levels[0]][0]:
        values = [statistics.median(run[key] for run in runs[c]) for c in levels]
        print(f"| {key} | " + " | ".join(f"{v:.0f}" for v in values) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
