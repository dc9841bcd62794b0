"""Differential tests: the wrapped app and the bare app are indistinguishable on the wire.

Hypothesis generates WSGI apps (status, headers, body chunks, how the response is made:
list, generator, ``write()``, file wrapper, an exception before or during the response,
``start_response`` called again with ``exc_info`` once the body has begun;
how the body is read) and requests (method, path, query, body). Each one is served bare
and wrapped by the same kind of real server, werkzeug's and waitress (in-process) and
gunicorn (a pre-fork server, run as real subprocesses serving ``tests/gunicorn_apps.py``),
over raw loopback sockets, and everything is compared: the bytes of the response (but ``Date`` and
``Server``), and how many times the server closed the app's iterable. The wrapped app
ships to the test collector, and no event may fail inside the SDK.

A bounded number of examples runs with the suite; ``pytest -m slow`` runs many more
(``OTAS_DIFFERENTIAL_EXAMPLES`` sets how many).
"""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from werkzeug.serving import make_server

from otas_capture import OtasMiddleware
from otas_capture.collector import DEMO_SDK_KEY

from .conftest import TOKEN_HEADER
from .servers import WaitressServer

CI_EXAMPLES = 25
GUNICORN_CI_EXAMPLES = 15
SLOW_EXAMPLES = int(os.environ.get("OTAS_DIFFERENTIAL_EXAMPLES", "500"))


@dataclass
class AppSpec:
    status: str
    headers: list[tuple[str, str]]
    chunks: list[bytes]
    style: str
    read: str
    content_length: bool


@dataclass
class RequestSpec:
    method: str
    path: str
    query: str
    body: bytes


STYLES = [
    "list",
    "generator",
    "write",
    "file_wrapper",
    "raise_before",
    "raise_midway",
    "exc_info_after",  # start_response(..., exc_info) once the body has begun
]

header_names = st.sampled_from(["X-A", "X-Trace", "Cache-Control", "Content-Type", "Vary"])
header_values = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-/;= ", max_size=30).map(
    str.strip
)
app_specs = st.builds(
    AppSpec,
    status=st.sampled_from(
        ["200 OK", "201 Created", "202 Accepted", "302 Found", "404 Not Found", "500 Oops"]
    ),
    headers=st.lists(st.tuples(header_names, header_values), max_size=4),
    chunks=st.lists(st.binary(max_size=400), max_size=5),
    style=st.sampled_from(STYLES),
    read=st.sampled_from(["none", "all", "partial", "lines"]),
    content_length=st.booleans(),
)
request_specs = st.builds(
    RequestSpec,
    method=st.sampled_from(["GET", "POST", "PUT", "HEAD"]),
    path=st.lists(st.text(alphabet="abcxyz019-_", min_size=1, max_size=8), max_size=3).map(
        lambda parts: "/" + "/".join(parts)
    ),
    query=st.sampled_from(["", "a=1", "a=1&b=two", "q=caf%C3%A9"]),
    body=st.binary(max_size=600),
)


class Closes:
    """Counts the server's close() calls on the app's iterables, per variant."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.count = 0

    def add(self) -> None:
        with self.lock:
            self.count += 1


def build_app(spec: AppSpec, closes: Closes) -> Any:
    """A WSGI app that behaves as ``spec`` says, counting closes into ``closes``."""

    def read_body(environ: dict[str, Any]) -> None:
        stream = environ["wsgi.input"]
        length = int(environ.get("CONTENT_LENGTH") or 0)
        if spec.read == "all":
            stream.read(length)
        elif spec.read == "partial":
            stream.read(min(length, 7))
        elif spec.read == "lines":
            remaining = length
            while remaining > 0:
                line = stream.readline(remaining)
                if not line:
                    break
                remaining -= len(line)

    def headers() -> list[tuple[str, str]]:
        result = list(spec.headers)
        if spec.content_length and spec.style not in ("raise_midway", "exc_info_after"):
            result.append(("Content-Length", str(sum(len(c) for c in spec.chunks))))
        return result

    class Body:
        def __init__(self, chunks: list[bytes], fail: bool = False) -> None:
            self.chunks = chunks
            self.fail = fail

        def __iter__(self):
            for number, chunk in enumerate(self.chunks):
                if self.fail and number == len(self.chunks) // 2:
                    raise RuntimeError("failed while streaming")
                yield chunk
            if self.fail:
                raise RuntimeError("failed at the end")

        def close(self) -> None:
            closes.add()

    def late_error(start_response: Any) -> Any:
        # PEP 3333: once headers went out, start_response re-raises the error it is given;
        # before that, it replaces the status and headers.
        yield from spec.chunks[:1]
        try:
            raise RuntimeError("failed after the headers")
        except RuntimeError:
            start_response("500 Late", [("Content-Type", "text/plain")], sys.exc_info())
        yield b"error page"

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        read_body(environ)
        if spec.style == "raise_before":
            raise ValueError("failed before the response")
        write = start_response(spec.status, headers())
        if spec.style == "write":
            for chunk in spec.chunks[:1]:
                write(chunk)
            return Body(spec.chunks[1:])
        if spec.style == "file_wrapper" and "wsgi.file_wrapper" in environ:
            return environ["wsgi.file_wrapper"](io.BytesIO(b"".join(spec.chunks)), 64)
        if spec.style == "list":
            return list(spec.chunks)
        if spec.style == "exc_info_after":
            return late_error(start_response)
        return Body(spec.chunks, fail=spec.style == "raise_midway")

    return app


class Switch:
    """The app a server runs: whatever the current example installed."""

    def __init__(self) -> None:
        self.app: Any = None

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        return self.app(environ, start_response)


def raw_request(url: str, request: RequestSpec, token: str, extra: str = "") -> bytes:
    """Send ``request`` on a fresh connection; everything the server sent until it closed."""
    host, port = url.rsplit("/", 1)[-1].split(":")
    target = request.path + ("?" + request.query if request.query else "")
    head = (
        f"{request.method} {target} HTTP/1.1\r\nHost: {host}\r\n{TOKEN_HEADER}: {token}\r\n"
        f"{extra}"
        f"Content-Length: {len(request.body)}\r\nContent-Type: application/octet-stream\r\n"
        "Connection: close\r\n\r\n"
    ).encode("latin-1")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head + request.body)
        received = bytearray()
        while True:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            received += data
    return bytes(received)


def without_variable_headers(response: bytes) -> bytes:
    head, sep, body = response.partition(b"\r\n\r\n")
    lines = [
        line for line in head.split(b"\r\n") if not line.lower().startswith((b"date:", b"server:"))
    ]
    return b"\r\n".join(lines) + sep + body


@pytest.fixture(scope="module")
def servers(collector_server):
    """Bare and wrapped, under werkzeug's threaded server and waitress."""
    bare, wrapped_app = Switch(), Switch()
    middleware = OtasMiddleware(
        wrapped_app,
        sdk_key=DEMO_SDK_KEY,
        brain_url=collector_server.url,
        uasam_url=collector_server.url,
        queue_size=100_000,
    )
    started: list[Any] = []
    urls: dict[str, tuple[str, str]] = {}
    for kind in ("werkzeug", "waitress"):
        pair = []
        for app in (bare, middleware):
            if kind == "werkzeug":
                server = make_server("127.0.0.1", 0, app, threaded=True)
                threading.Thread(target=server.serve_forever, daemon=True).start()
                started.append(server)
                pair.append(f"http://127.0.0.1:{server.server_port}")
            else:
                waitress_server = WaitressServer(app)
                started.append(waitress_server)
                pair.append(waitress_server.url)
        urls[kind] = (pair[0], pair[1])
    yield bare, wrapped_app, middleware, urls
    for server in started:
        if isinstance(server, WaitressServer):
            server.stop()
        else:
            server.shutdown()
            server.server_close()
    middleware.close(2)


def compare(servers, token: str, app_spec: AppSpec, request: RequestSpec) -> None:
    bare, wrapped, middleware, urls = servers
    for kind, (bare_url, wrapped_url) in urls.items():
        closes_bare, closes_wrapped = Closes(), Closes()
        bare.app = build_app(app_spec, closes_bare)
        wrapped.app = build_app(app_spec, closes_wrapped)
        expected = without_variable_headers(raw_request(bare_url, request, token))
        got = without_variable_headers(raw_request(wrapped_url, request, token))
        assert got == expected, kind
        # The server closes the iterable around the time it closes the connection.
        deadline = time.monotonic() + 2.0
        while closes_wrapped.count != closes_bare.count and time.monotonic() < deadline:
            time.sleep(0.01)
        assert closes_wrapped.count == closes_bare.count, kind
    stats = middleware.stats()
    for kind in ("failed", "dropped"):
        assert "internal_error" not in stats["reasons"][kind], stats


SETTINGS = dict(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@settings(max_examples=CI_EXAMPLES, **SETTINGS)  # type: ignore[arg-type]
@given(app_spec=app_specs, request=request_specs)
# Found by the long run on the old wrapper: waitress chunked a wrapped file response.
@example(
    app_spec=AppSpec("200 OK", [], [b"\x00"], "file_wrapper", "none", False),
    request=RequestSpec("GET", "/", "", b""),
)
def test_the_wrapped_app_is_indistinguishable_from_the_bare_one(servers, token, app_spec, request):
    compare(servers, token, app_spec, request)


@pytest.mark.slow
@settings(max_examples=SLOW_EXAMPLES, **SETTINGS)  # type: ignore[arg-type]
@given(app_spec=app_specs, request=request_specs)
def test_the_wrapped_app_is_indistinguishable_from_the_bare_one_at_length(
    servers, token, app_spec, request
):
    compare(servers, token, app_spec, request)


def test_every_differential_request_was_shipped(servers, collector):
    _, _, middleware, _ = servers
    assert middleware.flush(10)
    stats = middleware.stats()
    assert stats["captured"] > 0
    assert stats["sent"] == stats["captured"], stats


# -- gunicorn, a pre-fork server, as a real subprocess ------------------------------------

SPEC_HEADER = "X-Differential-Spec"


def encode_spec(spec: AppSpec) -> str:
    data = dict(vars(spec), chunks=[base64.b64encode(c).decode("ascii") for c in spec.chunks])
    return base64.b64encode(json.dumps(data).encode("utf-8")).decode("ascii")


def decode_spec(text: str) -> AppSpec:
    data = json.loads(base64.b64decode(text))
    data["chunks"] = [base64.b64decode(c) for c in data["chunks"]]
    data["headers"] = [tuple(h) for h in data["headers"]]
    return AppSpec(**data)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_gunicorn(app: str, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--workers", "1", "--bind", f"127.0.0.1:{port}"]
        + ["--log-level", "warning", f"tests.gunicorn_apps:{app}"],
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        env=env,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process, f"http://127.0.0.1:{port}"
        except OSError:
            if process.poll() is not None:
                break
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("gunicorn did not start")


@pytest.fixture(scope="module")
def gunicorn_servers(collector_server):
    """The bare and the wrapped app, each in a gunicorn process (sync worker)."""
    pytest.importorskip("gunicorn")
    env = dict(
        os.environ,
        OTAS_SDK_KEY=DEMO_SDK_KEY,
        OTAS_BRAIN_URL=collector_server.url,
        OTAS_UASAM_URL=collector_server.url,
    )
    started = [_start_gunicorn(app, env) for app in ("bare", "wrapped")]
    yield started[0][1], started[1][1]
    for process, _ in started:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def _report(url: str) -> dict[str, Any]:
    return json.loads(requests.get(url + "/__closes", timeout=5).content)


def compare_under_gunicorn(servers, token: str, app_spec: AppSpec, request: RequestSpec) -> None:
    bare_url, wrapped_url = servers
    extra = f"{SPEC_HEADER}: {encode_spec(app_spec)}\r\n"
    closes_before = (_report(bare_url)["closes"], _report(wrapped_url)["closes"])
    expected = without_variable_headers(raw_request(bare_url, request, token, extra))
    got = without_variable_headers(raw_request(wrapped_url, request, token, extra))
    assert got == expected
    deadline = time.monotonic() + 2.0
    while True:
        bare, wrapped = _report(bare_url), _report(wrapped_url)
        closed = (bare["closes"] - closes_before[0], wrapped["closes"] - closes_before[1])
        if closed[0] == closed[1] or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    assert closed[0] == closed[1]
    for kind in ("failed", "dropped"):
        assert "internal_error" not in wrapped["stats"]["reasons"][kind], wrapped["stats"]


@settings(max_examples=GUNICORN_CI_EXAMPLES, **SETTINGS)  # type: ignore[arg-type]
@given(app_spec=app_specs, request=request_specs)
@example(
    app_spec=AppSpec("200 OK", [], [b"\x00"], "file_wrapper", "none", False),
    request=RequestSpec("GET", "/", "", b""),
)
def test_under_gunicorn_the_wrapped_app_is_indistinguishable_from_the_bare_one(
    gunicorn_servers, token, app_spec, request
):
    compare_under_gunicorn(gunicorn_servers, token, app_spec, request)


@pytest.mark.slow
@settings(max_examples=SLOW_EXAMPLES, **SETTINGS)  # type: ignore[arg-type]
@given(app_spec=app_specs, request=request_specs)
def test_under_gunicorn_the_wrapped_app_is_indistinguishable_at_length(
    gunicorn_servers, token, app_spec, request
):
    compare_under_gunicorn(gunicorn_servers, token, app_spec, request)
