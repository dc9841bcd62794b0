"""The hand-off of finished exchanges: what a middleware gives its responses and its close.

A middleware makes one :class:`Handoff` and hands it to everything that may end one of its
exchanges: the response wrappers of :mod:`otas_capture.capture.response` (finished, or
garbage-collected unfinished) and its own ``close``. The hand-off knows which exchanges
are open, finishes each exactly once (``dict.pop`` is atomic, so two threads racing to
finish the same one cannot both win), and calls the middleware's ``ship`` for it.

A response garbage-collected unfinished (a test client's, left unread) ends in
``__del__``, which may run in any thread at any allocation, even one holding the
sender's lock: it only puts the exchange on a process-wide :class:`queue.SimpleQueue`,
whose ``put`` is safe there. One daemon thread waits on that queue (no polling: it sleeps
in ``get`` while idle) and ships what arrives, so such a request reaches OTAS within
moments without any further request. The thread starts with the first captured request,
never at import, so a process that forks before serving (gunicorn ``--preload``) starts
its own in each child; a forked child forgets its parent's queue and open exchanges,
which are the parent's to ship.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from queue import SimpleQueue
from time import perf_counter
from typing import Callable

from .exchange import Exchange

# Seconds between two looks at the open exchanges while close() waits for them.
_WAIT_STEP = 0.005
# How long ship_orphans() waits for the watcher to hand over the orphan it holds (a
# submit: microseconds), and how often it looks meanwhile.
_WATCHER_GRACE = 1.0
_WATCHER_STEP = 0.0005


class Handoff:
    """The open exchanges of one middleware, and the one way each of them ends.

    :param ship: the middleware's ``ship(exchange)``, called once per exchange finished,
        in the thread that finished it; it must not raise.
    """

    __slots__ = ("_ship", "_open", "_orphaned", "unclosed", "__weakref__")

    def __init__(self, ship: Callable[[Exchange], None]) -> None:
        self._ship = ship
        # Each exchange begun and not finished -> whether the application call returned
        # (only then does a response wrapper own it).
        self._open: dict[Exchange, bool] = {}
        # Orphans queued and not shipped yet: flush() waits for the one the watcher holds.
        self._orphaned: set[Exchange] = set()
        # Exchanges finished because their response was dropped or left unfinished.
        self.unclosed = 0
        _handoffs.add(self)

    def begin(self, exchange: Exchange) -> None:
        """Note an exchange the application is about to handle."""
        if not _watcher_started:
            _start_watcher()
        self._open[exchange] = False

    def returned(self, exchange: Exchange) -> None:
        """Note that the application call returned: a response now owns the exchange."""
        if exchange in self._open:
            self._open[exchange] = True

    def finish(self, exchange: Exchange) -> None:
        """Ship ``exchange`` if it is still open: whoever calls first, exactly once."""
        if self._open.pop(exchange, None) is not None:
            self._ship(exchange)

    def orphan(self, exchange: Exchange) -> None:
        """From a response's ``__del__``: ship it soon, from the watcher thread. Lock-free."""
        mark_unfinished(exchange)
        self._orphaned.add(exchange)  # set.add is one C call: safe in __del__
        _orphans.put((self, exchange))

    def adopt(self, exchange: Exchange) -> None:
        """Ship an exchange whose response will not be finished, counted as ``unclosed``."""
        if self._open.pop(exchange, None) is not None:
            self.unclosed += 1
            self._ship(exchange)
        self._orphaned.discard(exchange)

    @property
    def pending(self) -> int:
        """Exchanges begun and not finished."""
        return len(self._open)

    def unfinished(self) -> list[Exchange]:
        """Exchanges whose application call returned and whose response is not done."""
        return [exchange for exchange, returned in self._open.copy().items() if returned]

    def abandon_unfinished(self) -> None:
        """Ship every response not done yet with what is known of it (``unclosed``)."""
        for exchange in self.unfinished():
            mark_unfinished(exchange)
            self.adopt(exchange)

    def wait(self, timeout: float) -> None:
        """Wait up to ``timeout`` s until every exchange begun is finished.

        Only close() waits, so a short sleep between looks costs nothing meanwhile.
        """
        deadline = perf_counter() + timeout
        ship_orphans()
        while self._open and perf_counter() < deadline:
            time.sleep(_WAIT_STEP)
            ship_orphans()


def mark_unfinished(exchange: Exchange) -> None:
    """End an exchange whose response was not finished: ``end`` is what was last seen."""
    if exchange.end is None:
        exchange.end = exchange.first_byte or perf_counter()
    exchange.add_metadata(response_unfinished=True)


def ship_orphans() -> None:
    """Ship, in this thread, every orphan queued so far (the watcher may be slower), and
    wait for the one the watcher may be shipping: a flush() right after must see it."""
    while not _orphans.empty():
        try:
            handoff, exchange = _orphans.get_nowait()
        except Exception:  # the watcher took the last one first
            break
        handoff.adopt(exchange)
    deadline = perf_counter() + _WATCHER_GRACE
    while any(handoff._orphaned for handoff in list(_handoffs)) and perf_counter() < deadline:
        time.sleep(_WATCHER_STEP)


_orphans: SimpleQueue[tuple[Handoff, Exchange]] = SimpleQueue()
_handoffs: weakref.WeakSet[Handoff] = weakref.WeakSet()
_watcher_started = False
_watcher_lock = threading.Lock()


def _start_watcher() -> None:
    global _watcher_started
    with _watcher_lock:
        if _watcher_started:
            return
        thread = threading.Thread(target=_watch, name="otas-capture-orphans", daemon=True)
        try:
            thread.start()
        except RuntimeError:  # no thread to be had: flush(), stats() and close() ship them
            return
        _watcher_started = True


def _watch() -> None:
    queue = _orphans
    while True:
        handoff, exchange = queue.get()
        try:
            handoff.adopt(exchange)
        except Exception:  # ship() never raises; nothing may end this thread
            pass
        del handoff, exchange  # hold nothing while waiting for the next one


def _after_fork_in_child() -> None:
    global _orphans, _watcher_started, _watcher_lock
    _orphans = SimpleQueue()
    _watcher_started = False
    _watcher_lock = threading.Lock()
    for handoff in list(_handoffs):
        handoff._open.clear()
        handoff._orphaned.clear()
        handoff.unclosed = 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
