"""The sender: each of Brain's answers handled as the OTAS contract says, and nothing lost silently.

Brain's answers come from the test collector over real HTTP; ``fail_next`` makes it
answer the way a real server in trouble would.
"""

from __future__ import annotations

import gc
import io
import json
import logging
import math
import os
import socket
import threading
import time
import tracemalloc
from email.utils import formatdate

import pytest
import requests
from werkzeug.test import Client

from otas_capture.collector import DEMO_PROJECT_ID, DEMO_SDK_KEY, CollectorServer
from otas_capture.collector.app import SERVICE_UNAVAILABLE
from otas_capture.contract import (
    EVENT_CAPTURE_FAILED,
    EVENT_CAPTURED,
    INVALID_JSON,
    INVALID_SDK_KEY,
    INVALID_SESSION_TOKEN,
    LOGGER_NAME,
    MISSING_REQUIRED_FIELDS,
    MISSING_SESSION_TOKEN,
    SESSION_TOKEN_HEADER,
)
from otas_capture.delivery.spool import READY_SUFFIX

from .conftest import settle


class PoisonBrain:
    """Brain that cannot store one kind of event, as its index refuses an overlong path.

    Events whose body mentions ``/poison`` get ``status``; everything else reaches the
    collector. Served over loopback like the collector itself.
    """

    def __init__(self, collector, status=500):
        self.collector = collector
        self.status = status
        self.poison_calls = 0
        self.url = ""

    def __call__(self, environ, start_response):
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        environ["wsgi.input"] = io.BytesIO(body)
        if b"/poison" not in body:
            return self.collector(environ, start_response)
        self.poison_calls += 1
        description = {500: EVENT_CAPTURE_FAILED, 503: SERVICE_UNAVAILABLE}[self.status]
        start_response(f"{self.status} Error", [("Content-Type", "application/json")])
        return [json.dumps({"status": 0, "status_description": description}).encode()]


@pytest.fixture
def poison_brain(collector):
    brain = PoisonBrain(collector)
    with CollectorServer(brain) as server:
        brain.url = server.url
        yield brain


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "application/json")])
    return [b'{"ok": true}']


def call(middleware, agent, path="/api/things", count=1):
    client = Client(middleware)
    for _ in range(count):
        client.get(path, headers=agent, buffered=True)


def wait_until_answered(collector, timeout=10.0):
    """Let calls a test left hanging finish, so that they land in no later test."""
    deadline = time.monotonic() + timeout
    while collector.in_flight and time.monotonic() < deadline:
        time.sleep(0.01)


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
    assert collector.calls == [(201, EVENT_CAPTURED)] * 20
    assert len(collector.events()) == 20


def test_events_travel_over_a_few_kept_alive_connections(make_middleware, collector, agent):
    middleware = make_middleware(app, concurrency=2)
    call(middleware, agent, count=30)
    settle(middleware, captured=30)
    connections = {event["_connection"] for event in collector.events()}
    assert 1 <= len(connections) <= 2


def test_events_are_delivered_promptly_without_an_explicit_flush(make_middleware, collector, agent):
    middleware = make_middleware(app)
    call(middleware, agent, count=3)
    assert len(collector.wait_for_events(3, timeout=5)) == 3


def test_sender_threads_start_with_the_first_captured_request(make_middleware, collector, agent):
    def senders():
        return [t for t in threading.enumerate() if t.name.startswith("otas-capture-sender")]

    before = len(senders())
    middleware = make_middleware(app, concurrency=3)
    assert len(senders()) == before  # building the middleware starts nothing
    call(middleware, agent, count=20)
    settle(middleware, captured=20)
    assert 1 <= len(senders()) - before <= 3  # as many as the calls in flight needed
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
    with caplog.at_level(logging.ERROR, logger=LOGGER_NAME):
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
        (400, {"status": 0, "status_description": INVALID_JSON}, INVALID_JSON),
        (
            400,
            {
                "status": 0,
                "status_description": MISSING_REQUIRED_FIELDS,
                "missing_fields": ["path"],
            },
            MISSING_REQUIRED_FIELDS,
        ),
        (
            401,
            {"status": 0, "status_description": INVALID_SESSION_TOKEN},
            INVALID_SESSION_TOKEN,
        ),
        (
            401,
            {"status": 0, "status_description": MISSING_SESSION_TOKEN},
            MISSING_SESSION_TOKEN,
        ),
    ],
)
def test_answers_that_cannot_change_on_retry_fail_at_once_with_their_reason(
    status, body, reason, make_middleware, collector, agent, caplog
):
    collector.fail_next(1, status=status, body=body)
    middleware = make_middleware(app)
    with caplog.at_level(logging.WARNING, logger=LOGGER_NAME):
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


def test_an_event_failing_while_others_are_accepted_is_given_up_after_max_retries(
    make_middleware, poison_brain, agent
):
    poison_brain.status = 503
    middleware = make_middleware(app, brain_url=poison_brain.url, max_retries=2, concurrency=1)
    call(middleware, agent, path="/poison")
    call(middleware, agent, count=6)
    stats = settle(middleware, captured=7)
    assert stats["sent"] == 6
    assert stats["reasons"]["failed"] == {SERVICE_UNAVAILABLE: 1}
    assert poison_brain.poison_calls <= 2 + 2  # the first may precede any success


def test_a_timeout_is_retried(make_middleware, collector, agent):
    collector.fail_next(1, status=None, delay=1.0)
    middleware = make_middleware(app, timeout=0.2)
    call(middleware, agent)
    stats = settle(middleware)
    assert stats["sent"] == 1 and stats["retried"] >= 1
    collector.wait_for_events(2)  # the call that timed out is stored too, a second later


def test_while_brain_is_unreachable_requests_work_and_events_wait_counted(
    make_middleware, agent, caplog
):
    middleware = make_middleware(app, brain_url=closed_port_url(), max_retries=1)
    with caplog.at_level(logging.WARNING, logger=LOGGER_NAME):
        call(middleware, agent, count=2)
        assert middleware.flush(timeout=0.5) is False
        assert middleware.stats()["queued"] == 2  # an outage gives nothing up
        middleware.close(timeout=0.1)
    stats = middleware.stats()
    assert stats["failed"] == 0 and stats["reasons"]["dropped"] == {"shutdown": 2}
    assert "connection_error" in caplog.text


def test_a_refused_sdk_key_pauses_shipping_and_retries_later(
    make_middleware, collector, agent, caplog
):
    middleware = make_middleware(app, project_id=DEMO_PROJECT_ID)
    collector.uasam_up = False  # Brain now says invalid_sdk_key, as while UASAM is down
    with caplog.at_level(logging.ERROR, logger=LOGGER_NAME):
        call(middleware, agent, count=3)
        assert middleware.flush(timeout=0.3) is False
    assert INVALID_SDK_KEY in caplog.text
    assert middleware.stats()["failed"] == 0
    collector.uasam_up = True
    with caplog.at_level(logging.INFO, logger=LOGGER_NAME):
        assert middleware.flush(timeout=5) is True
    stats = middleware.stats()
    assert (stats["sent"], stats["failed"]) == (3, 0)
    # Once accepted again, one INFO line says that delivery resumed, and why it paused.
    resumed = [r for r in caplog.records if "delivery resumed" in r.getMessage()]
    assert len(resumed) == 1 and resumed[0].levelno == logging.INFO
    assert INVALID_SDK_KEY in resumed[0].getMessage()


def test_a_full_queue_drops_and_counts_without_blocking_the_app(make_middleware, collector, agent):
    collector.fail_next(1, status=None, delay=1.0)
    middleware = make_middleware(app, queue_size=2, concurrency=1)
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
        1, status=401, body={"status": 0, "status_description": INVALID_SESSION_TOKEN}
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
    middleware = make_middleware(app)
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


# -- issue 5: events Brain can store, honest counts ------------------------------------------


def test_a_500_about_one_event_fails_it_after_one_retry_while_others_are_accepted(
    make_middleware, poison_brain, agent
):
    middleware = make_middleware(app, brain_url=poison_brain.url, max_retries=5, concurrency=1)
    call(middleware, agent, path="/poison")
    call(middleware, agent, count=5)
    stats = settle(middleware, captured=6)
    assert stats["sent"] == 5
    assert stats["reasons"]["failed"] == {EVENT_CAPTURE_FAILED: 1}
    assert poison_brain.poison_calls == 2


def test_when_every_call_fails_with_500_it_is_an_outage_and_nothing_is_given_up(
    make_middleware, collector, agent
):
    collector.fail_next(8, status=500)
    middleware = make_middleware(app, max_retries=1)
    call(middleware, agent, count=3)
    stats = settle(middleware, captured=3, timeout=10)
    assert (stats["sent"], stats["failed"]) == (3, 0)


def test_an_event_in_flight_when_close_runs_out_of_time_is_counted_unknown(
    make_middleware, collector, agent
):
    collector.fail_next(1, status=503, delay=1.5)  # answered too late
    middleware = make_middleware(app, timeout=5.0)
    call(middleware, agent)
    time.sleep(0.2)
    middleware.close(timeout=0.2)
    stats = middleware.stats()
    assert stats["reasons"]["unknown"] == {"shutdown": 1}
    assert stats["dropped"] == 0
    wait_until_answered(collector)


# -- issue 7: prompt, bounded, exact ----------------------------------------------------------


def test_an_event_is_sent_at_once_when_a_call_slot_is_free(make_middleware, collector, agent):
    middleware = make_middleware(app)
    call(middleware, agent)
    assert len(collector.wait_for_events(1, timeout=5)) == 1


def test_a_call_that_timed_out_after_being_sent_is_counted_as_a_possible_duplicate(
    make_middleware, collector, agent
):
    collector.fail_next(1, status=None, delay=0.6)  # Brain stores it after we gave up
    middleware = make_middleware(app, timeout=0.3)
    call(middleware, agent)
    stats = settle(middleware)
    assert (stats["sent"], stats["possible_duplicate"]) == (1, 1)
    assert len(collector.wait_for_events(2, timeout=5)) == 2  # what the count warns about


def test_retry_after_shorter_than_the_backoff_is_honoured(make_middleware, collector, agent):
    collector.fail_next(1, status=503, retry_after="0")
    middleware = make_middleware(app, retry_backoff=30.0)
    call(middleware, agent)
    assert middleware.flush(timeout=5) is True
    assert middleware.stats()["sent"] == 1


def test_retry_after_given_as_an_http_date_is_honoured(make_middleware, collector, agent):
    collector.fail_next(1, status=503, retry_after=formatdate(time.time() + 2, usegmt=True))
    middleware = make_middleware(app, retry_backoff=0.01)
    call(middleware, agent)
    assert middleware.flush(timeout=0.5) is False  # at least a second to wait
    assert middleware.flush(timeout=5) is True
    assert middleware.stats()["sent"] == 1


def test_a_burst_of_503_retry_after_0_does_not_delay_the_backlog(make_middleware, collector, agent):
    collector.fail_next(30, status=503, retry_after="0")
    middleware = make_middleware(app, retry_backoff=0.5, max_retries=5)
    call(middleware, agent, count=20)
    stats = settle(middleware, captured=20, timeout=5)
    assert (stats["sent"], stats["failed"]) == (20, 0)


def test_after_an_outage_the_backlog_drains_within_seconds(make_middleware, collector, agent):
    collector.fail_next(10_000, status=503)
    middleware = make_middleware(app, retry_backoff=0.5)
    call(middleware, agent, count=20)
    time.sleep(3)  # long enough for any backoff to have grown past a second
    collector.clear()  # Brain is healthy again
    assert middleware.flush(timeout=2.5) is True
    assert middleware.stats()["sent"] == 20


def test_memory_stays_within_the_queue_budget_with_brain_down_and_large_headers(
    make_middleware, agent
):
    budget = 1024 * 1024
    middleware = make_middleware(
        app, brain_url=closed_port_url(), queue_max_bytes=budget, project_id=DEMO_PROJECT_ID
    )
    call(middleware, agent)  # threads, connections and caches exist before measuring
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for number in range(300):  # 12 MB of headers offered
            # Values of their own per request, as real ones are: shared strings would
            # cost nothing however many events held them.
            headers = {f"X-Big-{i}": f"{number}-{i}-" + "v" * 2000 for i in range(20)}
            call(middleware, {**headers, **agent})
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert middleware.stats()["reasons"]["dropped"]["queue_bytes_full"] > 0
    assert grown < budget + 512 * 1024
    middleware.close(timeout=0)  # Brain stays down: nothing to wait for


def test_a_hostile_token_is_skipped_with_a_reason_never_an_error(make_middleware, collector):
    import base64

    def b64(data):
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    claims = b'{"agent_session_id": "s", "agent_id": "a", "exp": 1' + b"0" * 400 + b"}"
    token = f"{b64(b'{}')}.{b64(claims)}.{b64(b'sig')}"
    middleware = make_middleware(app)
    call(middleware, {SESSION_TOKEN_HEADER: token})
    stats = settle(middleware)
    assert stats["reasons"]["skipped"] == {"token_malformed": 1}
    assert stats["failed"] == 0


def test_a_sender_thread_that_cannot_start_leaves_each_event_counted_once(
    make_middleware, collector, agent, monkeypatch
):
    real_start = threading.Thread.start
    failed = []

    def start(self):
        if self.name.startswith("otas-capture-sender") and not failed:
            failed.append(self)
            raise RuntimeError("can't start new thread")
        real_start(self)

    monkeypatch.setattr(threading.Thread, "start", start)
    middleware = make_middleware(app)
    call(middleware, agent, count=2)
    stats = settle(middleware, captured=2)
    assert (stats["sent"], stats["dropped"]) == (2, 0)


def test_close_returns_in_time_whatever_the_concurrency(make_middleware, collector, agent):
    collector.fail_next(200, status=503, delay=2.0)  # Brain hangs past the close timeout
    middleware = make_middleware(app, concurrency=64, timeout=10.0)
    call(middleware, agent, count=100)
    time.sleep(0.3)
    start = time.monotonic()
    middleware.close(timeout=1.0)
    assert time.monotonic() - start < 2.0
    assert middleware.stats()["queued"] == 0
    collector.clear()  # the faults not yet taken
    wait_until_answered(collector)


@pytest.mark.parametrize("timeout", [math.inf, 0.0, 1e300])
def test_any_non_negative_flush_and_close_timeout_works(make_middleware, collector, agent, timeout):
    middleware = make_middleware(app)
    call(middleware, agent)
    assert isinstance(middleware.flush(timeout=timeout), bool)
    assert middleware.flush(timeout=math.inf) is True
    middleware.close(timeout=timeout)
    assert middleware.stats()["sent"] == 1


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="needs Linux /proc")
def test_idle_sender_threads_sleep_instead_of_polling(make_middleware, collector, agent):
    middleware = make_middleware(app, concurrency=16)
    call(middleware, agent, count=50)
    settle(middleware, captured=50)

    def wakeups():
        total = 0
        for thread in threading.enumerate():
            if thread.name.startswith("otas-capture-sender"):
                path = f"/proc/self/task/{thread.native_id}/status"
                with open(path) as status:
                    for line in status:
                        if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt")):
                            total += int(line.split()[1])
        return total

    time.sleep(0.1)  # the last calls' bookkeeping is done
    before = wakeups()
    time.sleep(0.5)
    assert wakeups() - before <= 2


PROCESS_THAT_CANNOT_DELIVER = """
import json, sys
from werkzeug.test import Client
from otas_capture import OtasMiddleware

def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "application/json")])
    return [b"{}"]

brain, spool, token, project, key, header = sys.argv[1:7]
middleware = OtasMiddleware(
    app, sdk_key=key, project_id=project, brain_url=brain, uasam_url=brain, spool_dir=spool
)
client = Client(middleware)
for i in range(5):
    client.get(f"/spooled/{i}", headers={header: token}, buffered=True)
middleware.close(timeout=0.5)
print(json.dumps(middleware.stats()))
"""


@pytest.mark.skipif(os.name != "posix", reason="the spool needs POSIX")
def test_events_undelivered_at_exit_are_spooled_and_shipped_by_the_next_process(
    make_middleware, collector, agent, token, tmp_path
):
    import subprocess
    import sys

    spool = str(tmp_path / "spool")
    args = [closed_port_url(), spool, token, DEMO_PROJECT_ID, DEMO_SDK_KEY, SESSION_TOKEN_HEADER]
    done = subprocess.run(
        [sys.executable, "-c", PROCESS_THAT_CANNOT_DELIVER, *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    first = json.loads(done.stdout)
    assert (first["spooled"], first["dropped"], first["sent"]) == (5, 0, 0)

    middleware = make_middleware(app, spool_dir=spool, project_id=DEMO_PROJECT_ID)
    call(middleware, agent, path="/after-restart")
    deadline = time.monotonic() + 10
    while middleware.stats()["restored"] < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert middleware.flush(timeout=10) is True
    # Only this test's paths: a call an earlier test left hanging may land late.
    paths = sorted(
        e["path"] for e in collector.events() if e["path"].startswith(("/spooled", "/after"))
    )
    assert paths == ["/after-restart"] + [f"/spooled/{i}" for i in range(5)]
    assert middleware.stats()["restored"] == 5
    assert [name for name in os.listdir(spool) if name.endswith(READY_SUFFIX)] == []


def test_during_an_outage_brain_is_probed_one_call_at_a_time_then_served_at_full_speed(
    make_middleware, collector, agent
):
    collector.set_latency(0.05)  # calls overlap, so a second call in flight would show
    collector.brain_down(503)
    middleware = make_middleware(app, concurrency=16, retry_backoff=0.05)
    call(middleware, agent, count=40)
    time.sleep(0.5)  # the first calls fail, and shipping turns to probing
    collector.clear()  # forget the peak of those first calls
    time.sleep(1.5)
    assert collector.peak_in_flight == 1
    assert len(collector.calls) >= 1  # still probing
    collector.brain_up = True
    stats = settle(middleware, captured=40, timeout=10)
    assert (stats["sent"], stats["failed"]) == (40, 0)
    assert collector.peak_in_flight > 1  # back to full speed at once


def test_an_event_before_send_drops_is_counted_skipped_and_never_sent(
    make_middleware, collector, agent
):
    middleware = make_middleware(app, before_send=lambda event: None)
    call(middleware, agent, path="/refused-by-before-send", count=2)
    stats = settle(middleware, captured=2)
    assert stats["reasons"]["skipped"] == {"before_send": 2}
    assert (stats["sent"], stats["failed"], stats["queued"]) == (0, 0, 0)
    assert not [e for e in collector.events() if e["path"] == "/refused-by-before-send"]
