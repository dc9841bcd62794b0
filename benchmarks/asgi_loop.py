"""How long each captured request blocks the event loop: OtasASGIMiddleware against
OpenTelemetry's ASGI instrumentation, on a FastAPI endpoint.

    python benchmarks/asgi_loop.py                  # about a minute on 2 shared cores
    python benchmarks/asgi_loop.py --calls 2000 --rounds 3

The endpoint is the one of benchmarks/apps.py on FastAPI: ``POST /api/items`` reads a
1 KB JSON body and answers 1 KB of JSON, each request carrying an agent session token.
Variants, each in a process of its own:

* ``bare``: the FastAPI app alone;
* ``otas``: ``app.add_middleware(OtasASGIMiddleware)``, shipping every event to the
  bundled collector in another process (a queue big enough to drop nothing);
* ``otel``: ``OpenTelemetryMiddleware`` (opentelemetry-instrumentation-asgi) around the
  app, an SDK ``TracerProvider`` and a ``BatchSpanProcessor`` exporting over OTLP/HTTP
  to a loopback sink in another process.

There is no server: the app is awaited on a running asyncio loop with a scope built once
(copied per call), a ``receive`` that hands over the body and a ``send`` that drops what
it gets. Neither ever suspends, so each ``await app(...)`` runs from start to end without
giving the loop back: its duration is the time the request blocks the loop. Timed with
``perf_counter_ns``, garbage collector off, sender threads shipping meanwhile as in
production (they compete for the interpreter, which is part of the cost). Each round runs
every variant once in a rotating order; the table shows the median over rounds of each
variant's median and p99, and what it adds to bare. Every run checks that every captured
request reached its sink.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import multiprocessing
import socket
import statistics
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

# At module level: FastAPI reads the endpoint's annotations in the module's globals.
from fastapi import FastAPI, Request, Response

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import apps  # noqa: E402  (benchmarks/apps.py: the endpoint's bodies and the sinks)

VARIANTS = ("bare", "otas", "otel")
WARMUP = 300


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return str(answer.read().decode())


def delete(url: str) -> None:
    urllib.request.urlopen(urllib.request.Request(url, method="DELETE"), timeout=10).close()


def start(target: Any, probe: str) -> tuple[multiprocessing.Process, str]:
    port = free_port()
    args = (port, 0.0) if target is apps.serve_collector else (port,)  # no added latency
    process = multiprocessing.Process(target=target, args=args, daemon=True)
    process.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            get(url + probe)
            return process, url
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{target.__name__} did not start") from None
            time.sleep(0.05)


def make_app(variant: str, collector_url: str, sink_url: str, events: int) -> Any:
    app = FastAPI()

    @app.post(apps.PATH)
    async def create_item(request: Request) -> Response:
        json.loads(await request.body())
        return Response(apps.RESPONSE_BODY, status_code=201, media_type="application/json")

    if variant == "otas":
        from otas_capture.asgi import OtasASGIMiddleware
        from otas_capture.collector import DEMO_PROJECT_ID, DEMO_SDK_KEY

        app.add_middleware(
            OtasASGIMiddleware,
            sdk_key=DEMO_SDK_KEY,
            project_id=DEMO_PROJECT_ID,
            brain_url=collector_url,
            uasam_url=collector_url,
            queue_size=events + 1000,  # the backlog must never drop
            queue_max_bytes=(events + 1000) * 16 * 1024,
        )
        return app
    if variant == "otel":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider = TracerProvider()
        exporter = OTLPSpanExporter(endpoint=sink_url + apps.SPANS_PATH)
        provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=4 * events))
        wrapped = OpenTelemetryMiddleware(app, tracer_provider=provider)
        wrapped.otas_flush = lambda: provider.force_flush(30_000)  # type: ignore[attr-defined]
        return wrapped
    return app


def scope_for(token: str) -> dict[str, Any]:
    headers = [
        (b"host", b"127.0.0.1:8000"),
        (b"user-agent", b"agent-sdk/1.0"),
        (b"accept", b"application/json"),
        (b"accept-encoding", b"gzip, deflate"),
        (b"connection", b"keep-alive"),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(apps.REQUEST_BODY)).encode()),
        (b"x-otas-agent-session-token", token.encode()),
    ]
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
        "path": apps.PATH,
        "raw_path": apps.PATH.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": headers,
    }


def run_variant(
    variant: str, calls: int, collector_url: str, sink_url: str, token: str
) -> dict[str, Any]:
    """In a process of its own: time ``calls`` calls of the variant; check delivery."""
    app = make_app(variant, collector_url, sink_url, calls + WARMUP)
    base = scope_for(token)
    message = {"type": "http.request", "body": apps.REQUEST_BODY, "more_body": False}

    async def receive() -> dict[str, Any]:
        return message

    async def send(message: dict[str, Any]) -> None:
        pass

    statuses: list[int] = []

    async def check(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    async def timed() -> list[int]:
        await app(dict(base), receive, check)
        if statuses != [201]:
            raise SystemExit(f"{variant}: the endpoint answered {statuses}, not [201]")
        for _ in range(WARMUP - 1):
            await app(dict(base), receive, send)
        durations = []
        clock = time.perf_counter_ns
        gc.disable()
        try:
            for _ in range(calls):
                scope = dict(base)
                began = clock()
                await app(scope, receive, send)
                durations.append(clock() - began)
        finally:
            gc.enable()
        return durations

    durations = sorted(asyncio.run(timed()))
    delivered = 0
    if variant == "otas":
        from otas_capture.capture.registry import live_middlewares

        for middleware in live_middlewares():
            middleware.flush(60)
        delivered = int(get(collector_url + apps.COUNT_PATH))
    elif variant == "otel":
        app.otas_flush()
        delivered = int(get(sink_url + "/"))
    return {
        "median_us": durations[len(durations) // 2] / 1000,
        "p99_us": durations[int(len(durations) * 0.99)] / 1000,
        "delivered": delivered,
    }


def in_child(queue: Any, *args: Any) -> None:
    queue.put(run_variant(*args))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=3000, help="timed calls per variant per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)

    from otas_capture.collector import Collector

    token = Collector().issue_token()  # the demo secret: the collector process accepts it
    collector, collector_url = start(apps.serve_collector, apps.COUNT_PATH)
    sink, sink_url = start(apps.serve_span_sink, "/")
    results: dict[str, list[dict[str, Any]]] = {variant: [] for variant in VARIANTS}
    failed = False
    try:
        for number in range(args.rounds):
            for variant in VARIANTS[number % 3 :] + VARIANTS[: number % 3]:
                delete(collector_url + apps.COUNT_PATH)
                delete(sink_url + "/")
                queue: Any = multiprocessing.Queue()
                child = multiprocessing.Process(
                    target=in_child,
                    args=(queue, variant, args.calls, collector_url, sink_url, token),
                )
                child.start()
                result = queue.get(timeout=300)
                child.join(60)
                results[variant].append(result)
                expected = args.calls + WARMUP
                if variant != "bare" and result["delivered"] < expected:
                    print(f"{variant}: {result['delivered']} of {expected} delivered")
                    failed = True
    finally:
        collector.terminate()
        sink.terminate()

    def med(variant: str, key: str) -> float:
        return statistics.median(row[key] for row in results[variant])

    print(f"event-loop blocking per captured request, FastAPI endpoint, {args.calls} calls")
    print(f"x {args.rounds} rounds (median of rounds), µs")
    print(f"{'variant':<16}{'median':>10}{'p99':>10}{'added (median)':>18}{'added (p99)':>14}")
    for variant in VARIANTS:
        added = med(variant, "median_us") - med("bare", "median_us")
        added_p99 = med(variant, "p99_us") - med("bare", "p99_us")
        print(
            f"{variant:<16}{med(variant, 'median_us'):>10.1f}{med(variant, 'p99_us'):>10.1f}"
            + ("" if variant == "bare" else f"{added:>18.1f}{added_p99:>14.1f}")
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
