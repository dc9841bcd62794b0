"""``otas-capture collector``: the local OTAS stand-in with its live viewer, for humans.

Starts :class:`~otas_capture.collector.CollectorServer` with the viewer mounted, prints
everything needed to point an app at it, and serves until Ctrl-C.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from ..contract import AGENT_KEY_HEADER, SESSION_CREATE_PATH, SESSION_TOKEN_HEADER

if TYPE_CHECKING:
    from ..collector import Collector, CollectorServer

DEFAULT_PORT = 8002  # Brain's default port: an app with default settings finds it there

EPILOG = """\
examples:
  otas-capture collector                     # on http://127.0.0.1:8002, viewer at /
  otas-capture collector --port 9000
  otas-capture collector --db events.sqlite  # keep events across restarts
  otas-capture collector --host 0.0.0.0 --allow-host collector  # in a Docker network

It answers only requests whose Host is localhost, 127.0.0.1 or [::1] (so that no web
page can reach it through DNS rebinding), and any name given with --allow-host.

exit codes: 0 stopped with Ctrl-C; 1 could not listen on the port; 2 bad arguments.

It serves with waitress when that is installed (pip install 'otas-capture[collector]'),
else with the standard library's server, which closes the connection after each call.
"""


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "collector",
        help="run the local OTAS stand-in (UASAM + Brain) with its live viewer",
        description=(
            "Run a local stand-in for OTAS UASAM and Brain on one port, with a live "
            "viewer of the events it receives at /. It prints the SDK key and project id "
            "it accepts and the environment to point an app at it."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port, 0 for any (default {DEFAULT_PORT})"
    )
    parser.add_argument(
        "--db",
        default=":memory:",
        metavar="PATH",
        help="SQLite file keeping events across restarts (default :memory:, kept in memory)",
    )
    from ..collector.options import add_options

    add_options(parser)
    parser.set_defaults(run=run)


def quiet_demo_secret_warning() -> None:
    # PyJWT >= 2.10 warns that the fixed demo secret is under 32 bytes; it is public
    # anyway, so the warning would only clutter the output.
    warnings.filterwarnings("ignore", message="The HMAC key is", category=UserWarning)


def start(
    host: str,
    port: int,
    db: str = ":memory:",
    *,
    allowed_hosts: Sequence[str] = (),
    bounds: Mapping[str, int] | None = None,
) -> CollectorServer:
    """A running collector with the viewer mounted; ``bounds`` are ``EventStore``'s
    ``max_events`` and ``max_bytes``.

    Raises OSError if the port is taken, sqlite3.Error if the database cannot be opened.
    """
    from ..collector import Collector, CollectorServer, EventStore
    from ..collector.viewer import mount_viewer

    quiet_demo_secret_warning()
    store = EventStore(db, **(bounds or {}))
    collector = Collector(store=store, allowed_hosts=allowed_hosts)
    mount_viewer(collector)
    try:
        return CollectorServer(collector, host, port).start()
    except OSError:
        store.close()
        raise


def stop(server: CollectorServer) -> None:
    """Stop serving and close the event store (flushing a database file)."""
    server.stop()
    server.collector.store.close()


def banner(server: CollectorServer) -> str:
    """What a person needs to point an app (and an agent) at this collector."""
    from ..collector import DEMO_AGENT_KEY, DEMO_PROJECT_ID, DEMO_SDK_KEY

    collector: Collector = server.collector
    url = server.url
    served = (
        ""
        if server.uses_waitress
        else "  (served by the standard library's server, one connection per call; "
        "pip install 'otas-capture[collector]' for waitress)\n"
    )
    return (
        f"OTAS local collector (UASAM and Brain) on {url}\n"
        f"{served}"
        f"  live viewer:   {url}/\n"
        f"  SDK key:       {DEMO_SDK_KEY}\n"
        f"  project id:    {DEMO_PROJECT_ID}\n\n"
        f"Point your backend at it (same variables as production):\n"
        f"  export OTAS_SDK_KEY={DEMO_SDK_KEY}\n"
        f"  export OTAS_BRAIN_URL={url}\n"
        f"  export OTAS_UASAM_URL={url}\n\n"
        f"Agents open a session at UASAM to get a token:\n"
        f"  curl -s -X POST {url}{SESSION_CREATE_PATH} \\\n"
        f"       -H '{AGENT_KEY_HEADER}: {DEMO_AGENT_KEY}' \\\n"
        f"       -H 'Content-Type: application/json' -d '{{\"meta\": {{}}}}'\n"
        f"  or use this one (valid 30 days), sent as {SESSION_TOKEN_HEADER}:\n"
        f"  {collector.issue_token()}\n\n"
        f"Check the setup with `otas-capture doctor`; follow events with `otas-capture tail`."
    )


def run(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:
        print("error: --port must be from 0 to 65535", file=sys.stderr)
        return 2
    from ..collector.memory import keep_big_buffers_out_of_the_heap
    from ..collector.options import emulate, store_bounds

    keep_big_buffers_out_of_the_heap()
    try:
        server = start(
            args.host,
            args.port,
            args.db,
            allowed_hosts=args.allow_host,
            bounds=store_bounds(args),
        )
    except sqlite3.Error as exc:
        print(f"error: cannot open the database {args.db}: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(
            f"error: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return 1
    emulate(server.collector, args)
    store = server.collector.store
    kept = "in memory" if args.db == ":memory:" else f"in {args.db} ({store.count()} so far)"
    try:
        # Inside the try: a Ctrl-C that lands while the banner prints still stops cleanly.
        print(f"{banner(server)}\nEvents are kept {kept}. Press Ctrl-C to stop.", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("\nstopped")
    finally:
        stop(server)
    return 0
