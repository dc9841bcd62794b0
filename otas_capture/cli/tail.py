"""``otas-capture tail``: print events as they reach a running local collector.

It polls the viewer's JSON endpoint (``/viewer/api/events?after=<last id>``) once a
second and prints one line per new event, oldest first, coloured by status class when
the output is a terminal. Filters are applied by the collector.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import requests

from ..collector.browse import short_id
from ..collector.viewer import EVENTS_API, MAX_LIMIT
from . import _output
from .collector import DEFAULT_PORT

EPILOG = f"""\
examples:
  otas-capture tail                               # the collector on 127.0.0.1:{DEFAULT_PORT}
  otas-capture tail --session 2b1c...             # one agent session
  otas-capture tail --agent 0000... --status 5xx  # one agent's server errors
  otas-capture tail --search acme --env staging   # text in headers or bodies
  otas-capture tail --url http://127.0.0.1:9000 --last 0

exit codes: 0 stopped with Ctrl-C (or after --max-events); 1 the collector cannot be
reached at start; 2 bad arguments.
"""


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "tail",
        help="print events as they reach a running local collector",
        description="Print the events a running `otas-capture collector` receives, as they arrive.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--url",
        default=f"http://127.0.0.1:{DEFAULT_PORT}",
        help=f"the collector (default http://127.0.0.1:{DEFAULT_PORT})",
    )
    parser.add_argument("--session", default="", metavar="ID", help="only this agent session")
    parser.add_argument("--agent", default="", metavar="ID", help="only this agent")
    parser.add_argument(
        "--status", default="", choices=["", "2xx", "3xx", "4xx", "5xx"], help="only this class"
    )
    parser.add_argument("--path", default="", metavar="TEXT", help="only paths containing TEXT")
    parser.add_argument(
        "--search",
        default="",
        metavar="TEXT",
        help="only events with TEXT in the path, query, headers, bodies or error",
    )
    parser.add_argument(
        "--env", default="", metavar="NAME", help="only events from this environment"
    )
    parser.add_argument(
        "--last", type=int, default=10, metavar="N", help="first show the N latest (default 10)"
    )
    parser.add_argument(
        "--max-events", type=int, default=0, metavar="N", help="stop after N events (0: never)"
    )
    parser.add_argument(
        "--interval", type=float, default=1.0, metavar="S", help="seconds between polls"
    )
    parser.set_defaults(run=run)


def format_line(row: dict[str, Any], paint: _output.Painter) -> str:
    """One event on one line: time, method, path and query, status, latency, sizes,
    agent and session (by the part of their ids that tells them apart), environment.

    Every text taken from the event goes through :func:`_output.printable`: it is
    untrusted, and a terminal obeys control characters.
    """
    text = {key: _output.printable(row[key]) for key in ("started_at", "method", "path", "error")}
    if row.get("query"):
        text["path"] += "?" + _output.printable(row["query"])
    clock = text["started_at"][11:23] if len(text["started_at"]) >= 23 else text["started_at"]
    masked = ", ".join(_output.printable(name) for name in row["masked"])
    masked = f"  masked: {masked}" if masked else ""
    error = f"  error: {_output.clip(text['error'], 60)}" if text["error"] else ""
    env = f"  env {_output.printable(row['environment'])}" if row.get("environment") else ""
    return (
        f"{paint(clock, 'dim')}  {text['method']:6} {text['path']:30} "
        f"{paint.status(_output.printable(row['status_code']), row['status_class'])}  "
        f"{_output.latency(row['latency_ms']):>9}  "
        f"req {_output.size(row['request_size_bytes']):>7}  "
        f"resp {_output.size(row['response_size_bytes']):>8}  "
        f"agent {_output.printable(short_id(row['agent_id']) or '-')}  "
        f"session {_output.printable(short_id(row['agent_session_id']) or '-')}{env}{masked}{error}"
    )


def _fetch(url: str, params: dict[str, Any]) -> dict[str, Any]:
    response = requests.get(url + EVENTS_API, params=params, timeout=5.0)
    response.raise_for_status()
    body = response.json()
    if not isinstance(body, dict):
        raise ValueError("not a collector's answer")
    return body


def run(args: argparse.Namespace) -> int:
    if args.last < 0 or args.max_events < 0 or not 0.05 <= args.interval <= 60:
        print("error: --last and --max-events must be >= 0, --interval 0.05 to 60", file=sys.stderr)
        return 2
    url = args.url.rstrip("/")
    paint = _output.Painter(_output.wants_colour(sys.stdout))
    filters = {
        "session": args.session,
        "agent": args.agent,
        "status": args.status,
        "path": args.path,
        "q": args.search,
        "env": args.env,
    }
    filters = {key: value for key, value in filters.items() if value}
    try:
        first = _fetch(url, {**filters, "limit": max(args.last, 1)})
    except (requests.RequestException, ValueError) as exc:
        print(
            f"error: no collector answers at {url} ({type(exc).__name__}); "
            "start one with `otas-capture collector`",
            file=sys.stderr,
        )
        return 1
    latest = int(first["latest"])
    shown = 0
    backlog = first["events"][: args.last] if args.last else []
    print(paint(f"Following events at {url} (Ctrl-C to stop)", "dim"), flush=True)
    lost = False
    try:
        while True:
            for row in reversed(backlog):
                print(format_line(row, paint), flush=True)
                shown += 1
                if args.max_events and shown >= args.max_events:
                    return 0
            time.sleep(args.interval)
            try:
                # As many as the collector gives: a burst between two polls is printed
                # whole, not only its newest page.
                page = _fetch(url, {**filters, "after": latest, "limit": MAX_LIMIT})
            except (requests.RequestException, ValueError):
                if not lost:
                    print(paint("collector unreachable; retrying...", "red"), file=sys.stderr)
                    lost = True
                backlog = []
                continue
            if lost:
                print(paint("collector back", "dim"), file=sys.stderr)
                lost = False
            if int(page["latest"]) < latest:  # cleared, or restarted without a database
                latest = 0
                backlog = []
                continue
            latest = int(page["latest"])
            backlog = page["events"]
    except KeyboardInterrupt:
        return 0
