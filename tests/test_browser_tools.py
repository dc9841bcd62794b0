"""The viewer's tools in a real headless browser: what a browser's Network tab offers
(query strings, full dates, search, copy as cURL, HAR export, clear) and what OTAS adds
(environments, ids told apart, the bounded store's evictions).

Same browser and skips as :mod:`tests.test_browser`, whose fixtures these use.
"""

# ruff: noqa: F811  (the fixtures imported below are used as test parameters)
from __future__ import annotations

import json
from typing import Any

import pytest

from otas_capture.collector import Collector, CollectorServer, EventStore
from otas_capture.collector.viewer import mount_viewer

from .test_browser import (  # noqa: F401 - fixtures, used by name
    CHROMIUM,
    WAIT_MS,
    browser,
    module_server,
    page,
    server,
    wait_for_rows,
)
from .viewer_support import Agent

pytestmark = [
    pytest.mark.skipif(not CHROMIUM, reason="no chromium"),
    pytest.mark.filterwarnings("ignore:The HMAC key is:UserWarning"),
]

DEMO_AGENT_1 = "00000000-0000-4000-8000-000000000001"
DEMO_AGENT_2 = "00000000-0000-4000-8000-000000000002"


def cells(page: Any, selector: str) -> list[str]:
    return page.locator(f"#rows tr {selector}").all_inner_texts()


def test_rows_show_the_query_ids_told_apart_and_the_date_on_hover(page, server):
    Agent(server, DEMO_AGENT_1).ship(
        "GET", "/api/items", query_params=json.dumps({"page": ["2"], "token": ["[REDACTED]"]})
    )
    Agent(server, DEMO_AGENT_2).ship("GET", "/api/orders")
    wait_for_rows(page, 2)
    assert cells(page, "td.path .query") == ["?page=2&token=[REDACTED]"]
    # Every demo agent id begins 00000000: the column shows the end, which differs.
    assert cells(page, "td.agent") == ["…00000002", "…00000001"]
    sessions = cells(page, "a.session-link")
    assert len(set(sessions)) == 2 and all(s.startswith("…") for s in sessions)
    hover = page.locator("#rows tr td.time").first.get_attribute("title")
    assert hover.startswith("Thursday, November 26, 2026")  # the date, not only the time
    assert hover.endswith("2026-11-26T12:00:00+00:00")  # as captured


def wait_for_paths(page: Any, expected: list[str]) -> None:
    page.wait_for_function(
        "paths => JSON.stringify([...document.querySelectorAll('#rows tr .path-text')]"
        ".map(cell => cell.textContent)) === JSON.stringify(paths)",
        arg=expected,
        timeout=WAIT_MS,
    )


def test_the_search_box_finds_text_in_paths_headers_and_bodies(page, server):
    agent = Agent(server)
    agent.ship("GET", "/api/plain")
    agent.ship("GET", "/api/other", request_headers=json.dumps({"X-Tenant": "acme-corp"}))
    agent.ship("POST", "/api/orders", request_body=json.dumps({"sku": "WIDGET-9"}))
    agent.ship("GET", "/api/stock", response_body=json.dumps({"warehouse": "Gdańsk"}))
    wait_for_rows(page, 4)
    for text, expected in [
        ("acme-CORP", ["/api/other"]),  # a header value, any case
        ("widget-9", ["/api/orders"]),  # a request body
        ("Gdańsk", ["/api/stock"]),  # a response body
        ("plain", ["/api/plain"]),  # a path
    ]:
        page.fill("#f-q", text)
        wait_for_paths(page, expected)


def test_environments_are_shown_and_filter_the_list(page, server):
    agent = Agent(server)
    for env, path in [("staging", "/api/a"), ("production", "/api/b"), ("staging", "/api/c")]:
        meta = {"started_at": "2026-11-26T12:00:00+00:00", "environment": env, "release": "1.4"}
        agent.ship("GET", path, metadata=meta)
    agent.ship("GET", "/api/untagged")
    wait_for_rows(page, 4)
    assert cells(page, "td .env") == ["staging", "production", "staging"]
    page.fill("#f-env", "staging")
    wait_for_paths(page, ["/api/c", "/api/a"])
    page.locator("#rows tr").first.click()
    page.wait_for_selector("#d-path", timeout=WAIT_MS)
    summary = page.inner_text("#detail dl.summary")
    assert "staging" in summary and "1.4" in summary


def test_copy_as_curl_copies_a_command_that_keeps_masked_values_masked(page, server):
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url)
    Agent(server).ship(
        "POST",
        "/api/login",
        query_params=json.dumps({"next": ["/home"]}),
        request_headers=json.dumps(
            {"Host": "shop.test", "Authorization": "[REDACTED]", "Accept": "*/*"}
        ),
        request_body=json.dumps({"user": "o'neil", "password": "[REDACTED]"}),
    )
    wait_for_rows(page, 1)
    page.locator("#rows tr").first.click()
    page.click("#d-copy-curl")
    page.wait_for_selector("#d-curl", timeout=WAIT_MS)
    shown = page.locator("#d-curl").text_content()
    copied = page.evaluate("navigator.clipboard.readText()")
    assert copied == shown
    assert "curl 'http://shop.test/api/login?next=%2Fhome'" in copied
    assert "-H 'Authorization: [REDACTED]'" in copied
    assert '--data-raw \'{"user": "o\'"\'"\'neil"' in copied  # shell-quoted
    assert copied.startswith("# Values shown as [REDACTED] were masked by the SDK")
    assert "request_headers.Authorization, request_body.password" in copied
    marks = page.locator("#d-curl mark.masked")
    assert marks.count() == 3  # in the comment line, the header and the body
    assert page.inner_text("#d-curl-status").startswith("Copied")


def har_of(page: Any, selector: str) -> dict[str, Any]:
    with page.expect_download(timeout=WAIT_MS) as download:
        page.click(selector)
    path = download.value.path()
    assert download.value.suggested_filename.endswith(".har")
    with open(path, encoding="utf-8") as file:
        loaded: dict[str, Any] = json.load(file)
    return loaded


def test_har_export_of_the_filtered_list_and_of_a_session(page, server):
    first, second = Agent(server), Agent(server)
    first.ship("GET", "/api/a", 200, at_ms=0)
    first.ship("POST", "/api/b", 500, at_ms=100, request_body='{"x": 1}')
    second.ship("GET", "/api/c", 503)
    wait_for_rows(page, 3)

    page.select_option("#f-status", "5xx")
    wait_for_paths(page, ["/api/c", "/api/b"])
    entries = har_of(page, "#export-har")["log"]["entries"]
    assert [(e["request"]["method"], e["response"]["status"]) for e in entries] == [
        ("POST", 500),
        ("GET", 503),
    ]
    assert entries[0]["request"]["url"] == "http://shop/api/b"
    assert entries[0]["request"]["postData"]["text"] == '{"x": 1}'

    page.goto(f"{server.url}/#session={first.session_id}")
    page.wait_for_selector("#s-har", timeout=WAIT_MS)
    log = har_of(page, "#s-har")["log"]
    assert log["version"] == "1.2" and log["creator"]["name"] == "otas-capture"
    assert [e["request"]["url"] for e in log["entries"]] == [
        "http://shop/api/a",
        "http://shop/api/b",
    ]
    assert {e["_otas"]["agent_session_id"] for e in log["entries"]} == {first.session_id}


def test_the_clear_button_empties_the_collector(page, server):
    Agent(server).ship(path="/api/gone")
    wait_for_rows(page, 1)
    page.click("#clear-events")
    wait_for_rows(page, 0)
    assert server.collector.store.count() == 0
    assert page.locator("#empty").is_visible()


def test_evicted_events_are_counted_in_the_page(browser):
    collector = Collector(store=EventStore(max_events=2))
    mount_viewer(collector)
    with CollectorServer(collector) as small:
        agent = Agent(small)
        for n in range(3):
            agent.ship(path=f"/api/{n}")
        context = browser.new_context()
        opened = context.new_page()
        opened.goto(small.url + "/")
        opened.wait_for_selector("#live.on", timeout=WAIT_MS)
        wait_for_rows(opened, 2)
        assert "2 events · 1 oldest dropped" in opened.inner_text("#live")
        assert "at most 2 events" in opened.get_attribute("#live", "title")
        context.close()
