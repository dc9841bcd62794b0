"""How much time otas-capture adds to each request, and what shipping an event costs.

The promise of the middleware is that an agent's request costs the application almost
nothing extra: the request thread only tees bytes and queues the exchange, and the work
(redaction, JSON, HTTP) happens in sender threads. This script measures that promise in
microseconds, so a change that puts work back on the request path shows up as a number.

To isolate our cost from any server's, there is no HTTP server in front of the app: a
WSGI environ is built once with werkzeug's ``EnvironBuilder`` and each call gets a
fresh copy with a new body stream; the response is consumed and ``close()``d, as a
server would. Cases, timed interleaved (each iteration runs every variant once, in a
rotating order, so that drift and noise hit all of them alike):

* plain WSGI app reading a 1 KB JSON body and answering 1 KB of JSON: bare, wrapped
  with the agent token (captured), wrapped without it (passed through);
* the same endpoint as a Flask app: bare, and wrapped by ``otas_capture.flask.init_app``.

The wrapped apps ship every event for real, over HTTP, to the bundled collector running
in a process of its own (as Brain would be, so that this process's CPU time is the
SDK's and the app's), with a queue big enough that nothing is dropped. After each case's
timed loop the script flushes and reports how fast the backlog went out and the CPU it
took.

Run ``python benchmarks/overhead.py --help``; see benchmarks/README.md for results.
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import multiprocessing
import platform
import socket
import sys
import threading
import time
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Callable

from flask import Flask, Response, request
from werkzeug.test import EnvironBuilder

from otas_capture import OtasMiddleware
from otas_capture.collector import DEMO_SDK_KEY, EVENTS_PATH, Collector, serve
from otas_capture.contract import SESSION_TOKEN_HEADER
from otas_capture.flask import init_app

TOKEN_HEADER = SESSION_TOKEN_HEADER
PATH = "/api/items"
BODY_SIZE = 1024
FLUSH_TIMEOUT = 600.0

WSGIApp = Callable[..., Iterable[bytes]]


def json_of_size(size: int, **fields: Any) -> bytes:
    """A JSON object of exactly ``size`` bytes: ``fields`` padded with a note."""
    base = json.dumps({**fields, "note": ""}).encode()
    return json.dumps({**fields, "note": "x" * (size - len(base))}).encode()


REQUEST_BODY = json_of_size(BODY_SIZE, name="Keyboard", price=49.9, tags=["usb", "wired"])
RESPONSE_BODY = json_of_size(BODY_SIZE, id=1, name="Keyboard", price=49.9, tags=["usb"])


def plain_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    length = int(environ.get("CONTENT_LENGTH") or 0)
    json.loads(environ["wsgi.input"].read(length))
    start_response(
        "201 Created",
        [("Content-Type", "application/json"), ("Content-Length", str(len(RESPONSE_BODY)))],
    )
    return [RESPONSE_BODY]


def make_flask_app() -> Flask:
    app = Flask("overhead_benchmark")

    @app.post(PATH)
    def create_item() -> Response:
        request.get_json()
        return Response(RESPONSE_BODY, status=201, mimetype="application/json")

    return app


def _write(data: bytes) -> None:
    pass


def start_response(
    status: str, headers: list[Any], exc_info: Any = None
) -> Callable[[bytes], None]:
    return _write


def environ_for(token: str | None) -> dict[str, Any]:
    headers = {TOKEN_HEADER: token} if token else {}
    return EnvironBuilder(
        path=PATH,
        method="POST",
        data=REQUEST_BODY,
        content_type="application/json",
        headers=headers,
    ).get_environ()


def call(app: WSGIApp, environ: dict[str, Any]) -> bytes:
    """Run one request the way a WSGI server does; return the response body."""
    result = app(environ, start_response)
    try:
        return b"".join(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()


def fresh(base: dict[str, Any]) -> dict[str, Any]:
    environ = dict(base)
    environ["wsgi.input"] = io.BytesIO(REQUEST_BODY)
    return environ


@dataclass
class Variant:
    name: str
    app: WSGIApp
    environ: dict[str, Any]


def time_variants(
    variants: list[Variant], iterations: int, warmup: int, disable_gc: bool
) -> dict[str, list[int]]:
    """Per-call nanoseconds of each variant, interleaved in rotating order."""
    for variant in variants:  # benchmark the success path, not an error page
        body = call(variant.app, fresh(variant.environ))
        if body != RESPONSE_BODY:
            raise SystemExit(f"error: {variant.name} did not answer as expected: {body[:200]!r}")
    for _ in range(warmup):
        for variant in variants:
            call(variant.app, fresh(variant.environ))

    orders = [variants[k:] + variants[:k] for k in range(len(variants))]
    samples: dict[str, list[int]] = {variant.name: [] for variant in variants}
    now = time.perf_counter_ns
    gc.collect()
    if disable_gc:
        gc.disable()
    try:
        for i in range(iterations):
            for variant in orders[i % len(orders)]:
                environ = fresh(variant.environ)  # outside the timed span
                start = now()
                call(variant.app, environ)
                samples[variant.name].append(now() - start)
    finally:
        gc.enable()
    return samples


def percentile(sorted_ns: list[int], fraction: float) -> float:
    """Nearest-rank percentile, in microseconds."""
    index = min(len(sorted_ns) - 1, max(0, round(fraction * len(sorted_ns)) - 1))
    return sorted_ns[index] / 1000


def sender_cpu_seconds() -> float | None:
    """CPU time used so far by the live sender threads, or None where it can't be read."""
    if not hasattr(time, "pthread_getcpuclockid"):
        return None
    total = 0.0
    for thread in threading.enumerate():
        if thread.name.startswith("otas-capture-sender") and thread.ident is not None:
            total += time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
    return total


class CollectorProcess:
    """The bundled collector in a child process, reached over loopback like Brain."""

    def __init__(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        context = multiprocessing.get_context("spawn")
        self._process = context.Process(target=_serve_forever, args=(port,), daemon=True)
        self._process.start()
        deadline = time.monotonic() + 30
        while not self._request("GET"):
            if time.monotonic() > deadline or not self._process.is_alive():
                raise RuntimeError("the collector process did not start")
            time.sleep(0.05)

    def _request(self, method: str) -> bool:
        try:
            request = urllib.request.Request(self.url + EVENTS_PATH, method=method)
            with urllib.request.urlopen(request, timeout=30):
                return True
        except OSError:
            return False

    def clear(self) -> None:
        self._request("DELETE")  # it keeps every event in memory

    def stop(self) -> None:
        self._process.terminate()
        self._process.join(5)


def _serve_forever(port: int) -> None:
    serve(port=port)
    threading.Event().wait()


@dataclass
class Shipping:
    events: int
    sent: int
    lost: int
    flushed: int
    flush_wall: float
    flush_process_cpu: float
    sender_cpu: float | None


def ship_backlog(middleware: OtasMiddleware, events: int) -> Shipping:
    """Flush what the timed loop queued and measure it; then stop the sender."""
    before = middleware.stats()["sent"]
    wall, cpu = time.perf_counter(), time.process_time()
    if not middleware.flush(timeout=FLUSH_TIMEOUT):
        print(f"warning: flush timed out after {FLUSH_TIMEOUT:g} s", file=sys.stderr)
    flush_wall = time.perf_counter() - wall
    flush_cpu = time.process_time() - cpu
    sender_cpu = sender_cpu_seconds()  # before close(): the threads end with it
    middleware.close()
    stats = middleware.stats()
    return Shipping(
        events,
        stats["sent"],
        stats["captured"] - stats["sent"],
        stats["sent"] - before,
        flush_wall,
        flush_cpu,
        sender_cpu,
    )


def new_middleware_options(collector_url: str, events: int) -> dict[str, Any]:
    # Explicit options win over any OTAS_* variables in the caller's environment.
    return {
        "sdk_key": DEMO_SDK_KEY,
        "brain_url": collector_url,
        "uasam_url": collector_url,
        "flush_interval": 0.05,
        "queue_size": events + 100,  # the backlog must never drop
        "queue_max_bytes": (events + 100) * 16 * 1024,
    }


@dataclass
class CaseResult:
    name: str
    samples: dict[str, list[int]]
    rows: list[tuple[str, str, str]]  # (label, bare variant, wrapped variant)
    shipping: Shipping


def wrap_plain(options: dict[str, Any]) -> tuple[OtasMiddleware, WSGIApp]:
    middleware = OtasMiddleware(plain_app, **options)
    return middleware, middleware


def wrap_flask(options: dict[str, Any]) -> tuple[OtasMiddleware, WSGIApp]:
    app = make_flask_app()
    return init_app(app, **options), app


def run_case(
    name: str,
    bare: WSGIApp,
    wrap: Callable[[dict[str, Any]], tuple[OtasMiddleware, WSGIApp]],
    pass_through: bool,
    server: CollectorProcess,
    token: str,
    args: argparse.Namespace,
) -> CaseResult:
    events = args.warmup + args.iterations + 1  # + the check call
    middleware, wrapped = wrap(new_middleware_options(server.url, events))
    variants = [
        Variant("bare", bare, environ_for(token)),
        Variant("captured", wrapped, environ_for(token)),
    ]
    rows = [(f"{name}: captured (token)", "bare", "captured")]
    if pass_through:
        variants.append(Variant("pass-through", wrapped, environ_for(None)))
        rows.append((f"{name}: pass-through (no token)", "bare", "pass-through"))
    print(
        f"timing {name}: {len(variants)} variants x {args.iterations} iterations ...",
        file=sys.stderr,
        flush=True,
    )
    samples = time_variants(variants, args.iterations, args.warmup, not args.keep_gc)
    print(f"shipping the {name} backlog ...", file=sys.stderr, flush=True)
    shipping = ship_backlog(middleware, events)
    server.clear()
    return CaseResult(name, samples, rows, shipping)


def us(value: float) -> str:
    return f"{value:.1f}"


def print_report(results: list[CaseResult], args: argparse.Namespace) -> None:
    print(
        f"Python {platform.python_version()} on {platform.system()} {platform.machine()}, "
        f"{args.iterations} iterations per variant after {args.warmup} warm-up, "
        f"gc {'enabled' if args.keep_gc else 'disabled'} while timing.\n"
    )
    print("Per-request time on the request thread, in microseconds:\n")
    print(
        "| case | bare median | wrapped median | overhead median | bare p95 | wrapped p95 "
        "| overhead p95 |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for result in results:
        for label, bare_name, wrapped_name in result.rows:
            bare = sorted(result.samples[bare_name])
            wrapped = sorted(result.samples[wrapped_name])
            bare_median, wrapped_median = percentile(bare, 0.5), percentile(wrapped, 0.5)
            bare_p95, wrapped_p95 = percentile(bare, 0.95), percentile(wrapped, 0.95)
            print(
                f"| {label} | {us(bare_median)} | {us(wrapped_median)} | "
                f"{us(wrapped_median - bare_median)} | {us(bare_p95)} | {us(wrapped_p95)} | "
                f"{us(wrapped_p95 - bare_p95)} |"
            )

    print("\nShipping (sender threads, to the collector in another process):\n")
    print(
        "| case | events | sent | lost | sent in flush | flush wall s | events/s in flush "
        "| process CPU/event in flush, µs | sender threads CPU/event, µs |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for result in results:
        s = result.shipping
        rate = s.flushed / s.flush_wall if s.flush_wall > 0 else 0.0
        per_event = s.flush_process_cpu / s.flushed * 1e6 if s.flushed else 0.0
        sender = "n/a" if s.sender_cpu is None or not s.sent else us(s.sender_cpu / s.sent * 1e6)
        print(
            f"| {result.name} | {s.events} | {s.sent} | {s.lost} | {s.flushed} | "
            f"{s.flush_wall:.2f} | {rate:.0f} | {us(per_event)} | {sender} |"
        )
    print(
        "\nProcess CPU in flush is this process's (the collector runs in another); sender "
        "threads CPU is theirs alone, over the whole case (per-thread CPU clocks)."
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Measure the per-request overhead of otas-capture against the bare app, "
        "in-process (no HTTP server), and the sender's cost per event."
    )
    parser.add_argument(
        "--iterations", type=int, default=20_000, help="timed calls per variant (default 20000)"
    )
    parser.add_argument(
        "--warmup", type=int, default=1_000, help="untimed calls per variant first (default 1000)"
    )
    parser.add_argument(
        "--keep-gc",
        action="store_true",
        help="leave the garbage collector on while timing (default: off, so "
        "that a collection pause does not land on a random variant)",
    )
    args = parser.parse_args(argv)
    if args.iterations < 1 or args.warmup < 0:
        parser.error("--iterations must be at least 1 and --warmup at least 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    server = CollectorProcess()
    try:
        token = Collector().issue_token()  # signed with the collector's demo secret
        results = [
            run_case("plain WSGI", plain_app, wrap_plain, True, server, token, args),
            run_case("Flask", make_flask_app(), wrap_flask, False, server, token, args),
        ]
    finally:
        server.stop()
    print_report(results, args)
    if any(r.shipping.sent != r.shipping.events for r in results):
        print(
            "\nerror: not every event reached the collector; the numbers above are suspect",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
