"""The command-line options both collector commands share, defined once.

``python -m otas_capture.collector`` and ``otas-capture collector`` take the same
options for what the collector answers (``--allow-host``) and how much it keeps
(``--max-events``, ``--max-mb``); :func:`add_options` adds them to a parser and
:func:`store_bounds` reads them back.
"""

from __future__ import annotations

import argparse

from .store import DEFAULT_MAX_BYTES, DEFAULT_MAX_EVENTS, MIN_MAX_BYTES

MIB = 1024 * 1024


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError("must be a whole number") from None
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


def _megabytes(value: str) -> int:
    number = _positive(value)
    if number * MIB < MIN_MAX_BYTES:
        raise argparse.ArgumentTypeError(f"must be at least {MIN_MAX_BYTES // MIB}")
    return number


def add_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--allow-host``, ``--max-events`` and ``--max-mb`` to ``parser``."""
    parser.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="also answer requests for this Host besides localhost, 127.0.0.1 and [::1] "
        "(e.g. a Docker service name); repeatable",
    )
    parser.add_argument(
        "--max-events",
        type=_positive,
        default=DEFAULT_MAX_EVENTS,
        metavar="N",
        help=f"keep at most N events, dropping the oldest (default {DEFAULT_MAX_EVENTS})",
    )
    parser.add_argument(
        "--max-mb",
        type=_megabytes,
        default=DEFAULT_MAX_BYTES // MIB,
        metavar="MIB",
        help=f"keep at most MIB MiB of events, dropping the oldest "
        f"(default {DEFAULT_MAX_BYTES // MIB})",
    )


def store_bounds(args: argparse.Namespace) -> dict[str, int]:
    """The ``EventStore`` keyword arguments the options ask for."""
    return {"max_events": args.max_events, "max_bytes": args.max_mb * MIB}
