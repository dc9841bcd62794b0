"""CPU time the sender thread spends building one event (masking, scrubbing, encoding).

A typical agent call: 1 KB JSON in (with max_tokens) and out (with usage counts),
ordinary headers, an Authorization header and one annotation. ``--secret`` adds a
password to the request body, so it is parsed and masked. ``--realistic`` uses the
realistic bodies of ``apps.py`` instead (about 3 KB each way, five secrets).
``--no-orjson`` blocks orjson's import first (the package without the ``fast`` extra).

    python benchmarks/event_build.py [--secret] [--realistic] [--no-orjson]

Prints the best of five runs of 2,000 builds, in CPU time (the machine may be shared).

``--count N`` builds the same event N times and prints nothing: for counting
instructions, which no other load on the machine changes, with valgrind::

    valgrind --tool=callgrind --callgrind-out-file=/dev/null \
        python benchmarks/event_build.py --count 600    # then --count 100:
    # instructions per build = (the first "Collected" - the second) / 500
"""

from __future__ import annotations

import json
import os
import sys

if "--no-orjson" in sys.argv:
    sys.modules["orjson"] = None  # type: ignore[assignment]
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # apps.py
import time
import timeit

from werkzeug.test import EnvironBuilder

from otas_capture.capture.exchange import BodyBuffer, Exchange
from otas_capture.config import Config
from otas_capture.contract import SESSION_TOKEN_HEADER
from otas_capture.event.build import EventBuilder

TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJhZ2VudF9zZXNzaW9uX2lkIjoiYSIsImFnZW50X2lkIjoiYiJ9.sig"
PROJECT = "123e4567-e89b-12d3-a456-426614174000"


def exchange(secret: bool, bodies: tuple[bytes, bytes] | None = None) -> Exchange:
    """The exchange of one agent call; ``bodies``: other request and response bodies."""
    request = {
        "model": "gpt-4o",
        "max_tokens": 512,
        "temperature": 0.2,
        "messages": [{"role": "user", "content": "summarise the ticket " + "x" * 700}],
        "metadata": {"tenant": "acme", "trace": "abc123"},
    }
    if secret:
        request["password"] = "hunter2-long"
    body = json.dumps(request).encode()
    response = json.dumps(
        {
            "id": "r-1",
            "items": [{"id": i, "name": f"item {i}", "price": i * 1.5} for i in range(20)],
            "usage": {"prompt_tokens": 120, "completion_tokens": 80, "total_tokens": 200},
        }
    ).encode()
    if bodies is not None:
        body, response = bodies
    environ = EnvironBuilder(
        path="/api/v1/orders/",
        method="POST",
        query_string="page=2&sort=desc",
        headers={
            SESSION_TOKEN_HEADER: TOKEN,
            "Authorization": "Bearer abcdefgh12345",
            "User-Agent": "agent/1.0",
            "Accept": "application/json",
            "X-Request-Id": "r-1",
        },
        data=body,
        content_type="application/json",
    ).get_environ()
    ex = Exchange(TOKEN, time.time(), time.perf_counter(), environ, BodyBuffer(102_400))
    ex.request_body.add(body)
    ex.status = "200 OK"
    ex.response_headers = [("Content-Type", "application/json")]
    ex.response_body = BodyBuffer(102_400)
    ex.response_body.add(response)
    ex.end = ex.start + 0.01
    ex.annotate({"tenant": "acme"})
    return ex


def main() -> None:
    secret = "--secret" in sys.argv
    bodies = None
    if "--realistic" in sys.argv:
        from apps import REALISTIC_REQUEST, REALISTIC_RESPONSE

        bodies = (REALISTIC_REQUEST, REALISTIC_RESPONSE)
    builder = EventBuilder(Config.load({"sdk_key": "otas_abc_defghijkl"}, {}))
    if "--count" in sys.argv:
        ex = exchange(secret, bodies)
        for _ in range(int(sys.argv[sys.argv.index("--count") + 1])):
            builder.build(ex, PROJECT)
        return
    exchanges = iter([exchange(secret, bodies) for _ in range(10_000)])
    runs = [
        timeit.Timer(
            lambda: builder.build(next(exchanges), PROJECT), timer=time.process_time
        ).timeit(number=2000)
        / 2000
        for _ in range(5)
    ]
    print(f"{min(runs) * 1e6:.0f} us CPU per event build (best of 5 x 2,000)")


if __name__ == "__main__":
    main()
