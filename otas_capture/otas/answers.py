"""What Brain's answer to one log call means: pure functions of (status, body, Retry-After).

===============================================  =========================================
Brain answers                                    outcome
===============================================  =========================================
201                                              sent
401 about the SDK key                            pause for key (Brain also says so while
                                                 UASAM is down, so shipping resumes later)
400, 401 about the session token                 failed, with Brain's reason
429, 502, 503, 504                               retry, server-wide, with Retry-After
500 and other 5xx                                retry, maybe about this event only
other statuses (404 on a wrong URL, ...)         failed, ``http_<status>``
===============================================  =========================================

A call that got no answer (timeout, refused or broken connection, a malformed answer)
is a server-wide retry; :mod:`otas_capture.otas.client` decides that, from the error.
"""

from __future__ import annotations

import json
import math
import time
from datetime import timezone
from typing import Any

from ..contract import INVALID_SDK_KEY, MISSING_SDK_KEY
from ..delivery.outcomes import Failed, Outcome, PauseForKey, Retry, Sent

__all__ = ["MAX_RETRY_AFTER", "interpret", "parse_answer", "parse_retry_after"]

MAX_RETRY_AFTER = 300.0
# Answers that say the server as a whole is in trouble, not this event.
SERVER_WIDE = frozenset({429, 502, 503, 504})
KEY_REFUSALS = frozenset({INVALID_SDK_KEY, MISSING_SDK_KEY})


def interpret(status: int, answer: dict[str, Any], retry_after: float | None) -> Outcome:
    """What Brain's answer to one log call means for the event (see the module table)."""
    description = str(answer.get("status_description") or f"http_{status}")
    if status == 201:
        return Sent()
    if status == 401 and description in KEY_REFUSALS:
        return PauseForKey(description)
    if status in (400, 401):
        missing = answer.get("missing_fields")
        return Failed(description, f"missing_fields={missing!r}" if missing else "")
    if status in SERVER_WIDE:
        return Retry(description, server_wide=True, retry_after=retry_after)
    if status >= 500:
        # Brain says event_capture_failed both when its database is down and when this
        # one event cannot be stored; the worker tells them apart by what else succeeds.
        return Retry(description, server_wide=False, retry_after=retry_after)
    hint = " (is OTAS_BRAIN_URL right?)" if status in (404, 405) else ""
    return Failed(f"http_{status}", f"Brain answered HTTP {status}{hint}")


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: delay-seconds or an HTTP date.

    ``now`` is the Unix time to measure a date from (default: the clock). Capped at
    ``MAX_RETRY_AFTER``; a date in the past means now; anything unreadable is None.
    """
    if not value:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        import email.utils  # rarely needed, and slow to import

        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when is None:  # Python 3.9 returns None for some unreadable dates
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def parse_answer(data: bytes) -> dict[str, Any]:
    """Brain's JSON answer as a dict; {} for anything else (an HTML error page)."""
    try:
        answer = json.loads(data)
    except (ValueError, RecursionError):
        return {}
    return answer if isinstance(answer, dict) else {}
