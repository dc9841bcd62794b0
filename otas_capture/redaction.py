"""Keeping secrets out of events: header redaction and masking of sensitive fields.

Header values are replaced whole. Field values are masked wherever a key of that name
appears: at any depth of a JSON document, in URL-encoded form data and in query strings.
Names match without regard to case, and ``-`` matches ``_`` (``Api-Key`` is ``api_key``).
When a JSON body cannot be parsed (it was cut at the capture limit, say), a textual
pass still masks ``"name": value`` pairs, so truncation never leaks a password.

These are pure functions, run by the sender thread, never on the request path.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from typing import Any

REDACTED = "[REDACTED]"
TOO_DEEP = "[REDACTED: nested too deep to inspect]"
_MAX_DEPTH = 64


def normalize_name(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def form_key_name(key: str) -> str:
    """The field a form key names: ``user[password]`` names ``password``."""
    if key.endswith("]") and "[" in key:
        key = key[key.rindex("[") + 1 : -1]
    return normalize_name(key)


def redact_headers(
    headers: Iterable[tuple[str, str]], sensitive: Collection[str]
) -> list[tuple[str, str]]:
    """Headers with the value of every sensitive one replaced by ``[REDACTED]``."""
    return [(name, REDACTED if name.lower() in sensitive else value) for name, value in headers]


def mask_pairs(
    pairs: Iterable[tuple[str, str]], fields: Collection[str]
) -> tuple[list[tuple[str, str]], bool]:
    """Mask the values of sensitive keys in (key, value) pairs; say whether any was."""
    masked = []
    changed = False
    for key, value in pairs:
        if form_key_name(key) in fields:
            masked.append((key, REDACTED))
            changed = True
        else:
            masked.append((key, value))
    return masked, changed


def mask_json(value: Any, fields: Collection[str], depth: int = 0) -> tuple[Any, bool]:
    """A copy of a parsed JSON value with sensitive keys masked at any depth."""
    if depth > _MAX_DEPTH:
        # Too deep to inspect safely: hide it rather than risk shipping a secret.
        return (TOO_DEEP, True) if isinstance(value, (dict, list)) else (value, False)
    if isinstance(value, dict):
        result = {}
        changed = False
        for key, item in value.items():
            if isinstance(key, str) and normalize_name(key) in fields:
                result[key] = REDACTED
                changed = True
            else:
                result[key], item_changed = mask_json(item, fields, depth + 1)
                changed = changed or item_changed
        return result, changed
    if isinstance(value, list):
        items = [mask_json(item, fields, depth + 1) for item in value]
        return [item for item, _ in items], any(changed for _, changed in items)
    return value, False


class TextMasker:
    """Masks ``"name": value`` pairs in JSON-like text that could not be parsed."""

    def __init__(self, fields: Collection[str]) -> None:
        names = sorted(fields)
        self._needles = tuple({n for name in names for n in (name, name.replace("_", "-"))})
        # Match either spelling of each name (api_key / api-key), any case.
        alternatives = "|".join(re.escape(n).replace("_", "[_-]") for n in names) or "(?!)"
        self._pattern = re.compile(
            r'("(?:' + alternatives + r')"\s*:\s*)("(?:[^"\\]|\\.)*"?|[^,}\]\s]*)',
            re.IGNORECASE,
        )

    def may_contain(self, text: str) -> bool:
        """False when no sensitive name can be in ``text``: it then needs no parsing.

        A name spelled with JSON or percent escapes is only visible once parsed, so any
        escape at all means "maybe".
        """
        if "\\u" in text or "%" in text:
            return True
        lowered = text.lower()
        return any(needle in lowered for needle in self._needles)

    def mask(self, text: str) -> tuple[str, bool]:
        masked, count = self._pattern.subn(r'\1"' + REDACTED + '"', text)
        return masked, count > 0
