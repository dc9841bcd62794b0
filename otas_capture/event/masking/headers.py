"""Headers: a sensitive one's value redacted whole, and named secrets inside the others
(a token in a ``Referer`` or ``Location`` URL, a debugging header holding JSON)."""

from __future__ import annotations

from .found import Found
from .names import REDACTED
from .rule import Rule
from .text import mask_text

__all__ = ["redact_header"]


def redact_header(name: str, value: str, rule: Rule, found: Found) -> tuple[tuple[str, str], bool]:
    """One header with its value redacted when its name is sensitive, or with the secrets
    in it masked, and whether it passed as it was (then it held nothing secret and
    ``found`` is unchanged)."""
    if rule.header(name):
        found.add_header(name, value)
        return (name, REDACTED), False
    if ("=" in value or ":" in value or "<" in value) and rule.may_contain(value):
        # Referer: https://app/cb?access_token=... ; Location: ...#access_token=...;
        # a debugging header holding JSON or "api_key: ..."; a URL with a password.
        return (name, mask_text(value, rule, found)[0]), False
    return (name, value), True
