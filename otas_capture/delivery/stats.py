"""Counters of what happened to every request and event, for ``OtasMiddleware.stats()``.

Nothing is lost silently: each request the middleware sees ends up counted exactly once
as skipped, dropped, failed, unknown or sent (or is still pending), with the reason, and each
loss is logged on the ``otas_capture`` logger at most once a minute per reason so that
an outage cannot flood the host application's logs.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from typing import Any, Callable

from ..contract import LOGGER_NAME

logger = logging.getLogger(LOGGER_NAME)

COUNTS = (
    "captured",
    "sent",
    "failed",
    "retried",
    "dropped",
    "skipped",
    # In flight when time ran out at shutdown: Brain may or may not have stored it.
    "unknown",
    # Sent again after a call that timed out once fully sent: Brain may hold it twice.
    "possible_duplicate",
    # Kept in OTAS_SPOOL_DIR at shutdown, for the next process to ship.
    "spooled",
    # Taken from OTAS_SPOOL_DIR, left there by an earlier process, and queued here (each
    # then ends as sent, failed, ... or spooled again: left on disk).
    "restored",
)
# Outcomes that carry reasons: the ones a user needs to tell apart to fix something.
WITH_REASONS = ("failed", "dropped", "skipped", "unknown")
LOG_EVERY_SECONDS = 60.0


class Stats:
    """Thread-safe counters plus per-reason breakdowns and rate-limited loss logging.

    Counts are the process's own: a forked child starts from zero (its parent keeps
    its counts, and delivers what it had queued).
    """

    def __init__(self) -> None:
        self._reset()
        _live_stats.add(self)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(COUNTS, 0)
        self._reasons: dict[str, dict[str, int]] = {kind: {} for kind in WITH_REASONS}
        self._last_logged: dict[tuple[str, str], float] = {}

    def incr(self, kind: str, reason: str | None = None, count: int = 1) -> None:
        """Count ``kind``; ``reason`` is kept for the kinds that carry reasons."""
        with self._lock:
            self._counts[kind] += count
            by_reason = self._reasons.get(kind)
            if reason is not None and by_reason is not None:
                by_reason[reason] = by_reason.get(reason, 0) + count

    def lost(
        self, kind: str, reason: str, detail: str = "", *, level: int = logging.WARNING
    ) -> None:
        """Count one event that will not reach OTAS, and say so (rate-limited)."""
        self.incr(kind, reason)
        say = self.announce_loss(kind, reason, detail, level=level)
        if say is not None:
            say()

    def announce_loss(
        self, kind: str, reason: str, detail: str = "", *, level: int = logging.WARNING
    ) -> Callable[[], None] | None:
        """The log line saying that an event already counted is lost, if it is due;
        returned, to be said once the caller's own lock is let go."""
        level = logging.DEBUG if reason == "before_send" else level  # the user's filter: on purpose
        with self._lock:
            total = self._reasons.get(kind, {}).get(reason, 0)
        return self.log_limited(
            (kind, reason),
            level,
            "otas-capture: event %s (%s)%s; %d so far for this reason, see stats()",
            kind,
            reason,
            f": {detail}" if detail else "",
            total,
            defer=True,
        )

    def log_limited(
        self,
        key: Any,
        level: int,
        message: str,
        *args: Any,
        exc_info: bool = False,
        defer: bool = False,
    ) -> Callable[[], None] | None:
        """Log ``message`` unless the same ``key`` was logged in the last minute.

        With ``defer`` the line is returned (None if not due) instead of said: a caller
        holding a lock says it after letting go, since a log handler may block."""
        now = time.monotonic()
        with self._lock:
            last = self._last_logged.get(key)
            if last is not None and now - last < LOG_EVERY_SECONDS:
                return None
            self._last_logged[key] = now
        if defer:
            return lambda: logger.log(level, message, *args, exc_info=exc_info)
        logger.log(level, message, *args, exc_info=exc_info)
        return None

    def snapshot(self, **gauges: Any) -> dict[str, Any]:
        with self._lock:
            result: dict[str, Any] = dict(self._counts)
            result["reasons"] = {kind: dict(r) for kind, r in self._reasons.items()}
        result.update(gauges)
        return result


_live_stats: weakref.WeakSet[Stats] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for stats in list(_live_stats):
        stats._reset()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
