"""The command-line options both collector commands share, defined once.

``python -m otas_capture.collector`` and ``otas-capture collector`` take the same
options for what the collector answers (``--allow-host``), how much it keeps
(``--max-events``, ``--max-mb``) and how its Brain performs (``--brain-load``,
``--capacity``, as ``/collector/conditions`` sets them later); :func:`add_options`
adds them to a parser, :func:`store_bounds` and :func:`emulate` apply them.
"""

from __future__ import annotations

import argparse

from .app import Collector
from .emulation import checked_capacity
from .load import SHAPES
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


def _capacity(value: str) -> tuple[int | None, float]:
    workers, _, seconds = value.partition(":")
    try:
        return checked_capacity(int(workers), float(seconds))
    except ValueError:
        raise argparse.ArgumentTypeError("must be WORKERS:SECONDS, e.g. 4:0.4") from None


def add_options(parser: argparse.ArgumentParser) -> None:
    """Add the options the module names to ``parser``."""
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
    parser.add_argument(
        "--brain-load",
        choices=sorted(SHAPES),
        help="make log calls slow down as they pile up: real-brain (0.45 s alone, best "
        "at 6 in flight, 11 s at 32) or saturated (one call uses it all)",
    )
    parser.add_argument(
        "--capacity",
        type=_capacity,
        metavar="WORKERS:SECONDS",
        help="serve log calls with WORKERS slots of SECONDS each, the rest queueing",
    )


def store_bounds(args: argparse.Namespace) -> dict[str, int]:
    """The ``EventStore`` keyword arguments the options ask for."""
    return {"max_events": args.max_events, "max_bytes": args.max_mb * MIB}


def emulate(collector: Collector, args: argparse.Namespace) -> None:
    """Set the Brain performance the options ask for on ``collector``."""
    if args.capacity is not None:
        collector.set_capacity(*args.capacity)
    if args.brain_load is not None:
        collector.set_load(args.brain_load)
