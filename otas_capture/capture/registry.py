"""Every live middleware of the process, and what acts on all of them at once.

Each middleware (:class:`~otas_capture.OtasMiddleware`, and any other capturing
middleware of the package) calls :func:`register` once, from its constructor. Hanging off
that:

- **The process-wide calls** :func:`flush`, :func:`close` and :func:`stats`
  (``otas_capture.flush()`` and friends), which act on every live middleware, whatever
  the framework, so an application never needs a handle on the one its framework built.
- **Framework hooks**: code above the core (the package's ``__init__``) may ask to see
  each wrapped application, to connect what only its framework knows (Flask's signals,
  when ``app.wsgi_app`` is wrapped by hand). The core itself never imports an integration.

The registry holds weak references only, so it keeps nothing alive. It also offers the
integrations one way to say that they were called wrongly: a clear message on the
``otas_capture`` logger, rate-limited, and never an exception into the request.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from typing import Any, Callable, Protocol

from ..contract import LOGGER_NAME
from ..delivery.stats import COUNTS, WITH_REASONS
from . import shutdown

__all__ = ["close", "flush", "live_middlewares", "register", "stats"]

logger = logging.getLogger(LOGGER_NAME)


class Capturing(Protocol):
    """What the process-wide calls need of a middleware."""

    @property
    def app(self) -> Any: ...

    def flush(self, timeout: float = ...) -> bool: ...

    def close(self, timeout: float | None = ...) -> None: ...

    def stats(self) -> dict[str, Any]: ...


_live: weakref.WeakSet[Capturing] = weakref.WeakSet()
_live_lock = threading.Lock()
_framework_hooks: list[Callable[[Any], None]] = []

_MISUSE_EVERY_SECONDS = 60.0
_misuse_logged: dict[str, float] = {}
_misuse_lock = threading.Lock()


def register(middleware: Capturing) -> None:
    """Count ``middleware`` among the live ones and show its app to the framework hooks.

    Never raises: a hook's bug must not stop the host app starting.
    """
    with _live_lock:
        _live.add(middleware)
    for hook in list(_framework_hooks):
        try:
            hook(middleware.app)
        except Exception:
            logger.error("otas-capture: could not connect the framework integration", exc_info=True)


def add_framework_hook(hook: Callable[[Any], None]) -> None:
    """Call ``hook(app)`` with the application of every middleware built from now on."""
    _framework_hooks.append(hook)


def live_middlewares() -> list[Capturing]:
    """Every middleware not yet garbage-collected."""
    with _live_lock:
        return list(_live)


def flush(timeout: float = 5.0) -> bool:
    """Wait until every event captured so far, by any middleware, is delivered or given up.

    All middlewares share the one ``timeout``; False if it ran out first.
    """
    deadline = time.monotonic() + timeout
    done = True
    for middleware in live_middlewares():
        done = middleware.flush(max(0.0, deadline - time.monotonic())) and done
    return done


def close(timeout: float | None = None) -> None:
    """Flush every middleware for up to ``timeout`` s in all, then stop its sender.

    ``timeout`` defaults to the longest ``shutdown_timeout``. This is what runs at exit.
    """
    shutdown.close_all(timeout)


def stats() -> dict[str, Any]:
    """Every middleware's ``stats()`` added up, reasons included."""
    total: dict[str, Any] = dict.fromkeys(COUNTS, 0)
    reasons: dict[str, dict[str, int]] = {kind: {} for kind in WITH_REASONS}
    for middleware in live_middlewares():
        for name, value in middleware.stats().items():
            if name == "reasons":
                for kind, by_reason in value.items():
                    into = reasons.setdefault(kind, {})
                    for reason, count in by_reason.items():
                        into[reason] = into.get(reason, 0) + count
            elif isinstance(value, int):
                total[name] = total.get(name, 0) + value
    total["reasons"] = reasons
    return total


def log_misuse(key: str, message: str, *args: Any) -> None:
    """Log that a helper was called wrongly, at most once a minute per ``key``."""
    now = time.monotonic()
    with _misuse_lock:
        last = _misuse_logged.get(key)
        if last is not None and now - last < _MISUSE_EVERY_SECONDS:
            return
        _misuse_logged[key] = now
    logger.error(message, *args)
