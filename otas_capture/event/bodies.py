"""Captured bodies as the event holds them: text when it is text, masked by its format.

The format is chosen by the table :data:`BODY_FORMATS`, from the content type (or, without
one, from what the text looks like): multipart form fields, a URL-encoded form, JSON, or
other text (which may still embed JSON, pairs, XML or an error format; see
:func:`otas_capture.event.masking.mask_text`).

JSON and other text are first read by the rule's pre-check, which answers "no sensitive
name in it" much faster than parsing and walking the text. That saves work only when
the answer is no: where a body does hold a credential (a login's request, the token in
its answer), the pre-check is a third of its cost, spent for nothing. Bodies of one
route hold one every time or never, so the last verdict per side and route is
remembered (:data:`_HELD_SECRET`): where the last body was masked, the next one is
parsed and walked at once. Only the cost depends on it, not what is masked: the walk
masks all the pre-check would have let through, and leaves the text as it is when it
masks nothing. (One difference: a body nested deeper than the walk inspects is hidden
whole when walked, and shipped as it is when the pre-check finds no name in it.)
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

from .._cache import BoundedCache
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
    text), and its masker (giving the text to ship, the same object when nothing was
    masked, and the form pairs it holds; its last argument says the pre-check may be
    skipped)."""

    applies: Callable[[str, str], bool]
    mask: Callable[[str, Rule, Found, bool], tuple[str, Pairs]]


def _multipart(text: str, rule: Rule, found: Found, _likely: bool) -> tuple[str, Pairs]:
    masked, pairs, _ = mask_multipart(text, rule, found)
    return masked, pairs


def _form(text: str, rule: Rule, found: Found, _likely: bool) -> tuple[str, Pairs]:
    masked, pairs, _ = mask_form(text, rule, found)
    return masked, pairs


def _json(text: str, rule: Rule, found: Found, likely: bool) -> tuple[str, Pairs]:
    if not likely and not rule.may_contain(text):
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


def _text(text: str, rule: Rule, found: Found, likely: bool) -> tuple[str, Pairs]:
    if not likely and not rule.may_contain(text):
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

# "side method route" -> whether the last body there was masked. A few hundred routes
# are typical; more (ids in paths with no route known) only start it over.
_HELD_SECRET: BoundedCache[str, bool] = BoundedCache(1024, max_key_length=300)


def body_text(
    body: BodyBuffer | None,
    content_type: str,
    side: str,
    metadata: dict[str, Any],
    rule: Rule,
    found: Found,
    route: str,
) -> tuple[str, Pairs]:
    """(text to ship, parsed form pairs) of a captured body, masked; what was left out
    and why goes into ``metadata`` under ``side`` ("request" or "response"). ``route``
    (method and route or path) is where bodies are alike, for remembering whether the
    last one held a credential."""
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
    key = f"{side} {route}"
    likely = _HELD_SECRET.get(key) is True
    mask: Callable[[str, Rule, Found, bool], tuple[str, Pairs]] = _text
    for body_format in BODY_FORMATS:
        if body_format.applies(ctype, text):
            mask = body_format.mask
            break
    masked, pairs = mask(text, rule, found, likely)
    if (masked is not text) != likely:
        _HELD_SECRET.put(key, not likely)
    return masked, pairs
