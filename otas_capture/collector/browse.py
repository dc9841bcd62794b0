"""What people read about captured events: summaries, filters, sessions, masked fields.

Pure functions over the events a :class:`~otas_capture.collector.Collector` stored,
shared by the live viewer's JSON endpoints (:mod:`.viewer`), ``otas-capture tail`` and
``otas-capture demo``, so that all three show the same thing. Nothing here does I/O.

An event's id is its position in the store, oldest first, counting from 1: the store
keeps events in arrival order and only ever appends (or clears everything), so a
position names one event for as long as the store holds it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
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


def summary(event_id: int, event: dict[str, Any]) -> dict[str, Any]:
    """The row the viewer's list and ``tail`` show for one event."""
    return {
        "id": event_id,
        "method": _text(event.get("method")),
        "path": _text(event.get("path")),
        "status_code": event.get("status_code"),
        "status_class": status_class(event.get("status_code")),
        "latency_ms": _number(event.get("latency_ms")),
        "request_size_bytes": event.get("request_size_bytes"),
        "response_size_bytes": event.get("response_size_bytes"),
        "agent_id": _text(event.get("_agent_id")),
        "agent_session_id": _text(event.get("_agent_session_id")),
        "received_at": _text(event.get("_received_at")),
        "started_at": started_at(event),
        "error": _text(event.get("error")),
        "masked": masked_fields(event),
    }


def detail(event_id: int, event: dict[str, Any]) -> dict[str, Any]:
    """Everything about one event: its summary and the event as stored."""
    return {**summary(event_id, event), "event": event}


@dataclass(frozen=True)
class Filters:
    """What the viewer's filter bar and ``tail``'s options narrow the list to.

    Empty strings match everything. ``status`` is a class such as ``"4xx"``; ``text``
    is matched case-insensitively inside the path.
    """

    session: str = ""
    agent: str = ""
    status: str = ""
    text: str = ""

    def match(self, event: dict[str, Any]) -> bool:
        if self.session and event.get("_agent_session_id") != self.session:
            return False
        if self.agent and event.get("_agent_id") != self.agent:
            return False
        if self.status and status_class(event.get("status_code")) != self.status:
            return False
        return not self.text or self.text.lower() in _text(event.get("path")).lower()


def numbered(events: Sequence[dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
    """Pair each stored event (oldest first) with its id."""
    return list(enumerate(events, start=1))


def newest_first(
    events: Sequence[dict[str, Any]],
    filters: Filters = Filters(),
    *,
    after: int = 0,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Summaries of the events with an id above ``after`` that match, newest first."""
    rows: list[dict[str, Any]] = []
    for event_id, event in reversed(numbered(events)):
        if event_id <= after:
            break
        if filters.match(event):
            rows.append(summary(event_id, event))
            if limit is not None and len(rows) >= limit:
                break
    return rows


def sessions(events: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per agent session: its agent, calls, errors and time span; latest first."""
    grouped: dict[str, dict[str, Any]] = {}
    for event_id, event in numbered(events):
        session_id = _text(event.get("_agent_session_id"))
        entry = grouped.setdefault(
            session_id,
            {
                "agent_session_id": session_id,
                "agent_id": _text(event.get("_agent_id")),
                "calls": 0,
                "errors": 0,
                "first_started_at": started_at(event),
                "last_id": event_id,
            },
        )
        entry["calls"] += 1
        entry["last_id"] = event_id
        if status_class(event.get("status_code")) in ("4xx", "5xx", "other"):
            entry["errors"] += 1
        entry["first_started_at"] = min(entry["first_started_at"], started_at(event))
    return sorted(grouped.values(), key=lambda entry: entry["last_id"], reverse=True)


def session_timeline(events: Sequence[dict[str, Any]], session_id: str) -> dict[str, Any] | None:
    """One session's calls in the order the agent made them, each with its start offset.

    ``offset_ms`` is how long after the session's first call a call started; with
    ``latency_ms`` it places the call on a timeline. None if the session has no events.
    """
    rows = [
        summary(event_id, event)
        for event_id, event in numbered(events)
        if event.get("_agent_session_id") == session_id
    ]
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
        "agent_session_id": session_id,
        "agent_id": rows[0]["agent_id"],
        "calls": rows,
        "duration_ms": round(end, 3),
    }


def event_by_id(events: Sequence[dict[str, Any]], event_id: int) -> dict[str, Any] | None:
    """The event with ``event_id``, or None."""
    if 1 <= event_id <= len(events):
        return events[event_id - 1]
    return None


def agents(events: Iterable[dict[str, Any]]) -> list[str]:
    """The agent ids seen, in first-seen order."""
    return list(dict.fromkeys(_text(event.get("_agent_id")) for event in events))
