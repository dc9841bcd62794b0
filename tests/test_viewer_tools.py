"""What the viewer's tools and ``tail`` are built on: ids told apart, query strings,
search over headers and bodies, environments, a cURL command line and a HAR file made
from a captured event, masked values kept masked and named."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import uuid
from collections.abc import Iterator

import pytest
import requests

from otas_capture.cli import main
from otas_capture.collector import CollectorServer, browse, export
from otas_capture.collector.server import AppServer
from otas_capture.collector.viewer import CURL_API, EVENTS_API, HAR_API

from .viewer_support import Agent, start_viewer_server

pytestmark = pytest.mark.filterwarnings("ignore:The HMAC key is:UserWarning")


@pytest.fixture
def server() -> Iterator[CollectorServer]:
    running = start_viewer_server()
    yield running
    running.stop()


def listed(server: CollectorServer, **params: str) -> list[str]:
    answer = requests.get(server.url + EVENTS_API, params=params, timeout=5).json()
    return [row["path"] for row in answer["events"]]


# -- ids, query strings ------------------------------------------------------------------


def test_ids_are_shown_by_the_part_that_tells_them_apart():
    assert browse.short_id("00000000-0000-4000-8000-000000000002") == "…00000002"
    time_based = str(uuid.uuid1())
    assert browse.short_id(time_based) == time_based[:8] + "…"  # its end is the host
    assert browse.short_id("agent-7") == "agent-7"
    assert browse.short_id("") == ""


def test_a_summary_carries_the_query_string_labels_and_environment():
    row = browse.summary(
        {
            "path": "/api/items",
            "query_params": json.dumps({"page": ["2"], "tag": ["a", "b"], "key": ["[REDACTED]"]}),
            "_agent_id": "00000000-0000-4000-8000-000000000002",
            "metadata": {"environment": "staging", "release": "1.4.0"},
        }
    )
    assert row["query"] == "page=2&tag=a&tag=b&key=[REDACTED]"
    assert (row["agent_label"], row["environment"], row["release"]) == (
        "…00000002",
        "staging",
        "1.4.0",
    )


# -- search and environments -------------------------------------------------------------


def test_q_searches_paths_query_headers_forms_bodies_and_errors(server):
    agent = Agent(server)
    agent.ship(path="/api/needle-in-path")
    agent.ship(path="/api/q", query_params=json.dumps({"find": ["needle"]}))
    agent.ship(path="/api/h", request_headers=json.dumps({"X-Tag": "NEEDLE"}))
    agent.ship(path="/api/f", post_data=json.dumps({"field": ["needle"]}))
    agent.ship(path="/api/rq", request_body="a needle")
    agent.ship(path="/api/rs", response_body=json.dumps({"city": "Gdańsk needle"}))
    agent.ship(path="/api/e", status=500, error="ValueError: needle")
    agent.ship(path="/api/none")
    found = listed(server, q="needle")
    assert sorted(found) == sorted(
        ["/api/needle-in-path", "/api/q", "/api/h", "/api/f", "/api/rq", "/api/rs", "/api/e"]
    )
    assert listed(server, q="Gdańsk") == ["/api/rs"]  # stored as JSON escapes it
    assert listed(server, path="needle") == ["/api/needle-in-path"]  # the path alone


def test_environment_filters_on_metadata(server):
    agent = Agent(server)
    for env in ("staging", "production"):
        agent.ship(path=f"/api/{env}", metadata={"environment": env})
    agent.ship(path="/api/untagged")
    assert listed(server, env="staging") == ["/api/staging"]


def test_the_events_answer_says_what_the_bounded_store_dropped(server):
    answer = requests.get(server.url + EVENTS_API, timeout=5).json()
    assert answer["evicted"] == 0 and answer["max_events"] > 0 and answer["max_bytes"] > 0


def test_tail_filters_by_search_text_and_environment_and_shows_the_query(server, capsys):
    agent = Agent(server)
    agent.ship(path="/api/a", metadata={"environment": "staging"}, request_body="acme")
    agent.ship(path="/api/b", metadata={"environment": "prod"}, request_body="acme")
    agent.ship(
        path="/api/c",
        metadata={"environment": "staging"},
        query_params=json.dumps({"page": ["3"]}),
        request_body="other",
    )
    once = ["tail", "--url", server.url, "--max-events", "1"]
    assert main([*once, "--search", "acme", "--env", "staging"]) == 0
    [line] = [x for x in capsys.readouterr().out.splitlines() if "/api/" in x]
    assert "/api/a" in line and "env staging" in line
    assert main([*once, "--path", "/api/c"]) == 0
    assert "/api/c?page=3" in capsys.readouterr().out


# -- cURL ------------------------------------------------------------------------------


def command_words(command: str) -> list[str]:
    """The words a POSIX shell makes of it: comments and line continuations dropped."""
    lines = [line for line in command.splitlines() if not line.startswith("#")]
    return shlex.split("\n".join(lines).replace("\\\n", ""))


def test_curl_replays_method_url_headers_and_body_with_masked_values_named():
    event = {
        "method": "POST",
        "path": "/api/login",
        "query_params": json.dumps({"next": ["/home page"], "key": ["[REDACTED]"]}),
        "request_headers": json.dumps(
            {"Host": "shop:8000", "Authorization": "[REDACTED]", "Content-Length": "40"}
        ),
        "request_body": json.dumps({"user": "o'neil", "password": "[REDACTED]"}),
    }
    command = export.curl_command(event)
    assert command.splitlines()[:2] == [
        "# Values shown as [REDACTED] were masked by the SDK and are not the real ones:",
        "# request_headers.Authorization, query_params.key, request_body.password",
    ]
    assert command_words(command) == [
        "curl",
        "http://shop:8000/api/login?next=%2Fhome%20page&key=[REDACTED]",
        "--globoff",
        "-X",
        "POST",
        "-H",
        "Authorization: [REDACTED]",
        "--data-raw",
        event["request_body"],
    ]


def test_curl_of_a_plain_get_and_of_a_form_post():
    get = {"method": "GET", "path": "/api/items", "request_headers": '{"Host": "a"}'}
    assert export.curl_command(get) == "curl http://a/api/items"
    form = {"method": "POST", "path": "/f", "post_data": json.dumps({"q": ["a b"], "n": ["1"]})}
    assert command_words(export.curl_command(form))[-2:] == ["--data-raw", "q=a%20b&n=1"]


def test_the_curl_endpoint(server):
    Agent(server).ship("DELETE", "/api/items/7")
    [event] = server.collector.events()
    answer = requests.get(server.url + CURL_API, params={"id": event["_id"]}, timeout=5).json()
    assert answer["curl"].endswith("-X DELETE \\\n  -H 'X-OTAS-AGENT-SESSION-TOKEN: [REDACTED]'")
    assert answer["masked"] == ["request_headers.X-OTAS-AGENT-SESSION-TOKEN"]
    missing = requests.get(server.url + CURL_API, params={"id": 999}, timeout=5)
    assert missing.status_code == 404


# -- HAR -------------------------------------------------------------------------------


def test_a_har_entry_holds_the_request_the_response_and_what_was_masked():
    event = {
        "_id": 4,
        "_agent_session_id": "s-1",
        "method": "POST",
        "path": "/api/orders",
        "status_code": 201,
        "latency_ms": 12.5,
        "request_size_bytes": 9,
        "response_size_bytes": 11,
        "request_headers": json.dumps({"Host": "shop", "Authorization": "[REDACTED]"}),
        "request_content_type": "application/json",
        "request_body": '{"sku": 1}',
        "response_headers": json.dumps({"Content-Type": "application/json"}),
        "response_content_type": "application/json",
        "response_body": '{"id": 99}',
        "metadata": {"started_at": "2026-11-26T12:00:00+00:00", "environment": "staging"},
    }
    [entry] = export.har_log([event])["log"]["entries"]
    assert entry["startedDateTime"] == "2026-11-26T12:00:00+00:00" and entry["time"] == 12.5
    assert entry["request"]["url"] == "http://shop/api/orders"
    assert {"name": "Authorization", "value": "[REDACTED]"} in entry["request"]["headers"]
    assert entry["request"]["postData"] == {"mimeType": "application/json", "text": '{"sku": 1}'}
    assert entry["response"]["status"] == 201
    assert entry["response"]["content"]["text"] == '{"id": 99}'
    assert entry["comment"] == "masked by the SDK ([REDACTED]): request_headers.Authorization"
    assert entry["_otas"]["environment"] == "staging"


def test_the_har_endpoint_exports_the_filtered_list_oldest_first(server):
    agent = Agent(server)
    agent.ship(path="/api/one", status=500)
    agent.ship(path="/api/two", status=200)
    agent.ship(path="/api/three", status=502)
    answer = requests.get(server.url + HAR_API, params={"status": "5xx"}, timeout=5)
    assert answer.headers["Content-Disposition"] == 'attachment; filename="otas-capture-events.har"'
    urls = [e["request"]["url"] for e in answer.json()["log"]["entries"]]
    assert urls == ["http://shop/api/one", "http://shop/api/three"]
    by_session = requests.get(server.url + HAR_API, params={"session": agent.session_id}, timeout=5)
    assert f"session-{agent.session_id}" in by_session.headers["Content-Disposition"]
    assert len(by_session.json()["log"]["entries"]) == 3


@pytest.mark.skipif(not shutil.which("curl"), reason="curl is not installed")
def test_the_copied_command_replays_the_call_in_a_shell():
    """Run by bash, the command sends the captured call again: method, path, query,
    headers and body, with [REDACTED] where the SDK masked a value."""
    seen: dict[str, object] = {}

    def echo(environ, start_response):
        seen.update(
            method=environ["REQUEST_METHOD"],
            path=environ["PATH_INFO"],
            query=environ["QUERY_STRING"],
            token=environ.get("HTTP_AUTHORIZATION"),
            tenant=environ.get("HTTP_X_TENANT"),
            body=environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0)),
        )
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    with AppServer(echo) as app:
        host = app.url.removeprefix("http://")
        event = {
            "method": "PUT",
            "path": "/api/items/7",
            "query_params": json.dumps({"dry run": ["yes & no"], "key": ["[REDACTED]"]}),
            "request_headers": json.dumps(
                {"Host": host, "Authorization": "[REDACTED]", "X-Tenant": 'o\'neil "q"'}
            ),
            "request_body": json.dumps({"name": "it's $HOME `x`"}),
        }
        done = subprocess.run(
            ["bash", "-c", export.curl_command(event) + " --silent --max-time 5"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    assert done.returncode == 0, done.stderr
    assert seen == {
        "method": "PUT",
        "path": "/api/items/7",
        "query": "dry%20run=yes%20%26%20no&key=[REDACTED]",
        "token": "[REDACTED]",
        "tenant": 'o\'neil "q"',
        "body": json.dumps({"name": "it's $HOME `x`"}).encode(),
    }
