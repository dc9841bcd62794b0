"""``annotate()``: the application's way to add its own properties to a captured event.

A capturing middleware sets :data:`CURRENT_EXCHANGE` while the application's code runs
for a captured request (its call, and each step and the close of its response iterable),
so ``annotate(tenant="acme")`` finds the request itself, in any
framework, without a handle on the request or the middleware. The older form
``annotate(environ, tenant="acme")`` still works: the WSGI environ carries the exchange
too. Being a call made by application code, a wrong call is logged (rate-limited) and
ignored: it never raises into the app.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

from .exchange import EXCHANGE_ENVIRON_KEY, Exchange
from .registry import log_misuse as _log_misuse

__all__ = ["CURRENT_EXCHANGE", "annotate"]

# The exchange of the captured request the application is handling in this context
# (thread, or asyncio task); None outside one.
CURRENT_EXCHANGE: ContextVar[Exchange | None] = ContextVar("otas_capture_exchange", default=None)


def annotate(environ: Any = None, /, *args: Any, **props: Any) -> None:
    """Add ``props`` to the ``custom_properties`` of the event for the current request.

    Does nothing outside a captured request (no agent token, skipped, sampled out), so it
    is always safe to call. A wrong call (extra positional arguments, a first argument
    that is not a WSGI environ) logs one clear error, rate-limited, and is ignored.

    .. code-block:: python

        from otas_capture import annotate

        def checkout(...):
            annotate(tenant="acme", plan="pro")

    ``annotate(environ, tenant="acme")`` names the request by its WSGI environ instead.
    """
    if args:
        _log_misuse(
            "annotate_args",
            "otas-capture: annotate() takes properties as keyword arguments, as in "
            "annotate(tenant='acme'); the call was ignored",
        )
        return
    if environ is None:
        exchange = CURRENT_EXCHANGE.get()
    else:
        try:
            exchange = environ.get(EXCHANGE_ENVIRON_KEY)
        except Exception:
            _log_misuse(
                "annotate_environ",
                "otas-capture: annotate() takes keyword arguments only, as in "
                "annotate(tenant='acme'), or the request's WSGI environ first; got "
                f"{type(environ).__name__}; the call was ignored",
            )
            return
    if exchange is not None and props:
        try:
            exchange.annotate(props)
        except Exception:
            _log_misuse(
                "annotate_exchange",
                f"otas-capture: environ[{EXCHANGE_ENVIRON_KEY!r}] is not ours; "
                "annotate() was ignored",
            )
