"""``python -m otas_capture.collector``: the local collector in the foreground, for humans.

Prints what to configure (URL, SDK key, project id, a session token, the environment
for the app) and serves until Ctrl-C. ``--db PATH`` keeps the events in a SQLite file,
so that they survive a restart; the options of :mod:`.options` bound what is kept and
name the hosts answered besides loopback.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import time
import uuid
import warnings

from ..contract import SESSION_TOKEN_HEADER, is_sdk_key
from .app import (
    DEMO_AGENT_KEY,
    DEMO_PROJECT_ID,
    DEMO_SDK_KEY,
    DEMO_SECRET,
    EVENTS_PATH,
    Collector,
)
from .memory import keep_big_buffers_out_of_the_heap
from .options import add_options, emulate, store_bounds
from .server import CollectorServer
from .store import MEMORY, EventStore
from .viewer import mount_viewer


def _sdk_key_arg(value: str) -> str:
    if not is_sdk_key(value):
        raise argparse.ArgumentTypeError("must look like otas_<prefix>_<secret>")
    return value


def _project_id_arg(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise argparse.ArgumentTypeError("must be a UUID") from None


def main(argv: list[str] | None = None) -> int:
    """Serve UASAM and Brain on one port until Ctrl-C, after printing what to configure."""
    parser = argparse.ArgumentParser(
        prog="python -m otas_capture.collector",
        description="Local stand-in for the OTAS UASAM and Brain servers.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8002, help="port, 0 for any (default 8002)")
    parser.add_argument("--secret", default=DEMO_SECRET, help="HS256 secret for session tokens")
    parser.add_argument(
        "--sdk-key",
        type=_sdk_key_arg,
        default=DEMO_SDK_KEY,
        help="backend SDK key to accept (otas_<prefix>_<secret>)",
    )
    parser.add_argument(
        "--db",
        default=MEMORY,
        metavar="PATH",
        help="SQLite file keeping the events across restarts (default :memory:, forgotten)",
    )
    parser.add_argument(
        "--project-id",
        type=_project_id_arg,
        default=DEMO_PROJECT_ID,
        help="project id (UUID) the SDK key belongs to",
    )
    add_options(parser)
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error("argument --port: must be from 0 to 65535")
    if not args.secret:
        parser.error("argument --secret: must not be empty")
    if args.secret == DEMO_SECRET:
        # PyJWT >= 2.10 warns that the fixed demo secret is under 32 bytes; it is public
        # anyway, so the warning would only clutter the banner.
        warnings.filterwarnings("ignore", message="The HMAC key is", category=UserWarning)

    keep_big_buffers_out_of_the_heap()
    try:
        store = EventStore(args.db, **store_bounds(args))
    except sqlite3.Error as exc:
        print(f"error: cannot open the database {args.db}: {exc}", file=sys.stderr)
        return 1
    collector = Collector(
        secret=args.secret,
        sdk_keys={args.sdk_key: args.project_id},
        store=store,
        allowed_hosts=args.allow_host,
    )
    emulate(collector, args)
    mount_viewer(collector)
    try:
        server = CollectorServer(collector, args.host, args.port, log_requests=True).start()
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        store.close()
        return 1
    kept = "in memory" if args.db == MEMORY else f"in {args.db} ({store.count()} so far)"
    print(
        f"OTAS local collector (UASAM and Brain) on {server.url}\n"
        f"  live viewer:   {server.url}/\n"
        f"  SDK key:       {args.sdk_key}\n"
        f"  project id:    {args.project_id}\n"
        f"  agent key:     {DEMO_AGENT_KEY}\n"
        f"  session token: {collector.issue_token()}\n"
        f"                 (send it as {SESSION_TOKEN_HEADER}; valid 30 days)\n\n"
        f"Set in your backend's environment:\n"
        f"  export OTAS_SDK_KEY={args.sdk_key}\n"
        f"  export OTAS_BRAIN_URL={server.url}\n"
        f"  export OTAS_UASAM_URL={server.url}\n\n"
        f"Accepted events, kept {kept}:\n"
        f"  GET {server.url}{EVENTS_PATH} (DELETE clears them)\n"
        f"Press Ctrl-C to stop.",
        flush=True,
    )
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        store.close()
    return 0
