"""The collector imitates how the public Brain fails and how much it can take.

Brain refuses long paths on every retry, fails every call while its database is down,
hangs while UASAM hangs, serves a bounded number of calls at once, and stores events
whose caller has already given up. Each switch is exercised over loopback HTTP.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import requests

from otas_capture.collector import DEMO_SDK_KEY, Collector, CollectorServer
from otas_capture.collector.app import SERVICE_UNAVAILABLE
from otas_capture.contract import (
    AUTHENTICATE_PATH,
    EVENT_CAPTURE_FAILED,
    EVENT_CAPTURED,
    PATH_INDEX_BYTES,
    SDK_KEY_HEADER,
)

from .test_collector import assert_failure, event, post_log

pytestmark = pytest.mark.filterwarnings("ignore:The HMAC key is:UserWarning")


@pytest.fixture
def server(collector_server: CollectorServer, collector: Collector) -> CollectorServer:
    return collector_server  # `collector` resets it before and after each test


def post_concurrently(server: CollectorServer, count: int, **kwargs: Any) -> list[Any]:
    """POST ``count`` events on ``count`` connections, released into the collector at
    the same moment (held by a hang until all have arrived); the responses."""
    collector = server.collector
    collector.brain_hangs = True
    results: list[Any] = [None] * count

    def post(i: int) -> None:
        try:
            results[i] = post_log(server, event(path=f"/call/{i}"), **kwargs)
        except requests.RequestException as exc:
            results[i] = exc

    threads = [threading.Thread(target=post, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 10
    while collector.in_flight < count and time.monotonic() < deadline:
        time.sleep(0.005)
    collector.brain_hangs = False
    for thread in threads:
        thread.join(timeout=30)
    return results


# -- the path index --------------------------------------------------------------------


def test_a_path_over_brains_index_limit_fails_500_on_every_retry(server, collector):
    long_path = "/" + "a" * PATH_INDEX_BYTES
    for _ in range(3):
        assert_failure(post_log(server, event(path=long_path)), 500, EVENT_CAPTURE_FAILED)
    assert collector.events() == []


def test_the_path_limit_counts_utf8_bytes_not_characters(server, collector):
    at_limit = "/" + "a" * (PATH_INDEX_BYTES - 1)
    assert post_log(server, event(path=at_limit)).status_code == 201
    over_in_bytes = "/" + "\u00e9" * (PATH_INDEX_BYTES // 2)  # fewer characters than bytes
    assert len(over_in_bytes) < PATH_INDEX_BYTES
    assert_failure(post_log(server, event(path=over_in_bytes)), 500, EVENT_CAPTURE_FAILED)
    assert [e["path"] for e in collector.events()] == [at_limit]


# -- outage ----------------------------------------------------------------------------


def test_while_brain_is_down_every_call_fails_until_it_is_up_again(server, collector):
    collector.brain_up = False
    assert not collector.brain_up
    for _ in range(3):
        assert_failure(post_log(server), 500, EVENT_CAPTURE_FAILED)
    assert collector.events() == []
    collector.brain_up = True
    assert post_log(server).status_code == 201
    assert collector.calls == [(500, EVENT_CAPTURE_FAILED)] * 3 + [(201, EVENT_CAPTURED)]


def test_brain_down_answers_the_status_asked_for_with_retry_after(server, collector):
    collector.brain_down(503, retry_after="4")
    response = post_log(server)
    assert_failure(response, 503, SERVICE_UNAVAILABLE)
    assert response.headers["Retry-After"] == "4"


def test_fail_next_faults_come_before_an_outage(server, collector):
    collector.brain_down(502)
    collector.fail_next(status=429)
    assert [post_log(server).status_code for _ in range(2)] == [429, 502]


# -- hang ------------------------------------------------------------------------------


def test_a_hanging_brain_answers_nothing_and_stores_nothing_until_released(server, collector):
    collector.brain_hangs = True
    with pytest.raises(requests.Timeout):
        post_log(server, timeout=0.2)
    assert collector.in_flight == 1
    assert collector.events() == [] and collector.calls == []
    collector.brain_hangs = False
    # The held call then goes on, as a stalled server does once it recovers.
    assert len(collector.wait_for_events(1)) == 1


def test_while_uasam_hangs_uasam_and_brain_answer_nothing_until_released(server, collector):
    collector.uasam_hangs = True
    with pytest.raises(requests.Timeout):
        requests.post(server.url + AUTHENTICATE_PATH, timeout=0.2)
    with pytest.raises(requests.Timeout):
        post_log(server, timeout=0.2)
    assert collector.events() == []
    collector.uasam_hangs = False
    assert len(collector.wait_for_events(1)) == 1
    response = requests.post(
        server.url + AUTHENTICATE_PATH, headers={SDK_KEY_HEADER: DEMO_SDK_KEY}, timeout=5
    )
    assert response.status_code == 200


def test_reset_releases_calls_held_by_a_hang(server, collector):
    collector.brain_hangs = True
    with pytest.raises(requests.Timeout):
        post_log(server, timeout=0.2)
    collector.reset()
    assert not collector.brain_hangs
    assert post_log(server).status_code == 201


# -- capacity and latency --------------------------------------------------------------


def test_calls_beyond_the_workers_queue_and_are_all_served(server, collector):
    collector.set_capacity(2, service_time=0.05)
    responses = post_concurrently(server, 6)
    assert [r.status_code for r in responses] == [201] * 6
    assert len(collector.events()) == 6
    assert collector.conditions.peak_serving == 2  # never more than the workers at once
    assert collector.peak_in_flight == 6  # the others waited their turn


def test_each_call_holds_its_worker_for_the_service_time(server, collector):
    collector.set_capacity(1, service_time=0.1)
    started = time.monotonic()
    post_concurrently(server, 3)
    # One worker, three calls, one after the other.
    assert time.monotonic() - started >= 0.3


def test_unbounded_capacity_serves_every_call_at_once(server, collector):
    collector.set_capacity(None, service_time=0.2)
    post_concurrently(server, 5)
    assert collector.conditions.peak_serving == 5


def test_a_call_the_client_gave_up_on_is_stored_so_a_retry_duplicates_it(server, collector):
    collector.set_latency(1.0)
    token = collector.issue_token()
    with pytest.raises(requests.Timeout):
        post_log(server, token=token, timeout=0.2)
    assert len(collector.wait_for_events(1)) == 1  # stored before the answer was held back
    collector.set_latency(0)
    assert post_log(server, token=token).status_code == 201
    assert len(collector.events()) == 2


def test_a_queued_call_whose_client_left_is_still_stored(server, collector):
    collector.set_capacity(1, service_time=0.3)
    blocker = threading.Thread(target=post_log, args=(server,))
    blocker.start()
    try:
        with pytest.raises(requests.Timeout):
            post_log(server, timeout=0.1)
    finally:
        blocker.join()
    assert len(collector.wait_for_events(2)) == 2


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.set_capacity(0, 0.1),
        lambda c: c.set_capacity(2, -1),
        lambda c: c.set_latency(-0.5),
    ],
    ids=["no-workers", "negative-service-time", "negative-latency"],
)
def test_impossible_capacity_or_latency_is_a_value_error(collector, call):
    with pytest.raises(ValueError):
        call(collector)


def test_reset_restores_a_healthy_unbounded_brain_and_the_initial_keys(server, collector):
    collector.remove_sdk_key(DEMO_SDK_KEY)
    collector.brain_up = False
    collector.uasam_hangs = True
    collector.uasam_up = False
    collector.set_capacity(1, 5.0)
    collector.set_latency(5.0)
    collector.reset()
    assert collector.brain_up and collector.uasam_up and not collector.uasam_hangs
    assert collector.conditions.capacity == (None, 0.0) and collector.conditions.latency == 0
    assert post_log(server).status_code == 201
