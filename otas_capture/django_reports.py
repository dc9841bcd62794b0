"""What Django tells only outside the middleware chain: exceptions and CSRF refusals.

An exception that a view or another middleware raised reaches the event through
``process_exception`` or Django's ``got_request_exception`` signal (Django turns it into
a 500 response before a WSGI wrapper could see it); why a CSRF check failed, through the
record Django logs on ``django.security.csrf`` or :func:`csrf_failure` as the
``CSRF_FAILURE_VIEW``. Each finds the request's exchange in ``request.META``.
"""

from __future__ import annotations

import logging
import sys
import threading
import traceback
from types import TracebackType
from typing import Any

from django.core.signals import got_request_exception
from django.http import HttpRequest, HttpResponseBase

from .capture.exchange import Exchange
from .capture.middleware import EXCHANGE_ENVIRON_KEY

__all__ = ["TRACEBACK_FRAMES", "csrf_failure", "exchange_of", "install_hooks", "record_exception"]

TRACEBACK_FRAMES = 10  # innermost frames kept in metadata["traceback"]

_hooks_lock = threading.Lock()
_hooks_installed = False


def exchange_of(request: Any) -> Exchange | None:
    meta = getattr(request, "META", None)
    return meta.get(EXCHANGE_ENVIRON_KEY) if isinstance(meta, dict) else None


def record_exception(exchange: Exchange, exc: BaseException, tb: TracebackType | None) -> None:
    """Put the exception in the event: ``error``, and a traceback summary in metadata."""
    if exchange.error is not None:  # the first one wins, as in Exchange.fail
        return
    exchange.fail(exc)
    exchange.add_metadata(
        exception_type=f"{type(exc).__module__}.{type(exc).__qualname__}",
        traceback=_traceback_summary(tb),
    )


def _traceback_summary(tb: TracebackType | None) -> list[str]:
    """``file:line in function`` for the innermost frames; source lines are not read."""
    if tb is None:
        return []
    frames = traceback.StackSummary.extract(traceback.walk_tb(tb), lookup_lines=False)
    return [f"{f.filename}:{f.lineno} in {f.name}" for f in frames[-TRACEBACK_FRAMES:]]


def csrf_failure(request: HttpRequest, reason: str = "", **kwargs: Any) -> HttpResponseBase:
    """A ``CSRF_FAILURE_VIEW`` that records the reason, then answers as Django's own does.

    Not needed in general: the middleware reads the reason from Django's
    ``django.security.csrf`` log record. Use it when that logger is silenced.
    """
    from django.views.csrf import csrf_failure as django_csrf_failure

    _record_csrf(request, reason)
    return django_csrf_failure(request, reason=reason, **kwargs)


def _record_csrf(request: Any, reason: str) -> None:
    exchange = exchange_of(request)
    if exchange is None or exchange.error is not None:
        return
    exchange.error = f"CSRF verification failed: {reason}" if reason else "CSRF verification failed"
    exchange.add_metadata(csrf_failure_reason=reason)


class _CsrfReasonFilter(logging.Filter):
    """Reads why Django refused a request for CSRF from the record it logs; filters nothing."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            request = getattr(record, "request", None)
            args = record.args
            if request is not None and isinstance(args, tuple) and args:
                _record_csrf(request, str(args[0]))
        except Exception:  # never break Django's logging
            pass
        return True


def _on_request_exception(sender: Any, request: Any = None, **kwargs: Any) -> None:
    # Exceptions that escape views and other middlewares: Django sends this signal
    # while handling them, so sys.exc_info() is the exception.
    exchange = exchange_of(request)
    if exchange is None:
        return
    _, exc, tb = sys.exc_info()
    if exc is not None:
        record_exception(exchange, exc, tb)


def install_hooks() -> None:
    """Connect the signal and the log filter above, once per process."""
    global _hooks_installed
    with _hooks_lock:
        if _hooks_installed:
            return
        _hooks_installed = True
    got_request_exception.connect(
        _on_request_exception, weak=False, dispatch_uid="otas_capture.django"
    )
    logging.getLogger("django.security.csrf").addFilter(_CsrfReasonFilter())
