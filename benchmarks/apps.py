"""The Flask app the benchmarks compare, bare and wrapped, and the sinks they ship to.

One endpoint, ``POST /api/items``, reads a 1 KB JSON body and answers 1 KB of JSON
(the app of ``overhead.py``). ``make_app(variant, ...)`` gives it:

* ``bare``: the Flask app alone;
* ``otas``: wrapped by ``otas_capture.flask.init_app``, shipping every agent request to
  the bundled collector (in another process), with a queue big enough to drop nothing;
* ``otas-wire``: the same, with ``otas_capture.otas.wire`` forced as the transport (the
  default now; it differs only for an older checkout measured with ``run.py --otas``);
* ``otel``: wrapped by OpenTelemetry's WSGI middleware with an SDK ``TracerProvider``
  and a ``BatchSpanProcessor`` exporting over OTLP/HTTP to a loopback sink that counts
  spans (queue big enough to drop nothing).

``GET /bench/handled`` (no agent token, so never captured) says how many POSTs the
process answered, so a load test can check that every one was delivered.

Under gunicorn, ``apps:application`` reads the variant and URLs from ``BENCH_VARIANT``,
``BENCH_COLLECTOR`` and ``BENCH_SINK``; gunicorn loads it in the worker, after the fork.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

from flask import Flask, Response, request

PATH = "/api/items"
HANDLED_PATH = "/bench/handled"
COUNT_PATH = "/bench/count"
SPANS_PATH = "/v1/traces"
BODY_SIZE = 1024


def json_of_size(size: int, **fields: Any) -> bytes:
    """A JSON object of exactly ``size`` bytes: ``fields`` padded with a note."""
    base = json.dumps({**fields, "note": ""}).encode()
    return json.dumps({**fields, "note": "x" * (size - len(base))}).encode()


REQUEST_BODY = json_of_size(BODY_SIZE, name="Keyboard", price=49.9, tags=["usb", "wired"])
RESPONSE_BODY = json_of_size(BODY_SIZE, id=1, name="Keyboard", price=49.9, tags=["usb"])

_handled = 0
_handled_lock = threading.Lock()


def make_flask_app() -> Flask:
    app = Flask("otas_benchmark")

    @app.post(PATH)
    def create_item() -> Response:
        global _handled
        request.get_json()
        with _handled_lock:
            _handled += 1
        return Response(RESPONSE_BODY, status=201, mimetype="application/json")

    @app.get(HANDLED_PATH)
    def handled() -> Response:
        return Response(str(_handled), mimetype="text/plain")

    return app


class Wrapped:
    """A variant's WSGI app and how to wait until everything it captured is delivered."""

    def __init__(
        self, app: Callable[..., Iterable[bytes]], flush: Callable[[float], bool], stats: Any
    ) -> None:
        self.app = app
        self.flush = flush
        self.stats = stats


def make_app(variant: str, collector_url: str = "", sink_url: str = "", events: int = 0) -> Wrapped:
    app = make_flask_app()
    if variant == "bare":
        return Wrapped(app, lambda timeout: True, lambda: {})
    if variant in ("otas", "otas-wire"):
        from otas_capture.collector import DEMO_PROJECT_ID, DEMO_SDK_KEY
        from otas_capture.flask import init_app

        if variant == "otas-wire":
            use_wire_transport()

        middleware = init_app(
            app,
            sdk_key=DEMO_SDK_KEY,
            project_id=DEMO_PROJECT_ID,
            brain_url=collector_url,
            uasam_url=collector_url,
            queue_size=events + 1000,  # the backlog must never drop
            queue_max_bytes=(events + 1000) * 16 * 1024,
        )
        return Wrapped(app, middleware.flush, middleware.stats)
    if variant == "otel":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider = TracerProvider()
        provider.add_span_processor(
            BatchSpanProcessor(
                OTLPSpanExporter(endpoint=sink_url + SPANS_PATH),
                max_queue_size=events + 1000,  # the backlog must never drop
            )
        )
        app.wsgi_app = OpenTelemetryMiddleware(  # type: ignore[method-assign]
            app.wsgi_app, tracer_provider=provider
        )
        return Wrapped(app, lambda timeout: provider.force_flush(int(timeout * 1000)), lambda: {})
    raise SystemExit(f"unknown variant {variant!r}")


def use_wire_transport() -> None:
    """Make this process's sender post through ``otas_capture.otas.wire``.

    ``wire`` is the client's default transport since the second performance round, so
    this changes nothing for this checkout; it swaps the transport of an older one
    measured with ``run.py --otas`` whose sender still had its own ``BrainConnection``.
    """
    from otas_capture.delivery import sender

    try:
        from otas_capture.otas import wire
    except ImportError:  # a checkout from before wire existed
        return
    # Only a checkout whose wire still has the shim (the sender's interface) can swap.
    if hasattr(sender, "BrainConnection") and hasattr(wire, "BrainConnection"):
        sender.BrainConnection = wire.BrainConnection


def _gunicorn_app() -> Callable[..., Iterable[bytes]] | None:
    variant = os.environ.get("BENCH_VARIANT")
    if not variant:
        return None
    return make_app(
        variant,
        os.environ.get("BENCH_COLLECTOR", ""),
        os.environ.get("BENCH_SINK", ""),
        events=1_000_000,
    ).app


application = _gunicorn_app()


# -- sinks --------------------------------------------------------------------------------


def serve_collector(port: int, latency: float) -> None:
    """The bundled collector, with ``latency`` seconds added to each log call, plus
    ``GET /bench/count`` (events accepted so far) and ``DELETE /bench/count`` (forget them)."""
    from otas_capture.collector import Collector, CollectorServer

    collector = Collector()
    if latency > 0:
        set_latency = getattr(collector, "set_latency", None)
        if set_latency is not None:
            set_latency(latency)
        else:  # until Collector.set_latency lands: delay every call, then process it
            collector.fail_next(100_000, status=None, delay=latency)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ["PATH_INFO"] == COUNT_PATH:
            if environ["REQUEST_METHOD"] == "DELETE":
                collector.clear()
                if latency > 0 and getattr(collector, "set_latency", None) is None:
                    collector.fail_next(100_000, status=None, delay=latency)
            accepted = sum(1 for status, _ in collector.calls if status == 201)
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [str(accepted).encode()]
        result: Iterable[bytes] = collector(environ, start_response)
        return result

    server = CollectorServer(app, port=port)  # type: ignore[arg-type]
    server.start()
    threading.Event().wait()


class _SpanSink(BaseHTTPRequestHandler):
    """Accepts OTLP/HTTP protobuf trace exports and counts their spans."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    spans = 0
    lock = threading.Lock()

    def do_POST(self) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        export = ExportTraceServiceRequest()
        export.ParseFromString(data)
        # Only the POSTs' spans: the benchmark's own GETs of /bench/handled are traced too.
        count = sum(
            1
            for resource in export.resource_spans
            for scope in resource.scope_spans
            for span in scope.spans
            if span.name.startswith("POST")
        )
        with _SpanSink.lock:
            _SpanSink.spans += count
        self._answer(b"", "application/x-protobuf")

    def do_GET(self) -> None:
        self._answer(str(_SpanSink.spans).encode(), "text/plain")

    def do_DELETE(self) -> None:
        with _SpanSink.lock:
            _SpanSink.spans = 0
        self._answer(b"0", "text/plain")

    def _answer(self, body: bytes, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def serve_span_sink(port: int) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", port), _SpanSink)
    server.daemon_threads = True
    server.serve_forever()
