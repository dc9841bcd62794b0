"""What the framework integrations need to know about every middleware that exists.

:class:`~otas_capture.OtasMiddleware` calls :func:`middleware_created` once, from its
constructor. Two things hang off that call:

- **Flask wrapped by hand.** ``app.wsgi_app = OtasMiddleware(app.wsgi_app)`` hands the
  middleware a bound method of the Flask app. Flask turns exceptions into 500 responses
  and matches routes where the WSGI layer cannot see them, so for such a wrap the Flask
  signals are connected exactly as ``init_app`` does. Flask is only looked at when the
  application already imported it: this module never imports a framework itself.
- **The pytest plugin** flushes every live middleware before it reads the events a test
  produced, wherever the application created its middleware. The registry holds weak
  references only, so it keeps nothing alive.

It also offers the integrations one way to say that they were called wrongly: a clear
message on the ``otas_capture`` logger, rate-limited, and never an exception into the
request that made the call.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any

from ..contract import LOGGER_NAME

if TYPE_CHECKING:
    from .middleware import OtasMiddleware

logger = logging.getLogger(LOGGER_NAME)

_live: weakref.WeakSet[OtasMiddleware] = weakref.WeakSet()
_live_lock = threading.Lock()

# Settings the pytest plugin's ``otas`` fixture imposes while a test runs (the local
# collector's URL and key): they win over code, framework settings and the environment,
# so an app configured for production still ships to the test's collector.
test_overrides: dict[str, Any] | None = None

_MISUSE_EVERY_SECONDS = 60.0
_misuse_logged: dict[str, float] = {}
_misuse_lock = threading.Lock()


def middleware_created(middleware: OtasMiddleware) -> None:
    """Register ``middleware`` and connect what its framework knows. Never raises."""
    try:
        with _live_lock:
            _live.add(middleware)
        _connect_flask(middleware.app)
    except Exception:  # an integration's bug must not stop the host app starting
        logger.error("otas-capture: could not connect the framework integration", exc_info=True)


def live_middlewares() -> list[OtasMiddleware]:
    """Every middleware not yet garbage-collected, oldest first where it matters little."""
    with _live_lock:
        return list(_live)


def _connect_flask(app: Any) -> None:
    flask = sys.modules.get("flask")
    if flask is None:
        return
    owner = getattr(app, "__self__", None)
    if isinstance(owner, flask.Flask) and getattr(app, "__name__", "") == "wsgi_app":
        from ..flask import connect_signals

        connect_signals(owner)


def with_overrides(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with the pytest plugin's settings on top, while a test runs."""
    overrides = test_overrides
    return {**options, **overrides} if overrides else options


def log_misuse(key: str, message: str, *args: Any) -> None:
    """Log that a helper was called wrongly, at most once a minute per ``key``."""
    now = time.monotonic()
    with _misuse_lock:
        last = _misuse_logged.get(key)
        if last is not None and now - last < _MISUSE_EVERY_SECONDS:
            return
        _misuse_logged[key] = now
    logger.error(message, *args)
