"""Forms: URL-encoded forms and query strings (``&`` or ``;``), and the fields of a
``multipart/form-data`` body (also cut at the capture limit)."""

from __future__ import annotations

import re
from urllib.parse import quote_plus, unquote_plus

from .found import Found
from .names import REDACTED
from .pairs import mask_assignments
from .rule import Rule
from .text import mask_text

__all__ = ["looks_like_form", "mask_form", "mask_multipart"]

_PAIR_SEPARATOR = re.compile(r"[&;]")


def mask_form(text: str, rule: Rule, found: Found) -> tuple[str, list[tuple[str, str]], bool]:
    """Mask a URL-encoded form or query string (``&`` or ``;`` separated).

    Returns the text with only the sensitive values replaced (everything else byte for
    byte as sent), the decoded pairs (masked), and whether anything was masked.
    """
    if not text:
        return text, [], False
    pieces: list[str] = []
    pairs: list[tuple[str, str]] = []
    changed = False
    position = 0
    for separator in [*_PAIR_SEPARATOR.finditer(text), None]:
        end = separator.start() if separator else len(text)
        segment = text[position:end]
        if segment:
            raw_key, has_value, raw_value = segment.partition("=")
            key = _unquote(raw_key)
            value = _unquote(raw_value)
            if rule.field(key):
                found.add(value)
                found.add(raw_value)
                changed = True
                pieces.append(raw_key + "=" + REDACTED)
                pairs.append((key, REDACTED))
            else:
                if has_value and "=" in raw_value:
                    # A value holding its own pairs: next=/cb?token=...
                    masked, inner = mask_assignments(raw_value, rule, found)
                    if inner:
                        changed = True
                        raw_value = masked
                        value = unquote_plus(masked)
                elif value.lstrip()[:1] in ("{", "[") or "://" in value:
                    # A value holding JSON (payload={"password": ...}) or a URL with
                    # credentials (dsn=postgres://user:password@host).
                    masked, inner = mask_text(value, rule, found)
                    if inner:
                        changed = True
                        raw_value = quote_plus(masked)
                        value = masked
                pieces.append(raw_key + (("=" + raw_value) if has_value else ""))
                pairs.append((key, value))
        if separator is not None:
            pieces.append(separator.group())
            position = separator.end()
    return ("".join(pieces) if changed else text), pairs, changed


def _unquote(text: str) -> str:
    """``unquote_plus``, skipped for the usual text that has nothing to decode."""
    return unquote_plus(text) if "%" in text or "+" in text else text


_FORM_LIKE = re.compile(r"[^\s=&;]+=[^\s&;]*(?:[&;][^\s=&;]+(?:=[^\s&;]*)?)*\s*")


def looks_like_form(text: str) -> bool:
    """Whether a body without a content type is a URL-encoded form (``a=1&b=2``)."""
    return len(text) < 1_000_000 and _FORM_LIKE.fullmatch(text) is not None


_PART_HEAD = re.compile(
    r"content-disposition:[ \t]*form-data;[^\r\n]*?\bname\*?=[ \t]*"
    r'(?:"([^"]*)"|([^;\s"]*))([^\r\n]*)'
    r"(?:\r?\n[^\r\n]+)*\r?\n\r?\n",
    re.IGNORECASE,
)
_PART_END = re.compile(r"\r?\n--")


def mask_multipart(text: str, rule: Rule, found: Found) -> tuple[str, list[tuple[str, str]], bool]:
    """Mask the form fields of a captured ``multipart/form-data`` body.

    A field's content runs to the next boundary line, or to the end of the kept text
    when the body was cut. Returns the text, the (name, value) pairs of its plain fields
    (files are left out) and whether anything was masked.
    """
    pieces: list[str] = []
    pairs: list[tuple[str, str]] = []
    changed = False
    position = 0
    for head in _PART_HEAD.finditer(text):
        if head.start() < position:
            continue  # inside a part already consumed
        end_match = _PART_END.search(text, head.end())
        end = end_match.start() if end_match else len(text)
        content = text[head.end() : end]
        name = head.group(1) if head.group(1) is not None else head.group(2)
        if "''" in name:  # name*=UTF-8''pass%77ord (RFC 5987)
            name = unquote_plus(name.split("''", 1)[1])
        is_file = "filename" in head.group(3).lower()
        if rule.field(name):
            found.add(content)
            pieces.append(text[position : head.end()] + REDACTED)
            changed = True
            if not is_file:
                pairs.append((name, REDACTED))
        else:
            pieces.append(text[position:end])
            if not is_file:
                pairs.append((name, content))
        position = end
    pieces.append(text[position:])
    return ("".join(pieces) if changed else text), pairs, changed
