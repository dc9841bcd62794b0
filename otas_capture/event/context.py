"""Where an event comes from: the deployment that served it and the trace it belongs to.

Two kinds of facts go into every event's ``metadata`` from here:

- **The deployment**: ``environment`` (``production``, ``staging``...) and ``release``
  (a version or a commit), from ``OTAS_ENVIRONMENT`` / ``OTAS_RELEASE`` or the same
  options, so that events of different deployments can be told apart in OTAS.
- **The trace**: ``trace_id`` and ``span_id``, so that an event links to the trace of the
  same request in Jaeger, Tempo or any OpenTelemetry backend. They come from the span
  OpenTelemetry has current while the app answers (read on the request thread, by
  :func:`note_current_span`, and only when the app itself imported OpenTelemetry: this
  package never imports it), else from the W3C ``traceparent`` header the request
  carried (read in the sender thread, by :func:`event_context`). With the header only,
  ``span_id`` is the caller's span, the parent of this request.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..capture.exchange import Exchange
    from ..config import Config

__all__ = ["event_context", "note_current_span", "parse_traceparent"]

# How a request header reaches us: the WSGI environ key, or the name as sent (ASGI
# carries names and values as bytes).
_TRACEPARENT_KEYS = frozenset({"HTTP_TRACEPARENT", "traceparent", b"traceparent"})
_HEX = frozenset("0123456789abcdef")


def event_context(config: Config, exchange: Exchange) -> dict[str, Any]:
    """The deployment's and the trace's keys for the metadata of ``exchange``'s event.

    Runs in the sender thread. A span noted on the request thread (in the exchange's own
    metadata) is merged later and wins over the header: it is this request's own span.
    """
    context: dict[str, Any] = {}
    if config.environment is not None:
        context["environment"] = config.environment
    if config.release is not None:
        context["release"] = config.release
    trace = _trace_from_headers(exchange.request_headers)
    if trace is not None:
        context["trace_id"], context["span_id"] = trace
    return context


def _trace_from_headers(headers: Iterable[tuple[Any, Any]]) -> tuple[str, str] | None:
    for key, value in headers:
        if key in _TRACEPARENT_KEYS:
            return parse_traceparent(value)
    return None


def parse_traceparent(value: Any) -> tuple[str, str] | None:
    """``(trace_id, span_id)`` of a W3C ``traceparent`` value, or None when it is invalid.

    The rules are the W3C Trace Context ones: ``version-traceid-parentid-flags`` in
    lower-case hex; version ``ff`` and all-zero ids are invalid; version ``00`` has
    exactly four fields, a later version may append more.
    """
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if not isinstance(value, str):
        return None
    parts = value.strip().split("-")
    if len(parts) < 4:
        return None
    version, trace_id, span_id, flags = parts[:4]
    if (
        len(version) != 2
        or version == "ff"
        or (version == "00" and len(parts) != 4)
        or len(trace_id) != 32
        or len(span_id) != 16
        or len(flags) != 2
        or not _HEX.issuperset(version + trace_id + span_id + flags)
        or trace_id == "0" * 32
        or span_id == "0" * 16
    ):
        return None
    return trace_id, span_id


def note_current_span(exchange: Exchange) -> None:
    """Keep the ids of OpenTelemetry's current span on ``exchange``. Request thread.

    OpenTelemetry keeps the current span in a context variable of the thread (or task)
    that serves the request, so it can only be read there, while the app answers. Only
    when the app already imported OpenTelemetry; never raises into the request.
    """
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return
    try:
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            exchange.add_metadata(
                trace_id=format(span_context.trace_id, "032x"),
                span_id=format(span_context.span_id, "016x"),
            )
    except Exception:  # a broken or foreign tracer must not break the request
        pass
