"""The jobs the delivery worker holds, each in one state, and the ``flush()`` calls waiting.

Every job the worker takes is here until it is settled: queued (oldest first), in
flight, or waiting to retry (a heap by due time); every move from one state to the next
is one call here. Jobs are counted in records and in bytes, the durable ones (kept on disk
meanwhile) apart, since they may fill only their share of the bounds. A waiting
``flush()`` is a :class:`FlushWait` counted down as the jobs it waits for settle, so that
its thread is woken once, not at every job. The worker's lock is held around every call.
"""

from __future__ import annotations

import heapq
import math
import threading
from collections import deque
from time import perf_counter
from typing import Generic, TypeVar

from .jobs import Job, State

R = TypeVar("R")


def deadline_after(timeout: float) -> float:
    """The perf_counter time ``timeout`` seconds from now; NaN and negatives mean now,
    more than the longest wait the platform supports means never."""
    if not timeout > 0:
        return perf_counter()
    if timeout >= threading.TIMEOUT_MAX:
        return math.inf
    return perf_counter() + timeout


def wait_time(deadline: float) -> float | None:
    """What to pass to ``wait``/``join`` to wait until ``deadline`` (None: forever)."""
    return None if math.isinf(deadline) else max(0.0, deadline - perf_counter())


class FlushWait:
    """One waiting ``flush()``: the newest record it waits for, and how many of the
    records up to that one are still unsettled."""

    __slots__ = ("target", "left")

    def __init__(self, target: int, left: int) -> None:
        self.target = target
        self.left = left


class Ledger(Generic[R]):
    """The jobs held, ``pending`` of them holding ``pending_bytes``, within ``queue_size``
    and ``max_bytes``; durable jobs may fill ``durable_share`` of both."""

    def __init__(self, queue_size: int, max_bytes: int, durable_share: float) -> None:
        self._queue: deque[Job[R]] = deque()  # QUEUED, oldest first
        self._queued_durable: deque[Job[R]] = deque()  # QUEUED and durable, oldest first
        self._retry: list[tuple[float, int, Job[R]]] = []  # WAITING, a heap by due time
        self.in_flight: set[Job[R]] = set()  # IN_FLIGHT
        self._queue_size = queue_size
        self._max_bytes = max_bytes
        self._durable_size = max(1, int(queue_size * durable_share))
        self._durable_max_bytes = int(max_bytes * durable_share)
        self.pending = 0
        self.pending_bytes = 0
        self._durable = 0
        self._durable_bytes = 0
        self._last_seq = 0
        self._waits: list[FlushWait] = []
        self.flush_due = False  # a flush() waits for nothing more: wake it

    def refusal(self, size: int) -> str | None:
        """Why a record of ``size`` bytes does not fit (a reason to count), or None."""
        if self.pending >= self._queue_size:
            return "queue_full"
        if self.pending_bytes + size > self._max_bytes:
            return "queue_bytes_full"
        return None

    def fits_durable(self, size: int) -> bool:
        """Whether a durable record fits, in the bounds and in the durable share (one
        durable record at a time always fits the share, however large)."""
        return (
            self.refusal(size) is None
            and self._durable < self._durable_size
            and (not self._durable or self._durable_bytes + size <= self._durable_max_bytes)
        )

    def make_room(self, size: int) -> list[Job[R]]:
        """Give back queued durable jobs, newest first, until a record of ``size`` bytes
        fits; none if even all of them would not make room. The jobs given back leave
        the ledger (still kept where they are durable)."""
        durable_bytes = sum(job.size for job in self._queued_durable)
        if (
            not self._queued_durable
            or self.pending - len(self._queued_durable) >= self._queue_size
            or self.pending_bytes - durable_bytes + size > self._max_bytes
        ):
            return []
        returned = []
        while self.refusal(size) is not None:
            job = self._queued_durable.pop()
            self.settle(job)
            returned.append(job)
        return returned

    # -- the moves ---------------------------------------------------------------------

    def add(self, job: Job[R]) -> None:
        """A new job: QUEUED, counted in, given its sequence number."""
        self._last_seq += 1
        job.seq = self._last_seq
        self._change(job, 1, job.size)
        (self._queued_durable if job.durable else self._queue).append(job)

    def take(self, now: float, fresh_first: bool) -> Job[R] | None:
        """The next job to try, now IN_FLIGHT: a due retry, else the oldest queued one
        (``fresh_first``: the queued one first; a probe prefers a record never tried)."""
        due = bool(self._retry) and self._retry[0][0] <= now
        queue = self._queue
        if not queue or (self._queued_durable and self._queued_durable[0].seq < queue[0].seq):
            queue = self._queued_durable
        if queue and (fresh_first or not due):
            job = queue.popleft()
        elif due:
            job = heapq.heappop(self._retry)[2]
        else:
            return None
        job.state = State.IN_FLIGHT
        self.in_flight.add(job)
        return job

    def untake(self, job: Job[R]) -> None:
        """From IN_FLIGHT back to QUEUED, first in line: no call slot could be had."""
        self.in_flight.discard(job)
        job.state = State.QUEUED
        (self._queued_durable if job.durable else self._queue).appendleft(job)

    def wait_to_retry(self, job: Job[R], due: float) -> None:
        """From IN_FLIGHT to WAITING until ``due``."""
        self.in_flight.discard(job)
        job.state = State.WAITING
        heapq.heappush(self._retry, (due, job.seq, job))

    def settle(self, job: Job[R]) -> None:
        """SETTLED: counted out, and down for every flush() waiting for it."""
        self.in_flight.discard(job)
        job.state = State.SETTLED
        job.record = None
        self._change(job, -1, -job.size)
        for waiting in self._waits:
            if job.seq <= waiting.target:
                waiting.left -= 1
                self.flush_due = self.flush_due or not waiting.left

    def resize(self, job: Job[R], size: int) -> None:
        self._change(job, 0, size - job.size)
        job.size = size

    def retries_due_now(self, now: float) -> None:
        """Every job waiting to retry is due at ``now`` at the latest."""
        self._retry = [(min(due, now), seq, job) for due, seq, job in self._retry]
        heapq.heapify(self._retry)

    def next_due(self, now: float) -> float | None:
        """Seconds until the next retry is due (<= 0: due), or None if none waits."""
        return self._retry[0][0] - now if self._retry else None

    def has_due(self, now: float) -> bool:
        if self._queue or self._queued_durable:
            return True
        return bool(self._retry) and self._retry[0][0] <= now

    def unsettled(self) -> tuple[list[Job[R]], list[Job[R]]]:
        """(queued or waiting, in flight): every job not settled."""
        waiting = [job for _, _, job in self._retry]
        return list(self._queue) + list(self._queued_durable) + waiting, list(self.in_flight)

    def _change(self, job: Job[R], count: int, size: int) -> None:
        self.pending += count
        self.pending_bytes += size
        if job.durable:
            self._durable += count
            self._durable_bytes += size

    def wait_for_pending(self) -> FlushWait:
        """A flush() starts waiting: every record held now came before it."""
        waiting = FlushWait(self._last_seq, self.pending)
        self._waits.append(waiting)
        return waiting

    def stop_waiting(self, waiting: FlushWait) -> None:
        self._waits.remove(waiting)
