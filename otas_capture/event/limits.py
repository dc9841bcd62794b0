"""Brain's limits on an event: a three-digit status, a path that fits its index, a
``before_send`` result made storable, and the whole body under its 2.5 MiB limit."""

from __future__ import annotations

import math
from typing import Any

from ..contract import (
    CONTENT_TYPE_LIMIT,
    JSON_OBJECT_FIELDS,
    MAX_INTEGER,
    METHOD_LIMIT,
    PATH_LIMIT,
    REQUIRED_FIELDS,
    SIZE_FIELDS,
    TEXT_FIELDS,
)
from . import jsoncodec
from .jsoncodec import loads
from .safe import clean_json, clean_text, safe_str, text_json

__all__ = [
    "MAX_EVENT_BYTES",
    "STATUS_LINE_LIMIT",
    "cut_path",
    "dumps",
    "encode_event",
    "parse_status",
    "status_code",
    "storable",
]

# Brain refuses bodies over 2,621,440 bytes; leave room for the HTTP layer's slack.
MAX_EVENT_BYTES = 2_000_000


def status_code(status: str | None) -> int:
    """The code of a WSGI status line; 500 when there is no code Brain can store."""
    return parse_status(status)[0]


def parse_status(status: str | None) -> tuple[int, bool]:
    """(code, usable) of a WSGI status line.

    Brain stores three-digit codes. Anything else (no status because the app raised, a
    word, ``99999999999999999999 Huge``, ``42``) is reported as 500, and ``usable`` is
    False when the app did send a line, so that the line itself goes into metadata
    instead of failing the event on every retry.
    """
    if not status:
        return 500, status is None
    head = status.split(" ", 1)[0]
    if len(head) == 3 and head.isascii() and head.isdigit() and head[0] != "0":
        return int(head), True
    return 500, False


def cut_path(path: str, metadata: dict[str, Any]) -> str:
    """``path`` within Brain's index limit, never splitting a character.

    A cut path keeps its full length and a hash of the whole in metadata, so that two
    long paths that differ only past the cut can still be told apart.
    """
    if len(path) * 4 <= PATH_LIMIT:  # cannot exceed the limit: skip encoding
        return path
    raw = path.encode("utf-8")
    if len(raw) <= PATH_LIMIT:
        return path
    metadata["path_truncated"] = True
    metadata["path_bytes"] = len(raw)
    import hashlib  # only for the rare over-long path; slow to import

    metadata["path_sha256"] = hashlib.sha256(raw).hexdigest()
    return raw[:PATH_LIMIT].decode("utf-8", "ignore")


STATUS_LINE_LIMIT = 200  # characters of an unusable status line kept


_JSON_TEXT_FIELDS = ("request_headers", "response_headers", "query_params", "post_data")


def _json_object_text(value: Any) -> str:
    if isinstance(value, dict):
        return text_json(clean_json(value))
    if isinstance(value, str) and value.lstrip()[:1] == "{":
        try:
            if isinstance(loads(value), dict):
                return value
        except (ValueError, RecursionError):
            pass
    return "{}"


def storable(event: dict[str, Any], original: dict[str, Any]) -> dict[str, Any]:
    """What ``before_send`` returned, made into an event Brain can store.

    Only the contract's fields are kept. A required field that is missing or of the
    wrong type gets its value from ``original`` (the event before ``before_send``);
    text is cleaned and cut to the contract's limits; sizes and codes must be in range;
    ``metadata`` keeps the event's id.
    """
    result: dict[str, Any] = {}
    for field in REQUIRED_FIELDS:
        result[field] = event.get(field, original[field])
    for field in TEXT_FIELDS:
        value = event.get(field, original.get(field, ""))
        if field in _JSON_TEXT_FIELDS:
            # These hold a JSON object in a string; anything else the user put there is
            # replaced by an empty one (not by the original: they may have meant to hide it).
            value = _json_object_text(value)
        elif value is None:
            value = ""
        result[field] = clean_text(value if isinstance(value, str) else safe_str(value))
    result["project_id"] = safe_str(result["project_id"]) or original["project_id"]
    result["path"] = cut_path(result["path"], original["metadata"]) or original["path"]
    result["method"] = result["method"][:METHOD_LIMIT] or original["method"]
    for field in ("request_content_type", "response_content_type"):
        result[field] = result[field][:CONTENT_TYPE_LIMIT]
    code = result["status_code"]
    if isinstance(code, bool) or not isinstance(code, int) or not 100 <= code <= 999:
        result["status_code"] = original["status_code"]
    latency = result["latency_ms"]
    if (
        isinstance(latency, bool)
        or not isinstance(latency, (int, float))
        or not math.isfinite(latency)
        or latency < 0
    ):
        result["latency_ms"] = original["latency_ms"]
    for field in SIZE_FIELDS:
        size = event.get(field, original[field])
        ok = isinstance(size, int) and not isinstance(size, bool) and 0 <= size <= MAX_INTEGER
        result[field] = size if ok else original[field]
    for field in JSON_OBJECT_FIELDS:
        value = event.get(field, {})
        result[field] = clean_json(value) if isinstance(value, dict) else {}
    metadata = result["metadata"]
    for key in ("event_id", "path_truncated", "path_bytes", "path_sha256"):
        if key in original["metadata"]:
            metadata[key] = original["metadata"][key]
    return result


def encode_event(event: dict[str, Any], payload: bytes | None = None) -> bytes:
    """Serialize, cutting the largest parts (and saying so) until it fits Brain's limit.

    ``payload``: ``event`` already serialized, when the caller has it.
    """
    if payload is None:
        payload = dumps(event)
    for keep in (256 * 1024, 16 * 1024, 1024, 0):
        if len(payload) <= MAX_EVENT_BYTES:
            break
        cut = event["metadata"].setdefault("cut_to_fit", [])
        for field in _CUTTABLE_TEXT:
            # A required field must stay non-empty.
            limit = max(keep, 1024) if field == "path" else keep
            if len(event[field]) > limit:
                event[field] = event[field][:limit]
                cut.append(field)
        for field in _CUTTABLE_JSON_TEXT:
            # A cut JSON string would no longer parse: replace it whole.
            if len(event[field]) > max(keep, 2):
                event[field] = "{}"
                cut.append(field)
        if keep == 0 and len(dumps(event["custom_properties"])) > 1024:
            event["custom_properties"] = {}
            cut.append("custom_properties")
        payload = dumps(event)
    return payload


_CUTTABLE_TEXT = ("request_body", "response_body", "error", "path")
_CUTTABLE_JSON_TEXT = ("request_headers", "response_headers", "query_params", "post_data")


def dumps(value: Any) -> bytes:
    return jsoncodec.dumps(value)
