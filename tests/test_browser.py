"""The live viewer in a real headless browser: Debian's chromium, driven by Playwright.

No browser is downloaded at run time (that cannot work offline): the tests use the
system's ``chromium`` and skip, saying why, when it or Playwright is missing. ``.ci/run``
installs both.

``OTAS_UPDATE_SCREENSHOT=1 pytest tests/test_browser.py`` refreshes ``docs/viewer.png``,
the README's screenshot, from the demo conversation.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from otas_capture.collector import CollectorServer

from .viewer_support import AGENT_B, Agent, start_viewer_server

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="Playwright is not installed (pip install playwright)"
)

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "viewer.png"
WAIT_MS = 10_000

pytestmark = [
    pytest.mark.skipif(
        not os.path.exists(CHROMIUM),
        reason="no chromium browser (apt-get install -y chromium)",
    ),
    pytest.mark.filterwarnings("ignore:The HMAC key is:UserWarning"),
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def module_server() -> Iterator[CollectorServer]:
    server = start_viewer_server()
    yield server
    server.stop()


@pytest.fixture
def server(module_server: CollectorServer) -> CollectorServer:
    module_server.collector.clear()
    return module_server


@pytest.fixture
def page(browser: Any, server: CollectorServer) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 820})
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    opened.goto(server.url + "/")
    opened.wait_for_selector("#live.on", timeout=WAIT_MS)
    yield opened
    context.close()
    assert errors == []  # the page's own script never failed


def row_paths(page: Any) -> list[str]:
    return page.locator("#rows tr .path-text").all_inner_texts()


def wait_for_rows(page: Any, count: int) -> None:
    page.wait_for_function(
        "n => document.querySelectorAll('#rows tr').length === n", arg=count, timeout=WAIT_MS
    )


def test_events_appear_without_a_reload(page, server):
    page.evaluate("window.sameDocument = true")
    assert page.locator("#empty").is_visible()
    agent = Agent(server)
    agent.ship("POST", "/api/items", 201)
    wait_for_rows(page, 1)
    agent.ship("GET", "/api/items/7", 404)
    wait_for_rows(page, 2)
    assert row_paths(page) == ["/api/items/7", "/api/items"]  # newest first
    assert page.locator("#rows tr").first.locator(".status").get_attribute("class") == (
        "status s4xx"
    )
    assert page.evaluate("window.sameDocument") is True
    assert not page.locator("#empty").is_visible()


def test_filters_narrow_the_list(page, server):
    first, second = Agent(server), Agent(server, AGENT_B)
    first.ship("GET", "/api/items", 200)
    first.ship("POST", "/api/orders", 500)
    second.ship("GET", "/api/orders/1", 404)
    wait_for_rows(page, 3)

    page.fill("#f-q", "orders")
    wait_for_rows(page, 2)
    assert row_paths(page) == ["/api/orders/1", "/api/orders"]

    page.select_option("#f-status", "5xx")
    wait_for_rows(page, 1)
    assert row_paths(page) == ["/api/orders"]

    page.click("#f-reset")
    wait_for_rows(page, 3)
    page.fill("#f-agent", AGENT_B)
    wait_for_rows(page, 1)
    assert row_paths(page) == ["/api/orders/1"]

    page.click("#f-reset")
    page.fill("#f-session", first.session_id)
    wait_for_rows(page, 2)
    assert row_paths(page) == ["/api/orders", "/api/items"]

    # New events that do not match stay out of the filtered list.
    second.ship("GET", "/api/later", 200)
    first.ship("GET", "/api/mine", 200)
    wait_for_rows(page, 3)
    assert row_paths(page) == ["/api/mine", "/api/orders", "/api/items"]


def test_the_detail_view_shows_one_event_with_masked_values_marked(page, server):
    agent = Agent(server)
    agent.ship(
        "POST",
        "/api/login",
        200,
        request_body=json.dumps({"username": "agent", "password": "[REDACTED]"}),
        response_body=json.dumps({"access_token": "[REDACTED]", "expires_in": 3600}),
        custom_properties={"tenant": "acme"},
        error="",
    )
    agent.ship("GET", "/api/boom", 500, error="ZeroDivisionError: division by zero")
    wait_for_rows(page, 2)

    page.locator("#rows tr", has_text="/api/login").click()
    page.wait_for_selector("#d-path", timeout=WAIT_MS)
    assert page.inner_text("#d-path") == "/api/login"
    body = page.locator("#d-request-body pre").text_content()
    assert json.loads(body) == {"username": "agent", "password": "[REDACTED]"}
    assert '\n  "username": "agent"' in body  # pretty-printed
    marks = page.locator("#detail mark.masked")
    assert marks.count() == 3  # the token header, the password, the access token
    assert set(marks.all_inner_texts()) == {"[REDACTED]"}
    assert "acme" in page.inner_text("#d-custom")
    assert '"sdk": "otas-capture"' in page.inner_text("#d-metadata")
    assert page.locator("#d-error").count() == 0

    page.locator("#rows tr", has_text="/api/boom").click()
    page.wait_for_function(
        "() => document.querySelector('#d-path').textContent === '/api/boom'", timeout=WAIT_MS
    )
    assert "ZeroDivisionError: division by zero" in page.inner_text("#d-error")


def test_the_session_view_lays_out_the_calls_in_order_with_latencies(page, server):
    agent = Agent(server)
    other = Agent(server, AGENT_B)
    agent.ship("POST", "/api/items", 201, at_ms=0, latency_ms=40)
    agent.ship("GET", "/api/export", 200, at_ms=300, latency_ms=100)
    other.ship("GET", "/api/elsewhere", 200)
    agent.ship("GET", "/api/items", 200, at_ms=100, latency_ms=20)  # delivered late
    wait_for_rows(page, 4)

    page.locator("#rows tr", has_text="/api/export").locator("a.session-link").click()
    page.wait_for_selector("li.call", timeout=WAIT_MS)
    assert page.inner_text("#s-id") == agent.session_id
    calls = page.locator("li.call")
    assert calls.count() == 3
    assert [calls.nth(i).locator(".path").inner_text() for i in range(3)] == [
        "/api/items",
        "/api/items",
        "/api/export",
    ]
    assert [calls.nth(i).locator(".num").inner_text() for i in range(3)] == [
        "40.0 ms",
        "20.0 ms",
        "100.0 ms",
    ]
    # Bars sit where the calls started on the session's 400 ms: 0 %, 25 %, 75 %.
    lefts = [calls.nth(i).locator(".bar").evaluate("b => b.style.left") for i in range(3)]
    assert lefts == ["0%", "25%", "75%"]

    calls.nth(2).click()
    page.wait_for_selector("#d-path", timeout=WAIT_MS)
    assert page.inner_text("#d-path") == "/api/export"


def test_the_sessions_are_listed_until_something_is_opened(page, server):
    first, second = Agent(server), Agent(server, AGENT_B)
    first.ship(status=200)
    first.ship(status=500)
    second.ship(status=200)
    page.wait_for_function(
        "() => document.querySelectorAll('#sessions li').length === 2", timeout=WAIT_MS
    )
    items = page.locator("#sessions li").all_inner_texts()
    assert items[0].startswith("…" + second.session_id[-8:]) and "1 call" in items[0]
    assert "2 calls" in items[1] and "1 failed" in items[1]
    page.locator("#sessions a").nth(1).click()
    page.wait_for_selector("li.call", timeout=WAIT_MS)
    assert page.inner_text("#s-id") == first.session_id
    assert not page.locator("#overview").is_visible()


def test_a_cleared_collector_empties_the_list(page, server):
    Agent(server).ship(path="/api/gone")
    wait_for_rows(page, 1)
    server.collector.clear()
    wait_for_rows(page, 0)
    assert page.locator("#empty").is_visible()


def test_an_event_carrying_markup_shows_as_text_and_runs_nothing(page, server):
    attack = "<script>window.pwned = 1</script><img src=x onerror='window.pwned = 2'>"
    agent = Agent(server)
    agent.ship(
        "POST",
        "/x" + attack,
        200,
        request_headers=json.dumps({"X-Evil": attack}),
        request_body=attack,
        response_body=json.dumps({"html": attack}),
        custom_properties={"note": attack},
        error=attack,
    )
    wait_for_rows(page, 1)
    page.locator("#rows tr").first.click()
    page.wait_for_selector("#d-path", timeout=WAIT_MS)
    page.locator("#rows tr a.session-link").first.click()
    page.wait_for_selector("li.call", timeout=WAIT_MS)
    page.click("li.call")
    page.wait_for_selector("#d-path", timeout=WAIT_MS)
    time.sleep(0.3)  # give an injected onerror handler the chance it must not have

    assert page.evaluate("window.pwned") is None
    assert page.inner_text("#d-path") == "/x" + attack
    assert attack in page.locator("#d-request-body pre").text_content()
    assert page.locator("main img, main script").count() == 0


def test_screenshot_of_the_demo_conversation(page, server, serve_app, tmp_path):
    """The README's picture: the demo's calls, with the login open in the detail view."""
    from otas_capture.cli.demo import Agent as DemoAgent
    from otas_capture.cli.demo import open_session
    from otas_capture.cli.demo_app import create_app
    from otas_capture.collector import DEMO_SDK_KEY

    app, otas = create_app(sdk_key=DEMO_SDK_KEY, brain_url=server.url, uasam_url=server.url)
    try:
        agent = DemoAgent(serve_app(app), open_session(server.url))
        agent.converse()
        agent.close()
        wait_for_rows(page, agent.calls)
    finally:
        otas.close(timeout=5)
    page.set_viewport_size({"width": 1400, "height": 1100})
    login = page.locator("#rows tr", has_text="/api/login")
    login.click()
    page.wait_for_selector("#d-path", timeout=WAIT_MS)
    shot = tmp_path / "viewer.png"
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000
    if os.environ.get("OTAS_UPDATE_SCREENSHOT") == "1":
        shutil.copyfile(shot, SCREENSHOT)
