"""``annotate()``: the application's way to add its own properties to a captured event.

It finds the request's exchange in the WSGI environ, where the middleware put it, so
the application needs no handle on the middleware. Being a call made by application
code, a wrong call is logged (rate-limited) and ignored: it never raises into the app.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

from .exchange import EXCHANGE_ENVIRON_KEY, Exchange
from .registry import log_misuse as _log_misuse

CURRENT_EXCHANGE: ContextVar[Exchange | None] = ContextVar("otas_capture_exchange", default=None)


def annotate(environ: Any = None, /, *args: Any, **props: Any) -> None:
    """Add ``props`` to the ``custom_properties`` of the event for this request.

    Does nothing for a request that is not captured (no agent token, skipped, sampled
    out), so it is always safe to call. A wrong call (no environ, extra positional
    arguments) logs one clear error, rate-limited, and is ignored: it never raises.

    .. code-block:: python

        def app(environ, start_response):
            annotate(environ, tenant="acme", plan="pro")
    """
    try:
        exchange = environ.get(EXCHANGE_ENVIRON_KEY)
    except Exception:
        _log_misuse(
            "annotate_environ",
            "otas-capture: annotate() needs the request's WSGI environ as its first "
            f"argument, as in annotate(environ, tenant='acme'); got {type(environ).__name__}"
            "; the call was ignored",
        )
        return
    if args:
        _log_misuse(
            "annotate_args",
            "otas-capture: annotate() takes properties as keyword arguments, as in "
            "annotate(environ, tenant='acme'); the call was ignored",
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
