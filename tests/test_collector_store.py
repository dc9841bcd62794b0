"""The collector's store keeps events in SQLite, survives a restart, and answers the
queries a viewer needs (newest first, filters, one event, sessions in order)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from otas_capture.collector import Collector, CollectorServer, EventStore
from otas_capture.contract import EVENT_CAPTURE_FAILED, EVENT_CAPTURED

from .test_collector import event, post_log

pytestmark = pytest.mark.filterwarnings("ignore:The HMAC key is:UserWarning")


def stored(path: str, status: int = 200, session: str = "s1", agent: str = "a1") -> dict[str, Any]:
    """An event as the collector stores it."""
    return {
        **event(path=path, status_code=status),
        "_project_id": "p",
        "_agent_session_id": session,
        "_agent_id": agent,
        "_received_at": "2026-01-01T00:00:00+00:00",
        "_connection": "127.0.0.1:1",
    }


@pytest.fixture
def store() -> Iterator[EventStore]:
    store = EventStore()
    for path, status, session, agent in [
        ("/api/users/", 200, "s1", "a1"),
        ("/api/Orders/7", 404, "s1", "a1"),
        ("/api/users/", 201, "s2", "a2"),
        ("/api/login", 500, "s1", "a1"),
        ("/health", 302, "s3", "a2"),
    ]:
        store.add_event(stored(path, status, session, agent))
    yield store
    store.close()


def paths(events: list[dict[str, Any]]) -> list[str]:
    return [e["path"] for e in events]


# -- persistence -----------------------------------------------------------------------


def test_events_survive_a_collector_restart_on_the_same_database(tmp_path):
    db = str(tmp_path / "events.db")
    first = Collector(store=EventStore(db))
    with CollectorServer(first) as server:
        token = first.issue_token(agent_id="agent-1", agent_session_id="session-1")
        assert post_log(server, event(path="/before"), token=token).status_code == 201
    first.store.close()

    second = Collector(store=EventStore(db))
    with CollectorServer(second) as server:
        [kept] = second.events()
        assert (kept["path"], kept["_agent_session_id"]) == ("/before", "session-1")
        assert post_log(server, event(path="/after"), token=token).status_code == 201
    after = second.events()
    assert paths(after) == ["/before", "/after"]
    assert after[1]["_id"] > after[0]["_id"] == kept["_id"]
    second.store.close()


def test_a_database_file_is_in_wal_mode(tmp_path):
    db = tmp_path / "events.db"
    EventStore(str(db)).close()
    with sqlite3.connect(db) as other:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_the_default_store_is_in_memory_and_each_collector_has_its_own():
    one, two = Collector(), Collector()
    one.store.add_event(stored("/x"))
    assert one.store.count() == 1 and two.store.count() == 0


# -- queries ---------------------------------------------------------------------------


def test_every_event_gets_an_increasing_id_and_keeps_the_collectors_fields(store):
    events = store.events()
    ids = [e["_id"] for e in events]
    assert ids == sorted(ids) and len(set(ids)) == 5
    assert {"_agent_session_id", "_agent_id", "_received_at", "_connection"} <= set(events[0])
    assert events[0]["custom_properties"] == {"team": "a"}  # JSON fields come back as JSON


def test_cleared_ids_are_not_reused(store):
    last = store.last_id()
    store.clear()
    assert store.events() == [] and store.calls() == []
    assert store.add_event(stored("/new")) > last


def test_list_events_is_newest_first_and_limited(store):
    assert paths(store.list_events()) == [
        "/health",
        "/api/login",
        "/api/users/",
        "/api/Orders/7",
        "/api/users/",
    ]
    assert paths(store.list_events(limit=2)) == ["/health", "/api/login"]


@pytest.mark.parametrize(
    "filters, expected",
    [
        ({"session_id": "s1"}, ["/api/login", "/api/Orders/7", "/api/users/"]),
        ({"agent_id": "a2"}, ["/health", "/api/users/"]),
        ({"status_class": 2}, ["/api/users/", "/api/users/"]),
        ({"status_class": 4}, ["/api/Orders/7"]),
        ({"status_class": 5, "agent_id": "a2"}, []),
        ({"path_contains": "orders"}, ["/api/Orders/7"]),
        ({"path_contains": "users", "session_id": "s2"}, ["/api/users/"]),
    ],
)
def test_list_events_filters(store, filters, expected):
    assert paths(store.list_events(**filters)) == expected


def test_list_events_pages_with_before_and_after_ids(store):
    third = store.events()[2]["_id"]
    assert paths(store.list_events(after_id=third)) == ["/health", "/api/login"]
    assert paths(store.list_events(before_id=third)) == ["/api/Orders/7", "/api/users/"]


def test_get_event_by_id(store):
    wanted = store.events()[1]
    assert store.get_event(wanted["_id"]) == wanted
    assert store.get_event(10_000) is None


def test_a_sessions_calls_come_in_the_order_they_were_stored(store):
    assert paths(store.session_events("s1")) == ["/api/users/", "/api/Orders/7", "/api/login"]
    assert store.session_events("nobody") == []


def test_sessions_are_summarised_most_recently_active_first(store):
    summaries = store.sessions()
    assert [s["agent_session_id"] for s in summaries] == ["s3", "s1", "s2"]
    s1 = summaries[1]
    assert (s1["agent_id"], s1["calls"], s1["errors"]) == ("a1", 3, 2)
    assert s1["last_id"] == store.session_events("s1")[-1]["_id"]
    assert [s["agent_session_id"] for s in store.sessions(agent_id="a2")] == ["s3", "s2"]


def test_wait_after_returns_what_is_new_oldest_first(store):
    last = store.last_id()
    assert store.wait_after(last, timeout=0) == []
    later = threading.Timer(0.05, lambda: store.add_event(stored("/late")))
    later.start()
    try:
        assert paths(store.wait_after(last, timeout=5)) == ["/late"]
    finally:
        later.join()


def test_calls_are_kept_in_order(store):
    store.record_call(500, EVENT_CAPTURE_FAILED)
    store.record_call(201, EVENT_CAPTURED)
    assert store.calls() == [(500, EVENT_CAPTURE_FAILED), (201, EVENT_CAPTURED)]
