"""FastAPI behind OtasASGIMiddleware in real ASGI server processes.

tests/asgi_apps.py's ``wrapped`` app (``app.add_middleware(OtasASGIMiddleware)``, settings
from the environment) runs under uvicorn, hypercorn and gunicorn with uvicorn workers,
is called over loopback as an agent would call it, and ships to the test collector.
The servers are stopped with SIGTERM, as a container runtime stops them: they handle it
themselves and end the app with the lifespan shutdown, where the middleware flushes.
"""

from __future__ import annotations

import json
import signal
import socket
from typing import Any

import httpx
import pytest
import requests

from otas_capture.contract import (
    JSON_OBJECT_FIELDS,
    REQUIRED_FIELDS,
    SESSION_TOKEN_HEADER,
    SIZE_FIELDS,
    TEXT_FIELDS,
)

from .asgi_servers import COMMANDS, ROOT, ServerProcess

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="POSIX signals")

CONTRACT_FIELDS = {*REQUIRED_FIELDS, *TEXT_FIELDS, *SIZE_FIELDS, *JSON_OBJECT_FIELDS}
# Ended as each server ends on SIGTERM by itself, without the middleware: uvicorn raises
# the signal again once it has shut down, hypercorn and gunicorn exit normally.
EXIT_ON_SIGTERM = {
    "uvicorn-h11": -signal.SIGTERM,
    "uvicorn-httptools": -signal.SIGTERM,
    "hypercorn": 0,
    "gunicorn-uvicorn": 0,
}


def as_parsed(fields: dict[str, Any]) -> dict[str, Any]:
    """Fields with JSON text read as JSON: masking re-encodes a body, and orjson (the
    fast extra) spaces it otherwise than the standard library."""
    out = {}
    for name, value in fields.items():
        try:
            out[name] = json.loads(value) if isinstance(value, str) and value[:1] in "{[" else value
        except ValueError:
            out[name] = value
    return out


def by_path(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {event["path"]: event for event in events}


def agent_calls(url: str, token: str) -> list[requests.Response]:
    """An agent's calls: JSON, a form, a multipart upload, a streamed answer, a failure."""
    headers = {SESSION_TOKEN_HEADER: token}
    with requests.Session() as session:
        return [
            session.post(
                url + "/items/5?verbose=1",
                json={"name": "lamp", "password": "hunter2"},
                headers=headers,
            ),
            session.post(
                url + "/login", data={"username": "agent", "password": "s3cret"}, headers=headers
            ),
            session.post(
                url + "/upload",
                files={"file": ("notes.txt", b"hello")},
                data={"note": "x"},
                headers=headers,
            ),
            session.get(url + "/export", headers=headers),
            session.get(url + "/boom", headers=headers),
        ]


def test_fastapi_under_uvicorn_ships_contract_exact_events(collector_server, collector, token):
    server = ServerProcess("uvicorn-h11", "tests.asgi_apps:wrapped", collector_server.url)
    try:
        responses = agent_calls(server.url, token)
    finally:
        server.stop()
    assert [r.status_code for r in responses] == [200, 200, 200, 200, 500]
    events = by_path(collector.events())
    assert sorted(events) == ["/boom", "/export", "/items/5", "/login", "/upload"]
    for event in events.values():
        assert set(event) - {k for k in event if k.startswith("_")} == CONTRACT_FIELDS
        assert event["project_id"] == event["_project_id"]
        assert isinstance(event["latency_ms"], float) and event["latency_ms"] > 0
        assert token not in json.dumps(event) and "hunter2" not in json.dumps(event)
        headers = json.loads(event["request_headers"])
        assert headers["X-Otas-Agent-Session-Token"] == "[REDACTED]"
        assert headers["Host"] == server.url.split("//")[1]
        assert event["metadata"]["sdk"] == "otas-capture"

    def fields(path: str, *names: str) -> dict[str, Any]:
        return as_parsed({name: events[path][name] for name in names})

    common = ("method", "status_code", "request_size_bytes", "response_size_bytes")
    bodies = ("request_body", "response_body", "query_params", "post_data", "error")
    types = ("request_content_type", "response_content_type")
    assert fields("/items/5", *common, *bodies, *types) == as_parsed(
        {
            "method": "POST",
            "status_code": 200,
            "request_size_bytes": 39,
            "response_size_bytes": len(responses[0].content),
            "request_body": '{"name": "lamp", "password": "[REDACTED]"}',
            "response_body": (
                '{"id": 5, "api_key": "[REDACTED]", "name": "lamp", "password": "[REDACTED]"}'
            ),
            "query_params": '{"verbose": ["1"]}',
            "post_data": "{}",
            "error": "",
            "request_content_type": "application/json",
            "response_content_type": "application/json",
        }
    )
    assert fields("/login", *common, *bodies) == as_parsed(
        {
            "method": "POST",
            "status_code": 200,
            "request_size_bytes": len("username=agent&password=s3cret"),
            "response_size_bytes": len(responses[1].content),
            "request_body": "username=agent&password=[REDACTED]",
            "response_body": responses[1].text,
            "query_params": "{}",
            "post_data": '{"username": ["agent"], "password": ["[REDACTED]"]}',
            "error": "",
        }
    )
    upload = events["/upload"]
    assert upload["request_size_bytes"] == len(responses[2].request.body)  # type: ignore[arg-type]
    assert upload["request_body"] == ""  # multipart is counted, not kept, as on WSGI
    assert upload["metadata"]["request_body_omitted"] == "binary or compressed content"
    assert json.loads(upload["response_body"]) == {"name": "notes.txt", "bytes": 5, "note": "x"}
    export = events["/export"]
    assert export["response_body"] == responses[3].text == '{"n": 0}\n{"n": 1}\n{"n": 2}\n'
    assert export["response_size_bytes"] == 27
    assert export["response_content_type"] == "application/x-ndjson"
    assert 0 < export["metadata"]["time_to_first_byte_ms"] <= export["latency_ms"]
    boom = events["/boom"]
    # Starlette's outermost layer answers the 500 after the exception left the app.
    assert fields("/boom", "status_code", "error", "response_body") == {
        "status_code": 500,
        "error": "RuntimeError: the tool broke",
        "response_body": "",
    }
    assert {path: e["metadata"]["route"] for path, e in events.items()} == {
        "/items/5": "/items/{item_id}",
        "/login": "/login",
        "/upload": "/upload",
        "/export": "/export",
        "/boom": "/boom",
    }
    assert boom["metadata"]["endpoint"] == "boom"


BURSTS = [(kind, "wrapped") for kind in sorted(COMMANDS)] + [
    ("uvicorn-h11", "hello_wrapped"),  # a plain ASGI app wrapped at import
    ("hypercorn", "hello_wrapped"),
]


@pytest.mark.parametrize("kind,app", BURSTS)
def test_sigterm_after_a_burst_delivers_everything_served(
    kind, app, collector_server, collector, token
):
    server = ServerProcess(kind, f"tests.asgi_apps:{app}", collector_server.url)
    try:
        with requests.Session() as session:
            for number in range(100):
                response = session.get(
                    f"{server.url}/items/{number}", headers={SESSION_TOKEN_HEADER: token}
                )
                assert response.status_code == 405  # a GET to a POST route: answered all the same
    finally:
        returncode, output = server.stop()
    assert returncode == EXIT_ON_SIGTERM[kind], output
    assert len(collector.events()) == 100, output
    assert "not delivered" not in output


def test_what_brain_did_not_take_by_the_shutdown_timeout_is_counted(collector_server, token):
    brain_down = "http://127.0.0.1:9"  # the discard port: nothing answers
    server = ServerProcess(
        "uvicorn-h11", "tests.asgi_apps:wrapped", brain_down, OTAS_SHUTDOWN_TIMEOUT="0.5"
    )
    try:
        for number in range(5):
            requests.get(f"{server.url}/items/{number}", headers={SESSION_TOKEN_HEADER: token})
    finally:
        returncode, output = server.stop(timeout=20)
    assert returncode == -signal.SIGTERM
    assert "otas-capture: 5 of 5 captured events were not delivered to OTAS" in output, output


def test_hypercorn_over_http2_is_captured(collector_server, collector, token):
    server = ServerProcess("hypercorn", "tests.asgi_apps:wrapped", collector_server.url)
    try:
        with httpx.Client(http1=False, http2=True) as client:  # h2c, prior knowledge
            response = client.post(
                server.url + "/items/2",
                json={"name": "h2"},
                headers={SESSION_TOKEN_HEADER: token},
            )
        assert response.http_version == "HTTP/2"
    finally:
        server.stop()
    (event,) = collector.events()
    assert (event["status_code"], json.loads(event["response_body"])) == (
        200,
        {"id": 2, "api_key": "[REDACTED]", "name": "h2"},
    )


@pytest.mark.parametrize("kind", ["uvicorn-httptools", "hypercorn"])
def test_a_client_leaving_mid_stream_and_a_file_response_are_recorded(
    kind, collector_server, collector, token
):
    server = ServerProcess(kind, "tests.asgi_apps:wrapped", collector_server.url)
    agent = {SESSION_TOKEN_HEADER: token}
    try:
        with requests.get(server.url + "/slow", headers=agent, stream=True) as response:
            next(response.iter_lines())  # the first tick, then hang up
        file = requests.get(server.url + "/file", headers=agent)
        events = collector.wait_for_events(2, timeout=10)
    finally:
        server.stop()
    left, sent = sorted(events, key=lambda event: event["path"] != "/slow")
    assert left["metadata"]["client_disconnected"] is True
    assert 0 < left["response_size_bytes"] < len(b"".join(b"tick %d\n" % n for n in range(100)))
    with open(ROOT / "tests" / "asgi_apps.py", "rb") as source:
        assert file.content == source.read()
    assert sent["response_size_bytes"] == len(file.content)


def h2_exchange(url: str, token: str) -> list[tuple[str, Any]]:
    """One HTTP/2 (h2c, prior knowledge) GET asking for trailers: what came back, in order."""
    import h2.config
    import h2.connection
    import h2.events

    host, port = url.split("//")[1].split(":")
    connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    connection.initiate_connection()
    headers = [(":method", "GET"), (":path", "/t"), (":scheme", "http"), (":authority", host)]
    headers += [("te", "trailers"), (SESSION_TOKEN_HEADER.lower(), token)]
    connection.send_headers(1, headers, end_stream=True)
    received: list[tuple[str, Any]] = []
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(connection.data_to_send())
        while not any(kind == "end" for kind, _ in received):
            data = sock.recv(65536)
            if not data:
                break
            for event in connection.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    kept = [(k, v) for k, v in event.headers if k not in (b"date", b"server")]
                    received.append(("headers", kept))
                elif isinstance(event, h2.events.DataReceived):
                    received.append(("data", event.data))
                    connection.acknowledge_received_data(len(event.data), event.stream_id)
                elif isinstance(event, h2.events.TrailersReceived):
                    received.append(("trailers", event.headers))
                elif isinstance(event, h2.events.StreamEnded):
                    received.append(("end", None))
            sock.sendall(connection.data_to_send())
    return received


def test_trailers_reach_an_http2_client_as_without_the_middleware(
    collector_server, collector, token
):
    bare = ServerProcess("hypercorn", "tests.asgi_apps:with_trailers", collector_server.url)
    wrapped = ServerProcess(
        "hypercorn", "tests.asgi_apps:with_trailers_wrapped", collector_server.url
    )
    try:
        expected = h2_exchange(bare.url, token)
        got = h2_exchange(wrapped.url, token)
        (event,) = collector.wait_for_events(1, timeout=10)
    finally:
        bare.stop()
        wrapped.stop()
    assert ("trailers", [(b"x-checksum", b"abc123")]) in expected
    assert got == expected
    assert (event["response_body"], event["response_size_bytes"]) == ("part one, part two", 18)
