"""The wrapper is a perfect stand-in: whatever the app does, the server sees the same thing.

Each case runs the bare app and the wrapped app on the same kind of real loopback server
(werkzeug's, waitress) and compares what a client receives; the event is checked at the
collector.
"""

from __future__ import annotations

import copy
import gzip
import io
import json
import socket
import sys

import pytest
import requests
from flask import Flask
from werkzeug.test import EnvironBuilder
from werkzeug.wsgi import LimitedStream

from otas_capture.capture.exchange import BodyBuffer
from otas_capture.capture.tee import InputTee
from otas_capture.contract import SESSION_TOKEN_HEADER

from .conftest import settle
from .servers import WaitressServer


@pytest.fixture
def serve_waitress():
    servers = []

    def serve(app) -> str:
        server = WaitressServer(app)
        servers.append(server)
        return server.url

    yield serve
    for server in servers:
        server.stop()


def one_event(middleware, collector):
    settle(middleware)
    (event,) = collector.events()
    return event


def client_view(url, agent):
    """Status, headers and body a client gets, or the kind of failure it sees."""
    try:
        response = requests.get(url, headers=agent, timeout=10)
    except requests.RequestException as exc:
        return type(exc)
    drop = {"Date", "Server"}
    headers = {k: v for k, v in response.headers.items() if k not in drop}
    return response.status_code, headers, response.content


def same_answer(bare_url, wrapped_url, agent, method="GET", **kwargs):
    expected = requests.request(method, bare_url, headers=agent, timeout=10, **kwargs)
    got = requests.request(method, wrapped_url, headers=agent, timeout=10, **kwargs)
    assert got.status_code == expected.status_code
    assert got.content == expected.content
    drop = {"Date", "Server"}
    assert {k: v for k, v in got.headers.items() if k not in drop} == {
        k: v for k, v in expected.headers.items() if k not in drop
    }
    return got


# -- the input tee ---------------------------------------------------------------------------


def echo_with(read):
    def app(environ, start_response):
        body = read(environ["wsgi.input"])
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body]

    return app


READS = {
    "read_size_keyword": lambda s: s.read(size=5) + b"|" + s.read(),
    "readline_size_keyword": lambda s: s.readline(size=3) + b"|" + s.read(),
    "with_statement": lambda s: _read_in_with(s),
}


def _read_in_with(stream):
    with stream as entered:
        return entered.read()


def outcome(app, environ):
    """What a server gets from calling ``app``: (status, body) or the exception raised."""
    answer = []
    try:
        iterable = app(environ, lambda status, headers, exc_info=None: answer.append(status))
        try:
            body = b"".join(iterable)
        finally:
            getattr(iterable, "close", lambda: None)()
    except Exception as exc:
        return type(exc)
    return answer, body


class KeywordStream:
    """A pure-Python stream with gunicorn's signatures (``read(size=None)``), as a context
    manager like werkzeug's streams."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def read(self, size=None):
        return self._data.read(-1 if size is None else size)

    def readline(self, size=None):
        return self._data.readline(-1 if size is None else size)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return None


def keyword_stream(environ):
    return KeywordStream(b"hello world")


def limited_stream(environ):
    return LimitedStream(io.BytesIO(b"hello world"), 11)


def socket_file(environ):
    # A server reading straight from its socket file (werkzeug's dev server, wsgiref).
    return io.BufferedReader(io.BytesIO(b"hello world"))


@pytest.mark.parametrize(
    "stream", [keyword_stream, limited_stream, socket_file], ids=lambda f: f.__name__
)
@pytest.mark.parametrize("reader", sorted(READS))
def test_the_tee_accepts_what_the_servers_stream_accepts(reader, stream, make_middleware, agent):
    app = echo_with(READS[reader])
    middleware = make_middleware(app)
    token = next(iter(agent.values()))

    def environ():
        built = EnvironBuilder(method="POST", headers={SESSION_TOKEN_HEADER: token})
        env = built.get_environ()
        env["wsgi.input"] = stream(env)
        env["CONTENT_LENGTH"] = "11"
        return env

    expected = outcome(app, environ())
    assert outcome(middleware, environ()) == expected
    if stream is keyword_stream:
        assert expected == (["200 OK"], READS[reader](keyword_stream(None)))


# (Not the with statement here: it closes the dev server's socket file, bare or wrapped.)
@pytest.mark.parametrize("reader", ["read_size_keyword", "readline_size_keyword"])
def test_the_tee_behaves_as_the_dev_servers_stream(reader, make_middleware, serve_app, agent):
    app = echo_with(READS[reader])
    same_answer(serve_app(app), serve_app(make_middleware(app)), agent, "POST", data=b"hello world")


def test_copying_the_tee_copies_the_stream_and_never_recurses():
    stream = io.BytesIO(b"abcdef")
    tee = InputTee(stream, BodyBuffer(100))
    copied = copy.copy(tee)
    assert isinstance(copied, InputTee)
    assert copied.read() == b"abcdef"
    assert isinstance(copy.deepcopy(tee), InputTee)


def test_copying_the_tee_of_an_uncopyable_stream_raises_the_streams_own_error():
    environ = EnvironBuilder(data=b"x").get_environ()
    with open(__file__, "rb") as real_file:
        for stream in (real_file, environ["wsgi.input"]):
            try:
                copy.copy(stream)
            except Exception as exc:
                expected: type[BaseException] | None = type(exc)
            else:
                expected = None
            tee = InputTee(stream, BodyBuffer(10))
            if expected is None:
                copy.copy(tee)
            else:
                with pytest.raises(expected):
                    copy.copy(tee)


def test_a_tee_built_without_init_answers_attribute_error_not_recursion():
    tee = InputTee.__new__(InputTee)
    with pytest.raises(AttributeError):
        _ = tee.anything


# -- whatever the app hands the server ---------------------------------------------------------


def odd_apps():
    def bytes_header_value(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain"), ("X-Raw", b"raw")])
        return [b"ok"]

    def none_header_value(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Encoding", None)])
        return [b"ok"]

    def str_chunks(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return ["text, not bytes"]

    def str_after_bytes(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"bytes then ", "text"]

    def tuple_headers(environ, start_response):
        start_response("200 OK", (("Content-Type", "text/plain"),))
        return [b"ok"]

    def none_chunk(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [None]

    return [
        bytes_header_value,
        none_header_value,
        str_chunks,
        str_after_bytes,
        tuple_headers,
        none_chunk,
    ]


@pytest.mark.parametrize("server", ["werkzeug", "waitress"])
@pytest.mark.parametrize("app", odd_apps(), ids=lambda app: app.__name__)
def test_whatever_the_app_hands_over_the_client_gets_what_the_bare_server_sends(
    app, server, make_middleware, serve_app, serve_waitress, collector, agent
):
    serve = serve_app if server == "werkzeug" else serve_waitress
    middleware = make_middleware(app)
    bare, wrapped = serve(app), serve(middleware)
    for _ in range(2):
        assert client_view(wrapped, agent) == client_view(bare, agent)
    assert middleware.flush(5)
    assert middleware.stats()["reasons"]["dropped"].get("internal_error", 0) == 0


def test_the_servers_own_error_reaches_the_app_not_ours(make_middleware, agent):
    class ServerError(Exception):
        pass

    def strict_start_response(status, headers, exc_info=None):
        for name, value in headers:
            if not isinstance(value, str):
                raise ServerError(f"header {name} must be str")
        return lambda data: None

    raised = []

    def app(environ, start_response):
        try:
            start_response("200 OK", [("Content-Encoding", None)])
        except Exception as exc:
            raised.append(exc)
        start_response("200 OK", [], None)
        return [b""]

    token = next(iter(agent.values()))
    environ = EnvironBuilder(headers={SESSION_TOKEN_HEADER: token}).get_environ()
    make_middleware(app)(environ, strict_start_response).close()
    assert [type(exc) for exc in raised] == [ServerError]


# -- file wrapper ----------------------------------------------------------------------------


def file_app(content: bytes):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](io.BytesIO(content), 8192)

    return app


@pytest.mark.parametrize("server", ["waitress", "wsgiref"])
def test_a_file_wrapper_response_reaches_the_server_as_its_own_object(
    server, make_middleware, serve_app, serve_waitress, collector, agent
):
    content = bytes(range(256)) * 400
    app = file_app(content)
    middleware = make_middleware(app)
    if server == "waitress":
        bare, wrapped = serve_waitress(app), serve_waitress(middleware)
    else:
        bare, wrapped = serve_app(app, wsgiref=True), serve_app(middleware, wsgiref=True)
    got = same_answer(bare, wrapped, agent)
    assert got.content == content
    if server == "waitress":  # waitress sizes its own file wrapper instead of chunking
        assert got.headers["Content-Length"] == str(len(content))
    event = one_event(middleware, collector)
    assert event["response_size_bytes"] == len(content)


# -- exc_info after the headers went out -------------------------------------------------------


def test_exc_info_after_the_headers_went_out_reports_what_the_client_received(
    make_middleware, serve_app, collector, agent
):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"x" * 1000
        try:
            raise ValueError("late failure")
        except ValueError:
            start_response("500 Internal Server Error", [], sys.exc_info())
        yield b"never sent"

    middleware = make_middleware(app)
    response = requests.get(serve_app(middleware) + "/late", headers=agent, stream=True)
    assert response.status_code == 200
    received = b""
    try:
        for chunk in response.iter_content(100):
            received += chunk
    except requests.RequestException:
        pass
    assert received == b"x" * 1000
    event = one_event(middleware, collector)
    assert event["status_code"] == 200
    assert event["response_size_bytes"] == 1000
    assert event["error"] == "ValueError: late failure"


# -- request bodies ----------------------------------------------------------------------------


def test_a_compressed_request_body_is_counted_not_captured_as_text(
    make_middleware, serve_app, collector, agent
):
    def app(environ, start_response):
        body = gzip.decompress(environ["wsgi.input"].read(int(environ["CONTENT_LENGTH"])))
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]

    middleware = make_middleware(app)
    payload = gzip.compress(json.dumps({"a": "b" * 100}).encode())
    headers = {**agent, "Content-Type": "application/json", "Content-Encoding": "gzip"}
    response = requests.post(serve_app(middleware), data=payload, headers=headers, timeout=10)
    assert response.json() == {"a": "b" * 100}
    event = one_event(middleware, collector)
    assert event["request_body"] == ""
    assert event["request_size_bytes"] == len(payload)


def test_a_body_the_app_never_read_is_sized_from_content_length(
    make_middleware, serve_app, collector, agent
):
    app = Flask("unread")

    @app.get("/items")
    def items():
        return "only GET"

    middleware = make_middleware(app.wsgi_app)
    app.wsgi_app = middleware
    response = requests.post(serve_app(app) + "/items", data=b"\x00" * 4096, headers=agent)
    assert response.status_code == 405
    event = one_event(middleware, collector)
    assert event["status_code"] == 405
    assert event["request_size_bytes"] == 4096
    assert event["metadata"]["request_body_read"] is False
    assert event["request_body"] == ""


def test_a_read_body_is_not_marked_unread(make_middleware, serve_app, collector, agent):
    app = echo_with(lambda s: s.read(3))
    middleware = make_middleware(app)
    requests.post(serve_app(middleware), data=b"abc", headers=agent, timeout=10)
    event = one_event(middleware, collector)
    assert event["request_size_bytes"] == 3
    assert "request_body_read" not in event["metadata"]


# -- skip paths --------------------------------------------------------------------------------


def test_skip_paths_match_the_decoded_path(make_middleware, serve_app, collector, agent):
    def app(environ, start_response):
        start_response("200 OK", [])
        return [b""]

    middleware = make_middleware(app, skip_paths="/caf\u00e9/,/\u00fcber")
    url = serve_app(middleware)
    for path in ("/caf%C3%A9/menu", "/%C3%BCber", "/other"):
        requests.get(url + path, headers=agent)
    stats = settle(middleware)
    assert stats["reasons"]["skipped"] == {"skip_path": 2}
    assert [e["path"] for e in collector.events()] == ["/other"]


@pytest.mark.parametrize("status", ["99999999999999999999 Huge", "42 Odd"])
def test_a_status_brain_cannot_store_is_shipped_as_500_with_the_line_in_metadata(
    status, make_middleware, serve_waitress, collector, agent
):
    def app(environ, start_response):
        start_response(status, [("Content-Type", "text/plain")])
        return [b"ok"]

    middleware = make_middleware(app)
    host, port = serve_waitress(middleware).rsplit("/", 1)[-1].split(":")
    # A raw socket: HTTP clients refuse such a status line, but the app did send it.
    head = "".join(f"{name}: {value}\r\n" for name, value in agent.items())
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(f"GET /odd HTTP/1.1\r\nHost: x\r\n{head}Connection: close\r\n\r\n".encode())
        while sock.recv(65536):
            pass
    stats = settle(middleware)
    assert stats["sent"] == 1 and stats["failed"] == 0, stats
    [event] = collector.events()
    assert event["status_code"] == 500
    assert event["metadata"]["status_line"] == status
