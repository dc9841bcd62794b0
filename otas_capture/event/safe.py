"""Text and JSON Brain's database accepts, made from whatever the app and the server hand over.

The contract's rules for "safe" are strict: text must be valid UTF-8 with no NUL
characters and no lone surrogates, and every JSON value must be one Brain can store.
The user's annotations are bounded in depth, values and characters. JSON is written by
:mod:`otas_capture.event.jsoncodec` (orjson when installed).
"""

from __future__ import annotations

import math
from typing import Any

from .jsoncodec import dumps_text

__all__ = [
    "bounded_json",
    "clean_json",
    "clean_text",
    "safe_str",
    "text_json",
    "wsgi_text",
]


def text_json(value: Any, finite: bool = False) -> str:
    """JSON text of a value parsed or built here (NaN allowed, as the standard library
    writes it); ``finite``: known to hold no NaN or infinity (see :mod:`.jsoncodec`)."""
    return dumps_text(value, True, finite=finite)


def clean_text(text: str) -> str:
    """Text Brain's database accepts: no NUL, no lone surrogate."""
    if text.isascii():
        return text.replace("\x00", "\ufffd") if "\x00" in text else text
    text = text.encode("utf-8", "replace").decode("utf-8")
    return text.replace("\x00", "\ufffd")


def wsgi_text(value: str) -> str:
    """Decode a PEP 3333 environ string (bytes carried as latin-1) as UTF-8 text."""
    if value.isascii():  # the usual case: decoding would give the same text back
        return clean_text(value)
    try:
        raw = value.encode("latin-1")
    except UnicodeEncodeError:  # the server already decoded it properly
        return clean_text(value)
    return clean_text(raw.decode("utf-8", "replace"))


def header_text(value: str) -> str:
    """A PEP 3333 header value as text: UTF-8 when its bytes are UTF-8, else the Latin-1
    text PEP 3333 makes of them, which is what the app itself reads (``acm\\xe9``: acmé)."""
    if value.isascii():
        return clean_text(value)
    try:
        return clean_text(value.encode("latin-1").decode("utf-8"))
    except UnicodeError:  # not UTF-8, or text a server already decoded: as the app has it
        return clean_text(value)


# Annotations are the user's objects: bound what they may cost the sender thread.
_ANNOTATION_DEPTH = 16
_ANNOTATION_NODES = 2_000
_ANNOTATION_CHARS = 64 * 1024
_TRUNCATED = "<truncated>"


class _Budget:
    """What a serialisation may still spend: values visited and characters of text."""

    __slots__ = ("nodes", "chars", "exhausted")

    def __init__(self, nodes: int, chars: int) -> None:
        self.nodes = nodes
        self.chars = chars
        self.exhausted = False


def bounded_json(
    value: Any,
    max_depth: int = _ANNOTATION_DEPTH,
    max_nodes: int = _ANNOTATION_NODES,
    max_chars: int = _ANNOTATION_CHARS,
) -> tuple[Any, bool]:
    """A JSON-safe copy of user data, and whether a bound cut it.

    Strings are cleaned, numbers made finite, keys made strings, other objects turned
    into their ``str()``. The copy is bounded in depth, in the number of values visited
    and in characters, so that neither a cycle nor a small structure that repeats
    references (a list holding the same list twice, forty levels deep, is 2**40 values
    when expanded) can keep the sender busy: what is past a bound becomes a marker.
    """
    budget = _Budget(max_nodes, max_chars)
    return _bounded(value, 0, max_depth, budget, set()), budget.exhausted


def clean_json(value: Any) -> Any:
    """:func:`bounded_json` without saying whether it was cut."""
    return bounded_json(value)[0]


def _bounded(value: Any, depth: int, max_depth: int, budget: _Budget, path: set[int]) -> Any:
    budget.nodes -= 1
    if budget.nodes < 0:
        budget.exhausted = True
        return _TRUNCATED
    if isinstance(value, str):
        return _spend_text(clean_text(value), budget)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        # Brain's JSON columns hold 64-bit integers; bigger ones travel as text.
        return value if -(2**63) <= value < 2**63 else _spend_text(safe_str(value), budget)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if not isinstance(value, (dict, list, tuple, set, frozenset)):
        return _spend_text(safe_str(value), budget)
    if depth >= max_depth:
        budget.exhausted = True
        return "<nested too deep>"
    if id(value) in path:
        return "<cycle>"  # a container inside itself
    path.add(id(value))
    try:
        if isinstance(value, dict):
            result: dict[str, Any] = {}
            for key, item in value.items():
                if budget.nodes <= 0 or budget.chars <= 0:
                    budget.exhausted = True
                    result[_TRUNCATED] = True
                    break
                name = _spend_text(safe_str(key), budget)
                result[name] = _bounded(item, depth + 1, max_depth, budget, path)
            return result
        items = []
        for item in value:
            if budget.nodes <= 0 or budget.chars <= 0:
                budget.exhausted = True
                items.append(_TRUNCATED)
                break
            items.append(_bounded(item, depth + 1, max_depth, budget, path))
        return items
    except Exception:  # a container whose iteration raises (a dict changed meanwhile)
        return "<unprintable>"
    finally:
        path.discard(id(value))


def _spend_text(text: str, budget: _Budget) -> str:
    if len(text) <= budget.chars:
        budget.chars -= len(text)
        return text
    budget.exhausted = True
    kept = text[: max(budget.chars, 0)]
    budget.chars = 0
    return kept + "..."


def safe_str(value: Any) -> str:
    """``str(value)`` made clean, never raising whatever the value's ``__str__`` does."""
    if isinstance(value, str):
        return clean_text(value)
    try:
        return clean_text(str(value))
    except Exception:  # a broken __str__, or an int too long to print
        return "<unprintable>"
