"""Text of any shape: JSON (whole, cut at the capture limit, or kept as a string inside
JSON), then the table of other formats that may hide a named secret in free text.

Values are masked wherever a sensitive name appears: at any depth of a JSON document,
in ``{"name": ..., "value": ...}`` pairs (a Kubernetes env var) and in ``{"loc": [...,
name], "input": ...}`` (a validation error), in ``name=value`` and ``name: value`` pairs,
in XML elements, in the error formats of :mod:`.errors`; and, whatever names them, the
password of a URL with credentials and the body of a PEM private key.
"""

from __future__ import annotations

import json
import re
from typing import Any, Callable, NamedTuple

from ..jsoncodec import dumps_text, loads_finite
from .errors import (
    mask_constraint_details,
    mask_error_lists,
    mask_field_blocks,
    mask_listed_values,
    mask_loc_inputs,
    mask_sql_parameters,
)
from .found import MAX_DEPTH, Found
from .markup import mask_elements
from .nameless import NAMELESS, Nameless
from .names import REDACTED, TOO_DEEP
from .pairs import mask_assignments, mask_labels
from .rule import Rule

__all__ = ["FORMATS", "Format", "mask_cut_json", "mask_json", "mask_text"]


def mask_json(value: Any, rule: Rule, found: Found | None = None) -> tuple[Any, bool]:
    """Mask sensitive keys at any depth of a parsed JSON value, in place; say whether any was.

    The value is changed where it holds a secret (it is the caller's freshly parsed
    copy: masking in place spares copying every body). A string that is itself JSON or
    holds ``name=value`` pairs (an API that wraps a payload as text) is masked inside.
    A container nested too deep to inspect is hidden whole.
    """
    found = Found() if found is None else found
    if isinstance(value, (dict, list)):
        return value, _mask_container(value, rule, found, 0)
    if isinstance(value, str):
        return _mask_string(value, rule, found, 0)
    return value, False


# Only a string holding one of these (JSON, name=value or name: value pairs, XML
# elements, a PEM key) can hide a named secret: others are not read further. The walk's
# loops test them inline (a call per string costs more than the tests); tests/
# test_redaction.py checks the walk reads a string holding each.
HIDING_MARKS = ("=", ":", "<", "-----BEGIN")


def _mask_string(value: str, rule: Rule, found: Found, depth: int) -> tuple[str, bool]:
    if len(value) > 8 and any(mark in value for mark in HIDING_MARKS) and rule.may_contain(value):
        return mask_text(value, rule, found, depth + 1)
    return value, False


# The walk below is most of the build's Python work on a JSON body with a credential, so
# it is written for speed: dicts and lists are walked by separate loops (a list has no
# keys to judge), strings are tested first (most items are strings), and the tests of
# _mask_string that rule a string out are made inline, before any call.


def _mask_container(
    value: dict[Any, Any] | list[Any], rule: Rule, found: Found, depth: int
) -> bool:
    if isinstance(value, dict):
        return _mask_dict(value, rule, found, depth)
    return _mask_list(value, rule, found, depth)


def _mask_dict(value: dict[Any, Any], rule: Rule, found: Found, depth: int) -> bool:
    changed = False
    deeper = depth + 1
    known = rule.known_fields  # the rule's cache, read directly: this loop is hot
    for key, item in value.items():
        sensitive = known.get(key)
        if sensitive is None:
            sensitive = isinstance(key, str) and rule.field(key)
        if sensitive:
            found.add(item)
            value[key] = REDACTED  # an existing key: the dict does not change size
            changed = True
        elif isinstance(item, str):
            # HIDING_MARKS, inline:
            if len(item) > 8 and (
                "=" in item or ":" in item or "<" in item or "-----BEGIN" in item
            ):
                masked, masked_changed = _mask_string(item, rule, found, deeper)
                if masked_changed:
                    value[key] = masked
                    changed = True
        elif isinstance(item, (dict, list)):
            if deeper > MAX_DEPTH:
                # Too deep to inspect safely: hide it rather than risk shipping a secret.
                value[key] = TOO_DEEP
                changed = True
            elif isinstance(item, dict):
                if _mask_dict(item, rule, found, deeper):
                    changed = True
            elif _mask_list(item, rule, found, deeper):
                changed = True
    for value_key, label_keys in _LABELLED:
        if value_key in value and value[value_key] != REDACTED:
            label = next((value[k] for k in label_keys if k in value), None)
            if isinstance(label, list) and label:
                label = label[-1]  # a path: the field is its last step
            if isinstance(label, str) and rule.field(label):
                found.add(value[value_key])
                value[value_key] = REDACTED
                changed = True
    return changed


def _mask_list(value: list[Any], rule: Rule, found: Found, depth: int) -> bool:
    changed = False
    deeper = depth + 1
    for index, item in enumerate(value):
        if isinstance(item, str):
            # HIDING_MARKS, inline:
            if len(item) > 8 and (
                "=" in item or ":" in item or "<" in item or "-----BEGIN" in item
            ):
                masked, masked_changed = _mask_string(item, rule, found, deeper)
                if masked_changed:
                    value[index] = masked
                    changed = True
        elif isinstance(item, (dict, list)):
            if deeper > MAX_DEPTH:
                value[index] = TOO_DEEP
                changed = True
            elif isinstance(item, dict):
                if _mask_dict(item, rule, found, deeper):
                    changed = True
            elif _mask_list(item, rule, found, deeper):
                changed = True
    return changed


# Objects that name a value in another key: {"name": "DB_PASSWORD", "value": ...} (a
# Kubernetes env var, a parameter store); {"loc": ["body", "api_key"], "input": ...}
# (pydantic's errors(), FastAPI's 422 answer).
_LABELLED = (("value", ("name", "key")), ("input", ("loc",)))


def mask_text(text: str, rule: Rule, found: Found, depth: int = 0) -> tuple[str, bool]:
    """Mask secrets in text of unknown shape: JSON (whole or cut), then each of :data:`FORMATS`."""
    stripped = text.lstrip()
    changed = False
    if stripped[:1] in ("{", "[") and depth <= MAX_DEPTH:
        try:
            parsed, finite = loads_finite(text)
        except (ValueError, RecursionError):
            text, changed = mask_cut_json(text, rule, found, depth)
        else:
            masked, changed = mask_json(parsed, rule, found)
            if changed:
                text = dumps_text(masked, True, finite=finite)
            return text, changed
    else:
        text, changed = mask_cut_json(text, rule, found, depth)
    for format_ in FORMATS:
        if format_.applies(text):
            text, masked = format_.mask(text, rule, found)
            changed = changed or masked
    return text, changed


class Format(NamedTuple):
    """A shape a named secret can take in free text: a cheap test of whether the text may
    hold it (a character or phrase it cannot do without), and its masker."""

    applies: Callable[[str], bool]
    mask: Callable[[str, Rule, Found], tuple[str, bool]]


def _nameless(nameless: Nameless) -> Format:
    return Format(nameless.may_hold, lambda text, rule, found: nameless.mask(text, found))


def _has(*needles: str) -> Callable[[str], bool]:
    return lambda text: any(needle in text for needle in needles)


# After JSON, in this order: the error formats first (they read the text as the library
# wrote it), then the generic pairs and elements, then what no name announces.
FORMATS = (
    Format(_has("ey (", "' for key '", "' for column "), mask_constraint_details),
    Format(_has("[parameters: "), mask_sql_parameters),
    Format(_has("validation error", "\n  * "), mask_field_blocks),
    Format(_has('class="errorlist"'), mask_error_lists),
    Format(_has("'loc'", '"loc"'), mask_loc_inputs),
    Format(_has("': [", '": ['), mask_listed_values),
    Format(_has("="), mask_assignments),
    Format(_has(":", "="), mask_labels),
    Format(_has("<"), mask_elements),
    *(_nameless(nameless) for nameless in NAMELESS),
)


# -- JSON-like text that could not be parsed (cut at the capture limit) ------------------

_JSON_STRING = r'"(?:[^"\\]|\\.)*(?:"|\\?\Z)'
_JSON_TOKEN = re.compile(_JSON_STRING + r"|[{}\[\]:,]", re.DOTALL)
_STRING_AT = re.compile(_JSON_STRING, re.DOTALL)
_SCALAR_AT = re.compile(r"[^,}\]\s]*")
_SPACE_AT = re.compile(r"\s*")


def _json_string_value(token: str) -> str:
    """The text of a JSON string token, even an unterminated or badly escaped one."""
    try:
        value = json.loads(token if _is_closed(token) else token.rstrip("\\") + '"')
        return value if isinstance(value, str) else token
    except ValueError:
        return token.strip('"')


def _is_closed(token: str) -> bool:
    if len(token) < 2 or not token.endswith('"'):
        return False
    backslashes = len(token[1:-1]) - len(token[1:-1].rstrip("\\"))
    return backslashes % 2 == 0


def mask_cut_json(text: str, rule: Rule, found: Found, depth: int = 0) -> tuple[str, bool]:
    """Mask ``"name": value`` pairs in JSON-like text that does not parse.

    The value is masked to its real end: a string to its closing quote, an object or an
    array to its matching bracket (everything nested in it with it), a number or literal
    to the next delimiter. When the text ends first (it was cut), it is masked to the
    end of the text.
    """
    pieces: list[str] = []
    changed = False
    position = 0  # start of text not yet copied
    scan = 0
    # Only strings matter here (a key is a string followed by a colon); outside a string
    # a quote always opens one, so searching for the next string stays in step.
    while True:
        string = _STRING_AT.search(text, scan)
        if string is None:
            break
        scan = string.end()
        after = _SPACE_AT.match(text, scan).end()  # type: ignore[union-attr]
        if text[after : after + 1] == ":":
            if rule.field(_json_string_value(string.group())):
                start = _SPACE_AT.match(text, after + 1).end()  # type: ignore[union-attr]
                end = _value_end(text, start)
                found.add(_value_text(text[start:end]))
                pieces.append(text[position:start] + '"' + REDACTED + '"')
                position = scan = end
                changed = True
        elif (
            "\\" in string.group()
            and depth < MAX_DEPTH
            and _is_closed(string.group())
            and rule.may_contain(string.group())
        ):
            # A string value holding escaped JSON or pairs: mask inside it.
            inner = _json_string_value(string.group())
            masked, inner_changed = mask_text(inner, rule, found, depth + 1)
            if inner_changed:
                pieces.append(text[position : string.start()])
                pieces.append(json.dumps(masked, ensure_ascii=False))
                position = scan
                changed = True
    pieces.append(text[position:])
    return ("".join(pieces) if changed else text), changed


def _value_end(text: str, start: int) -> int:
    """Where the JSON value starting at ``start`` ends (or the end of the text)."""
    first = text[start : start + 1]
    if first == '"':
        return _STRING_AT.match(text, start).end()  # type: ignore[union-attr]
    if first in ("{", "["):
        level = 0
        for token in _JSON_TOKEN.finditer(text, start):
            kind = token.group()
            if kind in ("{", "["):
                level += 1
            elif kind in ("}", "]"):
                level -= 1
                if level == 0:
                    return token.end()
        return len(text)
    return _SCALAR_AT.match(text, start).end()  # type: ignore[union-attr]


def _value_text(raw: str) -> Any:
    """What to scrub elsewhere for a raw masked value: its strings, or the scalar."""
    if raw[:1] == '"':
        return _json_string_value(raw)
    if raw[:1] in ("{", "["):
        return [_json_string_value(m.group()) for m in _STRING_AT.finditer(raw)]
    return raw
