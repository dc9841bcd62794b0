"""The seam between the delivery worker and what it delivers to: outcomes and exporters.

:mod:`otas_capture.delivery.worker` schedules records without knowing where they go; an
:class:`Exporter` (for OTAS, :class:`otas_capture.otas.client.OtasClient`) makes one delivery
attempt per call and answers with one of the four outcomes below, in an :class:`Attempt`.
This is the whole vocabulary the two sides share, as OpenTelemetry's processors and
exporters share ``SpanExportResult``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar, Union


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


R = TypeVar("R")


class Attempt(Generic[R]):
    """What one :meth:`Exporter.export` call did: its outcome and, when the exporter
    turned the record into a form worth keeping for retries (a built body), that form
    and the bytes it holds. The worker keeps what is returned; the exporter never
    changes the worker's state."""

    __slots__ = ("outcome", "record", "size")

    def __init__(self, outcome: Outcome, record: R | None = None, size: int = 0) -> None:
        self.outcome = outcome
        self.record = record
        self.size = size


class Exporter(Protocol[R]):
    """What the worker calls; may be called from several threads at once."""

    def export(self, record: R) -> Attempt[R]: ...

    def shutdown(self) -> None: ...
