"""The viewer's page and the JSON endpoints it reads, over real HTTP to a collector."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import requests

from otas_capture.collector import CollectorServer, browse
from otas_capture.collector.viewer import EVENT_API, EVENTS_API, SESSION_API, SESSIONS_API
from otas_capture.contract import SESSION_TOKEN_HEADER

from .viewer_support import AGENT_A, AGENT_B, Agent, start_viewer_server

pytestmark = pytest.mark.filterwarnings("ignore:The HMAC key is:UserWarning")


@pytest.fixture(scope="module")
def module_server() -> Iterator[CollectorServer]:
    server = start_viewer_server()
    yield server
    server.stop()


@pytest.fixture
def server(module_server: CollectorServer) -> CollectorServer:
    module_server.collector.clear()
    return module_server


def get(server: CollectorServer, path: str, **params: object) -> requests.Response:
    return requests.get(server.url + path, params=params, timeout=5)


def test_events_are_listed_newest_first_with_what_the_list_shows(server):
    agent = Agent(server)
    agent.ship("POST", "/api/items", 201, latency_ms=3.5)
    agent.ship("GET", "/api/items/9", 404)
    body = get(server, EVENTS_API).json()
    first, second = body["events"]
    assert first["id"] == body["latest"] and second["id"] < first["id"]
    assert (first["path"], first["status_code"], first["status_class"]) == (
        "/api/items/9",
        404,
        "4xx",
    )
    assert (second["method"], second["latency_ms"], second["request_size_bytes"]) == (
        "POST",
        3.5,
        10,
    )
    assert second["agent_id"] == AGENT_A
    assert second["agent_session_id"] == agent.session_id
    assert second["masked"] == [f"request_headers.{SESSION_TOKEN_HEADER}"]


def test_events_filter_by_session_agent_status_class_and_path_text(server):
    a, b = Agent(server, AGENT_A), Agent(server, AGENT_B)
    a.ship("GET", "/api/items", 200)
    a.ship("POST", "/api/Orders", 500)
    b.ship("GET", "/api/orders/1", 404)

    def paths(**params: object) -> list[str]:
        return [row["path"] for row in get(server, EVENTS_API, **params).json()["events"]]

    assert paths(session=a.session_id) == ["/api/Orders", "/api/items"]
    assert paths(agent=AGENT_B) == ["/api/orders/1"]
    assert paths(status="5xx") == ["/api/Orders"]
    assert paths(q="orders") == ["/api/orders/1", "/api/Orders"]
    assert paths(q="orders", status="4xx", agent=AGENT_B) == ["/api/orders/1"]


def test_events_after_an_id_are_only_the_newer_ones(server):
    agent = Agent(server)
    for n in range(3):
        agent.ship(path=f"/p{n}")
    newest, middle, oldest = (row["id"] for row in get(server, EVENTS_API).json()["events"])
    body = get(server, EVENTS_API, after=oldest).json()
    assert [row["id"] for row in body["events"]] == [newest, middle]
    assert get(server, EVENTS_API, after=newest).json()["events"] == []


def test_events_refuse_a_status_class_or_limit_they_do_not_know(server):
    assert get(server, EVENTS_API, status="teapot").status_code == 400
    assert get(server, EVENTS_API, limit="lots").status_code == 400


def test_one_event_in_full_names_what_was_masked(server):
    agent = Agent(server)
    agent.ship(
        "POST",
        "/api/login",
        200,
        post_data=json.dumps({"username": ["agent"], "password": ["[REDACTED]"]}),
        response_body=json.dumps({"access_token": "[REDACTED]", "expires_in": 3600}),
        custom_properties={"tenant": "acme"},
    )
    (row,) = get(server, EVENTS_API).json()["events"]
    body = get(server, EVENT_API, id=row["id"]).json()
    assert body["path"] == "/api/login"
    assert body["event"]["custom_properties"] == {"tenant": "acme"}
    assert body["event"]["metadata"]["sdk"] == "otas-capture"
    assert body["masked"] == [
        f"request_headers.{SESSION_TOKEN_HEADER}",
        "post_data.password",
        "response_body.access_token",
    ]


def test_an_unknown_event_is_404_and_a_bad_id_400(server):
    assert get(server, EVENT_API, id=10**9).status_code == 404
    assert get(server, EVENT_API, id="x").status_code == 400


def test_a_session_lists_its_calls_in_the_order_made_on_a_timeline(server):
    agent = Agent(server)
    other = Agent(server, AGENT_B)
    # Shipped out of order, as concurrent sender threads deliver them.
    agent.ship(path="/second", at_ms=250, latency_ms=50)
    other.ship(path="/elsewhere")
    agent.ship(path="/first", at_ms=0, latency_ms=100)
    body = get(server, SESSION_API, id=agent.session_id).json()
    assert body["agent_id"] == AGENT_A
    assert [(c["path"], c["offset_ms"]) for c in body["calls"]] == [
        ("/first", 0.0),
        ("/second", 250.0),
    ]
    assert body["duration_ms"] == 300.0
    assert get(server, SESSION_API, id="no-such-session").status_code == 404


def test_sessions_are_listed_latest_first_with_their_calls_and_errors(server):
    first, second = Agent(server), Agent(server, AGENT_B)
    first.ship(status=200)
    first.ship(status=500)
    second.ship(status=201)
    sessions = get(server, SESSIONS_API).json()["sessions"]
    assert [(s["agent_session_id"], s["calls"], s["errors"]) for s in sessions] == [
        (second.session_id, 1, 0),
        (first.session_id, 2, 1),
    ]


def test_the_page_and_its_files_are_served_with_a_policy_forbidding_inline_script(server):
    page = get(server, "/")
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert "unsafe-inline" not in page.headers["Content-Security-Policy"]
    for name in ("util.js", "app.js"):
        assert f'<script src="/viewer/{name}"' in page.text
        script = get(server, f"/viewer/{name}")
        assert script.headers["Content-Type"].startswith("text/javascript")
        # Untrusted event text must never be parsed as markup.
        assert "innerHTML" not in script.text and "insertAdjacentHTML" not in script.text
    assert get(server, "/viewer/app.css").headers["Content-Type"].startswith("text/css")


@pytest.mark.parametrize(
    "event, expected",
    [
        ({"request_headers": '{"Authorization": "[REDACTED]"}'}, ["request_headers.Authorization"]),
        ({"query_params": '{"token": ["[REDACTED]"]}'}, ["query_params.token"]),
        (
            {"request_body": '{"card": {"cvv": "[REDACTED]"}, "n": 1}'},
            ["request_body.card.cvv"],
        ),
        ({"request_body": "user=a&password=[REDACTED]"}, ["request_body"]),
        ({"response_body": '{"ok": true}'}, []),
    ],
)
def test_masked_fields_name_each_masked_value(event, expected):
    assert browse.masked_fields(event) == expected


@pytest.mark.parametrize(
    "status, expected", [(204, "2xx"), (302, "3xx"), (499, "4xx"), (503, "5xx"), (True, "other")]
)
def test_status_class(status, expected):
    assert browse.status_class(status) == expected
