"""The filters a viewer, ``tail`` or a test applies to stored events, as SQL.

One :class:`EventQuery` names what to list; :meth:`EventQuery.sql` turns it into a
``SELECT`` over the store's ``events`` table, so that every filter is written once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

# The text fields a free-text search looks in: what a person would recognise of a call.
# Nested JSON text (headers, query, form) is searched as stored, e.g. '"Accept": "..."'.
SEARCHED_FIELDS = (
    "path",
    "query_params",
    "request_headers",
    "post_data",
    "request_body",
    "response_headers",
    "response_body",
    "error",
)

_SEARCHED_TEXT = " || char(10) || ".join(
    f"coalesce(json_extract(event, '$.{name}'), '')" for name in SEARCHED_FIELDS
)


@dataclass(frozen=True)
class EventQuery:
    """Which events to list, newest first; every filter given must hold.

    Attributes:
        session_id: only this agent session (``_agent_session_id``).
        agent_id: only this agent (``_agent_id``).
        status_class: only statuses of this class: 2 for 2xx, ..., 5 for 5xx.
        path_contains: only paths containing this text, ignoring ASCII case.
        text: only events with this text, ignoring ASCII case, in the path, query,
            headers, form data, bodies or error (:data:`SEARCHED_FIELDS`), as written
            or as JSON escapes it.
        environment: only events whose ``metadata.environment`` is this.
        after_id: only events stored after this ``_id`` (what is new since a
            previous look).
        before_id: only events stored before this ``_id`` (the next page).
        limit: at most this many; None for all.
    """

    session_id: str | None = None
    agent_id: str | None = None
    status_class: int | None = None
    path_contains: str | None = None
    text: str | None = None
    environment: str | None = None
    after_id: int | None = None
    before_id: int | None = None
    limit: int | None = 100

    def sql(self, columns: str) -> tuple[str, tuple[Any, ...]]:
        """``SELECT columns FROM events`` with these filters, newest first."""
        where: list[str] = []
        params: list[Any] = []
        if self.session_id is not None:
            where.append("agent_session_id = ?")
            params.append(self.session_id)
        if self.agent_id is not None:
            where.append("agent_id = ?")
            params.append(self.agent_id)
        if self.status_class is not None:
            where.append("status_code BETWEEN ? AND ?")
            params += [self.status_class * 100, self.status_class * 100 + 99]
        if self.path_contains:
            where.append("instr(lower(path), lower(?)) > 0")
            params.append(self.path_contains)
        if self.text:
            # Bodies that are JSON often escape what is not ASCII ("Gda\u0144sk") or a
            # quote: the text is also looked for as JSON would write it.
            variants = list(dict.fromkeys([self.text, json.dumps(self.text)[1:-1]]))
            match = f"instr(lower({_SEARCHED_TEXT}), lower(?)) > 0"
            where.append("(" + " OR ".join([match] * len(variants)) + ")")
            params += variants
        if self.environment is not None:
            where.append("json_extract(event, '$.metadata.environment') = ?")
            params.append(self.environment)
        if self.after_id is not None:
            where.append("id > ?")
            params.append(self.after_id)
        if self.before_id is not None:
            where.append("id < ?")
            params.append(self.before_id)
        sql = f"SELECT {columns} FROM events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC"
        if self.limit is not None:
            sql += " LIMIT ?"
            params.append(max(0, self.limit))
        return sql, tuple(params)
