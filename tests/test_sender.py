"""The sender: each of Brain's answers handled as the OTAS contract says, and nothing lost silently.

Brain's answers come from the test collector over real HTTP; ``fail_next`` makes it
answer the way a real server in trouble would.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time

import pytest
import requests
from werkzeug.test import Client

from otas_capture.collector import DEMO_PROJECT_ID, DEMO_SDK_KEY

from .conftest import settle


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "application/json")])
    return [b'{"ok": true}']


def call(middleware, agent, path="/api/things", count=1):
    client = Client(middleware)
    for _ in range(count):
        client.get(path, headers=agent, buffered=True)


def closed_port_url():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_a_201_is_final_and_each_event_is_sent_exactly_once(make_middleware, collector, agent):
    middleware = make_middleware(app)
    call(middleware, agent, count=20)
    stats = settle(middleware, captured=20)
    assert (stats["sent"], stats["failed"], stats["retried"], stats["queued"]) == (20, 0, 0, 0)
    assert collector.calls == [(201, "event_captured")] * 20
    assert len(collector.events()) == 20


def test_events_travel_over_a_few_kept_alive_connections(make_middleware, collector, agent):
    middleware = make_middleware(app, concurrency=2)
    call(middleware, agent, count=30)
    settle(middleware, captured=30)
    connections = {event["_connection"] for event in collector.events()}
    assert 1 <= len(connections) <= 2


def test_events_are_delivered_within_the_flush_interval_without_an_explicit_flush(
    make_middleware, collector, agent
):
    middleware = make_middleware(app, flush_interval=0.05, batch_size=1000)
    call(middleware, agent, count=3)
    assert len(collector.wait_for_events(3, timeout=5)) == 3


def test_sender_threads_start_with_the_first_captured_request(make_middleware, collector, agent):
    def senders():
        return [t for t in threading.enumerate() if t.name.startswith("otas-capture-sender")]

    before = len(senders())
    middleware = make_middleware(app, concurrency=3)
    assert len(senders()) == before  # building the middleware starts nothing
    call(middleware, agent)
    assert len(senders()) == before + 3
    settle(middleware)
    middleware.close()
    assert len(senders()) == before


def test_the_project_id_is_learned_once_from_uasam(make_middleware, collector, agent):
    middleware = make_middleware(app)
    call(middleware, agent, count=3)
    settle(middleware, captured=3)
    assert {e["project_id"] for e in collector.events()} == {DEMO_PROJECT_ID}


def test_a_configured_project_id_needs_no_uasam(make_middleware, collector, agent):
    project = "123e4567-e89b-12d3-a456-426614174000"
    middleware = make_middleware(app, project_id=project, uasam_url=closed_port_url())
    call(middleware, agent)
    settle(middleware)
    assert collector.events()[0]["project_id"] == project


def test_a_key_uasam_refuses_holds_events_until_it_is_accepted(
    make_middleware, collector, agent, caplog
):
    collector.remove_sdk_key(DEMO_SDK_KEY)
    middleware = make_middleware(app)
    with caplog.at_level(logging.ERROR, logger="otas_capture"):
        call(middleware, agent)
        assert middleware.flush(timeout=0.3) is False
    assert "cannot learn the project id" in caplog.text
    assert DEMO_SDK_KEY not in caplog.text
    assert middleware.stats()["queued"] == 1
    collector.add_sdk_key(DEMO_SDK_KEY, DEMO_PROJECT_ID)
    assert middleware.flush(timeout=5) is True
    assert middleware.stats()["sent"] == 1


@pytest.mark.parametrize(
    "status, body, reason",
    [
        (400, {"status": 0, "status_description": "invalid_json"}, "invalid_json"),
        (
            400,
            {
                "status": 0,
                "status_description": "missing_required_fields",
                "missing_fields": ["path"],
            },
            "missing_required_fields",
        ),
        (
            401,
            {"status": 0, "status_description": "invalid_or_expired_token"},
            "invalid_or_expired_token",
        ),
        (
            401,
            {"status": 0, "status_description": "missing_agent_session_token"},
            "missing_agent_session_token",
        ),
    ],
)
def test_answers_that_cannot_change_on_retry_fail_at_once_with_their_reason(
    status, body, reason, make_middleware, collector, agent, caplog
):
    collector.fail_next(1, status=status, body=body)
    middleware = make_middleware(app)
    with caplog.at_level(logging.WARNING, logger="otas_capture"):
        call(middleware, agent)
        stats = settle(middleware)
    assert (stats["failed"], stats["retried"], stats["sent"]) == (1, 0, 0)
    assert stats["reasons"]["failed"] == {reason: 1}
    assert len(collector.calls) == 1
    assert reason in caplog.text
    if "missing_fields" in body:
        assert "path" in caplog.text


@pytest.mark.parametrize("status", [500, 429, 502, 503, 504])
def test_server_trouble_is_retried_until_it_succeeds(status, make_middleware, collector, agent):
    collector.fail_next(2, status=status)
    middleware = make_middleware(app)
    call(middleware, agent)
    stats = settle(middleware)
    assert (stats["sent"], stats["retried"], stats["failed"]) == (1, 2, 0)
    assert [code for code, _ in collector.calls] == [status, status, 201]


def test_retry_after_is_honoured(make_middleware, collector, agent):
    collector.fail_next(1, status=503, retry_after="0.5")
    middleware = make_middleware(app)
    call(middleware, agent)
    start = time.monotonic()
    settle(middleware)
    assert time.monotonic() - start >= 0.45
    assert middleware.stats()["sent"] == 1


def test_an_event_is_given_up_after_max_retries_and_counted(make_middleware, collector, agent):
    collector.fail_next(10, status=500)
    middleware = make_middleware(app, max_retries=2)
    call(middleware, agent)
    stats = settle(middleware)
    assert (stats["sent"], stats["failed"], stats["retried"]) == (0, 1, 2)
    assert stats["reasons"]["failed"] == {"event_capture_failed": 1}
    assert len(collector.calls) == 3


def test_a_timeout_is_retried(make_middleware, collector, agent):
    collector.fail_next(1, status=None, delay=1.0)
    middleware = make_middleware(app, timeout=0.2)
    call(middleware, agent)
    stats = settle(middleware)
    assert stats["sent"] == 1 and stats["retried"] >= 1


def test_while_brain_is_unreachable_requests_work_and_events_fail_counted(
    make_middleware, agent, caplog
):
    middleware = make_middleware(app, brain_url=closed_port_url(), max_retries=1)
    with caplog.at_level(logging.WARNING, logger="otas_capture"):
        call(middleware, agent, count=2)
        stats = settle(middleware, captured=2)
    assert stats["failed"] == 2 and stats["reasons"]["failed"] == {"connection_error": 2}
    assert "connection_error" in caplog.text


def test_a_refused_sdk_key_pauses_shipping_and_retries_later(
    make_middleware, collector, agent, caplog
):
    middleware = make_middleware(app, project_id=DEMO_PROJECT_ID)
    collector.uasam_up = False  # Brain now says invalid_sdk_key, as while UASAM is down
    with caplog.at_level(logging.ERROR, logger="otas_capture"):
        call(middleware, agent, count=3)
        assert middleware.flush(timeout=0.3) is False
    assert "invalid_sdk_key" in caplog.text
    assert middleware.stats()["failed"] == 0
    collector.uasam_up = True
    assert middleware.flush(timeout=5) is True
    stats = middleware.stats()
    assert (stats["sent"], stats["failed"]) == (3, 0)


def test_a_full_queue_drops_and_counts_without_blocking_the_app(make_middleware, collector, agent):
    collector.fail_next(1, status=None, delay=1.0)
    middleware = make_middleware(app, queue_size=2, concurrency=1, flush_interval=0.001)
    call(middleware, agent)  # taken by the sender, which then waits on Brain
    time.sleep(0.2)
    call(middleware, agent, count=5)  # one more fits, four are dropped
    stats = middleware.stats()
    assert stats["dropped"] == 4 and stats["reasons"]["dropped"] == {"queue_full": 4}
    stats = settle(middleware, captured=6)
    assert stats["sent"] == 2


def test_close_flushes_then_counts_what_is_left_as_dropped(make_middleware, collector, agent):
    middleware = make_middleware(app, brain_url=closed_port_url(), max_retries=100)
    call(middleware, agent, count=2)
    middleware.close(timeout=0.3)
    stats = middleware.stats()
    assert stats["reasons"]["dropped"] == {"shutdown": 2}
    assert stats["queued"] == 0
    middleware.close()  # a second close is harmless
    call(middleware, agent)  # a request after close still works, passed through uncounted
    assert middleware.stats()["reasons"]["dropped"] == {"shutdown": 2}


def test_flush_waits_only_for_events_captured_before_it(make_middleware, collector, agent):
    middleware = make_middleware(app)
    assert middleware.flush(timeout=0) is True  # nothing captured yet
    call(middleware, agent)
    assert middleware.flush(timeout=5) is True
    assert len(collector.events()) == 1


def test_secrets_never_reach_logs_reprs_or_stats(make_middleware, collector, agent, token, caplog):
    collector.fail_next(
        1, status=401, body={"status": 0, "status_description": "invalid_or_expired_token"}
    )
    with caplog.at_level(logging.DEBUG):
        middleware = make_middleware(app)
        call(middleware, agent, count=2)
        settle(middleware, captured=2)
    visible = " ".join(
        [caplog.text, repr(middleware), repr(middleware.config), str(middleware.stats())]
    )
    assert DEMO_SDK_KEY not in visible
    assert token not in visible


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_worker_ships_its_own_events(make_middleware, collector, agent):
    middleware = make_middleware(app)
    call(middleware, agent)  # the parent's sender is running now
    settle(middleware)
    pid = os.fork()
    if pid == 0:  # the child: as a pre-forking server's worker would
        code = 1
        try:
            call(middleware, agent, path="/from-child")
            stats = settle(middleware)
            code = 0 if stats["sent"] == 1 else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert sorted(e["path"] for e in collector.events()) == ["/api/things", "/from-child"]


def test_concurrent_requests_are_each_shipped_exactly_once(
    make_middleware, collector, agent, serve_app
):
    middleware = make_middleware(app, batch_size=7)
    url = serve_app(middleware)
    errors = []

    def agent_thread(number):
        with requests.Session() as session:
            for i in range(25):
                response = session.get(f"{url}/t{number}/r{i}", headers=agent)
                if response.status_code != 200:
                    errors.append(response.status_code)

    threads = [threading.Thread(target=agent_thread, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    stats = settle(middleware, captured=200, timeout=20)
    assert (stats["sent"], stats["failed"], stats["dropped"], stats["queued"]) == (200, 0, 0, 0)
    paths = sorted(event["path"] for event in collector.events())
    assert paths == sorted(f"/t{n}/r{i}" for n in range(8) for i in range(25))
