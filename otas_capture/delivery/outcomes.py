"""The seam between the delivery worker and what it delivers to: outcomes, jobs, exporters.

:mod:`otas_capture.delivery.worker` schedules records without knowing where they go; an
:class:`Exporter` (for OTAS, :class:`otas_capture.otas.client.OtasClient`) makes one delivery
attempt per call and answers with one of the four outcomes below. This is the whole
vocabulary the two sides share, as OpenTelemetry's processors and exporters share
``SpanExportResult``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Union


@dataclass(frozen=True)
class Sent:
    """Delivered; final."""


@dataclass(frozen=True)
class Failed:
    """Will never be delivered: counted as ``kind`` with ``reason``.

    ``called`` is False when the exporter decided without calling the server (the
    record was refused locally), so the call teaches the limiter nothing.
    """

    reason: str
    detail: str = ""
    kind: str = "failed"
    called: bool = True


@dataclass(frozen=True)
class Retry:
    """Worth another try later.

    ``server_wide``: the server as a whole is in trouble (pause and probe). When False
    the trouble may be this record's own (see the module docstring). ``retry_after``:
    seconds the server asked for, honoured exactly. ``maybe_delivered``: the call was
    fully sent before it failed, so the server may have stored it.
    """

    reason: str
    server_wide: bool
    retry_after: float | None = None
    detail: str = ""
    maybe_delivered: bool = False


@dataclass(frozen=True)
class PauseForKey:
    """The server refuses our credentials: pause everything, keep the record, retry later.

    The record's retries are not spent: nothing can be delivered until the credentials
    are accepted, and the server also says this while a service behind it is down.
    """

    reason: str
    called: bool = True


# Union rather than |: this alias is evaluated at runtime, where Python 3.9 has no |.
Outcome = Union[Sent, Failed, Retry, PauseForKey]


class Job:
    """A record on its way, and its delivery state. The exporter may replace ``record``
    (with a prepared form kept for retries) and then must set ``size`` to match."""

    __slots__ = (
        "seq",
        "record",
        "size",
        "attempts",
        "own_failures",
        "accepted_mark",
        "maybe_stored",
        "duplicate_risk",
        "settled",
        "held",
    )

    def __init__(self, record: Any, size: int) -> None:
        self.seq = 0
        self.record: Any = record
        self.size = size
        self.attempts = 0  # retries spent
        self.own_failures = 0  # failures that may have been about this record
        self.accepted_mark = 0  # the worker's accepted count when it came or last failed
        self.maybe_stored = False  # some attempt was fully sent, then timed out
        self.duplicate_risk = False  # ... and it was the last attempt
        self.settled = False
        self.held = 0  # the worker's places holding it: queue, retry heap, in flight


class Exporter(Protocol):
    """What the worker calls; may be called from several threads at once."""

    def export(self, job: Job) -> Outcome: ...

    def shutdown(self) -> None: ...
