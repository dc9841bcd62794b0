"""The demo and the collector run on the package's own dependencies, without a framework.

``pip install -e . && otas-capture demo`` must work on a fresh machine: no werkzeug,
Flask or waitress. The collector then serves on the standard library's ``wsgiref``
(see ``otas_capture.collector.server``), and speaks through ``otas_capture.collector.web``.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from otas_capture.capture.middleware import OtasMiddleware
from otas_capture.collector import (
    DEMO_SDK_KEY,
    MAX_REQUEST_BYTES,
    SDK_LOG_PATH,
    CollectorServer,
)
from otas_capture.collector.web import (
    ClientDisconnected,
    MethodNotAllowed,
    Request,
    Response,
    status_phrase,
)
from otas_capture.contract import (
    EVENT_CAPTURED,
    REQUIRED_FIELDS,
    SDK_KEY_HEADER,
    SESSION_TOKEN_HEADER,
)

from .conftest import settle

pytestmark = pytest.mark.filterwarnings("ignore:The HMAC key is:UserWarning")

ROOT = Path(__file__).resolve().parent.parent
BLOCKED = ("werkzeug", "flask", "waitress")

# Runs the CLI with the web libraries made unimportable, as on a machine without them.
WITHOUT_WEB_LIBRARIES = f"""
import sys
for name in {BLOCKED!r}:
    sys.modules[name] = None  # `import name` now raises ImportError
from otas_capture.cli import main
code = main(sys.argv[1:])
leaked = [name for name in {BLOCKED!r} if sys.modules.get(name) is not None]
if leaked:
    print("imported:", leaked, file=sys.stderr)
    code = 99
sys.exit(code)
"""


def environ(**extra: Any) -> dict[str, Any]:
    env: dict[str, Any] = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/",
        "QUERY_STRING": "",
        "wsgi.input": io.BytesIO(b""),
    }
    env.update(extra)
    return env


# -- the demo without werkzeug, Flask or waitress ---------------------------------------


def test_the_demo_runs_and_prints_its_table_without_werkzeug_flask_or_waitress():
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(ROOT),
        "HOME": str(ROOT),
    }
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_WEB_LIBRARIES, "demo", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for column in ("method", "path", "status", "latency", "request", "response", "masked"):
        assert column in out
    for row in ("/api/items", "/api/items/42", "/api/login", "/api/export"):
        assert row in out
    assert "form password" in out and "response body access_token" in out
    assert "OK: 7 agent calls, 7 events" in out
    assert "Live viewer: http://127.0.0.1:" in out


# -- the collector on the standard-library server ---------------------------------------


@pytest.fixture(scope="module")
def stdlib_server() -> Iterator[CollectorServer]:
    server = CollectorServer(use_waitress=False).start()
    yield server
    server.stop()


def post_event(server: CollectorServer, data: bytes, **headers: str) -> requests.Response:
    sent = {
        SDK_KEY_HEADER: DEMO_SDK_KEY,
        SESSION_TOKEN_HEADER: server.collector.issue_token(),
        "Content-Type": "application/json",
        **headers,
    }
    return requests.post(server.url + SDK_LOG_PATH, data=data, headers=sent, timeout=5)


def test_the_stdlib_server_stores_an_event_and_closes_the_connection(stdlib_server):
    stdlib_server.collector.clear()
    body = {
        "project_id": "p",
        "path": "/api/items",
        "method": "GET",
        "status_code": 200,
        "latency_ms": 1.5,
        "request_size_bytes": 0,
        "response_size_bytes": 2,
    }
    assert set(REQUIRED_FIELDS) <= set(body)
    response = post_event(stdlib_server, json.dumps(body).encode())
    assert response.status_code == 201, response.text
    assert response.json()["status_description"] == EVENT_CAPTURED
    assert not stdlib_server.uses_waitress
    assert len(stdlib_server.collector.events()) == 1
    # HTTP/1.0: one call per connection, as the docstrings say.
    assert response.raw.version == 10


def test_the_sdk_ships_to_a_server_that_closes_each_connection_without_a_retry(
    stdlib_server, serve_app
):
    # The SDK keeps connections alive; an answer saying the connection closes (HTTP/1.0
    # here, "Connection: close" behind some proxies) must still be read whole.
    stdlib_server.collector.clear()

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    otas = OtasMiddleware(
        app,
        sdk_key=DEMO_SDK_KEY,
        brain_url=stdlib_server.url,
        uasam_url=stdlib_server.url,
    )
    try:
        url = serve_app(otas)
        token = stdlib_server.collector.issue_token()
        for _ in range(10):
            requests.get(url + "/api/items", headers={SESSION_TOKEN_HEADER: token}, timeout=5)
        stats = settle(otas, captured=10)
    finally:
        otas.close(timeout=5)
    assert stats["sent"] == 10 and stats["retried"] == 0, stats
    assert len(stdlib_server.collector.events()) == 10


def test_the_stdlib_server_refuses_an_oversized_body_unread(stdlib_server):
    response = post_event(stdlib_server, b"x" * (MAX_REQUEST_BYTES + 1))
    assert response.status_code == 400
    assert response.headers["Content-Type"].startswith("text/html")


def test_the_stdlib_server_answers_404_and_405_with_allow(stdlib_server):
    assert requests.get(stdlib_server.url + "/nowhere", timeout=5).status_code == 404
    wrong = requests.get(stdlib_server.url + SDK_LOG_PATH, timeout=5)
    assert wrong.status_code == 405
    assert wrong.headers["Allow"] == "POST"


def test_a_stopped_stdlib_server_frees_its_port():
    server = CollectorServer(use_waitress=False).start()
    port = server.port
    server.stop()
    server.stop()  # twice is fine
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))


# -- the web shim, pure functions ------------------------------------------------------


def test_request_headers_are_found_by_any_letter_case():
    request = Request(environ(HTTP_X_TENANT="acme", CONTENT_TYPE="application/json"))
    assert request.headers.get("x-tenant") == "acme"
    assert request.headers["X-TENANT"] == "acme"
    assert request.headers.get("content-type") == "application/json"
    assert request.headers.get("X-Missing") is None
    assert set(request.headers) == {"X-Tenant", "Content-Type"}


def test_a_header_sent_as_utf8_reads_as_the_text_meant():
    sent = "Zürich".encode().decode("latin-1")  # how WSGI hands header bytes over
    assert Request(environ(HTTP_X_TENANT=sent)).header_text("X-Tenant") == "Zürich"
    assert Request(environ()).header_text("X-Tenant", "public") == "public"


def test_the_body_is_read_only_up_to_the_declared_length():
    request = Request(environ(CONTENT_LENGTH="5", **{"wsgi.input": io.BytesIO(b"hello, more")}))
    assert request.get_data(100) == b"hello"


def test_a_body_without_length_is_read_only_when_the_server_ended_it():
    source = b"de-chunked body"
    unended = Request(environ(**{"wsgi.input": io.BytesIO(source)}))
    assert unended.get_data(100) == b""  # reading could block: no body
    ended = Request(environ(**{"wsgi.input": io.BytesIO(source), "wsgi.input_terminated": True}))
    assert ended.get_data(100) == source


def test_a_body_over_the_limit_is_refused_without_holding_it():
    declared = Request(environ(CONTENT_LENGTH="11", **{"wsgi.input": io.BytesIO(b"x" * 11)}))
    assert declared.get_data(10) is None
    chunked = Request(
        environ(**{"wsgi.input": io.BytesIO(b"x" * 11), "wsgi.input_terminated": True})
    )
    assert chunked.get_data(10) is None


def test_a_client_hanging_up_mid_body_is_a_400():
    request = Request(environ(CONTENT_LENGTH="10", **{"wsgi.input": io.BytesIO(b"short")}))
    with pytest.raises(ClientDisconnected) as error:
        request.get_data(100)
    assert error.value.code == 400


def test_query_arguments_and_form_fields_take_the_first_value():
    request = Request(
        environ(
            QUERY_STRING="limit=10&limit=20&q=",
            CONTENT_TYPE="application/x-www-form-urlencoded",
            CONTENT_LENGTH="25",
            **{"wsgi.input": io.BytesIO(b"username=agent&password=p")},
        )
    )
    assert request.args == {"limit": "10", "q": ""}
    assert request.form(100) == {"username": "agent", "password": "p"}


def test_a_response_sends_its_status_headers_and_body():
    sent: list[Any] = []
    response = Response('{"a": 1}', 201, mimetype="application/json", headers={"X-A": "b"})
    body = b"".join(response({}, lambda status, headers: sent.extend([status, headers])))
    assert body == b'{"a": 1}'
    assert sent[0] == "201 Created"
    assert dict(sent[1]) == {
        "Content-Type": "application/json",
        "X-A": "b",
        "Content-Length": "8",
    }


def test_a_streamed_response_has_no_length_and_text_gets_a_charset():
    sent: list[Any] = []
    response = Response(iter(["a\n", b"b\n"]), mimetype="text/plain")
    body = b"".join(response({}, lambda status, headers: sent.extend([status, headers])))
    assert body == b"a\nb\n"
    assert dict(sent[1]) == {"Content-Type": "text/plain; charset=utf-8"}


def test_errors_answer_with_their_status_and_phrase():
    sent: list[Any] = []
    page = b"".join(MethodNotAllowed(["POST", "GET"])({}, lambda *a: sent.extend(a)))
    assert sent[0] == "405 Method Not Allowed"
    assert dict(sent[1])["Allow"] == "GET, POST"
    assert b"405 Method Not Allowed" in page
    assert status_phrase(404) == "Not Found"
    assert status_phrase(599, "Error") == "Error"


# -- a dropped response ships by itself ----------------------------------------------------

DROPS_A_RESPONSE = """
import io, sys, time

from otas_capture import OtasMiddleware
from otas_capture.contract import SESSION_TOKEN_ENVIRON

def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return iter([b"never read"])

url, token = sys.argv[1:]
middleware = OtasMiddleware(app, sdk_key={key!r}, brain_url=url, uasam_url=url)
environ = {{
    "REQUEST_METHOD": "GET",
    "PATH_INFO": "/dropped",
    "wsgi.input": io.BytesIO(),
    SESSION_TOKEN_ENVIRON: token,
}}
response = middleware(environ, lambda status, headers, exc_info=None: None)
del response  # dropped unread; nothing calls into the middleware after this
print("dropped", flush=True)
time.sleep(60)
"""


def test_a_response_dropped_unread_reaches_the_collector_within_a_second_by_itself(
    collector_server, collector, token
):
    script = DROPS_A_RESPONSE.format(key=DEMO_SDK_KEY)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-c", script, collector_server.url, token],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "dropped\n"
        dropped = time.monotonic()
        while not collector.events() and time.monotonic() - dropped < 5.0:
            time.sleep(0.01)
        took = time.monotonic() - dropped
        (event,) = collector.events()
    finally:
        child.kill()
        child.wait(timeout=10)
    assert event["path"] == "/dropped"
    assert event["metadata"]["response_unfinished"] is True
    assert took < 1.0, f"shipped {took:.2f} s after the response was dropped"


FORKS_THEN_DROPS = """
import io, os, sys, time

from otas_capture import OtasMiddleware
from otas_capture.contract import SESSION_TOKEN_ENVIRON

def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return iter([b"never read"])

def environ(path):
    return {{
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "wsgi.input": io.BytesIO(),
        SESSION_TOKEN_ENVIRON: token,
    }}

url, token = sys.argv[1:]
middleware = OtasMiddleware(app, sdk_key={key!r}, brain_url=url, uasam_url=url)
response = middleware(environ("/parent"), lambda status, headers, exc_info=None: None)
response.close()  # the parent's threads, the watcher of dropped responses included, run
assert middleware.flush(5)
if os.fork() == 0:
    response = middleware(environ("/child"), lambda status, headers, exc_info=None: None)
    del response
    print("dropped", os.getpid(), flush=True)
    time.sleep(60)
    os._exit(0)
time.sleep(60)
"""


def test_a_forked_child_ships_its_own_dropped_responses(collector_server, collector, token):
    script = FORKS_THEN_DROPS.format(key=DEMO_SDK_KEY)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    parent = subprocess.Popen(
        [sys.executable, "-c", script, collector_server.url, token],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    child_pid = None
    try:
        assert parent.stdout is not None
        word, child_pid_text = parent.stdout.readline().split()
        child_pid = int(child_pid_text)
        assert word == "dropped"
        dropped = time.monotonic()
        while len(collector.events()) < 2 and time.monotonic() - dropped < 5.0:
            time.sleep(0.01)
        took = time.monotonic() - dropped
    finally:
        if child_pid is not None:
            os.kill(child_pid, signal.SIGKILL)
        parent.kill()
        parent.wait(timeout=10)
    assert sorted(e["path"] for e in collector.events()) == ["/child", "/parent"]
    assert took < 1.0, f"shipped {took:.2f} s after the response was dropped"


def test_flush_waits_for_the_dropped_response_the_watcher_is_shipping():
    # The watcher thread may have taken an orphan off the queue and not handed it to the
    # sender yet: a flush() then must not return as if there were nothing left.
    import threading
    import time as _time

    from otas_capture.capture.exchange import BodyBuffer, Exchange
    from otas_capture.capture.handoff import Handoff, ship_orphans

    shipped: list[Exchange] = []
    shipping = threading.Event()

    def slow_ship(exchange: Exchange) -> None:
        shipping.set()
        _time.sleep(0.2)
        shipped.append(exchange)

    handoff = Handoff(slow_ship)
    exchange = Exchange("a.b.c", _time.time(), _time.perf_counter(), {}, BodyBuffer(0))
    handoff.begin(exchange)
    handoff.returned(exchange)
    handoff.orphan(exchange)  # as a response's __del__ does
    assert shipping.wait(2)  # the watcher holds it now
    ship_orphans()  # what flush(), stats() and close() call first
    assert shipped == [exchange]
