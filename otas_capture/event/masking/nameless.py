"""Secrets that are secret whatever names them: the password of a URL with credentials
(``postgres://user:pw@host``) and the body of a PEM private key.

Each comes with a cheap test of whether the text may hold one, which the pre-check
(:mod:`.precheck`) reads, since no field name announces these.
"""

from __future__ import annotations

import re
from typing import Callable, NamedTuple
from urllib.parse import unquote_plus

from .found import Found
from .names import REDACTED

__all__ = ["NAMELESS", "Nameless", "mask_private_keys", "mask_userinfo"]

# scheme://user:password@host (a database URL, a proxy): the password, up to the "@".
USERINFO = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@?#\"'<>]*:)([^/\s@?#\"'<>]+)@")


def mask_userinfo(text: str, found: Found) -> tuple[str, bool]:
    """Mask the password of every URL with credentials (``scheme://user:password@host``)."""
    changed = False

    def replace(match: re.Match[str]) -> str:
        nonlocal changed
        if match.group(2) == REDACTED:
            return match.group()
        found.add(match.group(2))
        found.add(unquote_plus(match.group(2)))
        changed = True
        return match.group(1) + REDACTED + "@"

    masked = USERINFO.sub(replace, text)
    return (masked if changed else text), changed


def _may_hold_userinfo(text: str) -> bool:
    return "://" in text and USERINFO.search(text) is not None


# A PEM private key is a secret whatever the field holding it is called.
_PRIVATE_KEY = re.compile(
    r"(-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----)(.*?)(-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)",
    re.DOTALL,
)


def mask_private_keys(text: str, found: Found) -> tuple[str, bool]:
    """Mask the body of every PEM private key block (to the end of the text if cut)."""
    changed = False

    def replace(match: re.Match[str]) -> str:
        nonlocal changed
        if match.group(2) == REDACTED:
            return match.group()
        found.add(match.group(2))
        changed = True
        return match.group(1) + REDACTED + match.group(3)

    masked = _PRIVATE_KEY.sub(replace, text)
    return (masked if changed else text), changed


class Nameless(NamedTuple):
    """A kind of secret no name announces: text it cannot do without (searched first, for
    speed: one character is a memchr), whether a text may hold it, and how it is masked."""

    needle: str
    may_hold: Callable[[str], bool]
    mask: Callable[[str, Found], tuple[str, bool]]


def _may_hold_private_key(text: str) -> bool:
    return "-----BEGIN" in text


NAMELESS = (
    Nameless("/", _may_hold_userinfo, mask_userinfo),
    Nameless("-----BEGIN", _may_hold_private_key, mask_private_keys),
)
