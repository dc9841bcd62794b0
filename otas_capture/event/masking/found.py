"""What masking removed from one event, and scrubbing those values from its other fields.

Every value masking removes is collected (:class:`Found`), so that the event builder
can scrub it from every other field of the same event (a password the response echoes,
a token quoted in an error message), in every spelling it may take there
(:class:`Scrubber`).
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, quote_plus

from .names import REDACTED

__all__ = ["MAX_DEPTH", "Found", "Scrubber"]

MAX_DEPTH = 64  # of nested JSON a masker or the scrubber walks
_MIN_SCRUB_LENGTH = 6
_MAX_FOUND = 512


class Found:
    """The values masking removed from one event, to be scrubbed from its other fields.

    Values shorter than six characters are not kept: ``true``, ``1`` or ``abc`` would
    match by chance all over the event. The count is bounded.
    """

    __slots__ = ("values",)

    def __init__(self) -> None:
        self.values: set[str] = set()

    def add(self, value: Any, depth: int = 0) -> None:
        if isinstance(value, str):
            text = value.strip()
            if len(text) >= _MIN_SCRUB_LENGTH and len(self.values) < _MAX_FOUND:
                self.values.add(text)
        elif isinstance(value, bool) or value is None:
            return
        elif isinstance(value, (int, float)):
            self.add(str(value))
        elif depth > MAX_DEPTH:
            return
        elif isinstance(value, dict):
            for item in value.values():
                self.add(item, depth + 1)
        elif isinstance(value, list):
            for item in value:
                self.add(item, depth + 1)

    def add_header(self, name: str, value: str) -> None:
        """A redacted header's value and the credential inside it."""
        self.add(value)
        lowered = name.lower()
        if lowered == "set-cookie":
            self.add(value.split(";", 1)[0].partition("=")[2])
        elif lowered == "cookie":
            for part in value.split(";"):
                self.add(part.partition("=")[2])
        else:
            scheme, _, credential = value.strip().partition(" ")
            if credential:
                self.add(credential)
                if scheme.lower() == "basic":
                    try:
                        decoded = base64.b64decode(credential.strip(), validate=True)
                        self.add(decoded.decode("utf-8", "replace").partition(":")[2])
                    except (binascii.Error, ValueError):
                        pass


# Characters that JSON and URL encoding leave as they are (tokens and keys are made of them).
_PLAIN = re.compile(r"[A-Za-z0-9._~-]*")


def _spell(secret: str) -> tuple[str, ...]:
    """A secret as written, escaped in JSON text, and percent-encoded in a URL or a form."""
    if _PLAIN.fullmatch(secret):
        return (secret,)
    return (
        secret,
        json.dumps(secret, ensure_ascii=False)[1:-1],
        json.dumps(secret)[1:-1],
        quote_plus(secret),
        quote(secret, safe=""),
        # JSON encoders that escape "/" (PHP's, some Java ones) write it as "\/".
        json.dumps(secret)[1:-1].replace("/", "\\/"),
    )


# What JSON text escapes when non-ASCII is kept: the quote, the backslash, control characters.
_JSON_ESCAPED = re.compile(r'[\x00-\x1f"\\]')

# The same secrets (a key, a session's token, its Authorization header) recur event after
# event: spell each once. Only short ones are cached, so the cache stays small.
_spellings = functools.lru_cache(maxsize=256)(_spell)


# absent_from_json is called twice per event: narrow on the first call of the second event.
_NARROW_AT = 3


def _innermost(spellings: list[bytes]) -> list[bytes]:
    """The spellings that contain no other (``spellings`` are longest first)."""
    kept: list[bytes] = []
    for spelling in reversed(spellings):
        for shorter in kept:
            if shorter in spelling:
                break
        else:
            kept.append(spelling)
    return kept


class Scrubber:
    """Replaces every known secret, in any spelling it may take in an event, with the marker."""

    def __init__(self, secrets: Iterable[str]) -> None:
        variants: set[str] = set()
        for secret in secrets:
            if len(secret) >= _MIN_SCRUB_LENGTH:
                variants.update(_spellings(secret) if len(secret) <= 512 else _spell(secret))
        variants.discard(REDACTED)
        # Longest first: a secret that contains another is replaced whole.
        self._variants = sorted(variants, key=len, reverse=True)
        self._shortest = len(self._variants[-1]) if self._variants else 0
        # A variant JSON would not escape shows in an encoded event exactly as written.
        self._verbatim_in_json = not any(map(_JSON_ESCAPED.search, self._variants))
        # The spellings to search for "is any there?"; see absent_from_json.
        self._needles = [variant.encode("utf-8", "surrogatepass") for variant in self._variants]
        self._searches = 0

    def __bool__(self) -> bool:
        return bool(self._variants)

    def absent_from_json(self, encoded: bytes) -> bool:
        """Whether scrubbing the strings of a value would change nothing, judged from
        ``encoded``, its UTF-8 JSON text (``ensure_ascii=False``; a string may hold JSON
        text in turn).

        True only when no secret can be in any of its strings; False means maybe. One
        search of the whole text is much cheaper than scrubbing each field, and events
        seldom hold a known secret outside the fields masking already replaced.
        """
        if not self._variants:
            return True
        if not self._verbatim_in_json:
            return False  # a secret with a quote or a control character: look closely
        # A scrubber the builder reuses (the key, a session's token and its header, event
        # after event) searches only the spellings that hold no other: the shorter one is
        # there whenever one that holds it is ("Bearer <token>" holds the token). Finding
        # them costs more than it saves on one event, so it is done at the second use.
        self._searches += 1  # a race only narrows twice, to the same list
        if self._searches == _NARROW_AT:
            self._needles = _innermost(self._needles)
        for needle in self._needles:
            if needle in encoded:
                return False
        return True

    def text(self, text: str) -> str:
        if len(text) < self._shortest:
            return text
        for variant in self._variants:
            if variant in text:
                text = text.replace(variant, REDACTED)
        return text

    def json(self, value: Any, depth: int = 0) -> Any:
        """A parsed-JSON-like value with its strings (not keys) scrubbed."""
        if isinstance(value, str):
            return self.text(value)
        if depth > MAX_DEPTH:
            return value
        if isinstance(value, dict):
            return {key: self.json(item, depth + 1) for key, item in value.items()}
        if isinstance(value, list):
            return [self.json(item, depth + 1) for item in value]
        return value
