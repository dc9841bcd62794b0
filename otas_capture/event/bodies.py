"""Captured bodies as the event holds them: text when it is text, masked by its format.

The format is chosen by the table :data:`BODY_FORMATS`, from the content type (or, without
one, from what the text looks like): multipart form fields, a URL-encoded form, JSON, or
other text (which may still embed JSON, pairs, XML or an error format; see
:func:`otas_capture.event.masking.mask_text`).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

from ..capture.exchange import BodyBuffer, is_textual
from .jsoncodec import loads_finite
from .masking import (
    Found,
    Rule,
    looks_like_form,
    mask_form,
    mask_json,
    mask_multipart,
    mask_text,
)
from .safe import clean_text, text_json

__all__ = ["BODY_FORMATS", "BodyFormat", "body_text"]

Pairs = list[tuple[str, str]]


class BodyFormat(NamedTuple):
    """A body format: whether a body is in it (by its lower-case content type and its
    text), and its masker (giving the text to ship and the form pairs it holds)."""

    applies: Callable[[str, str], bool]
    mask: Callable[[str, Rule, Found], tuple[str, Pairs]]


def _multipart(text: str, rule: Rule, found: Found) -> tuple[str, Pairs]:
    masked, pairs, _ = mask_multipart(text, rule, found)
    return masked, pairs


def _form(text: str, rule: Rule, found: Found) -> tuple[str, Pairs]:
    masked, pairs, _ = mask_form(text, rule, found)
    return masked, pairs


def _json(text: str, rule: Rule, found: Found) -> tuple[str, Pairs]:
    if not rule.may_contain(text):
        return text, []  # no sensitive name in it: nothing to parse or mask
    try:
        parsed, finite = loads_finite(text)
    except (ValueError, RecursionError):
        return mask_text(text, rule, found)[0], []  # cut at the limit, or not JSON after all
    masked, changed = mask_json(parsed, rule, found)
    if not changed:
        return text, []
    # Parsing turned any "\ud800" escape into a real lone surrogate: clean again.
    return clean_text(text_json(masked, finite)), []


def _text(text: str, rule: Rule, found: Found) -> tuple[str, Pairs]:
    if not rule.may_contain(text):
        return text, []
    return mask_text(text, rule, found)[0], []


def _is_form(ctype: str, text: str) -> bool:
    return ctype.startswith("application/x-www-form-urlencoded") or (
        not ctype and looks_like_form(text)
    )


def _is_json(ctype: str, text: str) -> bool:
    return "json" in ctype or (not ctype and text.lstrip()[:1] in ("{", "["))


# The first format that applies masks the body; other text is masked as free text.
BODY_FORMATS = (
    BodyFormat(lambda ctype, text: ctype.startswith("multipart/form-data"), _multipart),
    BodyFormat(_is_form, _form),
    BodyFormat(_is_json, _json),
)


def body_text(
    body: BodyBuffer | None,
    content_type: str,
    side: str,
    metadata: dict[str, Any],
    rule: Rule,
    found: Found,
) -> tuple[str, Pairs]:
    """(text to ship, parsed form pairs) of a captured body, masked; what was left out
    and why goes into ``metadata`` under ``side`` ("request" or "response")."""
    if body is None or body.size == 0:
        return "", []
    ctype = content_type.lower()
    multipart = ctype.startswith("multipart/form-data")
    if body.limit == 0 or not (multipart or is_textual(content_type)):
        metadata[f"{side}_body_omitted"] = "binary or compressed content"
        return "", []
    raw = body.getvalue()
    if (multipart or not content_type) and b"\x00" in raw:
        metadata[f"{side}_body_omitted"] = "binary content"
        return "", []
    if body.truncated:
        metadata[f"{side}_body_truncated"] = True
    text = clean_text(raw.decode("utf-8", "replace"))
    for body_format in BODY_FORMATS:
        if body_format.applies(ctype, text):
            return body_format.mask(text, rule, found)
    return _text(text, rule, found)
