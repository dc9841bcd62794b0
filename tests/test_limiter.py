"""The adaptive concurrency limit: pure rules, and a simulated capacity-bound server."""

from __future__ import annotations

import heapq

import pytest

from otas_capture.delivery.limiter import (
    DECREASE,
    MIN_WINDOW,
    SLOW_START_EXIT,
    TOLERANCE,
    AdaptiveLimit,
)


def calls(limit: AdaptiveLimit, count: int, latency: float, start: float = 0.0) -> float:
    """Feed ``count`` calls of ``latency`` made with the limit fully used; returns the time."""
    now = start
    for _ in range(count):
        limit.on_call(now, now + latency, limit.limit, overloaded=False)
        now += latency / max(limit.limit, 1)
    return now


def test_the_limit_starts_at_one_call_and_within_the_ceiling():
    # A process joining a fleet must measure before it adds to Brain's queue.
    assert AdaptiveLimit(64).limit == 1
    assert AdaptiveLimit(64, initial=4).limit == 4
    assert AdaptiveLimit(2, initial=4).limit == 2
    assert AdaptiveLimit(0).limit == 1


def test_it_grows_to_the_ceiling_while_latency_stays_at_its_minimum():
    limit = AdaptiveLimit(64)
    calls(limit, 5000, latency=0.05)
    assert limit.limit == 64


def test_it_opens_to_a_fast_servers_full_use_within_a_few_round_trips():
    limit = AdaptiveLimit(64)
    now = 0.0
    while limit.limit < 64:
        now = calls(limit, limit.limit, latency=0.5, start=now)  # one round trip
    assert now <= 6 * 0.5


def test_after_the_first_sign_of_a_queue_it_grows_one_call_per_round_trip():
    limit = AdaptiveLimit(64, initial=10)
    calls(limit, 10, latency=0.1)
    limit.on_call(5.0, 5.5, limit.limit, overloaded=True)
    before = limit.limit
    calls(limit, 4 * before, latency=0.1, start=6.0)  # about four round trips
    assert before + 3 <= limit.limit <= before + 4


def test_doubling_stops_without_a_cut_when_a_queue_starts_to_form():
    limit = AdaptiveLimit(64, initial=8)
    now = calls(limit, 8, latency=0.1)
    forming = 0.1 * (SLOW_START_EXIT + TOLERANCE) / 2
    now = calls(limit, 8, latency=forming, start=now)
    before = limit.limit
    calls(limit, 2 * before, latency=forming, start=now)  # two more round trips
    assert before <= limit.limit <= before + 2


def test_it_does_not_grow_while_the_limit_is_not_used():
    limit = AdaptiveLimit(64, initial=4)
    for i in range(1000):
        limit.on_call(i, i + 0.05, in_flight=1, overloaded=False)
    assert limit.limit == 4


def test_one_slow_call_among_fast_ones_does_not_shrink_it():
    limit = AdaptiveLimit(64, initial=40)
    now = calls(limit, 20, latency=0.1)
    before = limit.limit
    limit.on_call(now, now + 0.1 * TOLERANCE * 1.5, before, overloaded=False)
    assert limit.limit >= before


def test_it_shrinks_when_latency_climbs_above_the_tolerance():
    limit = AdaptiveLimit(64, initial=40)
    calls(limit, 10, latency=0.1)
    before = limit.limit
    for i in range(5):  # a queue at the server slows every call, not just one
        started = 100.0 + i * 0.01
        limit.on_call(started, started + 0.1 * TOLERANCE * 1.5, before, overloaded=False)
    assert limit.limit == int(before * DECREASE) or limit.limit == int(before * DECREASE) + 1


def test_calls_started_before_a_cut_do_not_cut_again():
    limit = AdaptiveLimit(64, initial=40)
    calls(limit, 10, latency=0.1)
    limit.on_call(10.0, 11.0, 40, overloaded=True)
    after_one_cut = limit.limit
    for started in (10.1, 10.5, 10.9):  # queued behind the same congestion
        limit.on_call(started, 11.5, 40, overloaded=True)
    assert limit.limit == after_one_cut
    limit.on_call(11.2, 12.0, 30, overloaded=True)  # started after the cut: new news
    assert limit.limit < after_one_cut


def test_failures_shrink_it_but_never_below_one():
    limit = AdaptiveLimit(64, initial=64)
    for i in range(100):
        limit.on_call(float(i), i + 0.5, 1, overloaded=True)
    assert limit.limit == 1


def test_it_cuts_above_an_absolute_latency_whatever_the_minimum_says():
    # A sender that joined while others queued took their queue for the minimum.
    limit = AdaptiveLimit(64, initial=20, max_latency=2.0)
    calls(limit, 40, latency=1.5)  # no queue by the minimum's reckoning
    before = limit.limit
    limit.on_call(100.0, 103.0, before, overloaded=False)
    limit.on_call(100.0, 103.0, before, overloaded=False)
    assert limit.limit < before


def test_slow_calls_alone_at_one_call_rebase_the_minimum_at_once():
    limit = AdaptiveLimit(64)
    calls(limit, 5, latency=0.01, start=0.0)  # a fast server, the limit opens a little
    limit.restore([1.0, *limit.state()[1:]])  # then cut down to one call, as after trouble
    for i in range(3):
        limit.on_call(1.0 + i, 1.5 + i, in_flight=1, overloaded=False)
    assert limit.min_latency == 0.5  # not 0.01 for another MIN_WINDOW seconds
    calls(limit, 20, latency=0.5, start=10.0)
    assert limit.limit > 2


def test_its_state_carries_over_to_another_limit():
    learnt = AdaptiveLimit(64)
    calls(learnt, 30, latency=0.2)
    copy = AdaptiveLimit(64)
    copy.restore(learnt.state())
    assert (copy.limit, copy.min_latency) == (learnt.limit, learnt.min_latency)
    assert copy.state() == learnt.state()
    small = AdaptiveLimit(3)
    small.restore(learnt.state())
    assert small.limit == 3  # its own ceiling still holds


def test_a_server_that_became_slower_for_good_is_measured_afresh():
    limit = AdaptiveLimit(64)
    now = calls(limit, 200, latency=0.01)
    # Every call now takes 10x longer with no queue: at first that looks like
    # congestion, but within the window the new latency becomes the minimum.
    now = calls(limit, 3000, latency=0.1, start=now + 1)
    assert now > MIN_WINDOW
    assert limit.min_latency == pytest.approx(0.1)
    assert limit.limit > 4


def simulate(ceiling: int, workers: int | None, service: float, count: int = 4000):
    """A closed loop against a server of ``workers`` FIFO slots (None: unbounded), each
    call taking ``service`` s. Returns (throughput, mean latency, final limit) over the
    second half, in simulated time."""
    limit = AdaptiveLimit(ceiling)
    free = [0.0] * (workers or 0)  # when each worker is next free
    in_flight: list[tuple[float, float, int]] = []  # (end, start, in flight at start)
    now = 0.0
    done = []
    while len(done) < count:
        while len(in_flight) < limit.limit:
            if workers:
                begin = max(now, heapq.heappop(free))
                heapq.heappush(free, begin + service)
            else:
                begin = now
            heapq.heappush(in_flight, (begin + service, now, len(in_flight) + 1))
        end, start, at_start = heapq.heappop(in_flight)
        now = end
        limit.on_call(start, end, at_start, overloaded=False)
        done.append((start, end))
    half = done[count // 2 :]
    span = half[-1][1] - half[0][1]
    latency = sum(end - start for start, end in half) / len(half)
    return (len(half) - 1) / span, latency, limit.limit


@pytest.mark.parametrize("ceiling", [4, 16, 64])
def test_against_a_capacity_bound_server_it_keeps_throughput_without_queueing(ceiling):
    throughput, latency, _ = simulate(ceiling, workers=4, service=0.1)
    assert throughput >= 0.9 * 40
    assert latency <= 2 * 0.1


def test_against_a_server_with_plenty_of_capacity_it_opens_up():
    throughput, latency, final = simulate(64, workers=None, service=0.1)
    assert final == 64
    assert throughput >= 0.9 * 640
