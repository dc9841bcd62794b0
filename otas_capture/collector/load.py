"""A Brain whose calls slow down as they pile up, as the real one does.

Measured against the real OTAS services run locally (Brain on PostgreSQL), one log
call alone takes about 0.45 s; Brain serves about 2 to 9 events per second in all,
best with a few calls in flight; at 32 in flight the median call takes 11.2 s. Its
server and database share their work among the calls in flight, and the more there
are, the more each costs. A fixed pool of workers (``Collector.set_capacity``) cannot
show that: past its slots, calls only queue, and each still costs its service time.

:class:`LoadShape` gives the time one call takes with ``n`` in flight by Gunther's
universal scalability law, ``service_time * (1 + contention*(n-1) + crosstalk*n*(n-1))``:
``contention`` is the share of the work done one call at a time, ``crosstalk`` the
cost of calls getting in each other's way. :data:`SHAPES` names the measured ones.
:class:`SharedService` runs calls on such a Brain in real time, sharing it among the
calls in flight (processor sharing): each call progresses at the rate the current
number of calls allows, so that a call slows down when others arrive and speeds up
when they leave.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

__all__ = ["SHAPES", "LoadShape", "SharedService", "shape_named"]

# Remaining work below this counts as done (float rounding of the progress sums).
_DONE = 1e-9


@dataclass(frozen=True)
class LoadShape:
    """How long each call takes with ``n`` calls in flight (see the module's formula)."""

    service_time: float
    contention: float = 0.0
    crosstalk: float = 0.0

    def __post_init__(self) -> None:
        if self.service_time <= 0 or self.contention < 0 or self.crosstalk < 0:
            raise ValueError("service_time must be positive, the other terms not negative")

    def call_time(self, in_flight: int) -> float:
        """Seconds each of ``in_flight`` calls takes, all served together."""
        n = max(1, in_flight)
        return self.service_time * (1 + self.contention * (n - 1) + self.crosstalk * n * (n - 1))

    def throughput(self, in_flight: int) -> float:
        """Calls answered per second with ``in_flight`` calls kept in flight."""
        return max(1, in_flight) / self.call_time(in_flight)

    def best_in_flight(self, most: int = 1000) -> int:
        """The number of calls in flight that gets the most calls answered per second."""
        return max(range(1, most + 1), key=self.throughput)


SHAPES = {
    # The real Brain: 0.45 s alone, 7.8 events/s at best with 6 calls in flight,
    # 11.2 s per call (2.9 events/s) at 32 in flight.
    "real-brain": LoadShape(0.45, contention=0.0, crosstalk=0.024),
    # A Brain that one call already saturates: 2.2 events/s however many are in flight,
    # each of n calls taking n times 0.45 s.
    "saturated": LoadShape(0.45, contention=1.0, crosstalk=0.0),
}


def shape_named(shape: LoadShape | str | None) -> LoadShape | None:
    """``shape`` itself, or the one :data:`SHAPES` names; ValueError for another name."""
    if isinstance(shape, str):
        if shape not in SHAPES:
            raise ValueError(f"unknown load shape {shape!r}: one of {', '.join(SHAPES)}")
        return SHAPES[shape]
    return shape


class SharedService:
    """Serves calls in real time on a Brain of a :class:`LoadShape`, shared among the
    calls in flight; serves at once while ``shape`` is None. Thread-safe."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._shape: LoadShape | None = None
        self._left: dict[int, float] = {}  # call -> share of its work still to do
        self._stamp = time.monotonic()
        self._next = 0

    @property
    def shape(self) -> LoadShape | None:
        return self._shape

    @shape.setter
    def shape(self, shape: LoadShape | None) -> None:
        with self._cond:
            self._progress()
            self._shape = shape
            self._cond.notify_all()  # every call in service now runs at another rate

    def _progress(self) -> None:
        """Credit every call in service with the work done since the last look."""
        now = time.monotonic()
        if self._left and self._shape is not None:
            done = (now - self._stamp) / self._shape.call_time(len(self._left))
            for call in self._left:
                self._left[call] -= done
        self._stamp = now

    @contextmanager
    def serve(self) -> Iterator[None]:
        """Hold the calling thread for the time its call takes, given the others."""
        with self._cond:
            if self._shape is not None:
                self._share()
        yield

    def _share(self) -> None:
        """Join the calls in service and wait until this one's work is done (lock held)."""
        self._progress()
        call = self._next
        self._next += 1
        self._left[call] = 1.0
        self._cond.notify_all()  # the calls in service slow down
        try:
            while self._shape is not None and self._left[call] > _DONE:
                rest = self._left[call] * self._shape.call_time(len(self._left))
                self._cond.wait(rest)
                self._progress()
        finally:
            del self._left[call]
            self._cond.notify_all()  # the others speed up
