"""Process exit: deliver what can still be delivered, then say what could not.

Events wait in memory for the sender threads, so a process that ends without warning
loses them. Two ways out are covered:

* **Interpreter exit** (``sys.exit``, the end of the main module, an orderly stop by
  gunicorn, uWSGI or ``flask run``'s reloader, which turn SIGTERM into one): an
  ``atexit`` hook closes every live middleware, flushing for up to its
  ``shutdown_timeout`` (``OTAS_SHUTDOWN_TIMEOUT``, 2 s by default).
* **SIGTERM with the default disposition** (``waitress-serve``, ``python app.py``, a
  container's stop): Python's default is to die on the spot, skipping ``atexit``. When
  a middleware is built in the main thread and SIGTERM is still at its default, a
  handler is installed that closes the middlewares for up to the shutdown timeout, then
  restores the default and re-sends the signal, so that the process ends exactly as it
  would have (killed by SIGTERM, same exit status). A process or server with a SIGTERM
  handler of its own is left alone, and no handler is ever installed from another
  thread (Python forbids it, and a library must not take over a host's signals).

Whatever could not be delivered is counted in ``stats()`` and summed up in one log line
on the ``otas_capture`` logger when the middleware closes.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from time import perf_counter
from typing import Any, Callable

from ..contract import LOGGER_NAME

logger = logging.getLogger(LOGGER_NAME)

# Margin on top of the shutdown timeout for the close to return after the flush gave up.
_CLOSE_MARGIN = 0.5

# What a middleware hands this module: its close(timeout), and its shutdown timeout.
Close = Callable[[float], None]

# Held strongly until closed, as atexit held them before: a middleware the app dropped
# may still have events to deliver.
_live: dict[Close, float] = {}
_lock = threading.Lock()
_atexit_registered = False
_sigterm_installed = False


def register(close: Close, shutdown_timeout: float) -> None:
    """Call ``close`` at exit, and on SIGTERM if the process has no handler of its own."""
    global _atexit_registered
    with _lock:
        _live[close] = shutdown_timeout
        if not _atexit_registered:
            atexit.register(_at_exit)
            _atexit_registered = True
    install_sigterm_handler()


def install_sigterm_handler() -> bool:
    """Install the SIGTERM handler if it is safe and useful; whether it is installed."""
    global _sigterm_installed
    if _sigterm_installed:
        return True
    import signal  # here: a millisecond or two of `import otas_capture` otherwise

    sigterm = getattr(signal, "SIGTERM", None)
    if sigterm is None or threading.current_thread() is not threading.main_thread():
        return False
    try:
        if signal.getsignal(sigterm) is not signal.SIG_DFL:
            return False  # the host or its server handles SIGTERM: its orderly exit runs atexit
        signal.signal(sigterm, _on_sigterm)
    except (ValueError, OSError):  # not the main interpreter, or signals unavailable
        return False
    _sigterm_installed = True
    return True


def unregister(close: Close) -> None:
    """Forget a middleware that was closed."""
    with _lock:
        _live.pop(close, None)


def _registered() -> list[tuple[Close, float]]:
    with _lock:
        return list(_live.items())


def close_all(timeout: float | None = None) -> None:
    """Close every live middleware, sharing one deadline: ``timeout``, or by default the
    longest shutdown timeout, none taking longer than its own.

    Runs in the calling thread: at interpreter exit no new thread may start.
    """
    registered = _registered()
    if not registered:
        return
    budget = timeout if timeout is not None else max(limit for _, limit in registered)
    deadline = perf_counter() + budget
    for close, limit in registered:
        remaining = max(0.0, deadline - perf_counter())
        try:
            close(remaining if timeout is not None else min(remaining, limit))
        except Exception:  # never let one middleware's failure stop the others or the exit
            logger.exception("otas-capture: error while closing at exit")


def _at_exit() -> None:
    close_all()


def _on_sigterm(signum: int, frame: Any) -> None:
    """Flush for up to the shutdown timeout, then die of SIGTERM as the default would."""
    import signal

    try:
        registered = _registered()
        if registered:
            budget = max(limit for _, limit in registered)
            # The close runs in a thread of its own: the signal may have interrupted
            # this (main) thread while it held a lock the close needs, and a join with a
            # timeout keeps the exit bounded even then.
            closer = threading.Thread(
                target=close_all, args=(budget,), name="otas-capture-shutdown", daemon=True
            )
            closer.start()
            closer.join(budget + _CLOSE_MARGIN)
    except BaseException:  # nothing may stop the process from ending as asked
        pass
    finally:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


def log_summary(stats: dict[str, Any]) -> None:
    """One line saying how many events were not delivered, and why.

    Events restored from the spool were captured by an earlier process; they are
    counted in with this one's, since their losses are counted in too."""
    reasons: dict[str, dict[str, int]] = stats.get("reasons", {})
    parts = []
    lost = 0
    for kind, by_reason in reasons.items():
        count = stats.get(kind, 0)
        if kind == "skipped" or not count:
            continue  # skipped requests were never meant to be shipped
        lost += count
        detail = ", ".join(f"{reason}: {n}" for reason, n in sorted(by_reason.items()))
        parts.append(f"{kind} {count} ({detail})" if detail else f"{kind} {count}")
    if lost:
        restored = stats.get("restored", 0)
        total = stats.get("captured", 0) + restored
        spooled = stats.get("spooled", 0)
        logger.warning(
            "otas-capture: %d of %d captured events were not delivered to OTAS: %s%s%s",
            lost,
            total,
            "; ".join(parts),
            f"; the {total} include {restored} restored from OTAS_SPOOL_DIR" if restored else "",
            f"; {spooled} more kept in OTAS_SPOOL_DIR for the next process" if spooled else "",
        )
