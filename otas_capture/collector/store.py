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

Thread-safe: one connection, used under a lock, since the server answers each request
in its own thread and tests and viewers read from theirs.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from typing import Any

__all__ = ["EventStore", "MEMORY"]

MEMORY = ":memory:"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at TEXT NOT NULL,
    agent_session_id TEXT,
    agent_id TEXT,
    method TEXT,
    path TEXT,
    status_code INTEGER,
    event TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_session ON events (agent_session_id, id);
CREATE INDEX IF NOT EXISTS events_by_agent ON events (agent_id, id);
CREATE TABLE IF NOT EXISTS calls (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    status INTEGER NOT NULL,
    description TEXT NOT NULL
);
"""


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _event(row: tuple[int, str]) -> dict[str, Any]:
    event: dict[str, Any] = json.loads(row[1])
    event["_id"] = row[0]
    return event


class EventStore:
    """Accepted events and the log calls answered, oldest first.

    Parameters:
        path: SQLite database file, created if missing; ``":memory:"`` (the default)
            keeps everything in memory and forgets it when the store is closed.

    Readers get new dicts each time, so nothing they do changes the store.

    Example::

        store = EventStore("otas-events.db")
        collector = Collector(store=store)
        ...
        store.list_events(session_id="...", status_class=5)  # newest first
        store.close()
    """

    def __init__(self, path: str = MEMORY) -> None:
        self.path = path
        self._cond = threading.Condition()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        if path != MEMORY:
            # WAL: readers (a viewer, another process) never block the writer.
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        """Close the database; the store cannot be used afterwards."""
        with self._cond:
            self._db.close()

    # -- writing ---------------------------------------------------------------------

    def add_event(self, event: dict[str, Any]) -> int:
        """Store one accepted event, wake every waiter, and return its ``_id``.

        ``event`` must be JSON-serialisable (the collector only stores what Brain
        accepts, which is). A ``_id`` already in it is ignored.
        """
        fields = {k: v for k, v in event.items() if k != "_id"}
        data = json.dumps(fields, ensure_ascii=False)
        status = fields.get("status_code")
        with self._cond:
            cursor = self._db.execute(
                "INSERT INTO events (received_at, agent_session_id, agent_id, method, path,"
                " status_code, event) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    str(fields.get("_received_at", "")),
                    _text(fields.get("_agent_session_id")),
                    _text(fields.get("_agent_id")),
                    _text(fields.get("method")),
                    _text(fields.get("path")),
                    status if isinstance(status, int) else None,
                    data,
                ),
            )
            self._cond.notify_all()
            return int(cursor.lastrowid or 0)

    def record_call(self, status: int, description: str) -> None:
        """Remember the answer to one log call: HTTP status and status_description."""
        with self._cond:
            self._db.execute(
                "INSERT INTO calls (status, description) VALUES (?, ?)", (status, description)
            )

    def clear(self) -> None:
        """Forget every event and call. Ids are not reused afterwards."""
        with self._cond:
            self._db.execute("DELETE FROM events")
            self._db.execute("DELETE FROM calls")

    # -- reading ---------------------------------------------------------------------

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        with self._cond:
            return self._db.execute(sql, params).fetchall()

    def events(self) -> list[dict[str, Any]]:
        """Every stored event, oldest first."""
        return [_event(row) for row in self._query("SELECT id, event FROM events ORDER BY id")]

    def count(self) -> int:
        """How many events are stored."""
        return int(self._query("SELECT COUNT(*) FROM events")[0][0])

    def calls(self) -> list[tuple[int, str]]:
        """(HTTP status, status_description or ``"html"``) of every log call, in order."""
        rows = self._query("SELECT status, description FROM calls ORDER BY id")
        return [(int(status), str(description)) for status, description in rows]

    def get_event(self, event_id: int) -> dict[str, Any] | None:
        """The event with this ``_id``, or None."""
        rows = self._query("SELECT id, event FROM events WHERE id = ?", (event_id,))
        return _event(rows[0]) if rows else None

    def list_events(
        self,
        *,
        session_id: str | None = None,
        agent_id: str | None = None,
        status_class: int | None = None,
        path_contains: str | None = None,
        after_id: int | None = None,
        before_id: int | None = None,
        limit: int | None = 100,
    ) -> list[dict[str, Any]]:
        """Events newest first, filtered; every filter given must hold.

        Parameters:
            session_id: only this agent session (``_agent_session_id``).
            agent_id: only this agent (``_agent_id``).
            status_class: only statuses of this class: 2 for 2xx, ..., 5 for 5xx.
            path_contains: only paths containing this text, ignoring ASCII case.
            after_id: only events stored after this ``_id`` (what is new since a
                previous look).
            before_id: only events stored before this ``_id`` (the next page).
            limit: at most this many; None for all.
        """
        where: list[str] = []
        params: list[Any] = []
        if session_id is not None:
            where.append("agent_session_id = ?")
            params.append(session_id)
        if agent_id is not None:
            where.append("agent_id = ?")
            params.append(agent_id)
        if status_class is not None:
            where.append("status_code BETWEEN ? AND ?")
            params += [status_class * 100, status_class * 100 + 99]
        if path_contains:
            where.append("instr(lower(path), lower(?)) > 0")
            params.append(path_contains)
        if after_id is not None:
            where.append("id > ?")
            params.append(after_id)
        if before_id is not None:
            where.append("id < ?")
            params.append(before_id)
        sql = "SELECT id, event FROM events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(max(0, limit))
        return [_event(row) for row in self._query(sql, tuple(params))]

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
            self._cond.wait_for(lambda: self.count() >= count, timeout)
        return self.events()

    def wait_after(self, after_id: int, timeout: float) -> list[dict[str, Any]]:
        """Events stored after ``after_id``, oldest first, waiting up to ``timeout`` s
        for the first of them: what a live view or ``tail`` polls for."""
        with self._cond:
            self._cond.wait_for(lambda: self.last_id() > after_id, timeout)
        newer = self.list_events(after_id=after_id, limit=None)
        newer.reverse()
        return newer
