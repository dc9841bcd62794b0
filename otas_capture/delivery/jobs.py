"""A record on its way through the delivery worker, and what a failed attempt means for it.

Each record is wrapped in a :class:`Job` that is in exactly one :class:`State` at a time:
queued (never tried), in flight (a thread is calling the exporter with it), waiting to
retry (in the retry heap), or settled (counted once, for good). The worker moves a job
from one state to the next under one hold of its lock.

:func:`plan_retry` is the pure rule for a :class:`~otas_capture.delivery.outcomes.Retry`
outcome (see :mod:`otas_capture.delivery.worker` for the scheduling rules it serves):
give the record up, or try it again after a delay, pausing everything when the trouble
is the server's.
"""

from __future__ import annotations

import enum
import random
from typing import Callable, Generic, TypeVar

from .outcomes import Retry

MAX_BACKOFF = 60.0

R = TypeVar("R")


class State(enum.Enum):
    QUEUED = "queued"
    IN_FLIGHT = "in flight"
    WAITING = "waiting to retry"
    SETTLED = "settled"


class Job(Generic[R]):
    """A record (``record``, holding ``size`` bytes) and its delivery state.

    ``on_settled``, when given, is told the kind the job was counted as once it settles:
    the record is kept elsewhere (on disk) until then, and ``spooled`` means it stays there.
    """

    __slots__ = (
        "seq",
        "record",
        "size",
        "state",
        "attempts",
        "own_failures",
        "accepted_mark",
        "maybe_stored",
        "duplicate_risk",
        "on_settled",
    )

    def __init__(
        self, record: R, size: int, on_settled: Callable[[str], None] | None = None
    ) -> None:
        self.seq = 0
        self.record: R | None = record
        self.size = size
        self.state = State.QUEUED
        self.attempts = 0  # retries spent
        self.own_failures = 0  # failures that may have been about this record
        self.accepted_mark = 0  # the worker's accepted count when it came or last failed
        self.maybe_stored = False  # some attempt was fully sent, then timed out
        self.duplicate_risk = False  # ... and it was the last attempt
        self.on_settled = on_settled

    @property
    def durable(self) -> bool:
        """Kept on disk until settled: never lost at shutdown, only left where it is."""
        return self.on_settled is not None

    def shutdown_kind(self, in_flight: bool) -> str:
        """What this job counts as when shutdown stops it unsettled."""
        if self.durable:
            return "spooled"
        return "unknown" if in_flight or self.maybe_stored else "dropped"


def backoff(attempt: int, first: float) -> float:
    """Delay before retry ``attempt`` (1-based): doubling from ``first``, capped, jittered."""
    delay: float = min(MAX_BACKOFF, first * 2.0 ** min(max(attempt, 1) - 1, 30))
    return delay * random.uniform(0.5, 1.0)


class RetryPlan:
    """What to do after a :class:`Retry`: ``give_up`` (a reason, or "" to try again after
    ``delay`` s); ``server_wide``: the trouble is the server's (pause every call)."""

    __slots__ = ("give_up", "delay", "server_wide")

    def __init__(self, give_up: str, delay: float = 0.0, server_wide: bool = False) -> None:
        self.give_up = give_up
        self.delay = delay
        self.server_wide = server_wide


def plan_retry(
    job: Job[R], outcome: Retry, *, accepted: int, max_retries: int, first_backoff: float
) -> RetryPlan:
    """Decide ``job``'s next step after ``outcome``, updating its failure counts.

    ``accepted`` is how many records the server accepted so far. A failure the server
    may or may not be to blame for (a 500) is the server's when it comes twice for the
    same record with nothing accepted in between; when other records were accepted in
    between, the record is the problem and is given up. A failure spends one of the
    record's ``max_retries`` only when the server accepted something else since the
    record came or last failed: during an outage records wait instead.
    """
    others_accepted = accepted > job.accepted_mark
    job.accepted_mark = accepted
    server_wide = outcome.server_wide
    give_up = ""
    if not server_wide:
        if job.own_failures and others_accepted:
            give_up = "the server accepted other events meanwhile"
        elif job.own_failures:
            server_wide = True  # nothing accepted since: the server is failing
        job.own_failures += 1
    if others_accepted:
        job.attempts += 1
    if not give_up and job.attempts > max_retries:
        give_up = f"gave up after {job.attempts} attempts"
    job.maybe_stored = job.maybe_stored or outcome.maybe_delivered
    job.duplicate_risk = outcome.maybe_delivered
    if give_up:
        return RetryPlan(give_up)
    retry_after = outcome.retry_after
    delay = backoff(job.attempts, first_backoff) if retry_after is None else retry_after
    return RetryPlan("", delay, server_wide)
