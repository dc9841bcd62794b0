"""The README demo: an AI agent calls a Flask backend, and OTAS sees every call.

One command, no account, a few seconds::

    python examples/demo.py

It starts the bundled local collector (a stand-in for OTAS UASAM and Brain), points
``examples/flask_app.py`` at it through the same ``OTAS_*`` environment variables a real
deployment uses, serves the app on a loopback port, and plays an agent: it opens an
agent session, makes eight calls with the session token (including a 404, a form login,
a crash and a streamed export) and one without it. Then it prints what the collector
received, one full event, and the middleware's counters. It exits non-zero if the
collector did not get exactly one event per call made with the token.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import sys
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import requests
from werkzeug.serving import make_server

from otas_capture.collector import (
    DEMO_AGENT_KEY,
    DEMO_SDK_KEY,
    SESSION_CREATE_PATH,
    CollectorServer,
    serve,
)

EXAMPLES = Path(__file__).resolve().parent
TIMEOUT = 5.0


def load_app(collector_url: str) -> ModuleType:
    """Import examples/flask_app.py configured for the collector, as a deployment would be."""
    # The middleware reads its settings when init_app() runs, at import: set them first.
    os.environ.update(
        {
            "OTAS_SDK_KEY": DEMO_SDK_KEY,
            "OTAS_BRAIN_URL": collector_url,
            "OTAS_UASAM_URL": collector_url,
            "OTAS_FLUSH_INTERVAL": "0.2",  # ship within a moment instead of the default 1 s
        }
    )
    spec = importlib.util.spec_from_file_location("flask_app", EXAMPLES / "flask_app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def create_session(collector_url: str) -> dict[str, str]:
    """Open an agent session at UASAM, as an agent does, and return the headers to send."""
    response = requests.post(
        collector_url + SESSION_CREATE_PATH,
        headers={"X-OTAS-AGENT-KEY": DEMO_AGENT_KEY},
        json={"meta": {"agent": "otas-capture demo", "task": "stock the catalogue"}},
        timeout=TIMEOUT,
    )
    response.raise_for_status()
    session = response.json()["response"]
    return {session["Header_value"]: session["jwt_token"]}


def act_as_agent(base_url: str, session_headers: dict[str, str]) -> int:
    """Call the API like an agent working through a task; return the calls made with the token."""
    agent = requests.Session()
    agent.headers.update(session_headers)
    agent.headers["X-Tenant"] = "acme"
    calls = 0

    def call(method: str, path: str, **kwargs: Any) -> requests.Response:
        nonlocal calls
        calls += 1
        response = agent.request(method, base_url + path, timeout=TIMEOUT, **kwargs)
        print(f"  agent  {method:4} {path:26} -> {response.status_code}")
        return response

    try:
        keyboard = call(
            "POST", "/api/items", json={"name": "Keyboard", "price": 49.9, "tags": ["usb"]}
        ).json()
        call("POST", "/api/items", json={"name": "Mouse", "price": 19.5, "tags": []})
        call("GET", "/api/items?limit=10")
        call("GET", f"/api/items/{keyboard['id']}")
        call("GET", "/api/items/999")
        call(
            "POST",
            "/api/login",
            data={"username": "agent", "password": "correct horse battery staple"},
        )
        call("GET", "/api/boom")
        with call("GET", "/api/export", stream=True) as export:
            lines = [json.loads(line) for line in export.iter_lines() if line]
        print(f"         (export streamed {len(lines)} items)")
        # A request from anyone else (a browser, a cron job) carries no token.
        plain = requests.get(base_url + "/api/items", timeout=TIMEOUT)
        print(f"  other  GET  {'/api/items':26} -> {plain.status_code} (no token: not captured)")
    finally:
        agent.close()
    return calls


def wait_until_captured(otas: Any, expected: int) -> None:
    # The server hands a request to the middleware when it closes the response, a moment
    # after the client has read the last byte; flush() only covers what it already has.
    deadline = time.monotonic() + TIMEOUT
    while otas.stats()["captured"] < expected and time.monotonic() < deadline:
        time.sleep(0.01)


def summarize(events: list[dict[str, Any]]) -> None:
    # Sender threads deliver concurrently: show the calls in the order they were made.
    events = sorted(events, key=lambda event: event["metadata"]["started_at"])
    print(f"\nThe collector received {len(events)} events:")
    for event in events:
        error = f"  error={event['error']!r}" if event["error"] else ""
        print(
            f"  {event['method']:4} {event['path']:18} {event['status_code']}  "
            f"{event['latency_ms']:7.2f} ms  req {event['request_size_bytes']:3} B  "
            f"resp {event['response_size_bytes']:4} B{error}"
        )
    # The login shows the redaction: password and access_token never leave the app.
    login = next((e for e in events if e["path"] == "/api/login"), events[0] if events else None)
    if login is not None:
        print(
            f"\nOne full event ({login['method']} {login['path']}) as the collector stored it "
            "(it adds the fields starting with _):"
        )
        print(json.dumps(login, indent=2))


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)-7s %(name)s: %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no access log lines

    collector: CollectorServer = serve()
    server = None
    otas = None
    try:
        flask_app = load_app(collector.url)
        otas = flask_app.app.extensions["otas_capture"]
        # /api/boom's traceback is expected; the event's error field reports it.
        flask_app.app.logger.setLevel(logging.CRITICAL)

        server = make_server("127.0.0.1", 0, flask_app.app, threaded=True)
        threading.Thread(target=server.serve_forever, name="demo-app", daemon=True).start()
        base_url = f"http://127.0.0.1:{server.server_port}"
        print(f"Collector (OTAS stand-in) on {collector.url}; Flask app on {base_url}\n")

        session_headers = create_session(collector.url)
        print("Agent session opened; the agent now calls the app:")
        expected = act_as_agent(base_url, session_headers)

        wait_until_captured(otas, expected)
        if not otas.flush(timeout=TIMEOUT):
            print(
                f"error: events were still unsent after {TIMEOUT:g} s: {otas.stats()}",
                file=sys.stderr,
            )
            return 1
        events = collector.collector.events()
        summarize(events)
        print("\nMiddleware stats:", json.dumps(otas.stats()))
        if len(events) != expected:
            print(
                f"error: expected {expected} events (one per call with the session "
                f"token), the collector received {len(events)}",
                file=sys.stderr,
            )
            return 1
        print(
            f"\nOK: {expected} agent calls, {expected} events; the call without a token "
            "was not captured."
        )
        return 0
    finally:
        if otas is not None:
            otas.close()
        if server is not None:
            server.shutdown()
            server.server_close()
        collector.stop()


if __name__ == "__main__":
    sys.exit(main())
