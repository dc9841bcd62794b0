"""OtasMiddleware: the application sees nothing different, and every field of the event is right.

The apps here run on a real loopback HTTP server (werkzeug's) and are called with
``requests``, as an agent would; the middleware ships to the test collector over HTTP.
"""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import time
from datetime import datetime, timezone

import pytest
import requests
from werkzeug.test import Client, EnvironBuilder
from werkzeug.wrappers import Request, Response

from otas_capture import OtasMiddleware, annotate
from otas_capture.contract import LOGGER_NAME, SDK_KEY_HEADER, SESSION_TOKEN_HEADER, TEXT_FIELDS

from .conftest import settle

TOKEN_HEADER = SESSION_TOKEN_HEADER


def one_event(middleware, collector):
    settle(middleware)
    events = collector.events()
    assert len(events) == 1, events
    return events[0]


def json_app(request_body_to=None):
    """An app that reads its JSON body and answers with JSON."""

    @Request.application
    def app(request):
        data = request.get_data()
        if request_body_to is not None:
            request_body_to.append(data)
        return Response(b'{"ok": true}', status=201, mimetype="application/json")

    return app


# -- the application and the server see exactly the same thing ---------------------------


def wsgi_apps():
    def from_list(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain"), ("X-A", "1")])
        return [b"hello ", b"world"]

    def from_generator(environ, start_response):
        start_response("202 Accepted", [("Content-Type", "application/octet-stream")])
        for i in range(5):
            yield bytes([i]) * 1000

    def with_write(environ, start_response):
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written ")
        return [b"and returned"]

    def empty(environ, start_response):
        start_response("204 No Content", [])
        return []

    def echo(environ, start_response):
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]

    return [from_list, from_generator, with_write, empty, echo]


@pytest.mark.parametrize("server", ["werkzeug", "wsgiref"])
@pytest.mark.parametrize("app", wsgi_apps(), ids=lambda app: app.__name__)
def test_responses_are_byte_for_byte_what_the_bare_app_sends(
    app, server, make_middleware, serve_app, agent
):
    bare = serve_app(app, wsgiref=server == "wsgiref")
    wrapped = serve_app(make_middleware(app), wsgiref=server == "wsgiref")
    for method in ("GET", "POST", "HEAD"):
        expected = requests.request(method, bare + "/x?q=1", data=b'{"a": 1}', headers=agent)
        got = requests.request(method, wrapped + "/x?q=1", data=b'{"a": 1}', headers=agent)
        assert got.status_code == expected.status_code
        assert got.content == expected.content
        drop = {"Date", "Server"}
        assert {k: v for k, v in got.headers.items() if k not in drop} == {
            k: v for k, v in expected.headers.items() if k not in drop
        }


def test_the_app_sees_the_same_environ_but_for_the_tee_and_one_namespaced_key(
    make_middleware, agent
):
    seen = []

    def app(environ, start_response):
        seen.append(dict(environ))
        start_response("200 OK", [])
        return [b""]

    builder_args = dict(path="/p", query_string="a=1", method="POST", data=b"x", headers=agent)
    bare = EnvironBuilder(**builder_args).get_environ()
    app(dict(bare), lambda *a: None)
    wrapped_environ = EnvironBuilder(**builder_args).get_environ()
    make_middleware(app)(wrapped_environ, lambda *a: None).close()
    expected, got = seen
    assert set(got) - set(expected) == {"otas_capture.exchange"}
    for key in set(expected) - {"wsgi.input", "wsgi.errors"}:
        assert got[key] == expected[key], key
    assert got["wsgi.input"].read() == b"x"


READERS = {
    "read": lambda s: s.read(),
    "read_sized": lambda s: b"".join(iter(lambda: s.read(7), b"")),
    "readline": lambda s: b"".join(iter(s.readline, b"")),
    "readline_sized": lambda s: b"".join(iter(lambda: s.readline(5), b"")),
    "readlines": lambda s: b"".join(s.readlines()),
    "iteration": lambda s: b"".join(line for line in s),
}


@pytest.mark.parametrize("reader", sorted(READERS))
def test_the_app_reads_exactly_the_bytes_sent_however_it_reads(
    reader, make_middleware, collector, agent
):
    seen = []
    payload = b'{"line": 1}\n{"line": 2}\n' + bytes(range(256)) + b"\nlast"

    def app(environ, start_response):
        seen.append(READERS[reader](environ["wsgi.input"]))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    middleware = make_middleware(app)
    response = Client(middleware).post("/upload", data=payload, headers=agent)
    response.close()
    assert seen == [payload]
    assert one_event(middleware, collector)["request_size_bytes"] == len(payload)


def test_a_chunked_request_body_reaches_the_app_whole_and_is_counted(
    make_middleware, serve_app, collector, agent
):
    seen = []

    def app(environ, start_response):
        seen.append(environ["wsgi.input"].read())
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    middleware = make_middleware(app)
    url = serve_app(middleware)
    parts = [b"first,", b"second,", b"third"]
    requests.post(url + "/chunked", data=iter(parts), headers=agent)
    assert seen == [b"".join(parts)]
    event = one_event(middleware, collector)
    assert event["request_size_bytes"] == len(b"".join(parts))
    assert event["request_body"] == "first,second,third"


def test_the_response_iterable_is_closed_exactly_once(make_middleware, collector, agent, serve_app):
    closes = []

    class Body:
        def __iter__(self):
            yield b"a"
            yield b"b"

        def close(self):
            closes.append(1)

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Body()

    middleware = make_middleware(app)
    assert requests.get(serve_app(middleware) + "/", headers=agent).content == b"ab"
    one_event(middleware, collector)
    assert closes == [1]


def test_a_file_wrapper_response_is_sent_whole_and_counted(
    make_middleware, serve_app, collector, agent
):
    content = b"0123456789" * 5000

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return environ["wsgi.file_wrapper"](io.BytesIO(content), 4096)

    middleware = make_middleware(app, max_body_bytes=100)
    url = serve_app(middleware, wsgiref=True)
    assert requests.get(url + "/file", headers=agent).content == content
    event = one_event(middleware, collector)
    assert event["response_size_bytes"] == len(content)
    # The server sends the file its own way; the event has its size, not its bytes.
    assert event["response_body"] == ""
    assert event["metadata"]["response_body_omitted"] == "file sent by the server"


def test_output_through_the_legacy_write_callable_is_counted(make_middleware, collector, agent):
    def app(environ, start_response):
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"via write;")
        return [b"via iterable"]

    middleware = make_middleware(app)
    response = Client(middleware).get("/", headers=agent)
    assert response.get_data() == b"via write;via iterable"
    response.close()
    event = one_event(middleware, collector)
    assert event["response_size_bytes"] == len(b"via write;via iterable")
    assert event["response_body"] == "via write;via iterable"


def test_a_head_request_is_answered_as_without_the_middleware(
    make_middleware, serve_app, collector, agent
):
    @Request.application
    def app(request):
        return Response(b"x" * 100, mimetype="text/plain")

    middleware = make_middleware(app)
    response = requests.head(serve_app(middleware) + "/h", headers=agent)
    assert response.status_code == 200
    assert response.headers["Content-Length"] == "100"
    assert response.content == b""
    event = one_event(middleware, collector)
    assert event["method"] == "HEAD"
    assert event["response_size_bytes"] == 0


def test_an_exception_from_the_app_propagates_unchanged_and_is_recorded(
    make_middleware, collector, agent
):
    raised = ValueError("bad input")

    def app(environ, start_response):
        raise raised

    middleware = make_middleware(app)
    with pytest.raises(ValueError) as info:
        Client(middleware).get("/fails", headers=agent)
    assert info.value is raised
    event = one_event(middleware, collector)
    assert event["error"] == "ValueError: bad input"
    assert event["status_code"] == 500


def test_an_exception_while_streaming_propagates_and_keeps_the_status(
    make_middleware, collector, agent
):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"partial"
        raise RuntimeError("stream broke")

    middleware = make_middleware(app)
    response = Client(middleware).get("/stream", headers=agent, buffered=False)
    with pytest.raises(RuntimeError, match="stream broke"):
        response.get_data()
    response.close()
    event = one_event(middleware, collector)
    assert event["error"] == "RuntimeError: stream broke"
    assert event["status_code"] == 200
    assert event["response_size_bytes"] == len(b"partial")


def test_requests_without_a_session_token_pass_through_and_are_skipped(make_middleware, collector):
    environ_seen = []

    def app(environ, start_response):
        environ_seen.append(dict(environ))
        start_response("200 OK", [])
        return [b"ok"]

    middleware = make_middleware(app)
    response = Client(middleware).get("/public")
    assert response.get_data() == b"ok"
    assert "otas_capture.exchange" not in environ_seen[0]
    assert middleware.flush(2)
    assert collector.events() == []
    stats = middleware.stats()
    assert stats["captured"] == 0
    assert stats["reasons"]["skipped"] == {"no_token": 1}


def test_a_request_is_not_held_up_while_brain_hangs(make_middleware, collector, agent, serve_app):
    collector.fail_next(1, status=None, delay=1.5)
    middleware = make_middleware(json_app())
    url = serve_app(middleware)
    assert requests.post(url + "/a", json={"n": 1}, headers=agent).status_code == 201
    time.sleep(0.2)  # the sender is now stuck in Brain's slow answer
    assert requests.post(url + "/b", json={"n": 2}, headers=agent).status_code == 201
    assert middleware.flush(timeout=0) is False  # still waiting on Brain...
    assert middleware.flush(timeout=5) is True  # ...which answers in the end
    assert sorted(e["path"] for e in collector.events()) == ["/a", "/b"]


# -- every field of the event -------------------------------------------------------------


def test_an_event_carries_every_contract_field_with_its_type(
    make_middleware, collector, agent, token
):
    middleware = make_middleware(json_app())
    response = Client(middleware).post("/api/items", json={"name": "x"}, headers=agent)
    response.close()
    event = one_event(middleware, collector)
    text_fields = (*TEXT_FIELDS, "project_id")
    for field in text_fields:
        assert isinstance(event[field], str), field
    for field in ("status_code", "request_size_bytes", "response_size_bytes"):
        assert isinstance(event[field], int) and event[field] >= 0, field
    assert isinstance(event["latency_ms"], float) and event["latency_ms"] > 0
    assert isinstance(event["custom_properties"], dict)
    assert isinstance(event["metadata"], dict)
    assert event["project_id"] == event["_project_id"]
    assert (event["path"], event["method"], event["status_code"]) == ("/api/items", "POST", 201)
    assert event["request_content_type"] == "application/json"
    assert event["response_content_type"] == "application/json"
    assert event["request_body"] == '{"name": "x"}'
    assert event["response_body"] == '{"ok": true}'
    assert event["error"] == ""
    assert event["custom_properties"] == {}
    assert token not in json.dumps(event)


def test_path_joins_script_name_and_path_info_as_utf8(make_middleware, collector, agent):
    def app(environ, start_response):
        start_response("200 OK", [])
        return [b""]

    middleware = make_middleware(app)
    client = Client(middleware)
    client.get(
        "/caf\u00e9/items", headers=agent, environ_overrides={"SCRIPT_NAME": "/api"}, buffered=True
    )
    assert one_event(middleware, collector)["path"] == "/api/caf\u00e9/items"


def test_sizes_are_the_true_byte_counts_not_the_capture(make_middleware, collector, agent):
    request_body = b"a" * 5000

    def app(environ, start_response):
        environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"b" * 3000, b"c" * 3000]

    middleware = make_middleware(app, max_body_bytes=100)
    Client(middleware).post(
        "/", data=request_body, headers=agent, content_type="text/plain", buffered=True
    )
    event = one_event(middleware, collector)
    assert event["request_size_bytes"] == 5000
    assert event["response_size_bytes"] == 6000
    assert event["request_body"] == "a" * 100
    assert event["response_body"] == "b" * 100
    assert event["metadata"]["request_body_truncated"] is True
    assert event["metadata"]["response_body_truncated"] is True


def test_sensitive_headers_are_redacted_both_ways(make_middleware, collector, agent):
    def app(environ, start_response):
        start_response(
            "200 OK", [("Set-Cookie", "session=abc"), ("X-Trace", "t1"), ("X-Internal", "i")]
        )
        return [b""]

    middleware = make_middleware(app, sensitive_headers="X-Internal,X-Tenant-Secret")
    headers = dict(agent)
    headers.update(
        {
            "Authorization": "Bearer secret-bearer",
            "Proxy-Authorization": "Basic cHJveHk=",
            "X-API-Key": "secret-api-key",
            SDK_KEY_HEADER: "otas_leaked_key",
            "X-Tenant-Secret": "secret-tenant",
            "X-Request-Id": "r-1",
        }
    )
    headers["Cookie"] = "sid=secret-cookie"
    Client(middleware, use_cookies=False).get("/", headers=headers, buffered=True)
    event = one_event(middleware, collector)
    sent = json.loads(event["request_headers"])
    for name in (
        "Authorization",
        "Proxy-Authorization",
        "Cookie",
        "X-Api-Key",
        "X-Otas-Sdk-Key",
        "X-Otas-Agent-Session-Token",
        "X-Tenant-Secret",
    ):
        assert sent[name] == "[REDACTED]", name
    assert sent["X-Request-Id"] == "r-1"
    received = json.loads(event["response_headers"])
    assert received == {"Set-Cookie": "[REDACTED]", "X-Trace": "t1", "X-Internal": "[REDACTED]"}
    assert "secret" not in json.dumps(event).replace("X-Tenant-Secret", "")


def test_sensitive_fields_are_masked_in_json_bodies_forms_and_query_strings(
    make_middleware, collector, agent
):
    @Request.application
    def app(request):
        request.get_data()
        return Response(
            json.dumps({"user": {"id": 1, "access_token": "tok-out"}, "items": [{"cvv": "123"}]}),
            mimetype="application/json",
        )

    middleware = make_middleware(app, sensitive_fields="pin")
    client = Client(middleware)
    body = {"login": "ann", "password": "pw-in", "profile": {"SSN": "1-2-3", "pin": "4321"}}
    client.post("/json?api_key=q-secret&page=2", json=body, headers=agent, buffered=True)
    client.post(
        "/form", data={"username": "ann", "password": "pw-form"}, headers=agent, buffered=True
    )
    assert middleware.flush(5)
    form_event, json_event = sorted(collector.events(), key=lambda e: e["path"])
    assert json.loads(json_event["request_body"]) == {
        "login": "ann",
        "password": "[REDACTED]",
        "profile": {"SSN": "[REDACTED]", "pin": "[REDACTED]"},
    }
    assert json.loads(json_event["response_body"]) == {
        "user": {"id": 1, "access_token": "[REDACTED]"},
        "items": [{"cvv": "[REDACTED]"}],
    }
    assert json.loads(json_event["query_params"]) == {"api_key": ["[REDACTED]"], "page": ["2"]}
    assert json.loads(form_event["post_data"]) == {"username": ["ann"], "password": ["[REDACTED]"]}
    assert "pw-form" not in form_event["request_body"]
    everything = json.dumps([json_event, form_event])
    for secret in ("pw-in", "1-2-3", "tok-out", "q-secret", "pw-form", "4321"):
        assert secret not in everything


def test_query_params_and_post_data_map_each_key_to_all_its_values(
    make_middleware, collector, agent
):
    @Request.application
    def app(request):
        _ = request.form
        return Response(b"ok", mimetype="text/plain")

    middleware = make_middleware(app)
    Client(middleware).post(
        "/search?tag=a&tag=b&empty=&q=caf%C3%A9",
        data="colour=red&colour=blue&note=",
        content_type="application/x-www-form-urlencoded",
        headers=agent,
        buffered=True,
    )
    event = one_event(middleware, collector)
    assert json.loads(event["query_params"]) == {
        "tag": ["a", "b"],
        "empty": [""],
        "q": ["caf\u00e9"],
    }
    assert json.loads(event["post_data"]) == {"colour": ["red", "blue"], "note": [""]}
    assert event["request_content_type"] == "application/x-www-form-urlencoded"


def test_without_query_or_form_they_are_empty_json_objects(make_middleware, collector, agent):
    middleware = make_middleware(json_app())
    Client(middleware).get("/", headers=agent, buffered=True)
    event = one_event(middleware, collector)
    assert (event["query_params"], event["post_data"], event["request_body"]) == ("{}", "{}", "")


def test_binary_bodies_are_counted_but_not_captured(make_middleware, collector, agent):
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4

    def app(environ, start_response):
        environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "image/png")])
        return [png]

    middleware = make_middleware(app)
    Client(middleware).post(
        "/avatar", data=png, content_type="application/octet-stream", headers=agent, buffered=True
    )
    event = one_event(middleware, collector)
    assert (event["request_body"], event["response_body"]) == ("", "")
    assert (event["request_size_bytes"], event["response_size_bytes"]) == (len(png), len(png))
    assert "request_body_omitted" in event["metadata"]
    assert "response_body_omitted" in event["metadata"]


def test_text_is_made_valid_for_brain_whatever_the_app_sends(make_middleware, collector, agent):
    def app(environ, start_response):
        environ["wsgi.input"].read()
        start_response("400 Bad Request", [("Content-Type", "text/plain; charset=latin-1")])
        return [b"caf\xe9 \x00 nul and \xff"]

    middleware = make_middleware(app)
    Client(middleware).post(
        "/t",
        data=b"bad \xff\xfe \x00 bytes",
        content_type="text/plain",
        headers=agent,
        buffered=True,
    )
    event = one_event(middleware, collector)  # the collector refuses NULs and bad UTF-8
    assert "\x00" not in event["request_body"] + event["response_body"]
    assert event["response_body"].startswith("caf\ufffd")


def test_long_content_types_are_cut_to_255_characters(make_middleware, collector, agent):
    long_type = "text/plain; " + "x=y; " * 100

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", long_type)])
        return [b"ok"]

    middleware = make_middleware(app)
    Client(middleware).post("/", data=b"hi", content_type=long_type, headers=agent, buffered=True)
    event = one_event(middleware, collector)
    assert event["request_content_type"] == long_type[:255]
    assert event["response_content_type"] == long_type[:255]


def test_error_is_the_status_line_for_an_error_status_without_exception(
    make_middleware, collector, agent
):
    def app(environ, start_response):
        start_response("404 NOT FOUND", [("Content-Type", "application/json")])
        return [b'{"error": "no such item"}']

    middleware = make_middleware(app)
    Client(middleware).get("/items/9", headers=agent, buffered=True)
    event = one_event(middleware, collector)
    assert (event["status_code"], event["error"]) == (404, "404 NOT FOUND")


def test_latency_covers_a_streamed_response_until_it_is_closed(
    make_middleware, collector, agent, serve_app
):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/x-ndjson")])
        for i in range(3):
            time.sleep(0.1)
            yield b'{"row": %d}\n' % i

    middleware = make_middleware(app)
    response = requests.get(serve_app(middleware) + "/export", headers=agent)
    assert response.content.count(b"\n") == 3
    event = one_event(middleware, collector)
    assert event["latency_ms"] >= 300
    assert event["metadata"]["time_to_first_byte_ms"] < event["latency_ms"]
    assert event["response_size_bytes"] == len(response.content)


def test_annotate_adds_custom_properties(make_middleware, collector, agent):
    def app(environ, start_response):
        annotate(environ, tenant="acme", plan="pro")
        annotate(environ, plan="enterprise", seats=3)
        start_response("200 OK", [])
        return [b""]

    middleware = make_middleware(app)
    Client(middleware).get("/", headers=agent, buffered=True)
    event = one_event(middleware, collector)
    assert event["custom_properties"] == {"tenant": "acme", "plan": "enterprise", "seats": 3}


def test_annotate_on_an_uncaptured_request_changes_nothing_and_logs_nothing(
    make_middleware, collector, caplog
):
    def app(environ, start_response):
        annotate(environ, tenant="acme")
        start_response("200 OK", [])
        return [b"ok"]

    middleware = make_middleware(app)
    with caplog.at_level(logging.DEBUG, logger=LOGGER_NAME):
        response = Client(middleware).get("/")  # no session token: not captured
    assert response.get_data() == b"ok"
    assert caplog.records == []
    assert middleware.stats()["captured"] == 0


def test_metadata_holds_the_sdk_and_the_time_the_request_started(make_middleware, collector, agent):
    from otas_capture import __version__

    middleware = make_middleware(json_app())
    before = datetime.now(timezone.utc)
    Client(middleware).get("/", headers=agent, buffered=True)
    event = one_event(middleware, collector)
    metadata = event["metadata"]
    assert (metadata["sdk"], metadata["sdk_version"]) == ("otas-capture", __version__)
    started = datetime.fromisoformat(metadata["started_at"])
    assert started.tzinfo is not None and started.utcoffset().total_seconds() == 0
    assert before <= started <= datetime.now(timezone.utc)


# -- which requests are shipped ------------------------------------------------------------


@pytest.mark.parametrize(
    "make_token, reason",
    [
        (lambda c: c.issue_token(expires_in=-60), "token_expired"),
        (lambda c: "not-a-jwt", "token_malformed"),
        (lambda c: c.issue_token(agent_id=""), "token_missing_claims"),
    ],
    ids=["expired", "malformed", "missing_claims"],
)
def test_a_token_brain_would_refuse_is_not_shipped_and_is_counted(
    make_token, reason, make_middleware, collector
):
    middleware = make_middleware(json_app())
    Client(middleware).get("/", headers={TOKEN_HEADER: make_token(collector)}, buffered=True)
    assert middleware.flush(5)
    assert collector.calls == []
    stats = middleware.stats()
    assert stats["skipped"] == 1 and stats["reasons"]["skipped"] == {reason: 1}


def test_skip_paths_and_sampling_leave_requests_uncaptured(make_middleware, collector, agent):
    middleware = make_middleware(json_app(), skip_paths="/health,/static/")
    client = Client(middleware)
    for path in ("/health", "/static/app.js", "/api"):
        client.get(path, headers=agent, buffered=True)
    sampled = make_middleware(json_app(), sample_rate=0)
    Client(sampled).get("/api", headers=agent, buffered=True)
    assert middleware.flush(5) and sampled.flush(5)
    assert [e["path"] for e in collector.events()] == ["/api"]
    assert middleware.stats()["reasons"]["skipped"] == {"skip_path": 2}
    assert sampled.stats()["reasons"]["skipped"] == {"sampled_out": 1}


def test_without_an_sdk_key_nothing_is_captured(monkeypatch, collector, agent):
    monkeypatch.delenv("OTAS_SDK_KEY", raising=False)
    middleware = OtasMiddleware(json_app())
    assert Client(middleware).get("/", headers=agent).status_code == 201
    assert middleware.flush() is True
    assert middleware.stats()["captured"] == 0


def test_json_sent_as_plain_text_is_masked_too(make_middleware, collector, agent):
    @Request.application
    def app(request):
        request.get_data()
        return Response(b"ok", mimetype="text/plain")

    middleware = make_middleware(app)
    body = b'{"user": "bob", "password": "hunter2"}'
    Client(middleware).post("/", data=body, content_type="text/plain", headers=agent, buffered=True)
    event = one_event(middleware, collector)
    assert "hunter2" not in event["request_body"]
    assert json.loads(event["request_body"])["user"] == "bob"


LAZY = """
import sys
import otas_capture
print(" ".join(sorted(name for name in sys.modules if name.startswith("otas_capture."))))
otas_capture.OtasMiddleware(
    lambda environ, start_response: [], sdk_key="otas_lazy_testkey", brain_url="http://127.0.0.1:9"
)
print("otas_capture.delivery.sender" in sys.modules)
"""


def test_importing_the_package_leaves_the_senders_modules_for_the_first_middleware():
    # They are most of the import time; code that only imports the package (or a
    # middleware that ships nothing) never needs them.
    out = subprocess.run(
        [sys.executable, "-c", LAZY], capture_output=True, text=True, check=True
    ).stdout.split("\n")
    loaded = set(out[0].split())
    assert not loaded & {
        "otas_capture.delivery.sender",
        "otas_capture.otas.client",
        "otas_capture.event.build",
        "otas_capture.event.masking.rule",  # the package itself only for its list of names
        "otas_capture.event.masking.text",
        "otas_capture.otas.wire",
    }
    assert out[1] == "True"


def test_importing_the_package_leaves_random_and_signal_for_when_they_are_used():
    # random only samples (sample_rate < 1); signal only installs the SIGTERM handler.
    script = (
        "import sys; before = set(sys.modules); import otas_capture; "
        "print(' '.join(set(sys.modules) - before))"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert not {"random", "signal"} & set(out.stdout.split())


# -- close() -------------------------------------------------------------------------------


def test_close_ships_a_response_still_streaming_with_what_was_sent(
    make_middleware, collector, agent
):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return iter([b"first ", b"second"])

    middleware = make_middleware(app)
    environ = EnvironBuilder(path="/stream", headers=agent).get_environ()
    response = middleware(environ, lambda *args: None)
    assert next(response) == b"first "
    middleware.close(2)
    (event,) = collector.events()
    assert event["response_body"] == "first "
    assert event["metadata"]["response_unfinished"] is True
    assert middleware.stats()["unclosed"] == 1
    assert list(response) == [b"second"]  # the server goes on as if nothing happened
    response.close()
    assert middleware.stats()["captured"] == 1
