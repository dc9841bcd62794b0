"""When delivery calls may go: the adaptive limit, pauses while the server is in trouble,
and probing until it accepts again.

Rules (the delivery worker holds its lock around every call here; no threads, no clock
of its own):

- **Prompt.** The number of calls in flight is the adaptive limit of
  :mod:`otas_capture.delivery.limiter`, between 1 and the ceiling.
- **Pause on the server's trouble.** A server-wide failure (timeout, refused connection,
  overload answer, a refused key) pauses every call: for what the server's
  ``Retry-After`` says, else a backoff of at most ``PROBE_INTERVAL`` for an outage and
  a doubling one for a refused key.
- **Probing.** While paused, one call at a time probes the server. The first success
  returns to full speed at once and says so in one ``INFO`` line (rate-limited).
"""

from __future__ import annotations

import logging
from typing import Callable

from .jobs import backoff
from .limiter import Limit
from .outcomes import Failed, Outcome, PauseForKey, Retry, Sent
from .stats import Stats

# During an outage, the longest wait between two probes: recovery is noticed within it.
PROBE_INTERVAL = 1.0


class Pacing:
    """The limit on calls in flight, and the pause state, of one delivery worker.

    Parameters:
        limit: how many calls may be in flight (this process's, or the host's: slots.py).
        first_backoff: seconds of the first pause; doubles while the trouble lasts.
        stats: where the line saying that delivery resumed is logged.
    """

    def __init__(self, limit: Limit, first_backoff: float, stats: Stats) -> None:
        self._limit = limit
        self._first_backoff = first_backoff
        self._stats = stats
        self.accepted = 0  # records the server accepted so far
        self.paused_until = 0.0
        self.probing = False  # one call at a time until one succeeds
        self._paused_since = 0.0
        self._reason = ""  # why delivery is paused, or ""
        self._outage_streak = 0
        self._key_streak = 0
        self.recovered = False  # the last call learnt from ended a pause

    @property
    def limit(self) -> int:
        """The adaptive limit (benchmarks/delivery.py follows it)."""
        return self._limit.limit

    def acquire(self, stop: Callable[[], bool]) -> bool:
        """Take a call slot (shared with the host's other senders); False if ``stop``."""
        return self._limit.acquire(stop)

    def release(self) -> None:
        self._limit.release()

    def slots(self) -> int:
        """Calls allowed in flight now."""
        return 1 if self.probing else self._limit.limit

    def learn(
        self, outcome: Outcome, started: float, ended: float, in_flight: int
    ) -> Callable[[], None] | None:
        """Learn from one call; after the first success of a pause, recover and return
        the line to log (or None if it was said within the minute); :attr:`recovered`
        says whether it did."""
        self.recovered = False
        if isinstance(outcome, Sent):
            self._limit.on_call(started, ended, in_flight, False)
            self.accepted += 1
            if self.probing or self.paused_until:
                return self._recover(ended)
        elif not isinstance(outcome, (Failed, PauseForKey)) or outcome.called:
            overloaded = isinstance(outcome, Retry) and outcome.server_wide
            self._limit.on_call(started, ended, in_flight, overloaded)
        return None

    def _recover(self, now: float) -> Callable[[], None] | None:
        say = None
        if self._reason:
            say = self._stats.log_limited(
                "resumed",
                logging.INFO,
                "otas-capture: delivery resumed after a pause of %.1f s (%s)",
                now - self._paused_since,
                self._reason,
                defer=True,
            )
        self.recovered = True
        self.probing = False
        self.paused_until = 0.0
        self._reason = ""
        self._outage_streak = self._key_streak = 0
        return say

    def outage(self, now: float, retry_after: float | None, reason: str) -> None:
        """The server as a whole failed a call: pause, then probe."""
        self._outage_streak += 1
        pause = retry_after
        if pause is None:
            pause = min(PROBE_INTERVAL, backoff(self._outage_streak, self._first_backoff))
        self._pause(now, pause, reason)

    def key_refused(self, now: float, reason: str) -> float:
        """The server refused our credentials: pause (returned, in seconds), then probe."""
        self._key_streak += 1
        pause = backoff(self._key_streak, self._first_backoff)
        self._pause(now, pause, reason)
        return pause

    def _pause(self, now: float, pause: float, reason: str) -> None:
        if not self._reason:
            self._paused_since = now
        self._reason = reason
        self.paused_until = now + pause
        self.probing = True
