"""Shipping what earlier processes left in the spool, without losing or crowding out anything.

A background thread claims the spool's files one at a time (:meth:`Spool.claims`) and
offers their records to the delivery worker (:meth:`Worker.offer`) only as fast as they
fit in their share of the worker's bounds: what does not fit yet stays on disk, and the
app's own events always find room. A record leaves the disk only when the worker settles
it as delivered or failed for good (:meth:`Claim.done`). A live record that finds the
worker full takes a restored record's place, and that record is offered again later.
At ``close`` the claims are released with every record not done still on disk, for this
directory's next process.

The thread starts on :meth:`Restorer.start`, which the middleware calls on its first
request of any kind: never before a server forks its workers (gunicorn ``--preload``).
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from typing import TYPE_CHECKING, Any, Callable, Generic, TypeVar

from .claim import Claim
from .ledger import wait_time
from .stats import Stats
from .worker import Worker

if TYPE_CHECKING:
    from .spool import Spool  # POSIX only: the sender imports it only when asked for

R = TypeVar("R")
# When live events fill the worker, nothing restored settles to wake the thread: it
# looks again this often (only while records wait for room).
RETRY_ROOM_SECONDS = 0.2


class Restorer(Generic[R]):
    """Feeds ``spool``'s records to ``worker``; ``decode`` turns a record's bytes into a
    record and its size in memory, or None when they are not a record."""

    def __init__(
        self,
        spool: Spool,
        worker: Worker[R],
        stats: Stats,
        decode: Callable[[bytes], tuple[R, int] | None],
    ) -> None:
        self._spool = spool
        self._worker = worker
        self._stats = stats
        self._decode = decode
        self._reset()
        _live_restorers.add(self)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # room freed, pass over, or stop
        self.started = False
        self._running = False  # the pass over the spool is going on
        self._stopping = False
        self._claims: list[Claim] = []  # held by this process, records not all done
        self._offered = 0  # records in the worker, not settled yet
        self._again: list[_Ack[R]] = []  # records the worker gave back, to offer again

    def start(self) -> None:
        """Start the pass over the spool (once; later calls do nothing)."""
        with self._lock:
            if self.started or self._stopping:
                return
            self.started = self._running = True
        thread = threading.Thread(target=self._run, name="otas-capture-restore", daemon=True)
        try:
            thread.start()
        except RuntimeError:  # can't start new thread: the spool waits for a later process
            with self._lock:
                self._running = False

    def wait(self, deadline: float) -> bool:
        """Wait until the pass has offered every record it will and the worker settled
        them (True), or ``deadline``."""
        with self._lock:
            while self._running:
                wait = wait_time(deadline)
                if wait == 0.0:
                    return False
                self._changed.wait(wait)
            return True

    def stop(self) -> None:
        """Offer nothing more: what was not offered stays on disk."""
        with self._lock:
            self._stopping = True
            self._changed.notify_all()

    def release(self) -> None:
        """After the worker closed: let every claim go with what is not done still on
        disk (the worker told it was ``spooled``), for a later process."""
        with self._lock:  # a call the worker abandoned may still end, and tell
            self._stopping = True
            for claim in self._claims:
                claim.release()
            self._claims = []

    # -- the thread ----------------------------------------------------------------------

    def _run(self) -> None:
        try:
            for claim in self._spool.claims():
                with self._lock:
                    if self._stopping:
                        claim.release()
                        return
                    self._claims.append(claim)
                pending = [(claim, index) for index in claim.pending]
                if not self._offer_all(pending) or not self._offer_again(wait=False):
                    return
                self._forget_if_done(claim)
            self._offer_again(wait=True)
        except Exception:
            message = "otas-capture: cannot read the spool"
            self._stats.log_limited("restore", logging.ERROR, message, exc_info=True)
        finally:
            with self._lock:
                self._running = False
                self._changed.notify_all()

    def _offer_again(self, wait: bool) -> bool:
        """Offer again what the worker gave back to live records; with ``wait``, until
        every record offered is settled. False once stopping."""
        while True:
            with self._lock:
                while wait and self._offered and not self._again and not self._stopping:
                    self._changed.wait()
                again, self._again = self._again, []
            if not again:
                return not self._stopping
            if not all(self._place(ack) for ack in again):
                return False

    def _offer_all(self, records: list[tuple[Claim, int]]) -> bool:
        return all(self._offer(claim, index) for claim, index in records)

    def _offer(self, claim: Claim, index: int) -> bool:
        """Offer one record, waiting for room; False once stopping (it stays on disk)."""
        decoded = self._decode(claim.records[index])
        claim.records[index] = b""  # in memory once: as the record the worker holds
        if decoded is None:
            self._stats.incr("restored")
            self._stats.lost("dropped", "spool_unreadable")
            with self._lock:
                claim.done(index)
            return True
        return self._place(_Ack(self, claim, index, *decoded))

    def _place(self, ack: _Ack[R]) -> bool:
        with self._lock:
            while not self._stopping:
                if self._worker.offer(ack.record, ack.size, ack):
                    self._offered += 1
                    self._stats.incr("restored")
                    return True
                # A restored record settling frees room and wakes this thread; with none
                # in the worker, live events fill it, and only a look later tells.
                self._changed.wait(None if self._offered else RETRY_ROOM_SECONDS)
        return False

    def _settled(self, ack: _Ack[R], kind: str) -> None:
        """The worker settled or gave back a record (called outside its lock)."""
        claim = ack.claim
        with self._lock:
            self._offered -= 1
            if kind == "returned":
                self._stats.incr("restored", count=-1)  # restored when offered again
                self._again.append(ack)
            elif kind != "spooled" and claim.open:
                claim.done(ack.index)  # delivered, or failed for good: off the disk
            self._changed.notify_all()
        self._forget_if_done(claim)

    def _forget_if_done(self, claim: Claim) -> None:
        with self._lock:
            if not claim.open and claim in self._claims:
                self._claims.remove(claim)

    def _after_fork(self) -> None:
        # The parent's claims stay the parent's: drop this process's copies of them
        # (closing a copy keeps the parent's lock), and start afresh.
        for claim in self._claims:
            claim.release()
        self._reset()


class _Ack(Generic[R]):
    """One restored record offered to the worker, which tells the restorer when it is
    settled or given back (then offered again as it is, not read again)."""

    __slots__ = ("_restorer", "claim", "index", "record", "size")

    def __init__(
        self, restorer: Restorer[R], claim: Claim, index: int, record: R, size: int
    ) -> None:
        self._restorer = restorer
        self.claim = claim
        self.index = index
        self.record = record
        self.size = size

    def __call__(self, kind: str) -> None:
        self._restorer._settled(self, kind)


_live_restorers: weakref.WeakSet[Restorer[Any]] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for restorer in list(_live_restorers):
        restorer._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
