"""One in-flight limit for every process of a host that ships to the same Brain.

Each process of a pre-fork server (gunicorn ``-w 8``) has its own sender. Were each to
learn its own limit, their sum would far exceed what Brain serves: calls would queue at
Brain, time out, and be stored twice. So the processes of a host share one limit, with
no daemon and nothing to clean up:

- **Call slots are files.** A directory private to the user (``$XDG_RUNTIME_DIR/
  otas-capture``, else ``<tmp>/otas-capture-<uid>``, mode 0700) holds, per Brain URL,
  slot files ``0 .. ceiling-1``. A call may go out only while its process holds a
  non-blocking ``flock`` on one of the first ``limit`` of them. The kernel drops the
  locks of a process that exits, however it exits, so a killed process frees its
  slots at once.
- **The limit is learnt by the host as one.** The state of the
  :class:`~otas_capture.delivery.limiter.AdaptiveLimit` lives in a small state file,
  read and written under ``flock`` whenever a process looks for a slot, teaching it
  the calls that process finished since, so each call of any process teaches the one
  limit (but a thread's first call, which pays for its connection, does not). A host
  whose state nobody touched for ``IDLE_RESET`` starts again from one call in flight.
- **Processes take turns.** A process that finds no free slot joins a wait list in the
  state file; a free slot goes to the first process on the list, the next free one to
  the second, and so on, and a process that just finished a call queues behind those
  waiting. Without that, a process that just released a slot would take it straight
  back, and processes that only look now and then would starve. A process that stops
  asking (it exited) drops off the list after ``STALE``.

Slots are only tried, never waited on, in the kernel: a sender thread that finds none
looks again after a short pause, 2% of the server's call time (5 to 20 ms); only the
state file's lock is waited for, by sender threads only, and it is held for
microseconds. Nothing here runs on a request thread, and the worker's own lock never
waits for a file: a finished call is only noted under it. Files are opened for each
attempt and unlocked before they are closed, so a forked child never holds a lock of
its parent's; what a child inherited is closed (not unlocked) after ``fork``. Where
``fcntl`` or the directory is missing (Windows, a read-only or foreign directory),
:func:`host_limit` returns a per-process limit.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import stat
import tempfile
import threading
import time
import weakref
from collections import deque
from pathlib import Path
from time import perf_counter
from typing import Any, Callable

from ..contract import LOGGER_NAME
from .limiter import AdaptiveLimit, Limit, State

try:
    import fcntl
except ImportError:  # Windows: no flock, each process keeps its own limit
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(LOGGER_NAME)

IDLE_RESET = 30.0  # seconds untouched after which a host's limit starts again at one call
LESSONS = 1024  # finished calls noted between two looks at the state file, at most
STALE = 0.5  # seconds after which a process that stopped asking leaves the wait list
# Pause between two looks for a free slot: this share of the server's call time, bounded.
POLL_SHARE = 0.02
POLL_MIN, POLL_MAX = 0.005, 0.02
# A thread waiting for its turn to look checks every STOP_CHECK seconds whether its
# worker stops; the bound on checks only makes the loop finite (days).
STOP_CHECK, STOP_CHECKS = 0.2, 10**7


def slot_directory() -> Path | None:
    """The user's private directory for slot files, created if needed; None if unusable."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isabs(runtime):
        path = Path(runtime) / "otas-capture"
    else:
        path = Path(tempfile.gettempdir()) / f"otas-capture-{os.getuid()}"
    try:
        path.mkdir(mode=0o700, exist_ok=True)
        info = path.lstat()
    except OSError:
        return None
    # Another user's directory (planted in a shared /tmp) could hold our slots hostage.
    private = info.st_uid == os.getuid() and not info.st_mode & (stat.S_IRWXG | stat.S_IRWXO)
    return path if stat.S_ISDIR(info.st_mode) and private else None


def host_limit(destination: str, ceiling: int, max_latency: float) -> Limit:
    """The in-flight limit for calls to ``destination``, shared by the host's processes
    where it can be, else this process's own."""
    directory = slot_directory() if fcntl is not None else None
    if directory is None:
        logger.debug("otas-capture: no shared slot directory; this process keeps its own limit")
        return AdaptiveLimit(ceiling, max_latency=max_latency)
    return HostLimit(directory, destination, ceiling, max_latency)


class HostLimit:
    """The :class:`~otas_capture.delivery.limiter.Limit` of all processes of this host
    calling ``destination`` (see the module's docstring)."""

    def __init__(self, directory: Path, destination: str, ceiling: int, max_latency: float) -> None:
        key = hashlib.sha256(destination.encode()).hexdigest()[:16]
        self._prefix = str(directory / key)
        self._learner = AdaptiveLimit(ceiling, max_latency=max_latency)
        # The state file keeps time.monotonic(), the same clock in every process of a
        # host; the worker passes perf_counter() times.
        self._offset = time.monotonic() - perf_counter()
        self._limit = 1
        self._poll = POLL_MAX
        self._held: list[int] = []  # descriptors of the slots this process holds
        self._depth = threading.local()  # the slot number of the thread's call
        # Finished calls not yet taught to the host's limit (appending is thread-safe).
        self._lessons: deque[tuple[float, float, int, bool]] = deque(maxlen=LESSONS)
        self._mutex = threading.Lock()
        self._turn = threading.Condition()
        self._looking = False  # a thread of this process is looking for a slot
        _live.add(self)

    @property
    def limit(self) -> int:
        """Calls the host may have in flight, as last read from the state file."""
        return self._limit

    def acquire(self, stop: Callable[[], bool]) -> bool:
        """Wait for a free slot of the host (True), or until ``stop()`` says so (False).

        One thread of the process looks for slots at a time, the others wait their
        turn: a process costs the host one look per pause however many calls it has
        waiting.
        """
        with self._turn:
            for _ in range(STOP_CHECKS):
                if not self._looking:
                    break
                if stop():
                    return False
                self._turn.wait(STOP_CHECK)
            self._looking = True
        try:
            while not self._try():
                if stop():
                    return False
                with self._turn:  # woken early when a call of this process ends
                    self._turn.wait(self._poll * random.uniform(0.5, 1.5))
            return True
        finally:
            with self._turn:
                self._looking = False
                self._turn.notify_all()

    def release(self) -> None:
        """Give back one of the slots this process holds (they are all alike)."""
        with self._mutex:
            fd = self._held.pop() if self._held else None
        if fd is not None:
            # Unlock before closing: a child forked meanwhile still has the descriptor.
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        with self._turn:
            self._turn.notify_all()  # the slot may be this process's to take again

    def on_call(self, started: float, ended: float, in_flight: int, overloaded: bool) -> None:
        """Teach the host's limit one finished call (``in_flight``, the process's own
        count, is replaced by the slot number the call held: the host's count)."""
        # Only noted here: the worker calls this holding the lock the request thread
        # queues events under, so the state file is written at this thread's next look
        # for a slot, which follows at once when more is due.
        if not overloaded and not getattr(self._depth, "warm", False):
            # A thread's first call opens its connection and warms the process up: at
            # 8 processes starting at once, such calls alone cut the host's limit.
            self._depth.warm = True
            return
        depth = getattr(self._depth, "value", in_flight)
        self._lessons.append((started + self._offset, ended + self._offset, depth, overloaded))

    def _try(self) -> bool:
        """Take a slot if one is free for this process now (see "take turns")."""
        me = os.getpid()
        with self._mutex, self._state() as state:
            for _ in range(len(self._lessons)):
                self._learner.on_call(*self._lessons.popleft())
            state["limiter"] = self._learner.state()
            self._limit = self._learner.limit
            now = time.monotonic()
            waiting: list[list[float]] = [
                entry for entry in state["waiting"] if now - entry[1] < STALE
            ]
            pids = [int(entry[0]) for entry in waiting]
            place = pids.index(me) if me in pids else len(pids)
            taken, busy = self._take_free(place)
            if taken:
                self._depth.value = busy + 1  # the host's calls in flight with this one
                if me in pids:
                    del waiting[place]
            elif me in pids:
                waiting[place][1] = now
            else:
                waiting.append([me, now])
            state["waiting"] = waiting
        return taken

    def _take_free(self, place: int) -> tuple[bool, int]:
        """Lock the free slot after the ``place`` free ones left for those ahead; says
        whether it did, and how many slots were held by others (the limit grows only
        while it is used)."""
        taken, busy, skipped = False, 0, 0
        for number in range(min(self._limit, self._learner.ceiling)):
            fd = os.open(f"{self._prefix}.{number}", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # held by a call in flight
                os.close(fd)
                busy += 1
                continue
            if not taken and skipped == place:
                self._held.append(fd)
                taken = True
                continue
            skipped += 1
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        return taken, busy

    def _state(self) -> _StateFile:
        return _StateFile(self)

    def _load(self, text: bytes) -> dict[str, Any]:
        """The host's state from the file's bytes; a fresh one when unreadable or idle."""
        try:
            state: dict[str, Any] = json.loads(text)
            idle = time.monotonic() - float(state["updated"])
            fresh = not 0 <= idle < IDLE_RESET  # negative: written before a reboot
            limiter: State = [float(value) for value in state["limiter"]]
            waiting = [[int(pid), float(seen)] for pid, seen in state["waiting"]]
        except (ValueError, KeyError, TypeError):
            fresh = True
        if fresh:
            learner = self._learner
            self._learner = AdaptiveLimit(learner.ceiling, max_latency=learner.max_latency)
            limiter, waiting = self._learner.state(), []
        else:
            self._learner.restore(limiter)
        self._limit = self._learner.limit
        floor = self._learner.min_latency
        poll = POLL_SHARE * floor if math.isfinite(floor) else POLL_MAX
        self._poll = min(max(poll, POLL_MIN), POLL_MAX)
        return {"limiter": limiter, "waiting": waiting, "updated": time.monotonic()}

    def _after_fork(self) -> None:
        # Close, never unlock: the locks belong to the parent's calls still in flight.
        for fd in self._held:
            os.close(fd)
        self._held = []
        self._mutex = threading.Lock()
        self._turn = threading.Condition()
        self._looking = False


class _StateFile:
    """``with`` block holding the host's state file locked: yields the state as a dict
    and writes it back on a normal exit."""

    def __init__(self, owner: HostLimit) -> None:
        self._owner = owner
        self._fd = -1
        self._state: dict[str, Any] = {}

    def __enter__(self) -> dict[str, Any]:
        self._fd = os.open(
            f"{self._owner._prefix}.state", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
        )
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX)  # held for microseconds by the others
            self._state = self._owner._load(os.pread(self._fd, 65536, 0))
        except BaseException:
            os.close(self._fd)
            raise
        return self._state

    def __exit__(self, kind: object, error: object, trace: object) -> None:
        try:
            if kind is None:
                data = json.dumps(self._state).encode()
                os.pwrite(self._fd, data, 0)
                os.ftruncate(self._fd, len(data))
        finally:
            # Unlock before closing: a child forked meanwhile shares the descriptor,
            # and its copy would otherwise hold the lock for the host until it exits.
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)


_live: weakref.WeakSet[HostLimit] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for limit in list(_live):
        limit._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
