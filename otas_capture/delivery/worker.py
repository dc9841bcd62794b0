"""The delivery worker: a bounded queue drained by background threads, whatever the destination.

This module knows nothing of OTAS. It holds records (opaque to it) in a queue bounded in
count and bytes, hands each to an exporter from a background thread, and acts on the
outcome it returns (:mod:`otas_capture.delivery.outcomes`): count it as delivered or lost, retry
it later, or pause everything. It owns the due times, the retry heap, ``flush``, the
threads and their life after ``fork``, the same split as OpenTelemetry's batch processor
and its exporter. The OTAS side lives in :mod:`otas_capture.otas.client`.

Scheduling rules:

- **Prompt.** A record is handed out as soon as a call slot is free; it waits only when
  every slot is busy. The number of slots is the adaptive limit of
  :mod:`otas_capture.delivery.limiter`, between 1 and the ceiling; threads are started as the
  limit needs them and never poll: an idle thread waits on a condition.
- **Trouble about one record or about the server.** A server-wide failure (timeout,
  refused connection, overload answer) pauses everything; so does a failure that the
  exporter cannot attribute (a 500 may be either) when it comes twice for the same
  record with nothing accepted in between. When other records were accepted in
  between, the record is the problem and is given up after that one retry.
- **Probing.** While paused, one call at a time probes the server, at most
  ``PROBE_INTERVAL`` apart (or exactly as the server's ``Retry-After`` says). The first
  success returns to full speed at once, with every postponed retry due now.
- **Retries are spent only while the server works.** A failure spends one of the
  record's ``max_retries`` only when the server accepted something else since the
  record came or last failed; during an outage records wait (bounded by the queue)
  instead of being given up one after another.
- **Honest ends.** ``close`` counts what never left as ``dropped``, and what was in
  flight, or sent before a timeout, as ``unknown``: the server may have stored it.
"""

from __future__ import annotations

import heapq
import logging
import math
import os
import random
import threading
import weakref
from collections import deque
from collections.abc import Collection
from time import perf_counter
from typing import Any, Callable

from .limiter import AdaptiveLimit, Limit
from .outcomes import Exporter, Failed, Job, Outcome, PauseForKey, Retry, Sent
from .stats import Stats

MAX_BACKOFF = 60.0
# During an outage, the longest wait between two probes: recovery is noticed within it.
PROBE_INTERVAL = 1.0


def backoff(attempt: int, first: float) -> float:
    """Delay before retry ``attempt`` (1-based): doubling from ``first``, capped, jittered."""
    delay: float = min(MAX_BACKOFF, first * 2.0 ** min(max(attempt, 1) - 1, 30))
    return delay * random.uniform(0.5, 1.0)


def _deadline(timeout: float) -> float:
    """The perf_counter time ``timeout`` seconds from now; NaN and negatives mean now,
    more than the longest wait the platform supports means never."""
    if not timeout > 0:
        return perf_counter()
    if timeout >= threading.TIMEOUT_MAX:
        return math.inf
    return perf_counter() + timeout


class _FlushWait:
    """One waiting ``flush()``: the newest record it waits for, and how many of the
    records up to that one are still unsettled."""

    __slots__ = ("target", "left")

    def __init__(self, target: int, left: int) -> None:
        self.target = target
        self.left = left


def _wait_time(deadline: float) -> float | None:
    """What to pass to ``wait``/``join`` to wait until ``deadline`` (None: forever)."""
    return None if math.isinf(deadline) else max(0.0, deadline - perf_counter())


class Worker:
    """Delivers records through ``exporter`` from up to ``ceiling`` background threads.

    Parameters:
        exporter: does one delivery attempt per call (see :class:`Exporter`).
        stats: where every outcome is counted and every loss logged.
        ceiling: the most calls in flight at once; the adaptive limit stays below it.
        queue_size, queue_max_bytes: bounds of what waits (queued, retrying, in flight).
        max_retries: retries of one record after failures while the server otherwise works.
        retry_backoff: seconds before a first retry; doubles each time, with jitter.
        thread_name: prefix of the threads' names.
        new_limit: makes the in-flight limit (again after ``fork``); by default one
            :class:`AdaptiveLimit` of this process up to ``ceiling``.
    """

    def __init__(
        self,
        exporter: Exporter,
        stats: Stats,
        *,
        ceiling: int,
        queue_size: int,
        queue_max_bytes: int,
        max_retries: int,
        retry_backoff: float,
        thread_name: str = "otas-capture-sender",
        new_limit: Callable[[], Limit] | None = None,
    ) -> None:
        self._exporter = exporter
        self._stats = stats
        self._ceiling = max(1, ceiling)
        self._queue_size = queue_size
        self._queue_max_bytes = queue_max_bytes
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
        self._queue: deque[Job] = deque()  # never tried, oldest first
        self._retry: list[tuple[float, int, Job]] = []  # heap by due time
        self._in_flight: dict[int, Job] = {}
        self._limit = self._new_limit()
        self._pending = 0  # queued + retrying + in flight
        self._pending_bytes = 0
        self._last_seq = 0
        self._threads: list[threading.Thread] = []
        self._idle = 0  # threads waiting for work
        # Records held in the queue, the retry heap or in flight (a record between
        # a retry decision and the end of its call is in two of them, counted once).
        self._held = 0
        self._flush_waits: list[_FlushWait] = []  # flush() callers waiting
        self._closed = False  # refuses new records
        self._stopping = False  # threads exit
        self._paused_until = 0.0
        self._probing = False  # one call at a time until one succeeds
        self._outage_streak = 0
        self._key_streak = 0
        self._accepted = 0  # records the server accepted so far

    def _after_fork(self) -> None:
        # The parent still owns and will deliver what it had queued; the child starts
        # empty, with fresh locks (a parent thread may have held one at fork time).
        self._reset()
        self._stats.reset()

    # -- the producer's side ---------------------------------------------------------

    @property
    def pending(self) -> int:
        """Records not yet settled: queued, waiting to retry or in flight."""
        return self._pending

    @property
    def limit(self) -> int:
        """Calls allowed in flight now (the adaptive limit)."""
        return self._limit.limit

    def submit(self, record: Any, size: int) -> bool:
        """Queue ``record`` (holding ``size`` bytes); drop and count it if it does not fit."""
        job = Job(record, size)
        with self._lock:
            if self._closed:
                reason = "closed"
            elif self._pending >= self._queue_size:
                reason = "queue_full"
            elif self._pending_bytes + size > self._queue_max_bytes:
                reason = "queue_bytes_full"
            else:
                self._last_seq += 1
                job.seq = self._last_seq
                job.accepted_mark = self._accepted
                self._hold(job)
                self._queue.append(job)
                self._pending += 1
                self._pending_bytes += size
                self._wake_or_grow()
                return True
        job.record = None
        self._stats.lost("dropped", reason)
        return False

    def _slots(self) -> int:
        return 1 if self._probing else self._limit.limit

    def _wake_or_grow(self) -> None:
        """Work is due (lock held): if a slot is free, wake an idle thread or start one.

        With every slot busy nobody is woken: the thread that finishes a call takes the
        next job itself, so a steady stream costs no wake-ups beyond the first.
        """
        if len(self._in_flight) >= self._slots() or self._stopping:
            return
        if self._idle:
            self._work.notify()
        elif len(self._threads) < self._slots():
            self._start_thread()

    def _start_thread(self) -> None:
        thread = threading.Thread(
            target=self._run, name=f"{self._thread_name}-{len(self._threads)}", daemon=True
        )
        try:
            thread.start()
        except Exception:  # "can't start new thread": the record stays queued, counted once
            self._stats.log_limited(
                "thread_start",
                logging.ERROR,
                "otas-capture: cannot start a sender thread; events wait in the queue",
                exc_info=True,
            )
            return
        self._threads.append(thread)

    # -- flush and close ---------------------------------------------------------------

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every record submitted before the call is settled (any timeout >= 0)."""
        deadline = _deadline(timeout)
        with self._lock:
            if not self._held:
                return True
            # Every record held now was submitted before this call, and later ones are
            # not waited for: count down the ones held now as they leave (_release), so
            # that this thread is woken once, not at every record that settles.
            waiting = _FlushWait(self._last_seq, self._held)
            self._flush_waits.append(waiting)
            try:
                while waiting.left:
                    wait = _wait_time(deadline)
                    if wait == 0.0:
                        return False
                    self._done.wait(wait)
            finally:
                self._flush_waits.remove(waiting)
            return True

    def _hold(self, job: Job) -> None:
        """One more place holds ``job`` (lock held)."""
        if not job.held:
            # New, or back in the retry heap after a thread that still ran an earlier
            # attempt of it let it go (its retry was due at once): unsettled again.
            self._held += 1
        job.held += 1

    def _release(self, job: Job) -> None:
        """One of the places holding ``job`` let it go (lock held); once none holds it,
        it is settled for flush(), and a flush() waiting for nothing else returns."""
        job.held -= 1
        if job.held:
            return
        self._held -= 1
        for waiting in self._flush_waits:
            if job.seq <= waiting.target:
                waiting.left -= 1
                if not waiting.left:
                    self._done.notify_all()

    def close(
        self, timeout: float = 5.0, keep: Callable[[list[Any]], Collection[int]] | None = None
    ) -> list[Any]:
        """Flush for up to ``timeout`` s, stop the threads, count what is left; returns in
        about ``timeout`` whatever the threads are doing.

        ``keep`` is offered the records never sent (in their prepared form where there is
        one) and returns the indexes of those it saved for later: they count as
        ``spooled``, not ``dropped``. Returns the never-sent records not kept."""
        deadline = _deadline(timeout)
        with self._lock:
            if self._closed:
                return []
            self._closed = True  # no new records from here on
        remaining = _wait_time(deadline)
        self.flush(math.inf if remaining is None else remaining)
        with self._lock:
            self._stopping = True
            self._work.notify_all()
            threads = list(self._threads)
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(_wait_time(deadline))
        with self._lock:
            waiting = list(self._queue) + [job for _, _, job in self._retry]
            in_flight = list(self._in_flight.values())
            self._queue.clear()
            self._retry.clear()
            for job in waiting:
                self._release(job)
        never_sent = [job for job in waiting if not job.maybe_stored]
        kept: set[int] = set()
        if keep is not None and never_sent:
            try:
                kept = {id(never_sent[i]) for i in keep([job.record for job in never_sent])}
            except Exception:  # a full disk must not break the host's shutdown
                self._stats.log_limited(
                    "keep", logging.ERROR, "otas-capture: cannot keep events", exc_info=True
                )
        unsent = [job.record for job in never_sent if id(job) not in kept]
        left = {"dropped": 0, "unknown": 0, "spooled": 0}
        for job in waiting + in_flight:
            kind = "unknown" if job.maybe_stored or job in in_flight else "dropped"
            kind = "spooled" if id(job) in kept else kind
            if self._settle(job, kind, "shutdown" if kind != "spooled" else None, quiet=True):
                left[kind] += 1
        # The middleware's exit summary (shutdown.log_summary) says what was lost.
        self._exporter.shutdown()
        return unsent

    # -- the delivery threads ------------------------------------------------------------

    def _run(self) -> None:
        while True:
            taken = self._take()
            if taken is None:
                return
            job, in_flight = taken
            # A call slot shared with the host's other senders (slots.py); close() may
            # stop the wait, and the job goes back to be counted as never sent.
            if not self._limit.acquire(lambda: self._stopping):
                with self._lock:
                    del self._in_flight[job.seq]
                    self._queue.appendleft(job)
                return
            size = job.size
            started = perf_counter()
            try:
                outcome = self._exporter.export(job)
            except Exception:  # a bug here must not kill the thread or lose count
                self._stats.log_limited(
                    "send_error",
                    logging.ERROR,
                    "otas-capture: unexpected error while sending an event",
                    exc_info=True,
                )
                outcome = Failed("internal_error", called=False)
            finally:
                self._limit.release()
            self._finish(job, outcome, started, in_flight, size)

    def _take(self) -> tuple[Job, int] | None:
        """Block until a job may go (then it is in flight), or the worker stops (None)."""
        with self._lock:
            self._idle += 1
            try:
                while True:
                    if self._stopping:
                        return None
                    now = perf_counter()
                    wait: float | None = None
                    if now < self._paused_until:
                        wait = self._paused_until - now
                    elif len(self._in_flight) < self._slots():
                        job = self._pick(now)
                        if job is not None:
                            break
                        if self._retry:
                            wait = self._retry[0][0] - now
                    self._work.wait(wait)  # woken by new work, a free slot, or stop
            finally:
                self._idle -= 1
            if job.seq in self._in_flight:
                # Retried before its previous call ended: the in-flight set holds it once.
                job.held -= 1
            self._in_flight[job.seq] = job
            if job.duplicate_risk:  # the last attempt may have been stored
                job.duplicate_risk = False
                self._stats.incr("possible_duplicate")
            if self._queue or (self._retry and self._retry[0][0] <= now):
                self._wake_or_grow()  # more is due: let another slot take it
            return job, len(self._in_flight)

    def _pick(self, now: float) -> Job | None:
        """The next job to try (lock held): a due retry, else the oldest queued one.

        A probe prefers a fresh record: a record that failed before may be the problem.
        """
        due = bool(self._retry) and self._retry[0][0] <= now
        if self._queue and (self._probing or not due):
            return self._queue.popleft()
        if due:
            return heapq.heappop(self._retry)[2]
        return None

    def _finish(
        self, job: Job, outcome: Outcome, started: float, in_flight: int, size: int
    ) -> None:
        ended = perf_counter()
        with self._lock:
            if not job.settled:  # the exporter may have replaced the record
                self._pending_bytes += job.size - size
            if isinstance(outcome, Sent):
                self._limit.on_call(started, ended, in_flight, False)
                self._accepted += 1
                if self._probing or self._paused_until:
                    self._recover(ended)
                # The usual outcome, settled here in the same hold of the lock (what
                # _settle does in three); counted before flush() can see the job gone.
                if not job.settled:
                    job.settled = True
                    job.record = None
                    self._stats.incr("sent")
                    self._pending -= 1
                    self._pending_bytes -= job.size
                if self._in_flight.pop(job.seq, None) is not None:
                    self._release(job)  # counted: flush() may see it gone
                return
            if not isinstance(outcome, (Failed, PauseForKey)) or outcome.called:
                overloaded = isinstance(outcome, Retry) and outcome.server_wide
                self._limit.on_call(started, ended, in_flight, overloaded)
        if isinstance(outcome, Failed):
            self._settle(job, outcome.kind, outcome.reason, outcome.detail)
        elif isinstance(outcome, Retry):
            self._retry_later(job, outcome)
        else:
            self._pause_for_key(job, outcome)
        # Leave the in-flight set only once the outcome is counted (or the job is back in
        # the retry heap): flush() must not return while stats() still calls it pending.
        with self._lock:
            if self._in_flight.pop(job.seq, None) is not None:
                self._release(job)

    def _recover(self, now: float) -> None:
        """The server accepts again (lock held): full speed, postponed retries due now."""
        self._probing = False
        self._paused_until = 0.0
        self._outage_streak = self._key_streak = 0
        self._retry = [(min(due, now), seq, job) for due, seq, job in self._retry]
        heapq.heapify(self._retry)
        self._work.notify_all()

    # -- outcomes ------------------------------------------------------------------------

    def _settle(
        self, job: Job, kind: str, reason: str | None = None, detail: str = "", quiet: bool = False
    ) -> bool:
        """Count ``job``'s outcome once (later calls do nothing and return False)."""
        with self._lock:
            if job.settled:
                return False
            job.settled = True
        job.record = None
        # Count and log before flush() can see the job gone, so that whoever flushed
        # finds the outcome in stats() and the log.
        if kind in ("sent", "spooled") or quiet:
            self._stats.incr(kind, reason)
        else:
            self._stats.lost(kind, reason or kind, detail)
        with self._lock:
            self._pending -= 1
            self._pending_bytes -= job.size
        return True

    def _retry_later(self, job: Job, outcome: Retry) -> None:
        server_wide = outcome.server_wide
        give_up = ""
        requeued = True
        with self._lock:
            now = perf_counter()
            # Did the server accept anything since this record last failed (or came)?
            others_accepted = self._accepted > job.accepted_mark
            job.accepted_mark = self._accepted
            if not server_wide:
                if job.own_failures and others_accepted:
                    give_up = "the server accepted other events meanwhile"
                elif job.own_failures:
                    server_wide = True  # nothing accepted since: the server is failing
                job.own_failures += 1
            if others_accepted:  # while the server accepts nothing, retries are not spent
                job.attempts += 1
            if not give_up and job.attempts > self._max_retries:
                give_up = f"gave up after {job.attempts} attempts"
            job.maybe_stored = job.maybe_stored or outcome.maybe_delivered
            job.duplicate_risk = outcome.maybe_delivered
            if not give_up:
                retry_after = outcome.retry_after
                delay = retry_after
                if delay is None:
                    delay = backoff(job.attempts, self._retry_backoff)
                if server_wide:
                    self._outage_streak += 1
                    pause = retry_after
                    if pause is None:
                        pause = min(
                            PROBE_INTERVAL, backoff(self._outage_streak, self._retry_backoff)
                        )
                    self._paused_until = now + pause
                    self._probing = True
                requeued = self._requeue(job, now + delay)
        detail = ", ".join(part for part in (outcome.detail, give_up) if part)
        if give_up:
            kind = "unknown" if job.maybe_stored else "failed"
            self._settle(job, kind, outcome.reason, detail)
            return
        if not requeued:
            self._settle_at_shutdown(job)
            return
        self._stats.incr("retried")
        self._stats.log_limited(
            ("retry", outcome.reason),
            logging.WARNING,
            "otas-capture: the server is not accepting events (%s%s); retrying%s",
            outcome.reason,
            f", {detail}" if detail else "",
            ", one call at a time until one succeeds" if server_wide else " with backoff",
        )

    def _pause_for_key(self, job: Job, outcome: PauseForKey) -> None:
        requeued = True
        with self._lock:
            self._key_streak += 1
            pause = backoff(self._key_streak, self._retry_backoff)
            now = perf_counter()
            self._paused_until = now + pause
            self._probing = True
            requeued = self._requeue(job, now + pause)
        if not requeued:
            self._settle_at_shutdown(job)
        elif outcome.called:
            self._stats.incr("retried")

    def _requeue(self, job: Job, due: float) -> bool:
        """Put ``job`` in the retry heap (lock held); False once close() has counted the rest."""
        if self._stopping:
            return False
        heapq.heappush(self._retry, (due, job.seq, job))
        self._hold(job)  # usually still in flight too, until _finish lets it go
        self._work.notify()
        return True

    def _settle_at_shutdown(self, job: Job) -> None:
        self._settle(job, "unknown" if job.maybe_stored else "dropped", "shutdown")


_live_workers: weakref.WeakSet[Worker] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for worker in list(_live_workers):
        worker._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
