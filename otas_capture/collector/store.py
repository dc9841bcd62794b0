"""Where the collector keeps what it accepted: events, and the answer to every log call.

Kept apart from the WSGI app so that the app only decides answers and the store only
remembers. Backed by SQLite from the standard library: in memory by default (tests,
throwaway runs), or in a file, in WAL mode, so that a developer's events survive a
collector restart and can be read while it writes.

Each stored event is the body as Brain would store it plus the fields the collector
adds: ``_id`` (the store's id, increasing, never reused), ``_project_id``,
``_agent_session_id``, ``_agent_id``, ``_received_at`` (ISO 8601, UTC) and
``_connection``. The whole event is kept as JSON; the fields the queries filter on are
copied into columns of their own.

Bounded: at most ``max_events`` events and ``max_bytes`` bytes of event JSON; storing
one more evicts the oldest, and ``evicted`` counts them. The defaults keep a collector
process under about 256 MiB however big the events (each up to Brain's 2.5 MiB).
The list of answered calls keeps the newest ``max_events``.

Thread-safe: one connection, used under a lock, since the server answers each request
in its own thread and tests and viewers read from theirs.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import threading
from typing import Any

from .queries import EventQuery

__all__ = ["DEFAULT_MAX_BYTES", "DEFAULT_MAX_EVENTS", "EventQuery", "EventStore", "MEMORY"]

MEMORY = ":memory:"

DEFAULT_MAX_EVENTS = 50_000
DEFAULT_MAX_BYTES = 128 * 1024 * 1024
# Below this the newest events of the biggest size Brain accepts would evict each other.
MIN_MAX_BYTES = 4 * 1024 * 1024

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at TEXT NOT NULL,
    agent_session_id TEXT,
    agent_id TEXT,
    method TEXT,
    path TEXT,
    status_code INTEGER,
    event TEXT NOT NULL,
    size INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS events_by_session ON events (agent_session_id, id);
CREATE INDEX IF NOT EXISTS events_by_agent ON events (agent_id, id);
CREATE TABLE IF NOT EXISTS calls (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    status INTEGER NOT NULL,
    description TEXT NOT NULL
);
"""

# How many of the oldest rows one eviction step looks at.
_EVICTION_BATCH = 256


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _event(row: tuple[Any, ...]) -> dict[str, Any]:
    event: dict[str, Any] = json.loads(row[1])
    event["_id"] = row[0]
    return event


class EventStore:
    """Accepted events and the log calls answered, oldest first.

    Parameters:
        path: SQLite database file, created if missing; ``":memory:"`` (the default)
            keeps everything in memory and forgets it when the store is closed.
        max_events: the most events kept; storing one more evicts the oldest.
        max_bytes: the most bytes of event JSON kept (at least 4 MiB); the oldest are
            evicted to make room, but the newest event is always kept.

    Readers get new dicts each time, so nothing they do changes the store.

    Example::

        store = EventStore("otas-events.db", max_bytes=64 * 1024 * 1024)
        collector = Collector(store=store)
        ...
        store.list_events(session_id="...", status_class=5)  # newest first
        store.close()
    """

    def __init__(
        self,
        path: str = MEMORY,
        *,
        max_events: int = DEFAULT_MAX_EVENTS,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        if max_events < 1:
            raise ValueError("max_events must be at least 1")
        if max_bytes < MIN_MAX_BYTES:
            raise ValueError(f"max_bytes must be at least {MIN_MAX_BYTES} (4 MiB)")
        self.path = path
        self.max_events = max_events
        self.max_bytes = max_bytes
        self._cond = threading.Condition()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        if path != MEMORY:
            # WAL: readers (a viewer, another process) never block the writer.
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._add_size_column()
        count, size = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM events"
        ).fetchone()
        self._count = int(count)
        self._bytes = int(size)
        self._evicted = 0
        with self._cond:
            self._evict()  # a file written under larger bounds

    def _add_size_column(self) -> None:
        # A database file from before the store was bounded has no size column.
        columns = [row[1] for row in self._db.execute("PRAGMA table_info(events)")]
        if "size" not in columns:
            self._db.execute("ALTER TABLE events ADD COLUMN size INTEGER NOT NULL DEFAULT 0")
            self._db.execute("UPDATE events SET size = length(CAST(event AS BLOB))")

    def close(self) -> None:
        """Close the database; the store cannot be used afterwards."""
        with self._cond:
            self._db.close()

    # -- writing ---------------------------------------------------------------------

    def add_event(self, event: dict[str, Any]) -> int:
        """Store one accepted event, evicting the oldest beyond the bounds, wake every
        waiter, and return its ``_id``.

        ``event`` must be JSON-serialisable (the collector only stores what Brain
        accepts, which is). A ``_id`` already in it is ignored.
        """
        fields = {k: v for k, v in event.items() if k != "_id"}
        data = json.dumps(fields, ensure_ascii=False)
        size = len(data.encode("utf-8"))
        status = fields.get("status_code")
        with self._cond:
            cursor = self._db.execute(
                "INSERT INTO events (received_at, agent_session_id, agent_id, method, path,"
                " status_code, event, size) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    str(fields.get("_received_at", "")),
                    _text(fields.get("_agent_session_id")),
                    _text(fields.get("_agent_id")),
                    _text(fields.get("method")),
                    _text(fields.get("path")),
                    status if isinstance(status, int) else None,
                    data,
                    size,
                ),
            )
            self._count += 1
            self._bytes += size
            self._evict()
            self._cond.notify_all()
            return int(cursor.lastrowid or 0)

    def _over(self) -> bool:
        return self._count > 1 and (self._count > self.max_events or self._bytes > self.max_bytes)

    def _evict(self) -> None:
        """Delete the oldest events until the store is within its bounds (lock held)."""
        while self._over():
            rows = self._db.execute(
                "SELECT id, size FROM events ORDER BY id LIMIT ?", (_EVICTION_BATCH,)
            ).fetchall()
            last = None
            for event_id, size in rows:
                if not self._over():
                    break
                self._count -= 1
                self._bytes -= int(size)
                self._evicted += 1
                last = event_id
            if last is None:
                break
            self._db.execute("DELETE FROM events WHERE id <= ?", (last,))

    def record_call(self, status: int, description: str) -> None:
        """Remember the answer to one log call: HTTP status and status_description."""
        with self._cond:
            cursor = self._db.execute(
                "INSERT INTO calls (status, description) VALUES (?, ?)", (status, description)
            )
            newest = int(cursor.lastrowid or 0)
            if newest % 1000 == 0:  # trim now and then: a delete per call would cost more
                self._db.execute("DELETE FROM calls WHERE id <= ?", (newest - self.max_events,))

    def clear(self) -> None:
        """Forget every event and call, and the eviction count. Ids are not reused."""
        with self._cond:
            self._db.execute("DELETE FROM events")
            self._db.execute("DELETE FROM calls")
            self._count = self._bytes = self._evicted = 0

    # -- reading ---------------------------------------------------------------------

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        with self._cond:
            return self._db.execute(sql, params).fetchall()

    def _read_events(
        self, sql: str, params: tuple[Any, ...], max_bytes: int | None
    ) -> list[dict[str, Any]]:
        """Events of a ``SELECT id, event, size`` query, stopping once ``max_bytes`` of
        JSON are read (after at least one), so that a page of big events stays small."""
        found: list[dict[str, Any]] = []
        total = 0
        with self._cond:
            for row in self._db.execute(sql, params):
                if max_bytes is not None and found and total + int(row[2]) > max_bytes:
                    break
                total += int(row[2])
                found.append(_event(row))
        return found

    def events(self) -> list[dict[str, Any]]:
        """Every stored event, oldest first."""
        return self._read_events("SELECT id, event, size FROM events ORDER BY id", (), None)

    def page(
        self, after_id: int = 0, limit: int = 100, max_bytes: int | None = None
    ) -> list[dict[str, Any]]:
        """Up to ``limit`` events stored after ``after_id``, oldest first, and no more
        than ``max_bytes`` of them (but at least one): one page of the whole list."""
        return self._read_events(
            "SELECT id, event, size FROM events WHERE id > ? ORDER BY id LIMIT ?",
            (after_id, max(0, limit)),
            max_bytes,
        )

    def count(self) -> int:
        """How many events are stored."""
        with self._cond:
            return self._count

    def stats(self) -> dict[str, int]:
        """``events`` and ``bytes`` stored, ``evicted`` (oldest dropped to stay within
        the bounds, since start or the last clear), ``max_events`` and ``max_bytes``."""
        with self._cond:
            return {
                "events": self._count,
                "bytes": self._bytes,
                "evicted": self._evicted,
                "max_events": self.max_events,
                "max_bytes": self.max_bytes,
            }

    def calls(self) -> list[tuple[int, str]]:
        """(HTTP status, status_description or ``"html"``) of every log call, in order."""
        rows = self._query("SELECT status, description FROM calls ORDER BY id")
        return [(int(status), str(description)) for status, description in rows]

    def get_event(self, event_id: int) -> dict[str, Any] | None:
        """The event with this ``_id``, or None."""
        rows = self._query("SELECT id, event FROM events WHERE id = ?", (event_id,))
        return _event(rows[0]) if rows else None

    def list_events(
        self, query: EventQuery | None = None, *, max_bytes: int | None = None, **filters: Any
    ) -> list[dict[str, Any]]:
        """Events matching ``query`` and the :class:`EventQuery` fields given as keywords
        (``session_id=...``), newest first: at most ``limit`` of them (100 unless
        given) and, past the first, at most ``max_bytes`` of JSON."""
        query = dataclasses.replace(query or EventQuery(), **filters)
        sql, params = query.sql("id, event, size")
        return self._read_events(sql, params, max_bytes)

    def session_events(self, session_id: str) -> list[dict[str, Any]]:
        """One agent session's events in the order they were stored (the agent's order
        of calls, as far as the SDK shipped them in order)."""
        rows = self._query(
            "SELECT id, event FROM events WHERE agent_session_id = ? ORDER BY id", (session_id,)
        )
        return [_event(row) for row in rows]

    def sessions(
        self, *, agent_id: str | None = None, limit: int | None = 100
    ) -> list[dict[str, Any]]:
        """Agent sessions, the most recently active first, each a dict with
        ``agent_session_id``, ``agent_id``, ``calls`` (how many events), ``errors``
        (events with a status of 400 or more), ``first_received_at``,
        ``last_received_at`` and ``last_id`` (the ``_id`` of its newest event)."""
        sql = (
            "SELECT agent_session_id, agent_id, COUNT(*),"
            " SUM(CASE WHEN status_code >= 400 THEN 1 ELSE 0 END),"
            " MIN(received_at), MAX(received_at), MAX(id)"
            " FROM events WHERE agent_session_id IS NOT NULL"
        )
        params: list[Any] = []
        if agent_id is not None:
            sql += " AND agent_id = ?"
            params.append(agent_id)
        sql += " GROUP BY agent_session_id, agent_id ORDER BY MAX(id) DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(max(0, limit))
        keys = (
            "agent_session_id",
            "agent_id",
            "calls",
            "errors",
            "first_received_at",
            "last_received_at",
            "last_id",
        )
        return [dict(zip(keys, row)) for row in self._query(sql, tuple(params))]

    def last_id(self) -> int:
        """The ``_id`` of the newest event, 0 if there is none."""
        return int(self._query("SELECT COALESCE(MAX(id), 0) FROM events")[0][0])

    # -- waiting ---------------------------------------------------------------------

    def wait_for_events(self, count: int, timeout: float) -> list[dict[str, Any]]:
        """Block until ``count`` events are stored or ``timeout`` s pass; return events()."""
        with self._cond:
            self._cond.wait_for(lambda: self._count >= count, timeout)
        return self.events()

    def wait_after(self, after_id: int, timeout: float) -> list[dict[str, Any]]:
        """Events stored after ``after_id``, oldest first, waiting up to ``timeout`` s
        for the first of them: what a live view or ``tail`` polls for."""
        with self._cond:
            self._cond.wait_for(lambda: self.last_id() > after_id, timeout)
        newer = self.list_events(after_id=after_id, limit=None)
        newer.reverse()
        return newer
