"""What Brain's database makes of an event body: pure functions, no HTTP.

The public Brain stores text fields as ``str()`` of whatever was sent and fails the
insert (``500 event_capture_failed``) on values its PostgreSQL columns cannot hold.
These rules live apart from the WSGI app so that each can be read, and tested, as
the contract states it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from ..contract import (
    CONTENT_TYPE_LIMIT,
    JSON_OBJECT_FIELDS,
    MAX_INTEGER,
    METHOD_LIMIT,
    PATH_INDEX_BYTES,
    SIZE_FIELDS,
    TEXT_FIELDS,
)

CONTENT_TYPE_FIELDS = ("request_content_type", "response_content_type")


def scalars(value: Any) -> Iterator[Any]:
    """Yield every scalar and object key in parsed JSON, iteratively so that a deeply
    nested body cannot exhaust the handler thread's stack."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        else:
            yield item


def unstorable_string(text: str) -> bool:
    """PostgreSQL text cannot hold NUL, and a lone surrogate cannot be encoded as UTF-8."""
    if "\x00" in text:
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_finite_number(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too big for a double column
        return False


def stored_form(body: dict[str, Any]) -> dict[str, Any]:
    """The body as Brain stores it: non-string text fields become their ``str()``."""
    stored = dict(body)
    for field in TEXT_FIELDS:
        value = stored.get(field)
        if value is not None and not isinstance(value, str):
            stored[field] = str(value)
    return stored


def database_refuses(body: dict[str, Any], stored: dict[str, Any]) -> bool:
    """True for the values the production insert fails on (Brain answers 500).

    ``body`` is the parsed JSON object with every required field present; ``stored``
    is its :func:`stored_form`. May raise ``RecursionError`` on absurdly nested values.
    """
    if any(isinstance(v, str) and unstorable_string(v) for v in scalars(body)):
        return True
    if body["path"] is None or body["method"] is None:  # NOT NULL columns
        return True
    # The btree index on path: the real limit applies after PostgreSQL's compression,
    # which is not emulated; raw UTF-8 length is what a random, incompressible path meets.
    if len(stored["path"].encode("utf-8")) > PATH_INDEX_BYTES:
        return True
    if len(stored["method"]) > METHOD_LIMIT:
        return True
    status = body["status_code"]
    if not _is_int(status) or not 0 <= status <= MAX_INTEGER:
        return True
    if not _is_finite_number(body["latency_ms"]):
        return True
    for field in SIZE_FIELDS:
        size = body.get(field)
        if size is not None and (not _is_int(size) or not 0 <= size <= MAX_INTEGER):
            return True
    for field in CONTENT_TYPE_FIELDS:
        if stored.get(field) is not None and len(stored[field]) > CONTENT_TYPE_LIMIT:
            return True
    for field in JSON_OBJECT_FIELDS:
        value = body.get(field)
        if value is None:
            continue
        # PostgreSQL jsonb has no NaN or Infinity.
        if not isinstance(value, dict) or any(
            isinstance(v, float) and not math.isfinite(v) for v in scalars(value)
        ):
            return True
    return False
