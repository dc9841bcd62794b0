"""The collector can be a Brain whose calls slow down as they pile up, as the real one:
about 0.45 s for a call alone, the most events per second at a few calls in flight, far
slower beyond; or one that a single call already saturates. And, as the real Brain, it
stores every event it was sent, even when the caller gave up waiting.
"""

from __future__ import annotations

import threading
import time

import pytest
import requests

from otas_capture.collector import Collector, CollectorServer
from otas_capture.collector.control import CONDITIONS_PATH
from otas_capture.collector.load import SHAPES, LoadShape, SharedService

from .test_collector import event, post_log
from .test_collector_emulation import post_concurrently
from .test_collector_safety import collector_process

pytestmark = pytest.mark.filterwarnings("ignore:The HMAC key is:UserWarning")


@pytest.fixture
def server(collector_server: CollectorServer, collector: Collector) -> CollectorServer:
    return collector_server  # `collector` resets it before and after each test


# -- the shapes --------------------------------------------------------------------------


def test_the_real_brain_shape_matches_what_was_measured():
    brain = SHAPES["real-brain"]
    assert brain.call_time(1) == pytest.approx(0.45)  # a call alone
    assert brain.best_in_flight() == 6  # the most events per second at a few in flight
    assert 7 < brain.throughput(6) < 9  # Brain took 2 to 9 events/s in all
    assert brain.call_time(32) == pytest.approx(11.2, abs=0.2)  # median at 32 in flight
    assert brain.throughput(32) < brain.throughput(6) / 2  # far slower beyond


def test_the_saturated_shape_serves_the_same_however_many_are_in_flight():
    saturated = SHAPES["saturated"]
    rates = {saturated.throughput(n) for n in (1, 2, 4, 32)}
    assert {round(rate, 6) for rate in rates} == {round(1 / 0.45, 6)}
    assert saturated.call_time(4) == pytest.approx(4 * 0.45)


@pytest.mark.parametrize("fields", [{"service_time": 0}, {"service_time": 0.1, "contention": -1}])
def test_a_shape_needs_a_positive_service_time_and_no_negative_terms(fields):
    with pytest.raises(ValueError):
        LoadShape(**fields)


# -- sharing in real time ----------------------------------------------------------------


def serve_together(service: SharedService, count: int, delays: list[float]) -> list[float]:
    """Start ``count`` calls, the i-th after ``delays[i]`` s; how long each took."""
    took = [0.0] * count

    def call(i: int) -> None:
        time.sleep(delays[i])
        started = time.monotonic()
        with service.serve():
            took[i] = time.monotonic() - started

    threads = [threading.Thread(target=call, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return took


def test_calls_in_flight_share_the_brain_and_each_takes_longer():
    shape = LoadShape(0.1, crosstalk=0.1)
    service = SharedService()
    service.shape = shape
    [alone] = serve_together(service, 1, [0.0])
    assert 0.09 < alone < 0.2
    four = serve_together(service, 4, [0.0] * 4)
    assert all(0.9 * shape.call_time(4) < t < 1.6 * shape.call_time(4) for t in four), four


def test_a_call_slows_down_when_others_arrive_and_speeds_up_when_they_leave():
    shape = LoadShape(0.2, contention=1.0)  # n calls share one call's worth of speed
    service = SharedService()
    service.shape = shape
    # The first runs alone for 0.1 s (half its work), then shares with one other: the
    # other half takes 0.2 s; the second, once alone again, finishes its last 0.1 s.
    first, second = serve_together(service, 2, [0.0, 0.1])
    assert first == pytest.approx(0.3, abs=0.08)
    assert second == pytest.approx(0.3, abs=0.08)


def test_without_a_shape_calls_go_straight_through():
    [took] = serve_together(SharedService(), 1, [0.0])
    assert took < 0.05


# -- over HTTP ---------------------------------------------------------------------------


def test_log_calls_take_the_time_of_the_shape_with_as_many_in_flight(server):
    shape = LoadShape(0.1, crosstalk=0.1)
    server.collector.set_load(shape)
    started = time.monotonic()
    assert post_log(server).status_code == 201
    assert 0.09 < time.monotonic() - started < 0.4
    started = time.monotonic()
    answers = post_concurrently(server, 8)
    took = time.monotonic() - started
    assert [a.status_code for a in answers] == [201] * 8
    assert 0.9 * shape.call_time(8) < took < 2.0 * shape.call_time(8)  # 0.66 s, not 0.1


def test_a_saturated_brain_answers_n_calls_in_n_service_times(server):
    server.collector.set_load(LoadShape(0.1, contention=1.0))
    started = time.monotonic()
    answers = post_concurrently(server, 4)
    took = time.monotonic() - started
    assert [a.status_code for a in answers] == [201] * 4
    assert 0.36 < took < 0.9  # 4 x 0.1 s: in flight together, no faster than one by one


def test_every_event_is_stored_even_when_its_caller_gave_up():
    # Two server threads, one slow slot: most calls wait in the server's queue, and
    # every caller times out. Brain stores them all, and so must the collector, or the
    # duplicates an SDK's retries make would not show.
    collector = Collector()
    collector.set_capacity(1, 0.25)
    with CollectorServer(collector, threads=2) as running:
        errors: list[Exception] = []

        def post(i: int) -> None:
            try:
                post_log(running, event(path=f"/gave-up/{i}"), timeout=0.15)
            except requests.RequestException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=post, args=(i,)) for i in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
        assert len(errors) == 6  # every caller gave up
        stored = collector.wait_for_events(6, timeout=10)
        assert sorted(e["path"] for e in stored) == [f"/gave-up/{i}" for i in range(6)]


# -- switching it ------------------------------------------------------------------------


def conditions(server: CollectorServer, change: object = None) -> requests.Response:
    if change is None:
        return requests.get(server.url + CONDITIONS_PATH, timeout=5)
    return requests.put(server.url + CONDITIONS_PATH, json=change, timeout=5)


def test_the_conditions_endpoint_reads_and_sets_load_capacity_and_latency(server):
    assert conditions(server).json() == {"load": None, "capacity": [None, 0.0], "latency": 0.0}
    answer = conditions(server, {"load": "real-brain", "capacity": [4, 0.4], "latency": 0.01})
    assert answer.json() == {
        "load": {"service_time": 0.45, "contention": 0.0, "crosstalk": 0.024},
        "capacity": [4, 0.4],
        "latency": 0.01,
    }
    custom = {"service_time": 0.2, "contention": 1.0, "crosstalk": 0.0}
    assert conditions(server, {"load": custom}).json()["load"] == custom
    assert conditions(server, {"load": None}).json()["load"] is None


@pytest.mark.parametrize(
    "change",
    [
        {"load": "fast"},
        {"load": {"service_time": -1}},
        {"load": {"speed": 1}},
        {"load": "saturated", "latency": -1},
        {"load": "saturated", "capacity": [0, 0.1]},
        {"capacity": 4},
        {"brain": "down"},
        ["load"],
    ],
)
def test_a_change_it_cannot_use_is_400_and_changes_nothing(server, change):
    before = conditions(server).json()
    answer = conditions(server, change)
    assert answer.status_code == 400 and answer.json()["error"]
    assert conditions(server).json() == before


def test_the_command_line_sets_the_brain_load_and_capacity():
    args = ("--brain-load", "real-brain", "--capacity", "4:0.4")
    with collector_process(*args) as (_, url, _token):
        answer = requests.get(url + CONDITIONS_PATH, timeout=5).json()
    assert answer["load"]["service_time"] == 0.45 and answer["capacity"] == [4, 0.4]
