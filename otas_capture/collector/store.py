"""Where the collector keeps what it accepted: events, and the answer to every log call.

Kept apart from the WSGI app so that the app only decides answers and the store only
remembers. Thread-safe: the server runs each request in its own thread, and tests
read from theirs.
"""

from __future__ import annotations

import copy
import threading
from typing import Any


class EventStore:
    """Accepted events and the log calls answered, in memory, oldest first.

    Each stored event is the body Brain would store plus the fields the collector adds
    (``_project_id``, ``_agent_session_id``, ``_agent_id``, ``_received_at``,
    ``_connection``). Readers get deep copies, so nothing they do changes the store.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._events: list[dict[str, Any]] = []
        self._calls: list[tuple[int, str]] = []

    def add_event(self, event: dict[str, Any]) -> None:
        """Store one accepted event and wake every :meth:`wait_for_events`."""
        with self._cond:
            self._events.append(copy.deepcopy(event))
            self._cond.notify_all()

    def record_call(self, status: int, description: str) -> None:
        """Remember the answer to one log call: HTTP status and status_description."""
        with self._cond:
            self._calls.append((status, description))

    def events(self) -> list[dict[str, Any]]:
        """Copies of the stored events, oldest first."""
        with self._cond:
            return copy.deepcopy(self._events)

    def count(self) -> int:
        """How many events are stored."""
        with self._cond:
            return len(self._events)

    def calls(self) -> list[tuple[int, str]]:
        """(HTTP status, status_description or ``"html"``) of every log call, in order."""
        with self._cond:
            return list(self._calls)

    def clear(self) -> None:
        """Forget every event and call."""
        with self._cond:
            self._events.clear()
            self._calls.clear()

    def wait_for_events(self, count: int, timeout: float) -> list[dict[str, Any]]:
        """Block until ``count`` events are stored or ``timeout`` s pass; return events()."""
        with self._cond:
            self._cond.wait_for(lambda: len(self._events) >= count, timeout)
        return self.events()
