"""The local collector answers like the OTAS servers described in the contract.

Every test talks to one real CollectorServer over loopback HTTP with ``requests``.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
from werkzeug.wrappers import Response

from otas_capture.collector import (
    AUTHENTICATE_PATH,
    DEMO_AGENT_KEY,
    DEMO_PROJECT_ID,
    DEMO_SDK_KEY,
    DEMO_SECRET,
    MAX_REQUEST_BYTES,
    REQUIRED_FIELDS,
    SDK_LOG_PATH,
    SESSION_CREATE_PATH,
    Collector,
    CollectorServer,
    main,
    serve,
)
from otas_capture.collector.app import SERVICE_UNAVAILABLE
from otas_capture.contract import (
    AGENT_KEY_HEADER,
    EVENT_CAPTURE_FAILED,
    EVENT_CAPTURED,
    INVALID_JSON,
    INVALID_SDK_KEY,
    INVALID_SESSION_TOKEN,
    MISSING_REQUIRED_FIELDS,
    MISSING_SDK_KEY,
    MISSING_SESSION_TOKEN,
    SDK_KEY_HEADER,
    SESSION_TOKEN_HEADER,
)

from .conftest import default_sigint

# PyJWT >= 2.10 warns that the 27-byte demo secret is shorter than RFC 7518 recommends;
# the value is fixed by the project's public interface, so the warning is noise here.
pytestmark = pytest.mark.filterwarnings("ignore:The HMAC key is:UserWarning")

OTHER_PROJECT_ID = "11111111-1111-4111-8111-111111111111"


@pytest.fixture(scope="module")
def server():
    with CollectorServer() as running:
        yield running


@pytest.fixture(autouse=True)
def fresh(server):
    server.collector.reset()
    yield
    server.collector.reset()


@pytest.fixture
def collector(server) -> Collector:
    return server.collector


def event(**overrides: Any) -> dict[str, Any]:
    body = {
        "project_id": OTHER_PROJECT_ID,  # the collector must store the key's project instead
        "path": "/api/v1/users/",
        "method": "GET",
        "status_code": 200,
        "latency_ms": 12.5,
        "request_size_bytes": 0,
        "response_size_bytes": 17,
        "request_headers": '{"accept": "*/*"}',
        "response_content_type": "application/json",
        "custom_properties": {"team": "a"},
        "error": "",
    }
    body.update(overrides)
    return body


def post_log(
    server,
    body: Any = None,
    *,
    data: Any = None,
    key: str | None = DEMO_SDK_KEY,
    token: str | None = "issue",
    path: str = SDK_LOG_PATH,
    timeout: float = 5,
    **kwargs: Any,
):
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers[SDK_KEY_HEADER] = key
    if token == "issue":
        token = server.collector.issue_token()
    if token is not None:
        headers[SESSION_TOKEN_HEADER] = token
    if data is None:
        data = json.dumps(event() if body is None else body)
    return requests.post(server.url + path, data=data, headers=headers, timeout=timeout, **kwargs)


def assert_failure(response, status: int, description: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    assert response.json()["status"] == 0
    assert response.json()["status_description"] == description


def assert_html(response, status: int) -> None:
    assert response.status_code == status
    assert response.headers["Content-Type"].startswith("text/html")
    with pytest.raises(ValueError):
        response.json()


# -- the log endpoint: success ---------------------------------------------------------


def test_valid_event_is_201_event_captured_and_stored_under_the_keys_project(server, collector):
    token = collector.issue_token(agent_id="agent-1", agent_session_id="session-1")
    response = post_log(server, token=token)
    assert response.status_code == 201
    assert response.json() == {"status": 1, "status_description": EVENT_CAPTURED, "response": {}}
    [stored] = collector.events()
    assert stored["_project_id"] == DEMO_PROJECT_ID
    assert stored["project_id"] == OTHER_PROJECT_ID
    assert (stored["_agent_id"], stored["_agent_session_id"]) == ("agent-1", "session-1")
    assert datetime.fromisoformat(stored["_received_at"]).utcoffset().total_seconds() == 0
    assert stored["custom_properties"] == {"team": "a"}
    assert collector.calls == [(201, EVENT_CAPTURED)]


def test_non_string_text_fields_are_stored_as_python_str(server, collector):
    body = event(
        request_headers={"a": "b"},
        error=False,
        response_body=[1, None],
        query_params=3.5,
        method=123,
        request_body=None,
    )
    assert post_log(server, body).status_code == 201
    [stored] = collector.events()
    assert stored["request_headers"] == "{'a': 'b'}"
    assert stored["error"] == "False"
    assert stored["response_body"] == "[1, None]"
    assert stored["query_params"] == "3.5"
    assert stored["method"] == "123"
    assert stored["request_body"] is None


def test_null_optional_fields_are_accepted(server, collector):
    body = event(
        request_size_bytes=None,
        response_size_bytes=None,
        custom_properties=None,
        metadata=None,
        error=None,
        response_content_type=None,
    )
    assert post_log(server, body).status_code == 201


def test_body_of_exactly_max_request_bytes_is_accepted(server, collector):
    data = json.dumps(event()).encode()
    data += b" " * (MAX_REQUEST_BYTES - len(data))
    assert post_log(server, data=data).status_code == 201


def test_list_body_with_all_fields_missing_and_empty_object_are_400(server):
    for body in ([], [event()], {}):
        response = post_log(server, body)
        assert_failure(response, 400, MISSING_REQUIRED_FIELDS)
        assert response.json()["missing_fields"] == list(REQUIRED_FIELDS)


def test_missing_fields_lists_only_the_absent_ones(server):
    body = event()
    del body["method"], body["latency_ms"]
    response = post_log(server, body)
    assert_failure(response, 400, MISSING_REQUIRED_FIELDS)
    assert response.json()["missing_fields"] == ["method", "latency_ms"]


# -- the log endpoint: each check, in order ----------------------------------------------


def test_log_without_sdk_key_is_401_missing_sdk_key(server):
    assert_failure(post_log(server, key=None, token=None, data=b"\xff"), 401, MISSING_SDK_KEY)


def test_log_with_unknown_sdk_key_is_401_invalid_sdk_key(server):
    response = post_log(server, key="otas_demo_wrong", token=None, data=b"\xff")
    assert_failure(response, 401, INVALID_SDK_KEY)


def test_log_while_uasam_is_down_is_401_invalid_sdk_key_for_every_key(server, collector):
    collector.uasam_up = False
    assert_failure(post_log(server), 401, INVALID_SDK_KEY)
    collector.uasam_up = True
    assert post_log(server).status_code == 201


def test_added_and_removed_sdk_keys_take_effect(server, collector):
    collector.add_sdk_key("otas_extra_key", OTHER_PROJECT_ID)
    assert post_log(server, key="otas_extra_key").status_code == 201
    assert collector.events()[0]["_project_id"] == OTHER_PROJECT_ID
    collector.remove_sdk_key("otas_extra_key")
    assert_failure(post_log(server, key="otas_extra_key"), 401, INVALID_SDK_KEY)


def test_log_without_session_token_is_401_missing_agent_session_token(server):
    response = post_log(server, token=None, data=b"\xff")
    assert_failure(response, 401, MISSING_SESSION_TOKEN)


@pytest.mark.parametrize(
    "make_token",
    [
        lambda c: "not-a-jwt",
        lambda c: c.issue_token(expires_in=-10),
        lambda c: jwt.encode(
            {"agent_session_id": "s", "agent_id": "a"}, "another-secret-of-32-bytes-long!"
        ),
        lambda c: jwt.encode({"agent_id": "a", "exp": time.time() + 60}, DEMO_SECRET),
        lambda c: jwt.encode({"agent_session_id": "s", "exp": time.time() + 60}, DEMO_SECRET),
        lambda c: c.issue_token(agent_id=None),
        lambda c: jwt.encode({"agent_session_id": "s", "agent_id": "a"}, None, algorithm="none"),
    ],
    ids=[
        "garbage",
        "expired",
        "wrong-secret",
        "no-session-id",
        "no-agent-id",
        "null-agent-id",
        "alg-none",
    ],
)
def test_bad_session_token_is_401_invalid_or_expired_token(server, collector, make_token):
    response = post_log(server, token=make_token(collector), data=b"\xff")
    assert_failure(response, 401, INVALID_SESSION_TOKEN)


def test_body_over_max_request_bytes_is_html_400(server, collector):
    assert_html(post_log(server, data=b" " * (MAX_REQUEST_BYTES + 1)), 400)
    assert collector.calls == [(400, "html")]


def test_chunked_body_over_max_request_bytes_is_html_400(server):
    def chunks():
        for _ in range(3):
            yield b" " * (MAX_REQUEST_BYTES // 2)

    assert_html(post_log(server, data=chunks()), 400)


def test_chunked_body_within_the_limit_is_accepted(server):
    assert post_log(server, data=iter([json.dumps(event()).encode()])).status_code == 201


@pytest.mark.parametrize(
    "body",
    [
        b"zz\r\nabc\r\n0\r\n\r\n",
        b"-5\r\nabc\r\n0\r\n\r\n",
        b"0x3\r\nabc\r\n0\r\n\r\n",
        b"3 \r\nabc\r\n0\r\n\r\n",
        b"3\r\nabcXY0\r\n\r\n",
    ],
    ids=["not-hex", "negative", "0x-prefix", "trailing-space", "data-not-terminated"],
)
def test_a_malformed_chunked_body_is_answered_400_not_a_traceback(server, collector, body, caplog):
    head = (
        f"POST {SDK_LOG_PATH} HTTP/1.1\r\nHost: collector\r\nTransfer-Encoding: chunked\r\n"
        f"{SDK_KEY_HEADER}: {DEMO_SDK_KEY}\r\n"
        f"{SESSION_TOKEN_HEADER}: {collector.issue_token()}\r\n\r\n"
    )
    with socket.create_connection((server.host, server.port), timeout=5) as raw:
        raw.sendall(head.encode("ascii") + body)
        answer = b""
        while chunk := raw.recv(65536):  # the server closes the connection after it
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:100]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert collector.events() == []
    assert post_log(server).status_code == 201  # and it goes on serving


def test_body_that_is_not_utf8_is_html_500(server):
    latin1 = json.dumps(event(path="/caf\u00e9"), ensure_ascii=False).encode("latin-1")
    assert b"\xe9" in latin1
    assert_html(post_log(server, data=latin1), 500)


@pytest.mark.parametrize("data", [b"", b"{", b"not json", b"\xef\xbb\xbf{}"])
def test_body_that_is_not_json_is_400_invalid_json(server, data):
    assert_failure(post_log(server, data=data), 400, INVALID_JSON)


@pytest.mark.parametrize("data", [b"null", b"3", b'"text"', b"true"])
def test_scalar_json_body_is_html_500(server, data):
    assert_html(post_log(server, data=data), 500)


@pytest.mark.parametrize(
    "overrides",
    [
        {"path": "/\ud800"},
        {"custom_properties": {"k": ["ok", "lone \udfff"]}},
        {"response_body": "a\x00b"},
        {"metadata": {"nul\x00key": 1}},
        {"path": None},
        {"method": None},
        {"method": "X" * 21},
        {"status_code": "200"},
        {"status_code": True},
        {"status_code": 200.0},
        {"status_code": -1},
        {"status_code": None},
        {"latency_ms": None},
        {"latency_ms": float("nan")},
        {"latency_ms": float("inf")},
        {"latency_ms": "12"},
        {"request_size_bytes": -1},
        {"response_size_bytes": 1.5},
        {"response_size_bytes": "17"},
        {"request_content_type": "a" * 256},
        {"custom_properties": "team=a"},
        {"custom_properties": [1]},
        {"metadata": 5},
        {"metadata": {"x": float("nan")}},
    ],
    ids=lambda o: repr(o)[:40],
)
def test_values_the_database_refuses_are_500_event_capture_failed(server, collector, overrides):
    assert_failure(post_log(server, event(**overrides)), 500, EVENT_CAPTURE_FAILED)
    assert collector.events() == []


def test_limits_themselves_are_accepted(server):
    body = event(method="X" * 20, request_content_type="a" * 255, status_code=0, latency_ms=0)
    assert post_log(server, body).status_code == 201


def test_log_path_without_trailing_slash_is_html_500(server, collector):
    assert_html(post_log(server, path=SDK_LOG_PATH.rstrip("/")), 500)
    assert collector.events() == []


def test_wrong_method_is_405_and_unknown_path_is_404(server):
    assert requests.get(server.url + SDK_LOG_PATH, timeout=5).status_code == 405
    assert requests.get(server.url + AUTHENTICATE_PATH, timeout=5).status_code == 405
    assert requests.post(server.url + "/api/v1/backend/log/", timeout=5).status_code == 404


# -- fault injection -------------------------------------------------------------------


def test_fail_next_answers_before_any_check_then_processing_resumes(server, collector):
    collector.fail_next(status=503, retry_after="7")
    response = post_log(server, key=None, token=None, data=b"\xff")
    assert_failure(response, 503, SERVICE_UNAVAILABLE)
    assert response.headers["Retry-After"] == "7"
    assert post_log(server).status_code == 201
    assert collector.calls == [(503, SERVICE_UNAVAILABLE), (201, EVENT_CAPTURED)]


def test_fail_next_defaults_to_500_event_capture_failed_without_retry_after(server, collector):
    collector.fail_next()
    response = post_log(server)
    assert_failure(response, 500, EVENT_CAPTURE_FAILED)
    assert "Retry-After" not in response.headers


def test_fail_next_faults_queue_in_order_with_custom_bodies(server, collector):
    collector.fail_next(2, status=429)
    collector.fail_next(status=502, body={"status": 0, "status_description": "upstream"})
    results = [post_log(server).status_code for _ in range(4)]
    assert results == [429, 429, 502, 201]
    assert collector.calls[:3] == [(429, "too_many_requests")] * 2 + [(502, "upstream")]
    assert len(collector.events()) == 1


def test_fail_next_delay_without_status_sleeps_then_processes_normally(server, collector):
    collector.fail_next(status=None, delay=0.3)
    started = time.monotonic()
    assert post_log(server).status_code == 201
    assert time.monotonic() - started >= 0.3


def test_fail_next_delay_lets_the_client_time_out(server, collector):
    collector.fail_next(status=504, delay=0.5)
    with pytest.raises(requests.Timeout):
        requests.post(server.url + SDK_LOG_PATH, data=b"{}", timeout=0.1)


def test_stop_does_not_hang_while_a_handler_sleeps_in_a_fault_delay():
    running = serve()
    running.collector.fail_next(delay=5)
    try:
        requests.post(running.url + SDK_LOG_PATH, data=b"{}", timeout=0.2)
    except requests.Timeout:
        pass
    started = time.monotonic()
    running.stop()
    assert time.monotonic() - started < 1
    with pytest.raises(requests.ConnectionError):
        requests.post(running.url + SDK_LOG_PATH, data=b"{}", timeout=1)


def test_fail_next_rejects_negative_count_or_delay(collector):
    with pytest.raises(ValueError):
        collector.fail_next(-1)
    with pytest.raises(ValueError):
        collector.fail_next(delay=-1)


# -- UASAM endpoints -------------------------------------------------------------------


def authenticate(server, key: str | None):
    headers = {} if key is None else {SDK_KEY_HEADER: key}
    return requests.post(server.url + AUTHENTICATE_PATH, headers=headers, timeout=5)


def test_authenticate_returns_the_project_of_the_key(server):
    response = authenticate(server, DEMO_SDK_KEY)
    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["status_description"]) == (1, "authenticated")
    assert body["response"]["project"]["id"] == DEMO_PROJECT_ID
    assert {"name", "description"} <= set(body["response"]["project"])


@pytest.mark.parametrize(
    "key, status, error",
    [
        (None, 401, "SDK Key missing"),
        ("otas_demo", 403, "Invalid Key Format"),
        ("otas_a_b_c", 403, "Invalid SDK Key"),  # underscores in the parts are allowed
        ("sk_demo_localcollectorkey", 403, "Invalid SDK Key"),  # UASAM checks only "_"s
        ("otas_demo_wrongsecret", 403, "Invalid SDK Key"),
    ],
)
def test_authenticate_rejects_bad_keys_like_uasam(server, key, status, error):
    response = authenticate(server, key)
    assert response.status_code == status
    assert response.json() == {"error": error}


def test_authenticate_is_503_while_uasam_is_down(server, collector):
    collector.uasam_up = False
    assert authenticate(server, DEMO_SDK_KEY).status_code == 503


def create_session(server, key: str | None = DEMO_AGENT_KEY, data: bytes = b'{"meta": {"a": 1}}'):
    headers = {} if key is None else {AGENT_KEY_HEADER: key}
    return requests.post(server.url + SESSION_CREATE_PATH, headers=headers, data=data, timeout=5)


def test_session_create_returns_a_jwt_the_log_endpoint_accepts(server, collector):
    response = create_session(server)
    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["status_description"]) == (1, "agent_session_created")
    assert body["response"]["Header_value"] == SESSION_TOKEN_HEADER
    token = body["response"]["jwt_token"]
    claims = jwt.decode(token, DEMO_SECRET, algorithms=["HS256"])
    assert {"agent_session_id", "agent_id", "iat", "exp"} <= set(claims)
    assert 29 * 86400 < claims["exp"] - claims["iat"] <= 30 * 86400
    assert post_log(server, token=token).status_code == 201
    assert collector.events()[0]["_agent_session_id"] == claims["agent_session_id"]


def test_session_create_rejects_missing_or_unknown_agent_key_and_bad_json(server):
    assert_failure(create_session(server, key=None), 401, "missing_agent_key")
    assert_failure(create_session(server, key="otas_agent_nope"), 401, "invalid_agent_key")
    assert_failure(create_session(server, data=b"{meta"), 400, INVALID_JSON)


def test_issue_token_claims_and_extra_claims(collector):
    token = collector.issue_token(agent_id="a", agent_session_id="s", expires_in=60, role="x")
    claims = jwt.decode(token, DEMO_SECRET, algorithms=["HS256"])
    assert (claims["agent_id"], claims["agent_session_id"], claims["role"]) == ("a", "s", "x")
    assert claims["exp"] - claims["iat"] == 60
    fresh_ids = {
        jwt.decode(collector.issue_token(), DEMO_SECRET, algorithms=["HS256"])["agent_session_id"]
        for _ in range(2)
    }
    assert len(fresh_ids) == 2


# -- inspection helpers ----------------------------------------------------------------


def test_collector_events_endpoint_lists_and_clears(server, collector):
    post_log(server)
    listed = requests.get(server.url + "/collector/events", timeout=5)
    assert listed.status_code == 200
    assert listed.json() == collector.events()
    assert requests.delete(server.url + "/collector/events", timeout=5).status_code == 204
    assert collector.events() == [] and collector.calls == []


def test_extra_routes_and_mounted_apps_answer_beside_the_otas_endpoints():
    collector = Collector()
    collector.add_route("/collector/ping", "GET", lambda request: Response("pong"))

    def viewer(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [f"{environ['SCRIPT_NAME']}|{environ['PATH_INFO']}".encode()]

    collector.mount("/", viewer)
    collector.mount("/ui/", viewer)
    with CollectorServer(collector) as running:

        def get(path):
            return requests.get(running.url + path, timeout=5)

        assert get("/collector/ping").text == "pong"
        assert get("/ui/sessions/1").text == "/ui|/sessions/1"  # the longest prefix wins
        assert get("/").text == "|/"
        assert get(SDK_LOG_PATH).status_code == 405  # routes come before mounts
        assert requests.post(running.url + "/collector/ping", timeout=5).status_code == 405


def test_events_are_copies(server, collector):
    post_log(server)
    collector.events()[0]["custom_properties"]["team"] = "changed"
    assert collector.events()[0]["custom_properties"] == {"team": "a"}


def test_wait_for_events_returns_what_there_is_on_timeout(server, collector):
    post_log(server)
    started = time.monotonic()
    assert len(collector.wait_for_events(2, timeout=0.2)) == 1
    assert time.monotonic() - started >= 0.2
    assert len(collector.wait_for_events(1, timeout=0)) == 1


def test_clear_forgets_pending_faults(server, collector):
    collector.fail_next(3)
    collector.clear()
    assert post_log(server).status_code == 201


# -- command line ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["--sdk-key", "not-a-key"],
        ["--sdk-key", "otas_onlyprefix"],
        ["--project-id", "project-1"],
        ["--port", "http"],
        ["--port", "70000"],
        ["--secret", ""],
    ],
)
def test_cli_rejects_bad_arguments_with_a_usage_error(argv, capsys):
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert "error: argument" in capsys.readouterr().err


@contextmanager
def cli(*args: str) -> Iterator[tuple[str, str, str]]:
    """Run ``python -m otas_capture.collector ARGS``; yield (banner, URL, session token)
    once it serves, then stop it with Ctrl-C and check that it exits cleanly."""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    process = subprocess.Popen(
        [sys.executable, "-m", "otas_capture.collector", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
        preexec_fn=default_sigint,
    )
    try:
        lines = []
        while not lines or not lines[-1].startswith("Press Ctrl-C"):
            line = process.stdout.readline()
            assert line, "collector exited before printing its banner"
            lines.append(line.rstrip("\n"))
        url = next(x.split("=", 1)[1] for x in lines if "OTAS_BRAIN_URL=" in x)
        token = next(x.split(":", 1)[1].strip() for x in lines if "session token:" in x)
        yield "\n".join(lines), url, token
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=5) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()


def test_cli_prints_a_banner_and_serves_until_interrupted():
    key = "otas_cli_secretpart"
    with cli("--sdk-key", key, "--project-id", OTHER_PROJECT_ID.upper()) as (banner, url, token):
        assert f"OTAS_SDK_KEY={key}" in banner and "OTAS_UASAM_URL=" in banner
        assert OTHER_PROJECT_ID in banner and DEMO_AGENT_KEY in banner
        assert "kept in memory" in banner
        response = requests.post(
            url + SDK_LOG_PATH,
            data=json.dumps(event()),
            timeout=5,
            headers={SDK_KEY_HEADER: key, SESSION_TOKEN_HEADER: token},
        )
        assert response.status_code == 201


def test_cli_with_a_database_keeps_events_across_restarts(tmp_path):
    db = str(tmp_path / "events.db")
    with cli("--db", db) as (banner, url, token):
        assert f"kept in {db} (0 so far)" in banner
        headers = {SDK_KEY_HEADER: DEMO_SDK_KEY, SESSION_TOKEN_HEADER: token}
        response = requests.post(
            url + SDK_LOG_PATH, data=json.dumps(event()), headers=headers, timeout=5
        )
        assert response.status_code == 201
    with cli("--db", db) as (banner, url, token):
        assert f"kept in {db} (1 so far)" in banner
        [kept] = requests.get(url + "/collector/events", timeout=5).json()
        assert kept["path"] == event()["path"]


def test_cli_reports_a_database_it_cannot_open(tmp_path, capsys):
    assert main(["--port", "0", "--db", str(tmp_path / "missing-dir" / "events.db")]) == 1
    assert "cannot open the database" in capsys.readouterr().err
