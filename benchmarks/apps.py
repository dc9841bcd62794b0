"""The Flask app the benchmarks compare, bare and wrapped, and the sinks they ship to.

Two endpoints: ``POST /api/items`` reads a 1 KB JSON body and answers 1 KB of JSON (the
app of ``overhead.py``, the *small* event); ``POST /api/orders`` reads about 3 KB of JSON
holding a password, an API key and a client secret, and answers about 3 KB holding an
access and a refresh token (the *realistic* event: what an agent's call to a business API
looks like). ``PAYLOADS`` names both. ``make_app(variant, ...)`` gives the app:

* ``bare``: the Flask app alone;
* ``otas``: wrapped by ``otas_capture.flask.init_app``, shipping every agent request to
  the bundled collector (in another process), with a queue big enough to drop nothing;
* ``otas-wire``: the same, with ``otas_capture.otas.wire`` forced as the transport (the
  default now; it differs only for an older checkout measured with ``run.py --otas``);
* ``otel``: wrapped by OpenTelemetry's WSGI middleware with an SDK ``TracerProvider``
  and a ``BatchSpanProcessor`` exporting over OTLP/HTTP to a loopback sink that counts
  spans (queue big enough to drop nothing).

``GET /bench/handled`` (no agent token, so never captured) says how many POSTs the
process answered, so a load test can check that every one was delivered;
``GET /bench/cpu`` the process's CPU seconds so far (every thread, the sender's too);
``GET /bench/flush`` waits until everything captured so far is delivered (the variant's
``flush``: OpenTelemetry's exports its last batch then, not after its 5 s delay).

``serve_tls_proxy`` terminates TLS in front of a sink, so that the sender and the
exporter ship over HTTPS as in production (the bundled collector speaks plain HTTP).

Under gunicorn, ``apps:application`` reads the variant and URLs from ``BENCH_VARIANT``,
``BENCH_COLLECTOR`` and ``BENCH_SINK``; gunicorn loads it in the worker, after the fork.
"""

from __future__ import annotations

import json
import os
import selectors
import socket
import threading
import time
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

ORDERS_PATH = "/api/orders"
_LINES = [
    {
        "sku": f"SKU-{1000 + i}",
        "name": f"Ergonomic keyboard model {i}",
        "quantity": 1 + i % 3,
        "unit_price": round(19.99 + i * 3.5, 2),
        "tags": ["office", "usb"],
        "discount": None,
    }
    for i in range(19)
]
# Three secrets in the request and two in the response, nested as real APIs nest them.
REALISTIC_REQUEST = json.dumps(
    {
        "customer": {
            "id": "cus_8f14e45fceea167a",
            "email": "jane.doe@example.com",
            "name": "Jane Doe",
            "password": "correct-horse-battery-staple",
        },
        "integration": {"api_key": "sk_live_51HxQeG2eZvKYlo2C0000", "region": "eu-west-1"},
        "oauth": {"client_id": "agent-7", "client_secret": "s3cr3t-7f9a2b1c4d5e6f70"},
        "lines": _LINES,
        "shipping": {"street": "1 Main St", "city": "Springfield", "zip": "12345"},
        "notes": "Deliver to the front desk between 9 and 5; call ahead if late.",
    }
).encode()
REALISTIC_RESPONSE = json.dumps(
    {
        "order": {"id": "ord_2c9e7b1a", "status": "confirmed", "total": 1234.56, "lines": _LINES},
        "session": {
            "access_token": "at_9f8e7d6c5b4a39281706f5e4d3c2b1a0",
            "refresh_token": "rt_0a1b2c3d4e5f60718293a4b5c6d7e8f9",
            "expires_in": 3600,
        },
        "links": {"self": "/api/orders/ord_2c9e7b1a", "invoice": "/api/invoices/inv_77"},
    }
).encode()

# event name: (path, request body, response body)
PAYLOADS = {
    "small": (PATH, REQUEST_BODY, RESPONSE_BODY),
    "realistic": (ORDERS_PATH, REALISTIC_REQUEST, REALISTIC_RESPONSE),
}

_handled = 0
_handled_lock = threading.Lock()
_flushes: list[Callable[[float], bool]] = []  # the variant's flush, set by make_app


def make_flask_app() -> Flask:
    app = Flask("otas_benchmark")

    @app.post(PATH)
    def create_item() -> Response:
        global _handled
        request.get_json()
        with _handled_lock:
            _handled += 1
        return Response(RESPONSE_BODY, status=201, mimetype="application/json")

    @app.post(ORDERS_PATH)
    def create_order() -> Response:
        global _handled
        request.get_json()
        with _handled_lock:
            _handled += 1
        return Response(REALISTIC_RESPONSE, status=201, mimetype="application/json")

    @app.get(HANDLED_PATH)
    def handled() -> Response:
        return Response(str(_handled), mimetype="text/plain")

    @app.get("/bench/cpu")
    def cpu() -> Response:
        return Response(repr(time.process_time()), mimetype="text/plain")

    @app.get("/bench/flush")
    def flush() -> Response:
        return Response(str(all(flush(120.0) for flush in _flushes)), mimetype="text/plain")

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
    wrapped = _make_app(variant, collector_url, sink_url, events)
    _flushes[:] = [wrapped.flush]
    return wrapped


def _make_app(variant: str, collector_url: str, sink_url: str, events: int) -> Wrapped:
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
                # Over TLS the exporter trusts the benchmark's own CA (BENCH_CA).
                OTLPSpanExporter(
                    endpoint=sink_url + SPANS_PATH,
                    certificate_file=os.environ.get("BENCH_CA") or None,
                ),
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


def serve_tls_proxy(port: int, upstream: int, certfile: str) -> None:
    """Terminate TLS on ``port`` (``certfile``: certificate and key) and pass the bytes to
    the plain HTTP server on ``upstream``, one upstream connection per client connection,
    so that keep-alive works end to end. Runs until killed."""
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certfile)
    listener = socket.create_server(("127.0.0.1", port))

    def relay(client: socket.socket) -> None:
        # One thread per connection and both directions on it: an SSL object must not be
        # read and written from two threads at once.
        try:
            tls = context.wrap_socket(client, server_side=True)
        except OSError:
            client.close()
            return
        server = socket.create_connection(("127.0.0.1", upstream))
        for sock in (tls, server):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with tls, server, selectors.DefaultSelector() as selector:
            selector.register(tls, selectors.EVENT_READ, server)
            selector.register(server, selectors.EVENT_READ, tls)
            while True:
                for key, _ in selector.select():
                    source, target = key.fileobj, key.data
                    try:
                        data = source.recv(65536)  # type: ignore[union-attr]
                        while source is tls and tls.pending():  # decrypted, not yet read
                            data += tls.recv(65536)
                        if not data:
                            return
                        target.sendall(data)
                    except ssl.SSLWantReadError:
                        continue
                    except OSError:
                        return

    for _ in range(1_000_000):  # bounded: a benchmark opens a few dozen connections
        client, _ = listener.accept()
        threading.Thread(target=relay, args=(client,), daemon=True).start()
