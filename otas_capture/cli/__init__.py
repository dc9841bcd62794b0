"""The ``otas-capture`` command (also ``python -m otas_capture``).

Subcommands, each in its own module:

- ``collector``: the local OTAS stand-in with its live viewer (:mod:`.collector`);
- ``demo``: an agent conversation against a demo API, captured locally (:mod:`.demo`);
- ``doctor``: check the OTAS settings against the real servers (:mod:`.doctor`);
- ``tail``: follow the events reaching a running collector (:mod:`.tail`).

Exit codes, shared by all: 0 success; 1 a check or the demo failed, or a server could
not be reached or started; 2 bad arguments. Every command runs on the package's own
dependencies: the ``demo`` and ``collector`` extras only add a faster server (waitress).
"""

from __future__ import annotations

import argparse
import sys

from .._version import __version__
from . import collector, demo, doctor, tail

EPILOG = """\
examples:
  otas-capture demo             # see it work, no account needed
  otas-capture collector        # a local OTAS for your own app, viewer at http://127.0.0.1:8002/
  otas-capture tail             # follow what reaches that collector
  otas-capture doctor           # check this shell's OTAS_* settings against OTAS

exit codes: 0 success; 1 a check or the demo failed, or a server could not be reached or
started; 2 bad arguments. `otas-capture COMMAND --help` shows each command's options.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="otas-capture",
        description="See and check what otas-capture sends to OTAS.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"otas-capture {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for module in (demo, collector, tail, doctor):
        module.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns its exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help(sys.stderr)
        return 2
    try:
        code: int = args.run(args)
    except KeyboardInterrupt:
        return 130
    return code
