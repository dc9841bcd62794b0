"""The collector stays a safe dev tool: no web page can reach it through DNS rebinding,
no load can grow it without bound, and no answer holds every event at once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from otas_capture.collector import (
    DEMO_SDK_KEY,
    EVENTS_PATH,
    SDK_LOG_PATH,
    Collector,
    CollectorServer,
    EventStore,
)
from otas_capture.collector.options import MIB
from otas_capture.contract import SDK_KEY_HEADER, SESSION_TOKEN_HEADER

from .conftest import default_sigint
from .test_collector import event, post_log
from .test_collector_store import stored

pytestmark = pytest.mark.filterwarnings("ignore:The HMAC key is:UserWarning")

BIG = 2_400_000  # bytes of body per event: near Brain's 2.5 MiB limit


@pytest.fixture
def server() -> Iterator[CollectorServer]:
    with CollectorServer(Collector(allowed_hosts=["collector.docker"])) as running:
        yield running


def request(server: CollectorServer, method: str, host: str | None, **headers: str):
    if host is not None:
        headers["Host"] = host
    return requests.request(method, server.url + EVENTS_PATH, headers=headers, timeout=5)


# -- DNS rebinding ---------------------------------------------------------------------


def test_a_rebound_page_can_neither_read_nor_wipe_the_events(server):
    post_log(server)
    evil = {"Origin": "http://evil.example:8002"}
    wipe = request(server, "DELETE", "evil.example:8002", **evil)
    read = request(server, "GET", "evil.example:8002", **evil)
    assert (wipe.status_code, read.status_code) == (403, 403)
    assert "--allow-host evil.example" in wipe.text
    assert len(server.collector.events()) == 1  # still there


def test_a_page_elsewhere_cannot_send_simple_requests_to_the_loopback_port(server):
    for origin in ("http://evil.example", "null"):
        assert request(server, "DELETE", None, Origin=origin).status_code == 403
    headers = {SDK_KEY_HEADER: DEMO_SDK_KEY, "Origin": "https://evil.example"}
    posted = requests.post(server.url + SDK_LOG_PATH, json=event(), headers=headers, timeout=5)
    assert posted.status_code == 403
    assert server.collector.events() == []


@pytest.mark.parametrize(
    "host",
    [
        None,
        "localhost",
        "LOCALHOST:8002",
        "viewer.localhost",
        "127.0.0.1",
        "127.8.9.1:80",
        "[::1]:8002",
        "collector.docker",
        "collector.docker:8002",
    ],
)
def test_loopback_names_and_allowed_hosts_are_answered(server, host):
    origin = f"http://{host}" if host else "http://127.0.0.1:8002"
    assert request(server, "GET", host, Origin=origin).status_code == 200
    assert request(server, "DELETE", host).status_code == 204


@pytest.mark.parametrize(
    "host", ["evil.example", "127.0.0.1.evil.example", "localhost.evil", "0.0.0.0", "[::]"]
)
def test_other_hosts_are_refused(server, host):
    assert request(server, "GET", host).status_code == 403


# -- bounded store ---------------------------------------------------------------------


def test_the_store_keeps_the_newest_events_within_its_count(tmp_path):
    store = EventStore(max_events=3)
    for n in range(5):
        store.add_event(stored(f"/{n}"))
    assert [e["path"] for e in store.events()] == ["/2", "/3", "/4"]
    assert store.stats()["evicted"] == 2
    store.clear()
    assert store.stats() == {
        "events": 0,
        "bytes": 0,
        "evicted": 0,
        "max_events": 3,
        "max_bytes": store.max_bytes,
    }


@pytest.mark.parametrize("db", [":memory:", "file"])
def test_the_store_keeps_the_newest_events_within_its_bytes(tmp_path, db):
    path = str(tmp_path / "events.db") if db == "file" else db
    store = EventStore(path, max_bytes=8 * MIB)
    for n in range(10):
        store.add_event(stored(f"/{n}") | {"request_body": "x" * BIG})
    stats = store.stats()
    assert stats["bytes"] <= 8 * MIB and stats["events"] == 3 and stats["evicted"] == 7
    assert [e["path"] for e in store.events()] == ["/7", "/8", "/9"]
    store.close()
    if db == "file":  # reopened with smaller bounds, the file is trimmed to them
        again = EventStore(path, max_events=1)
        assert [e["path"] for e in again.events()] == ["/9"]
        assert again.stats()["evicted"] == 2
        again.close()


def test_a_database_from_before_the_bounds_gets_its_sizes(tmp_path):
    import sqlite3

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as old:
        old.execute(
            "CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, received_at TEXT NOT"
            " NULL, agent_session_id TEXT, agent_id TEXT, method TEXT, path TEXT,"
            " status_code INTEGER, event TEXT NOT NULL)"
        )
        old.execute("INSERT INTO events (received_at, event) VALUES ('', ?)", ('{"path": "/old"}',))
    store = EventStore(str(path))
    assert store.stats()["bytes"] == len('{"path": "/old"}')
    assert [e["path"] for e in store.events()] == ["/old"]
    store.close()


@pytest.mark.parametrize("bounds", [{"max_events": 0}, {"max_bytes": MIB}])
def test_bounds_too_small_to_hold_an_event_are_refused(bounds):
    with pytest.raises(ValueError):
        EventStore(**bounds)


@contextmanager
def collector_process(*args: str) -> Iterator[tuple[subprocess.Popen[str], str, str]]:
    """``python -m otas_capture.collector --port 0 ARGS``: yields (process, URL, token)."""
    root = Path(__file__).resolve().parents[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "otas_capture.collector", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONPATH": str(root)},
        preexec_fn=default_sigint,
    )
    assert process.stdout is not None
    try:
        lines: list[str] = []
        while not lines or not lines[-1].startswith("Press Ctrl-C"):
            line = process.stdout.readline()
            assert line, "the collector exited before printing its banner"
            lines.append(line.rstrip("\n"))
        url = next(x.split("=", 1)[1] for x in lines if "OTAS_BRAIN_URL=" in x)
        token = next(x.split(":", 1)[1].strip() for x in lines if "session token:" in x)
        yield process, url, token
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stdout.close()


def auth(token: str) -> dict[str, str]:
    return {
        SDK_KEY_HEADER: DEMO_SDK_KEY,
        SESSION_TOKEN_HEADER: token,
        "Content-Type": "application/json",
    }


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads RSS from /proc")
def test_big_events_leave_a_collector_process_under_256_mib():
    # Before the bounds, these 120 events of 2.4 MB grew the collector by 524 MiB.
    with collector_process() as (process, url, token):
        session = requests.Session()
        headers = auth(token)
        for n in range(120):
            body = json.dumps(event(path=f"/big/{n}", request_body="x" * BIG))
            answer = session.post(url + SDK_LOG_PATH, data=body, headers=headers, timeout=30)
            assert answer.status_code == 201
        page = session.get(url + EVENTS_PATH, timeout=30)
        assert rss_mib(process.pid) < 256
        assert int(page.headers["X-Evicted-Count"]) > 0
        assert int(page.headers["X-Total-Count"]) + int(page.headers["X-Evicted-Count"]) == 120
        assert len(page.content) < 20 * MIB  # one page, not 274 MiB


def test_command_line_bounds_and_allowed_hosts(tmp_path):
    with collector_process("--max-events", "2", "--allow-host", "otas.test") as (_, url, token):
        for n in range(3):
            response = requests.post(
                url + SDK_LOG_PATH,
                data=json.dumps(event(path=f"/{n}")),
                headers=auth(token),
                timeout=5,
            )
            assert response.status_code == 201
        page = requests.get(url + EVENTS_PATH, headers={"Host": "otas.test"}, timeout=5)
        assert [e["path"] for e in page.json()] == ["/1", "/2"]
        assert page.headers["X-Evicted-Count"] == "1"


# -- pages -----------------------------------------------------------------------------


def test_events_come_in_pages_that_link_to_the_next(server):
    for n in range(250):
        server.collector.store.add_event(stored(f"/{n}"))
    seen: list[str] = []
    sizes: list[int] = []
    url: str | None = server.url + EVENTS_PATH
    while url:
        page = requests.get(url, timeout=5)
        assert page.headers["X-Total-Count"] == "250"
        sizes.append(len(page.json()))
        seen += [e["path"] for e in page.json()]
        url = server.url + page.links["next"]["url"] if "next" in page.links else None
    assert sizes == [100, 100, 50]  # the default page size
    assert seen == [f"/{n}" for n in range(250)]  # oldest first, each once


def test_a_page_can_be_asked_for_by_cursor_and_size(server):
    ids = [server.collector.store.add_event(stored(f"/{n}")) for n in range(5)]
    page = requests.get(server.url + EVENTS_PATH, params={"after": ids[1], "limit": 2}, timeout=5)
    assert [e["path"] for e in page.json()] == ["/2", "/3"]
    assert page.links["next"]["url"] == f"{EVENTS_PATH}?after={ids[3]}&limit=2"
    last = requests.get(server.url + EVENTS_PATH, params={"after": ids[3]}, timeout=5)
    assert [e["path"] for e in last.json()] == ["/4"] and "next" not in last.links


@pytest.mark.parametrize("params", [{"limit": "0"}, {"limit": "1001"}, {"after": "x"}])
def test_bad_page_arguments_are_400(server, params):
    assert requests.get(server.url + EVENTS_PATH, params=params, timeout=5).status_code == 400


def test_a_page_of_big_events_stops_at_16_mib(server):
    for n in range(10):
        server.collector.store.add_event(stored(f"/{n}") | {"request_body": "x" * BIG})
    page = requests.get(server.url + EVENTS_PATH, timeout=10)
    assert len(page.json()) == 6 and len(page.content) <= 16 * MIB
    assert "next" in page.links
