"""How the emulated Brain behaves right now: faults, outages, hangs, capacity, latency.

The public Brain is slow (each log call checks the SDK key with a password hash per
active key), fails as a whole while its database or UASAM is down, hangs while UASAM
hangs, and commits events whose caller has already timed out. An SDK's delivery
rules can only be tested against a server that does the same, so the collector's log
endpoint asks a :class:`BrainConditions` what to do before and after it stores an
event. Kept apart from the WSGI app so that the emulated conditions, and the locking
they need, read on their own.

Order in which a log call meets them (see ``Collector._log_event``):

1. a queued ``fail_next`` fault (delay, then its answer, if it has a status);
2. the hang switch (``brain_hang``): the call waits until it is turned off;
3. the outage switch (``brain_up`` False): the outage answer, else
4. a worker slot: calls queue first come, first served for one of ``workers`` slots,
   then hold it ``service_time`` seconds while Brain checks and stores the event;
   then, with a load shape set (:mod:`.load`), the time the call takes on a Brain
   shared with every call in flight, which grows as they pile up;
   while UASAM hangs (``uasam_hang``) the key check hangs in the slot, as it does in
   Brain, so a hanging UASAM also stalls Brain;
5. added latency: the answer (outage or not), already decided and the event stored, is held
   back ``latency`` seconds, as a slow network would, so that a client that times out
   here has in fact had its event stored.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from .load import SharedService


@dataclass(frozen=True)
class Answer:
    """A canned answer: HTTP status, JSON body, optional Retry-After value."""

    status: int
    body: dict[str, Any]
    retry_after: str | None = None


@dataclass(frozen=True)
class Fault:
    """One ``fail_next`` fault: sleep ``delay`` s, then answer (or, if None, go on)."""

    answer: Answer | None
    delay: float


def checked_capacity(workers: Any, service_time: Any) -> tuple[int | None, float]:
    """``(workers, service_time)`` for ``BrainConditions.capacity``; ValueError unless
    workers is None or at least 1 and the service time a number not negative."""
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise ValueError("workers must be at least 1, or None for unbounded")
    if not isinstance(service_time, (int, float)) or service_time < 0:
        raise ValueError("service_time must be a number of seconds, not negative")
    return workers, float(service_time)


def checked_latency(seconds: Any) -> float:
    """``seconds`` for ``BrainConditions.latency``; ValueError unless a number >= 0."""
    if not isinstance(seconds, (int, float)) or seconds < 0:
        raise ValueError("latency must be a number of seconds, not negative")
    return float(seconds)


class HangSwitch:
    """While on, every caller of :meth:`wait` blocks; turning it off releases them all."""

    def __init__(self) -> None:
        self._off = threading.Event()
        self._off.set()

    @property
    def on(self) -> bool:
        return not self._off.is_set()

    @on.setter
    def on(self, value: bool) -> None:
        if value:
            self._off.clear()
        else:
            self._off.set()

    def wait(self) -> None:
        self._off.wait()


class BrainConditions:
    """The switches of the emulated Brain; thread-safe, all off (healthy) at first."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: deque[Fault] = deque()
        self._outage: Answer | None = None
        self.brain_hang = HangSwitch()
        self.uasam_hang = HangSwitch()
        self.load = SharedService()
        self._latency = 0.0
        # Worker slots, served strictly in order of arrival (tickets), so the time a
        # call waits depends only on the calls ahead of it.
        self._slots = threading.Condition(self._lock)
        self._workers: int | None = None
        self._service_time = 0.0
        self._busy = 0
        self._next_ticket = 0
        self._now_serving = 0
        self._in_flight = 0
        self._peak_in_flight = 0
        self._peak_serving = 0

    # -- fail_next -------------------------------------------------------------------

    def add_faults(self, faults: list[Fault]) -> None:
        with self._lock:
            self._faults.extend(faults)

    def next_fault(self) -> Fault | None:
        with self._lock:
            return self._faults.popleft() if self._faults else None

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    # -- outage ----------------------------------------------------------------------

    @property
    def outage(self) -> Answer | None:
        """The answer every log call gets during an outage; None while Brain is up."""
        return self._outage

    @outage.setter
    def outage(self, answer: Answer | None) -> None:
        self._outage = answer

    # -- capacity and latency --------------------------------------------------------

    @property
    def latency(self) -> float:
        return self._latency

    @latency.setter
    def latency(self, seconds: float) -> None:
        self._latency = seconds

    @property
    def capacity(self) -> tuple[int | None, float]:
        """(workers, service_time): None workers means as many as there are calls."""
        with self._lock:
            return self._workers, self._service_time

    @capacity.setter
    def capacity(self, value: tuple[int | None, float]) -> None:
        with self._slots:
            self._workers, self._service_time = value
            self._slots.notify_all()  # more slots may have opened

    @property
    def in_flight(self) -> int:
        """Log calls arrived and not yet answered."""
        with self._lock:
            return self._in_flight

    @property
    def peak_in_flight(self) -> int:
        """The most log calls that were inside the emulated Brain at once."""
        with self._lock:
            return self._peak_in_flight

    @property
    def peak_serving(self) -> int:
        """The most log calls that held a worker slot at once."""
        with self._lock:
            return self._peak_serving

    def reset_peak(self) -> None:
        with self._lock:
            self._peak_in_flight = self._in_flight
            self._peak_serving = self._busy

    @contextmanager
    def call(self) -> Iterator[None]:
        """Count one log call in flight, from its arrival to its answer."""
        with self._lock:
            self._in_flight += 1
            self._peak_in_flight = max(self._peak_in_flight, self._in_flight)
        try:
            yield
        finally:
            with self._lock:
                self._in_flight -= 1

    @contextmanager
    def worker(self) -> Iterator[None]:
        """Hold one worker slot, queueing for it, and spend its service time in it,
        then the time the load shape gives the call among those in flight."""
        with self._slots:
            ticket = self._next_ticket
            self._next_ticket += 1
            self._slots.wait_for(
                lambda: (
                    self._now_serving == ticket
                    and (self._workers is None or self._busy < self._workers)
                )
            )
            self._now_serving += 1
            self._busy += 1
            self._peak_serving = max(self._peak_serving, self._busy)
            service_time = self._service_time
            self._slots.notify_all()  # the next ticket may fit in a free slot too
        try:
            if service_time > 0:
                time.sleep(service_time)
            with self.load.serve():
                yield
        finally:
            with self._slots:
                self._busy -= 1
                self._slots.notify_all()
