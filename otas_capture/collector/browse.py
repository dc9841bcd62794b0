"""What people read about captured events: summaries, filters, sessions, masked fields.

Pure functions over the events a :class:`~otas_capture.collector.Collector` stored
(read with the :class:`~otas_capture.collector.store.EventStore` queries), shared by
the live viewer's JSON endpoints (:mod:`.viewer`), ``otas-capture tail`` and
``otas-capture demo``, so that all three show the same thing. Nothing here does I/O.
An event is named by the store's ``_id``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

MASK = "[REDACTED]"

STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")

# Fields of a stored event that hold JSON text (objects in strings, as Brain stores them).
_JSON_TEXT_FIELDS = ("request_headers", "query_params", "post_data", "response_headers")
_BODY_FIELDS = ("request_body", "response_body")


def status_class(status: Any) -> str:
    """``"2xx"`` for 204 and so on; ``"other"`` for anything that is not an HTTP status."""
    if isinstance(status, int) and not isinstance(status, bool) and 100 <= status <= 599:
        return f"{status // 100}xx"
    return "other"


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _number(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def started_at(event: dict[str, Any]) -> str:
    """When the request started (``metadata.started_at``), else when it was received."""
    metadata = event.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("started_at"), str):
        return str(metadata["started_at"])
    return _text(event.get("_received_at"))


def _timestamp(text: str) -> float | None:
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def _json(text: Any) -> Any:
    if not isinstance(text, str):
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def _masked_keys(value: Any, prefix: str, found: list[str]) -> None:
    """Append the dotted names of every masked value in parsed JSON ``value``."""
    stack: list[tuple[str, Any]] = [(prefix, value)]
    while stack:
        name, item = stack.pop()
        if isinstance(item, dict):
            stack.extend((f"{name}.{key}", child) for key, child in reversed(item.items()))
        elif isinstance(item, list):
            if any(child == MASK for child in item):
                # Query and form values are lists because a key may repeat.
                found.append(name)
            stack.extend((name, child) for child in reversed(item) if child != MASK)
        elif item == MASK:
            found.append(name)


def masked_fields(event: dict[str, Any]) -> list[str]:
    """Which values the SDK masked, e.g. ``["request_headers.Authorization",
    "post_data.password"]``; text bodies that are not JSON count as a whole."""
    found: list[str] = []
    for field in _JSON_TEXT_FIELDS + _BODY_FIELDS:
        text = event.get(field)
        if not isinstance(text, str) or MASK not in text:
            continue
        parsed = _json(text)
        before = len(found)
        if isinstance(parsed, (dict, list)):
            _masked_keys(parsed, field, found)
        if len(found) == before:
            found.append(field)
    return list(dict.fromkeys(found))


def short_id(value: str) -> str:
    """A part of an id that tells it from others: the whole of a short one; for a
    UUID, its most random 8 characters: the last for the usual random kind (every
    demo agent id begins ``00000000``), the first for a time-based one (whose end is
    the host's address)."""
    if len(value) <= 12:
        return value
    try:
        time_based = uuid.UUID(value).version == 1
    except ValueError:
        time_based = False
    return value[:8] + "…" if time_based else "…" + value[-8:]


def _metadata(event: dict[str, Any], key: str) -> str:
    metadata = event.get("metadata")
    return _text(metadata.get(key)) if isinstance(metadata, dict) else ""


def pairs(text: Any) -> list[tuple[str, str]]:
    """Name/value pairs of a JSON-text object whose values are text or lists of text,
    as the SDK sends headers, query and form data; ``[]`` for anything else."""
    parsed = _json(text)
    if not isinstance(parsed, dict):
        return []
    found: list[tuple[str, str]] = []
    for name, value in parsed.items():
        for item in value if isinstance(value, list) else [value]:
            found.append((str(name), "" if item is None else str(item)))
    return found


def summary(event: dict[str, Any]) -> dict[str, Any]:
    """The row the viewer's list and ``tail`` show for one stored event."""
    agent, session = _text(event.get("_agent_id")), _text(event.get("_agent_session_id"))
    return {
        "id": event.get("_id"),
        "method": _text(event.get("method")),
        "path": _text(event.get("path")),
        # As the app received it, for reading: names and values are not re-encoded.
        "query": "&".join(f"{k}={v}" for k, v in pairs(event.get("query_params"))),
        "status_code": event.get("status_code"),
        "status_class": status_class(event.get("status_code")),
        "latency_ms": _number(event.get("latency_ms")),
        "request_size_bytes": event.get("request_size_bytes"),
        "response_size_bytes": event.get("response_size_bytes"),
        "agent_id": agent,
        "agent_label": short_id(agent),
        "agent_session_id": session,
        "session_label": short_id(session),
        "environment": _metadata(event, "environment"),
        "release": _metadata(event, "release"),
        "received_at": _text(event.get("_received_at")),
        "started_at": started_at(event),
        "error": _text(event.get("error")),
        "masked": masked_fields(event),
    }


def detail(event: dict[str, Any]) -> dict[str, Any]:
    """Everything about one event: its summary and the event as stored."""
    return {**summary(event), "event": event}


@dataclass(frozen=True)
class Filters:
    """What the viewer's filter bar and ``tail``'s options narrow the list to.

    Empty strings match everything. ``status`` is a class such as ``"4xx"``; ``path``
    is matched case-insensitively inside the path, ``text`` inside the path, query,
    headers, form, bodies and error; ``environment`` is ``metadata.environment``.
    """

    session: str = ""
    agent: str = ""
    status: str = ""
    text: str = ""
    path: str = ""
    environment: str = ""

    def query(self) -> dict[str, Any]:
        """The keyword arguments of ``EventStore.list_events`` that apply them."""
        return {
            "session_id": self.session or None,
            "agent_id": self.agent or None,
            "status_class": int(self.status[0]) if self.status else None,
            "path_contains": self.path or None,
            "text": self.text or None,
            "environment": self.environment or None,
        }


def session_timeline(events: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """One session's stored events as calls in the order the agent made them.

    Sender threads deliver concurrently, so the store's order is not quite the
    agent's: calls are ordered by when each request started. ``offset_ms`` is how long
    after the session's first call a call started; with ``latency_ms`` it places the
    call on a timeline. None if there are no events.
    """
    rows = [summary(event) for event in events]
    if not rows:
        return None
    rows.sort(key=lambda row: (row["started_at"], row["id"]))
    starts = [_timestamp(row["started_at"]) for row in rows]
    known = [start for start in starts if start is not None]
    origin = min(known) if known else None
    end = 0.0
    for row, start in zip(rows, starts):
        offset = (start - origin) * 1000.0 if start is not None and origin is not None else 0.0
        row["offset_ms"] = round(offset, 3)
        end = max(end, offset + (row["latency_ms"] or 0.0))
    return {
        "agent_session_id": rows[0]["agent_session_id"],
        "agent_id": rows[0]["agent_id"],
        "calls": rows,
        "duration_ms": round(end, 3),
    }
