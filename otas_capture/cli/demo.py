"""``otas-capture demo``: watch an AI agent's calls to a backend reach OTAS, locally.

It starts the local collector (the stand-in for OTAS UASAM and Brain) with its live
viewer, starts a small shop API (plain WSGI) wrapped by the middleware on a free port,
opens an agent session at UASAM as an agent would, and plays a short agent conversation
against the API: create items, list them, a call the API refuses, a form login and a
streamed export, plus one request without the session token (not an agent call: not
captured). Then it flushes the middleware and prints what the collector received, and
the viewer's address. With ``--keep`` everything stays up until Ctrl-C so the viewer
can be explored.

It needs nothing beyond the package's own dependencies: both servers run on waitress
when it is installed (the ``demo`` extra), else on the standard library's ``wsgiref``.
``--app fastapi`` runs the same shop on FastAPI under uvicorn instead, behind the ASGI
middleware (:mod:`otas_capture.cli.demo_fastapi`; the ``fastapi`` extra).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import TYPE_CHECKING, Any

from ..contract import AGENT_KEY_HEADER, SESSION_CREATE_PATH
from . import _output
from .collector import DEFAULT_PORT

if TYPE_CHECKING:
    from ..collector import CollectorServer

TIMEOUT = 5.0

EPILOG = """\
examples:
  otas-capture demo            # run the conversation, print it, stop
  otas-capture demo --keep     # ... then keep the collector, viewer and app up until Ctrl-C
  otas-capture demo --port 0   # collector on any free port
  otas-capture demo --app fastapi   # the same shop on FastAPI under uvicorn (ASGI)

exit codes: 0 every agent call reached the collector; 1 some did not (or a server could
not start); 2 bad arguments.
"""


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="see it work: an agent calls a demo API and the local collector shows each call",
        description=(
            "Start the local collector and its live viewer, a demo shop API wrapped by "
            "the middleware, and an agent session; play a short agent conversation against "
            "the API; print what was captured (and masked) and the viewer's address."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"collector port; another is picked if it is busy (default {DEFAULT_PORT})",
    )
    parser.add_argument("--keep", action="store_true", help="keep everything running until Ctrl-C")
    parser.add_argument(
        "--app",
        choices=("wsgi", "fastapi"),
        default="wsgi",
        help="the shop as plain WSGI (default) or FastAPI under uvicorn (the fastapi extra)",
    )
    parser.set_defaults(run=run)


def start_collector(port: int) -> CollectorServer:
    """The collector on ``port``, or on a free port (saying so) if that one is busy."""
    from .collector import start

    try:
        return start("127.0.0.1", port)
    except OSError:
        if port == 0:
            raise
    server = start("127.0.0.1", 0)
    print(f"Port {port} is busy; the collector uses port {server.port} instead.")
    return server


class Agent:
    """Plays an AI agent: every call carries its session token; prints each as it goes."""

    def __init__(self, base_url: str, session_headers: dict[str, str]) -> None:
        import requests

        self.base_url = base_url
        self.http = requests.Session()
        self.http.headers.update(session_headers)
        # A tenant for custom properties, and a credential of the agent's own: both
        # reach the app; only the masked form of the second reaches OTAS.
        self.http.headers.update(
            {"X-Tenant": "acme", "Authorization": "Bearer demo-agent-credential"}
        )
        self.calls = 0

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        self.calls += 1
        response = self.http.request(method, self.base_url + path, timeout=TIMEOUT, **kwargs)
        print(f"  agent  {method:5} {path:22} -> {response.status_code}", flush=True)
        return response

    def converse(self) -> None:
        """A short, realistic task: stock the catalogue, check it, log in, export it."""
        self.call("POST", "/api/items", json={"name": "Keyboard", "price": 49.9})
        self.call("POST", "/api/items", json={"name": "Mouse", "price": 19.5})
        self.call("GET", "/api/items?limit=10")
        # Agents get things wrong: a negative price is refused, a guessed id is not there.
        self.call("POST", "/api/items", json={"name": "Cable", "price": -3})
        self.call("GET", "/api/items/42")
        self.call(
            "POST",
            "/api/login",
            data={"username": "agent", "password": "correct horse battery staple"},
        )
        with self.call("GET", "/api/export", stream=True) as export:
            lines = [json.loads(line) for line in export.iter_lines() if line]
        print(f"         (the export streamed {len(lines)} items)")

    def close(self) -> None:
        self.http.close()


def open_session(collector_url: str) -> dict[str, str]:
    """Open an agent session at UASAM, as an agent does; return the header to send."""
    import requests

    from ..collector import DEMO_AGENT_KEY

    response = requests.post(
        collector_url + SESSION_CREATE_PATH,
        headers={AGENT_KEY_HEADER: DEMO_AGENT_KEY},
        json={"meta": {"agent": "otas-capture demo", "task": "stock the catalogue"}},
        timeout=TIMEOUT,
    )
    response.raise_for_status()
    session = response.json()["response"]
    return {session["Header_value"]: session["jwt_token"]}


_MASK_PLACES = {
    "post_data": "form",
    "query_params": "query",
    "request_body": "request body",
    "response_body": "response body",
}


def masked_summary(masked: list[str]) -> str:
    """``2 headers, form password, response body access_token``: short enough for a table."""
    headers = sum(name.split(".", 1)[0].endswith("_headers") for name in masked)
    parts = [f"{headers} header{'s' if headers > 1 else ''}"] if headers else []
    for name in masked:
        field, _, key = name.partition(".")
        if field in _MASK_PLACES:
            parts.append(f"{_MASK_PLACES[field]} {key}".strip())
    return ", ".join(parts) or "-"


def captured_table(events: list[dict[str, Any]]) -> str:
    """The events as the collector stored them, in the order the agent made the calls."""
    from ..collector import browse

    rows = []
    for event in sorted(events, key=browse.started_at):
        row = browse.summary(event)
        rows.append(
            [
                _output.printable(row["method"]),
                _output.clip(_output.printable(row["path"]), 24),
                str(row["status_code"]),
                _output.latency(row["latency_ms"]),
                _output.size(row["request_size_bytes"]),
                _output.size(row["response_size_bytes"]),
                masked_summary(row["masked"]),
            ]
        )
    headers = ["method", "path", "status", "latency", "request", "response", "masked"]
    return _output.table(headers, rows, right=(2, 3, 4, 5))


def wait_until_captured(otas: Any, expected: int) -> None:
    # The server hands a request to the middleware when the response is closed, a
    # moment after the client read its last byte; flush() covers only what it has.
    deadline = time.monotonic() + TIMEOUT
    while otas.stats()["captured"] < expected and time.monotonic() < deadline:
        time.sleep(0.01)


def run(args: argparse.Namespace) -> int:
    from ..collector import DEMO_SDK_KEY
    from ..collector.server import AppServer
    from .collector import banner, stop
    from .demo_app import create_app

    # The demo configures its app in code; OTAS_* settings of this shell (meant for a
    # real app) must not change what it shows.
    for name in [name for name in os.environ if name.startswith("OTAS_")]:
        del os.environ[name]

    try:
        collector = start_collector(args.port)
    except OSError as exc:
        print(f"error: cannot start the collector: {exc}", file=sys.stderr)
        return 1
    app_server = None
    otas = None
    agent = None
    try:
        options = dict(
            sdk_key=DEMO_SDK_KEY,
            brain_url=collector.url,
            uasam_url=collector.url,
        )
        if args.app == "fastapi":
            app_server, otas = _start_fastapi(options)
        else:
            app, otas = create_app(**options)
            app_server = AppServer(app).start()
        app_url = app_server.url
        print(f"Collector (OTAS stand-in) on {collector.url}; demo shop API on {app_url}")

        session_headers = open_session(collector.url)
        print("Agent session opened at UASAM; the agent calls the API:", flush=True)
        agent = Agent(app_url, session_headers)
        agent.converse()
        import requests

        plain = requests.get(app_url + "/api/items", timeout=TIMEOUT)
        print(f"  other  GET   {'/api/items':22} -> {plain.status_code} (no token: not captured)")

        print("Flushing the middleware...", flush=True)
        wait_until_captured(otas, agent.calls)
        delivered = otas.flush(timeout=TIMEOUT)
        events = collector.collector.events()
        print(f"\nThe collector received {len(events)} events:\n")
        print(captured_table(events))
        if args.keep:
            print(f"\nLive viewer: {collector.url}/ (kept up until Ctrl-C)")
        else:
            # The collector and its viewer stop with the demo: say so, or the link is dead.
            print(
                f"\nLive viewer: {collector.url}/ closes when the demo exits; "
                "run `otas-capture demo --keep` to keep it open."
            )
        if not delivered or len(events) != agent.calls:
            print(
                f"\nerror: {agent.calls} agent calls but {len(events)} events reached the "
                f"collector; middleware stats: {json.dumps(otas.stats())}",
                file=sys.stderr,
            )
            return 1
        print(
            f"OK: {agent.calls} agent calls, {agent.calls} events; the call without a token "
            "was not captured, and secrets were masked before leaving the app."
        )
        if args.keep:
            try:
                print(
                    f"\nKeeping everything up (Ctrl-C to stop). The demo API is on {app_url}.\n"
                    + banner(collector),
                    flush=True,
                )
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                print("\nstopped")
        return 0
    finally:
        if agent is not None:
            agent.close()
        if otas is not None:
            otas.close(timeout=TIMEOUT)
        if app_server is not None:
            app_server.stop()
        stop(collector)


def _start_fastapi(options: dict[str, Any]) -> tuple[Any, Any]:
    """The FastAPI shop under uvicorn, and its middleware; SystemExit if not installed."""
    from importlib.util import find_spec

    from .demo_fastapi import MISSING, UvicornThread, create_app

    if not all(find_spec(name) for name in ("fastapi", "uvicorn", "multipart")):
        raise SystemExit(f"error: {MISSING}")
    otas = create_app(**options)
    return UvicornThread(otas).start(), otas
