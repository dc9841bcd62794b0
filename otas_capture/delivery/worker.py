"""The delivery worker: a bounded queue drained by background threads, whatever the destination.

This module knows nothing of OTAS. It holds records (opaque to it) within bounds in count
and bytes (:mod:`otas_capture.delivery.ledger`), hands each to an exporter from a background
thread, and acts on the outcome it returns (:mod:`otas_capture.delivery.outcomes`): count it,
retry it later, or pause everything. It owns ``flush``, the threads and their life after
``fork``, the same split as OpenTelemetry's batch processor and its exporter. Each job
moves from one state to the next under one hold of the lock; what is said about it is
logged after the lock is let go.

Scheduling rules (the pauses and probing are :mod:`otas_capture.delivery.pacing`'s, the
retry decisions :mod:`otas_capture.delivery.jobs`'s):

- **Prompt.** A record is handed out as soon as a call slot is free; it waits only when
  every slot is busy. Threads are started as the limit needs them and never poll: an
  idle thread waits on a condition. After a pause, every postponed retry is due at once.
- **Durable records yield.** Records kept on disk (restored from a spool) are taken only
  with :meth:`Worker.offer`, and only while they fill at most ``durable_share`` of the
  bounds: live records always find the rest free.
- **Honest ends.** ``close`` counts what never left as ``dropped``, and what was in
  flight, or sent before a timeout, as ``unknown``: the server may have stored it. A
  durable record is ``spooled``: it stays on disk.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import weakref
from collections import deque
from collections.abc import Collection
from time import perf_counter
from typing import Any, Callable, Generic, TypeVar, cast

from .jobs import Job, State, plan_retry
from .ledger import Ledger, deadline_after, wait_time
from .limiter import AdaptiveLimit, Limit
from .outcomes import Attempt, Exporter, Failed, Outcome, PauseForKey, Retry, Sent
from .pacing import Pacing
from .stats import Stats

R = TypeVar("R")
# What is said (or done) about a settled or retried job once the lock is let go.
Note = Callable[[], None]


class Worker(Generic[R]):
    """Delivers records through ``exporter`` from up to ``ceiling`` background threads.

    Parameters:
        exporter: does one delivery attempt per call (see :class:`Exporter`).
        stats: where every outcome is counted and every loss logged.
        ceiling: the most calls in flight at once; the adaptive limit stays below it.
        queue_size, queue_max_bytes: bounds of what waits (queued, retrying, in flight).
        max_retries: retries of one record after failures while the server otherwise works.
        retry_backoff: seconds before a first retry; doubles each time, with jitter.
        durable_share: the part of both bounds records given to :meth:`offer` may fill.
        thread_name: prefix of the threads' names.
        new_limit: makes the in-flight limit (again after ``fork``); by default one
            :class:`AdaptiveLimit` of this process up to ``ceiling``.
    """

    def __init__(
        self,
        exporter: Exporter[R],
        stats: Stats,
        *,
        ceiling: int,
        queue_size: int,
        queue_max_bytes: int,
        max_retries: int,
        retry_backoff: float,
        durable_share: float = 0.5,
        thread_name: str = "otas-capture-sender",
        new_limit: Callable[[], Limit] | None = None,
    ) -> None:
        self._exporter = exporter
        self._stats = stats
        self._ceiling = max(1, ceiling)
        self._bounds = (queue_size, queue_max_bytes, durable_share)
        self._max_retries = max_retries
        self._retry_backoff = retry_backoff
        self._thread_name = thread_name
        self._new_limit = new_limit or (lambda: AdaptiveLimit(self._ceiling))
        self._reset()
        _live_workers.add(self)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)  # wakes delivery threads
        self._done = threading.Condition(self._lock)  # wakes flush() callers
        self._pacing = Pacing(self._new_limit(), self._retry_backoff, self._stats)
        self._ledger: Ledger[R] = Ledger(*self._bounds)
        self._threads: list[threading.Thread] = []
        self._idle = 0  # threads waiting for work
        # Durable jobs that gave their place to live ones: told by a delivery thread.
        self._returned: deque[Job[R]] = deque()
        self._closed = False  # refuses new records
        self._stopping = False  # threads exit

    # -- the producers' side -----------------------------------------------------------

    @property
    def pending(self) -> int:
        """Records not yet settled: queued, waiting to retry or in flight."""
        return self._ledger.pending

    def submit(self, record: R, size: int) -> bool:
        """Queue ``record`` (holding ``size`` bytes); drop and count it if it does not fit."""
        with self._lock:
            reason: str | None = "closed"
            if not self._closed:
                # Restored records yield their place: they are kept on disk meanwhile.
                self._returned.extend(self._ledger.make_room(size))
                reason = self._ledger.refusal(size)
            if reason is None:
                self._admit(Job(record, size))
                return True
        self._stats.lost("dropped", reason)
        return False

    def offer(self, record: R, size: int, on_settled: Callable[[str], None]) -> bool:
        """Queue a durable ``record`` if it fits in its share of the bounds; False (and
        nothing counted) if not: it stays where it is kept, to be offered again.

        ``on_settled(kind)`` is called once it is settled, outside the lock: ``spooled``
        (not delivered: keep it) or ``returned`` (gave its place to a live record)."""
        with self._lock:
            fits = not self._closed and self._ledger.fits_durable(size)
            if fits:
                self._admit(Job(record, size, on_settled))
            return fits

    def _admit(self, job: Job[R]) -> None:
        job.accepted_mark = self._pacing.accepted
        self._ledger.add(job)
        self._wake_or_grow()

    def _wake_or_grow(self) -> None:
        """Work is due (lock held): if a slot is free, wake an idle thread or start one.
        With every slot busy the thread that finishes a call takes the next job itself."""
        if len(self._ledger.in_flight) >= self._pacing.slots() or self._stopping:
            return
        if self._idle:
            self._work.notify()
        elif len(self._threads) < self._pacing.slots():
            self._start_thread()

    def _start_thread(self) -> None:
        name = f"{self._thread_name}-{len(self._threads)}"
        thread = threading.Thread(target=self._run, name=name, daemon=True)
        try:
            thread.start()
        except Exception:  # "can't start new thread": the record stays queued, counted once
            message = "otas-capture: cannot start a sender thread; events wait in the queue"
            self._stats.log_limited("thread_start", logging.ERROR, message, exc_info=True)
            return
        self._threads.append(thread)

    # -- flush and close -----------------------------------------------------------------

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every record queued before the call is settled (any timeout >= 0)."""
        deadline = deadline_after(timeout)
        with self._lock:
            if not self._ledger.pending:
                return True
            waiting = self._ledger.wait_for_pending()
            try:
                while waiting.left:
                    wait = wait_time(deadline)
                    if wait == 0.0:
                        return False
                    self._done.wait(wait)
            finally:
                self._ledger.stop_waiting(waiting)
            return True

    def close(
        self, timeout: float = 5.0, keep: Callable[[list[R]], Collection[int]] | None = None
    ) -> list[R]:
        """Flush for up to ``timeout`` s, stop the threads, count what is left; returns in
        about ``timeout`` whatever the threads are doing.

        ``keep`` is offered the records never sent (in their prepared form where there is
        one) and returns the indexes of those it saved for later: they count as
        ``spooled``, not ``dropped``; it must not raise. Returns the never-sent records
        not kept."""
        deadline = deadline_after(timeout)
        with self._lock:
            if self._closed:
                return []
            self._closed = True  # no new records from here on
        remaining = wait_time(deadline)
        self.flush(math.inf if remaining is None else remaining)
        self._stop_threads(deadline)
        with self._lock:
            left, in_flight = self._ledger.unsettled()
        never_sent = [job for job in left if not job.maybe_stored and not job.durable]
        records = cast("list[R]", [job.record for job in never_sent])
        kept = {id(never_sent[i]) for i in keep(records)} if keep and records else set()
        unsent = [record for job, record in zip(never_sent, records) if id(job) not in kept]
        with self._lock:
            notes = [
                self._settle(
                    job, "spooled" if id(job) in kept else job.shutdown_kind(flying), "shutdown"
                )
                for jobs, flying in ((left, False), (in_flight, True))
                for job in jobs
                if job.state is not State.SETTLED
            ]
            self._wake_flushers()
        for note in notes:  # durable records told to stay kept
            if note is not None:
                note()
        self._tell_returned()
        self._exporter.shutdown()
        return unsent

    def _stop_threads(self, deadline: float) -> None:
        with self._lock:
            self._stopping = True
            self._work.notify_all()
            threads = list(self._threads)
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(wait_time(deadline))

    # -- the delivery threads ------------------------------------------------------------

    def _run(self) -> None:
        while True:
            taken = self._take()
            if taken is None:
                return
            job, in_flight = taken
            # A call slot shared with the host's other senders; close() may stop the wait.
            if not self._pacing.acquire(lambda: self._stopping):
                with self._lock:
                    self._ledger.untake(job)
                return
            started = perf_counter()
            try:
                assert job.record is not None
                attempt = self._exporter.export(job.record)
            except Exception:  # a bug here must not kill the thread or lose count
                message = "otas-capture: unexpected error while sending an event"
                self._stats.log_limited("send_error", logging.ERROR, message, exc_info=True)
                attempt = Attempt(Failed("internal_error", called=False))
            finally:
                self._pacing.release()
            self._finish(job, attempt, started, in_flight)
            if self._returned:
                self._tell_returned()

    def _tell_returned(self) -> None:
        while self._returned:
            job = self._returned.popleft()
            if job.on_settled is not None:
                job.on_settled("returned")

    def _take(self) -> tuple[Job[R], int] | None:
        """Block until a job may go (then it is IN_FLIGHT), or the worker stops (None)."""
        with self._lock:
            self._idle += 1
            try:
                while True:
                    if self._stopping:
                        return None
                    now = perf_counter()
                    wait: float | None = None
                    if now < self._pacing.paused_until:
                        wait = self._pacing.paused_until - now
                    elif len(self._ledger.in_flight) < self._pacing.slots():
                        job = self._ledger.take(now, fresh_first=self._pacing.probing)
                        if job is not None:
                            break
                        wait = self._ledger.next_due(now)
                    self._work.wait(wait)  # woken by new work, a free slot, or stop
            finally:
                self._idle -= 1
            if job.duplicate_risk:  # the last attempt may have been stored
                job.duplicate_risk = False
                self._stats.incr("possible_duplicate")
            if self._ledger.has_due(now):
                self._wake_or_grow()  # more is due: let another slot take it
            return job, len(self._ledger.in_flight)

    def _finish(self, job: Job[R], attempt: Attempt[R], started: float, in_flight: int) -> None:
        """Move ``job`` on from IN_FLIGHT after ``attempt``, in one hold of the lock."""
        ended = perf_counter()
        outcome = attempt.outcome
        with self._lock:
            if job.state is not State.IN_FLIGHT:
                return  # close() counted it while the call ran
            if attempt.record is not None:  # keep the prepared form for retries
                self._ledger.resize(job, attempt.size)
                job.record = attempt.record
            resumed = self._pacing.learn(outcome, started, ended, in_flight)
            if self._pacing.recovered:  # postponed retries are due now
                self._ledger.retries_due_now(ended)
                self._work.notify_all()
            note = self._next_step(job, outcome, ended)
            if note is None and resumed is None:  # the usual case: nothing to say
                self._wake_flushers()
                return
        for say in (resumed, note):
            if say is not None:
                say()
        with self._lock:
            self._wake_flushers()

    def _next_step(self, job: Job[R], outcome: Outcome, now: float) -> Note | None:
        """Settle ``job`` or put it back for a retry (lock held); what to say after."""
        if isinstance(outcome, Sent):
            return self._settle(job, "sent")
        if isinstance(outcome, Failed):
            return self._settle(job, outcome.kind, outcome.reason, outcome.detail, loud=True)
        if isinstance(outcome, Retry):
            return self._retry_later(job, outcome, now)
        return self._pause_for_key(job, outcome, now)

    def _retry_later(self, job: Job[R], outcome: Retry, now: float) -> Note | None:
        accepted, retries, backoff = self._pacing.accepted, self._max_retries, self._retry_backoff
        plan = plan_retry(
            job, outcome, accepted=accepted, max_retries=retries, first_backoff=backoff
        )
        detail = ", ".join(part for part in (outcome.detail, plan.give_up) if part)
        if plan.give_up:
            kind = "unknown" if job.maybe_stored else "failed"
            return self._settle(job, kind, outcome.reason, detail, loud=True)
        if plan.server_wide:
            self._pacing.outage(now, outcome.retry_after, outcome.reason)
        if self._stopping:
            return self._settle(job, job.shutdown_kind(False), "shutdown")
        self._wait_to_retry(job, now + plan.delay)
        self._stats.incr("retried")
        how = ", one call at a time until one succeeds" if plan.server_wide else " with backoff"
        message = "otas-capture: the server is not accepting events (%s%s); retrying%s"
        args = (outcome.reason, f", {detail}" if detail else "", how)
        return self._stats.log_limited(
            ("retry", outcome.reason), logging.WARNING, message, *args, defer=True
        )

    def _pause_for_key(self, job: Job[R], outcome: PauseForKey, now: float) -> Note | None:
        pause = self._pacing.key_refused(now, outcome.reason)
        if self._stopping:
            return self._settle(job, job.shutdown_kind(False), "shutdown")
        self._wait_to_retry(job, now + pause)
        if outcome.called:
            self._stats.incr("retried")
        return None

    def _wait_to_retry(self, job: Job[R], due: float) -> None:
        self._ledger.wait_to_retry(job, due)
        self._work.notify()

    def _settle(
        self,
        job: Job[R],
        kind: str,
        reason: str | None = None,
        detail: str = "",
        loud: bool = False,
    ) -> Note | None:
        """SETTLED and counted as ``kind`` (lock held); a loud loss is logged after."""
        self._ledger.settle(job)
        self._stats.incr(kind, reason)
        log = self._stats.announce_loss(kind, reason or kind, detail) if loud else None
        ack = job.on_settled
        if ack is None:
            return log
        return lambda: _say_and_ack(log, ack, kind)

    def _wake_flushers(self) -> None:
        """Wake every flush() that waits for nothing more (lock held)."""
        if self._ledger.flush_due:
            self._ledger.flush_due = False
            self._done.notify_all()


def _say_and_ack(log: Note | None, ack: Callable[[str], None], kind: str) -> None:
    _ = log() if log is not None else None
    ack(kind)


_live_workers: weakref.WeakSet[Worker[Any]] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # The parent delivers what it had; the child starts empty, with fresh locks.
    for worker in list(_live_workers):
        worker._reset()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
