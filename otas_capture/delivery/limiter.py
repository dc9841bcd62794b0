"""How many calls may be in flight at once: a limit that follows the server's capacity.

A fixed number of concurrent calls is wrong whichever number is picked. Below the
server's capacity it leaves throughput unused; above it the extra calls only wait in
the server's queue, so each call takes longer, then times out, and a server that
commits what the client gave up on stores it twice (the OTAS contract reports exactly
this for Brain). The limit here is latency-based, in the family of TCP Vegas and
Netflix's concurrency-limits: the shortest call latency seen lately estimates the
server's own service time; while calls take about that long there is no queue at the
server and the limit grows: doubling each round trip until the first sign of a queue
(TCP's slow start, so that a fast server is used fully within a few round trips), then
by about one call per round trip. When a short moving average of the latency exceeds
``TOLERANCE`` times the minimum, or calls fail as an overloaded server fails, the limit
shrinks by a fixed ratio, at most once per round trip (calls started before a cut still
report the old queue and must not cut again).

Two more rules come from fleets of senders sharing one slow server. The limit starts
at one call in flight: a process joining others that already load the server must not
add a burst of its own before it has measured anything. And besides the relative rule
the limit reacts to absolute latency: a moving average over ``max_latency`` cuts
whatever the minimum says, because a sender that started while others already queued
at the server measured their queue as its minimum and would let the queue grow to
``TOLERANCE`` times that.

Pure logic: no threads, no clock of its own. The caller passes times and serialises
the calls (the delivery worker holds its lock). The limit is shared by the processes
of a host through :mod:`otas_capture.delivery.slots`, which stores :meth:`state`.
"""

from __future__ import annotations

import math
from typing import Callable, Protocol

TOLERANCE = 1.4  # latency over this many times the minimum means the server queues
DECREASE = 0.75  # the limit kept after a cut
SLOW_START_EXIT = 1.2  # latency over this many times the minimum ends the doubling
SMOOTHING = 0.25  # weight of the newest call in the moving average of latency
MIN_WINDOW = 10.0  # seconds a minimum latency is trusted before it is measured afresh


# The state of an AdaptiveLimit as plain numbers (see AdaptiveLimit.state).
State = list[float]


class Limit(Protocol):
    """What the delivery worker asks: how many calls, and a call slot for each call."""

    @property
    def limit(self) -> int: ...

    def on_call(self, started: float, ended: float, in_flight: int, overloaded: bool) -> None: ...

    def acquire(self, stop: Callable[[], bool]) -> bool: ...

    def release(self) -> None: ...


class AdaptiveLimit:
    """A concurrency limit between 1 and ``ceiling`` driven by call latency and failures.

    Parameters:
        ceiling: the most calls ever allowed in flight.
        initial: the limit to start from (capped to ``ceiling``).
        max_latency: a moving average of call latency above this cuts the limit
            whatever the minimum latency (seconds; infinite: no such bound).
    """

    def __init__(self, ceiling: int, initial: int = 1, max_latency: float = math.inf) -> None:
        self.ceiling = max(1, ceiling)
        self.max_latency = max_latency
        self._limit = float(min(max(1, initial), self.ceiling))
        # The minimum latency over a sliding window made of two halves: the minimum of
        # the previous half and of the current one. A server that became slower for
        # good is measured afresh within ``MIN_WINDOW`` seconds.
        self._min_previous = math.inf
        self._min_current = math.inf
        self._window_start: float | None = None
        self._last_cut = -math.inf
        self._slow_start = True  # until the first cut
        self._recent: float | None = None  # moving average of latency since the last cut

    @property
    def limit(self) -> int:
        """Calls that may be in flight now."""
        return int(self._limit)

    @property
    def min_latency(self) -> float:
        return min(self._min_previous, self._min_current)

    def acquire(self, stop: Callable[[], bool]) -> bool:
        """A call slot: this limit is the process's own, its slots are the worker's."""
        return True

    def release(self) -> None:
        """Nothing to give back (see :meth:`acquire`)."""

    def state(self) -> State:
        """Everything the limit has learnt, as numbers (times in the caller's clock)."""
        return [
            self._limit,
            self._min_previous,
            self._min_current,
            math.nan if self._window_start is None else self._window_start,
            self._last_cut,
            float(self._slow_start),
            math.nan if self._recent is None else self._recent,
        ]

    def restore(self, state: State) -> None:
        """Take over what another limit learnt (:meth:`state`), within this ceiling."""
        limit, previous, current, window, last_cut, slow_start, recent = state
        self._limit = min(max(1.0, limit), float(self.ceiling))
        self._min_previous, self._min_current = previous, current
        self._window_start = None if math.isnan(window) else window
        self._last_cut = last_cut
        self._slow_start = bool(slow_start)
        self._recent = None if math.isnan(recent) else recent

    def on_call(self, started: float, ended: float, in_flight: int, overloaded: bool) -> None:
        """Learn from one finished call.

        ``started`` and ``ended`` are the call's times (any monotonic clock, seconds);
        ``in_flight`` is how many calls were in flight when it started, itself included;
        ``overloaded`` says the call failed the way an overloaded or absent server fails
        (timeout, refused connection, 429/502/503/504).
        """
        if overloaded:
            self._cut(ended, started)
            return
        latency = max(ended - started, 0.0)
        self._observe(latency, ended)
        # Judge a short moving average, not one call: a single call slowed by a pause
        # of our own process (the GIL, a collection) says nothing about the server.
        if self._recent is None:
            self._recent = latency
        else:
            self._recent += SMOOTHING * (latency - self._recent)
        floor = min(self._min_previous, self._min_current)  # min_latency, once per call
        if self._recent > TOLERANCE * floor and self._limit < 2 and in_flight <= 1:
            # Slow while alone at the smallest limit: no queue of ours explains it, the
            # server itself got slower. Measure the minimum afresh instead of waiting
            # ``MIN_WINDOW`` at one call for the old one to expire.
            self._min_previous = math.inf
            self._min_current = self._recent = latency
            self._window_start = ended
            return
        if self._recent > TOLERANCE * floor or self._recent > self.max_latency:
            self._cut(ended, started)
            return
        if self._recent > SLOW_START_EXIT * floor:
            # A queue is starting to form: stop doubling before it costs a cut (as
            # CUBIC's HyStart does), and go on growing one call per round trip.
            self._slow_start = False
        elif 2 * in_flight >= self._limit:
            # Grow only while the limit is used: an idle sender learns nothing about
            # the server's capacity. About ``limit`` calls end per round trip, so +1 a
            # call doubles the limit per trip, and +1/limit a call adds one per trip.
            step = 1.0 if self._slow_start else 1.0 / self._limit
            self._limit = min(float(self.ceiling), self._limit + step)

    def _observe(self, latency: float, now: float) -> None:
        if self._window_start is None:
            self._window_start = now
        elif now - self._window_start >= MIN_WINDOW / 2:
            self._min_previous, self._min_current = self._min_current, math.inf
            self._window_start = now
        self._min_current = min(self._min_current, latency)

    def _cut(self, now: float, started: float) -> None:
        floor = self.min_latency
        if started < self._last_cut + (floor if math.isfinite(floor) else 0.0):
            # This call queued behind the calls that caused the last cut, or started
            # while they were still in flight (they leave within about one call time).
            return
        self._limit = max(1.0, self._limit * DECREASE)
        self._last_cut = now
        self._recent = None  # the calls before the cut measured the old queue
        self._slow_start = False
