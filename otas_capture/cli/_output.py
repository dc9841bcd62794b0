"""Terminal output for the commands: colour only on a terminal, tables, plain sizes.

Colour follows the usual conventions: only when the stream is a terminal, never when
``NO_COLOR`` is set (https://no-color.org), always when ``FORCE_COLOR`` is set.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, TextIO

_CODES = {
    "green": "32",
    "blue": "34",
    "yellow": "33",
    "red": "31",
    "bold": "1",
    "dim": "2",
}

STATUS_COLOURS = {"1xx": "green", "2xx": "green", "3xx": "blue", "4xx": "yellow", "5xx": "red"}


def wants_colour(stream: TextIO) -> bool:
    """Whether to colour what goes to ``stream``."""
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class Painter:
    """Wraps text in ANSI colours, or leaves it alone when colour is off."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __call__(self, text: str, colour: str) -> str:
        if not self.enabled or colour not in _CODES:
            return text
        return f"\x1b[{_CODES[colour]}m{text}\x1b[0m"

    def status(self, status: Any, status_class: str) -> str:
        return self(str(status), STATUS_COLOURS.get(status_class, "red"))


def printable(text: Any) -> str:
    """``text`` safe for a terminal: control characters shown as escapes, not obeyed.

    Captured requests are untrusted; a path carrying ``ESC[2J`` must not clear the
    screen of the person running ``tail``, nor rewrite the lines above.
    """
    shown = str(text)
    if shown.isprintable():
        return shown
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in shown)


def latency(value: Any) -> str:
    return f"{value:.1f} ms" if isinstance(value, (int, float)) else "-"


def size(value: Any) -> str:
    return f"{value} B" if isinstance(value, int) else "-"


def clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> str:
    """Plain-text columns; ``right`` lists the column indexes aligned right (numbers)."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row)]

    def line(cells: Sequence[str]) -> str:
        out = [
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(cells, widths))
        ]
        return "  ".join(out).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows])
