"""The background sender: queue, batch, deliver, retry, stop.

The request thread calls :meth:`Sender.submit`, which only appends to a bounded queue
under a lock (dropping and counting when it is full); it never touches the network.

Up to ``concurrency`` sender threads, started on the first event so that every worker
process of a forking server gets its own, do the rest. They wait until ``batch_size``
events are queued or the oldest has waited ``flush_interval``, then drain what is there,
each thread over its own keep-alive connection, so that up to ``concurrency`` log calls
are in flight. For each event a thread checks the session token, builds the JSON body
(:mod:`otas_capture.event`) and POSTs it: Brain takes one event per call.

Answers are handled as the OTAS contract says. A 201 is final. A 400, or a 401 about the
session token, cannot succeed on retry: the event fails and the reason is counted and
logged. A 401 about the SDK key pauses all shipping and tries again later, because Brain
also says so while UASAM is merely down. A 500, 429, 502-504, timeout or refused
connection is retried with exponential backoff and jitter (honouring ``Retry-After``) up
to ``max_retries`` times; the server-wide kinds also pause every thread, so an outage is
probed gently instead of burning every queued event's retries at once.

The http.client module is used for the log calls because it costs a fraction of the
CPU per call of ``requests`` (about 0.12 ms per keep-alive POST with its answer, against
about 0.7 ms, measured here), and the sender shares the interpreter with the application.
"""

from __future__ import annotations

import heapq
import http.client
import itertools
import json
import logging
import os
import random
import socket
import threading
import uuid
import weakref
from collections import deque
from time import perf_counter
from typing import Any
from urllib.parse import urlsplit

import requests

from ._version import __version__
from .capture import Exchange
from .config import Config
from .contract import (
    AUTHENTICATE_PATH,
    INVALID_SDK_KEY,
    LOGGER_NAME,
    MISSING_SDK_KEY,
    SDK_KEY_HEADER,
    SDK_LOG_PATH,
    SESSION_TOKEN_HEADER,
)
from .event import EventBuilder
from .stats import Stats
from .tokens import TokenChecker

logger = logging.getLogger(LOGGER_NAME)

FIRST_BACKOFF = 0.5
MAX_BACKOFF = 60.0
MAX_RETRY_AFTER = 300.0
# Answers that say the server as a whole is in trouble, not this event.
_SERVER_WIDE = frozenset({429, 502, 503, 504})
_KEY_REFUSALS = frozenset({INVALID_SDK_KEY, MISSING_SDK_KEY})
USER_AGENT = f"otas-capture/{__version__}"


def backoff(attempt: int, first: float = FIRST_BACKOFF) -> float:
    """Delay before retry number ``attempt`` (1-based): doubling, capped, with jitter."""
    delay: float = min(MAX_BACKOFF, first * 2.0 ** min(attempt - 1, 30))
    return delay * random.uniform(0.5, 1.0)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header given in seconds (dates are ignored)."""
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER) if seconds == seconds else None


class _Item:
    """A queued exchange and its delivery state."""

    __slots__ = ("seq", "exchange", "token", "size", "queued_at", "attempts", "payload", "settled")

    def __init__(self, exchange: Exchange) -> None:
        self.seq = 0
        self.queued_at = exchange.end if exchange.end is not None else perf_counter()
        self.exchange: Exchange | None = exchange
        self.token = exchange.token
        self.size = exchange.approx_size()
        self.attempts = 0
        self.payload: bytes | None = None
        self.settled = False


class BrainConnection:
    """One keep-alive connection to Brain's SDK log endpoint, owned by one thread."""

    def __init__(self, brain_url: str, timeout: float) -> None:
        parts = urlsplit(brain_url)
        self._factory = (
            http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        )
        self._host = parts.hostname or "localhost"
        self._port = parts.port
        self._timeout = timeout
        self.path = parts.path.rstrip("/") + SDK_LOG_PATH
        self._conn: http.client.HTTPConnection | None = None

    def post(self, body: bytes, headers: dict[str, str]) -> tuple[int, bytes, str | None]:
        """(status, body, Retry-After) of one POST; raises OSError/HTTPException on failure."""
        while True:
            fresh = self._conn is None
            try:
                if self._conn is None:
                    self._conn = self._connect()
                self._conn.request("POST", self.path, body, headers)
                response = self._conn.getresponse()
                data = response.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.close()
                if fresh:
                    raise
                # A reused connection the server had already closed while idle: the
                # request never reached the app, so one try on a new connection is safe
                # (the usual keep-alive race, handled the same way by urllib3).
                continue
            except BaseException:
                self.close()
                raise
            if response.will_close:
                self.close()
            return response.status, data, response.getheader("Retry-After")

    def _connect(self) -> http.client.HTTPConnection:
        conn = self._factory(self._host, self._port, timeout=self._timeout)
        conn.connect()
        # http.client writes the headers and the body separately; without TCP_NODELAY
        # the body can wait for the server's delayed ACK (~40 ms) on every call.
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class Sender:
    """Delivers captured exchanges to Brain from background threads.

    Parameters:
        config: the checked settings; ``sdk_key`` must be set.
        stats: where every outcome is counted.
    """

    def __init__(self, config: Config, stats: Stats) -> None:
        self._config = config
        self._stats = stats
        self._builder = EventBuilder(config)
        self._project_id = config.project_id
        self._reset()
        _live_senders.add(self)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)  # wakes sender threads
        self._done = threading.Condition(self._lock)  # wakes flush() callers
        self._queue: deque[_Item] = deque()
        self._retry: list[tuple[float, int, _Item]] = []  # heap by due time
        self._inflight: dict[int, _Item] = {}
        self._pending = 0  # queued + waiting to retry + in flight
        self._pending_bytes = 0
        self._seq = itertools.count(1)
        self._last_seq = 0
        self._drain_upto = 0  # every queued item up to this seq is due now
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._stopping = False
        self._paused_until = 0.0
        self._outage_streak = 0
        self._key_streak = 0
        self._flush_waiters = 0
        self._resolve_lock = threading.Lock()

    def _after_fork(self) -> None:
        # The parent still owns and will deliver what it had queued; the child starts
        # empty, with fresh locks (a parent thread may have held one at fork time).
        self._reset()
        self._stats.reset()

    # -- the request thread's side -------------------------------------------------

    @property
    def pending(self) -> int:
        return self._pending

    def submit(self, exchange: Exchange) -> bool:
        """Queue an exchange for delivery; drop and count it if the queue is full."""
        item = _Item(exchange)
        config = self._config
        with self._lock:
            if self._closed:
                reason = "closed"
            elif self._pending >= config.queue_size:
                reason = "queue_full"
            elif self._pending_bytes + item.size > config.queue_max_bytes:
                reason = "queue_bytes_full"
            else:
                item.seq = self._last_seq = next(self._seq)
                self._queue.append(item)
                self._pending += 1
                self._pending_bytes += item.size
                if not self._threads:
                    self._start_threads()
                if len(self._queue) >= config.batch_size:
                    self._drain_upto = self._last_seq
                    self._work.notify(config.concurrency)
                return True
        self._stats.lost("dropped", reason)
        return False

    def _start_threads(self) -> None:
        for number in range(self._config.concurrency):
            thread = threading.Thread(
                target=self._run, name=f"otas-capture-sender-{number}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    # -- flush and stop --------------------------------------------------------------

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every event submitted before the call is delivered or given up."""
        deadline = perf_counter() + max(timeout, 0.0)
        with self._lock:
            target = self._last_seq
            self._drain_upto = max(self._drain_upto, target)
            self._work.notify_all()
            self._flush_waiters += 1
            try:
                while self._unsettled_upto(target):
                    remaining = deadline - perf_counter()
                    if remaining <= 0:
                        return False
                    self._done.wait(remaining)
                return True
            finally:
                self._flush_waiters -= 1

    def _unsettled_upto(self, target: int) -> bool:
        if self._queue and self._queue[0].seq <= target:
            return True
        return any(item.seq <= target for _, _, item in self._retry) or any(
            seq <= target for seq in self._inflight
        )

    def close(self, timeout: float = 5.0) -> None:
        """Flush for up to ``timeout`` seconds, stop the threads, count what is left as dropped."""
        deadline = perf_counter() + max(timeout, 0.0)
        with self._lock:
            if self._closed:
                return
            self._closed = True  # no new events from here on
        self.flush(timeout)
        with self._lock:
            self._stopping = True
            self._work.notify_all()
            threads = list(self._threads)
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - perf_counter()) + 0.1)
        with self._lock:
            leftovers = list(self._queue) + [item for _, _, item in self._retry]
            leftovers += list(self._inflight.values())
            self._queue.clear()
            self._retry.clear()
        for item in leftovers:
            self._settle(item, "dropped", "shutdown")

    # -- the sender threads -----------------------------------------------------------

    def _run(self) -> None:
        connection = BrainConnection(self._config.brain_url, self._config.timeout)
        tokens = TokenChecker()
        try:
            while True:
                item = self._next_item()
                if item is None:
                    return
                try:
                    self._attempt(connection, tokens, item)
                except Exception:  # a bug here must not kill the thread or lose count
                    self._stats.log_limited(
                        "send_error",
                        logging.ERROR,
                        "otas-capture: unexpected error while sending an event",
                        exc_info=True,
                    )
                    self._settle(item, "failed", "internal_error")
        finally:
            connection.close()

    def _next_item(self) -> _Item | None:
        """Block until an item is due (or the sender stops, then None)."""
        config = self._config
        with self._lock:
            while True:
                if self._stopping:
                    return None
                now = perf_counter()
                if now < self._paused_until:
                    self._work.wait(self._paused_until - now)
                    continue
                if self._retry and self._retry[0][0] <= now:
                    item = heapq.heappop(self._retry)[2]
                    self._inflight[item.seq] = item
                    return item
                queue = self._queue
                if queue:
                    full = len(queue) >= config.batch_size
                    if full or now - queue[0].queued_at >= config.flush_interval:
                        # Drain everything queued now; the other threads help.
                        if self._drain_upto < queue[-1].seq:
                            self._drain_upto = queue[-1].seq
                            self._work.notify(config.concurrency - 1)
                    if queue[0].seq <= self._drain_upto:
                        item = queue.popleft()
                        self._inflight[item.seq] = item
                        return item
                wait = config.flush_interval
                if queue:
                    wait = queue[0].queued_at + config.flush_interval - now
                if self._retry:
                    wait = min(wait, self._retry[0][0] - now)
                self._work.wait(max(wait, 0.001))

    def _attempt(self, connection: BrainConnection, tokens: TokenChecker, item: _Item) -> None:
        if item.payload is None:
            problem = tokens.problem(item.token)
            if problem is not None:
                self._settle(item, "skipped", problem, "Brain refuses this session token")
                return
            project_id = self._project_id or self._resolve_project_id()
            if project_id is None:
                self._hold(item)
                return
            assert item.exchange is not None
            item.payload = self._builder.build(item.exchange, project_id)
            item.exchange = None  # the bodies now live in the payload only
            with self._lock:
                # JSON escaping can make the payload larger than the capture: count
                # what is really held while the event waits for retries.
                if not item.settled:
                    self._pending_bytes += len(item.payload) - item.size
                    item.size = len(item.payload)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            SDK_KEY_HEADER: self._config.sdk_key or "",
            SESSION_TOKEN_HEADER: item.token,
        }
        try:
            status, data, retry_after = connection.post(item.payload, headers)
        except (socket.timeout, TimeoutError):
            self._retry_later(item, "timeout", server_wide=True)
            return
        except (OSError, http.client.HTTPException) as exc:
            self._retry_later(item, "connection_error", server_wide=True, detail=type(exc).__name__)
            return
        except ValueError:  # http.client refuses a header value (a token with a newline)
            self._settle(item, "failed", "unsendable_token")
            return
        self._handle_answer(item, status, data, retry_after)

    def _handle_answer(
        self, item: _Item, status: int, data: bytes, retry_after: str | None
    ) -> None:
        answer = _parse_answer(data)
        description = str(answer.get("status_description") or f"http_{status}")
        if status == 201:
            with self._lock:
                self._outage_streak = 0
                self._key_streak = 0
            self._settle(item, "sent")
        elif status == 401 and description in _KEY_REFUSALS:
            self._key_refused(item, description)
        elif status in (400, 401):
            detail = ""
            if answer.get("missing_fields"):
                detail = f"missing_fields={answer['missing_fields']!r}"
            self._settle(item, "failed", description, detail)
        elif status in _SERVER_WIDE or status >= 500:
            self._retry_later(
                item,
                description,
                server_wide=status != 500,
                retry_after=parse_retry_after(retry_after),
            )
        else:
            hint = " (is OTAS_BRAIN_URL right?)" if status in (404, 405) else ""
            self._settle(item, "failed", f"http_{status}", f"Brain answered HTTP {status}{hint}")

    # -- outcomes ------------------------------------------------------------------------

    def _settle(self, item: _Item, kind: str, reason: str | None = None, detail: str = "") -> None:
        with self._lock:
            if item.settled:
                return
            item.settled = True
        item.exchange = item.payload = None
        # Count and log before flush() can see the item gone, so that whoever flushed
        # finds the outcome in stats() and the log.
        if kind == "sent":
            self._stats.incr("sent")
        else:
            self._stats.lost(kind, reason or kind, detail)
        with self._lock:
            self._inflight.pop(item.seq, None)
            self._pending -= 1
            self._pending_bytes -= item.size
            if self._flush_waiters:
                self._done.notify_all()

    def _retry_later(
        self,
        item: _Item,
        reason: str,
        *,
        server_wide: bool,
        retry_after: float | None = None,
        detail: str = "",
    ) -> None:
        item.attempts += 1
        if item.attempts > self._config.max_retries:
            self._settle(item, "failed", reason, f"gave up after {item.attempts} attempts {detail}")
            return
        first = self._config.retry_backoff
        delay = max(backoff(item.attempts, first), retry_after or 0.0)
        with self._lock:
            now = perf_counter()
            if server_wide:
                self._outage_streak += 1
                pause = max(backoff(self._outage_streak, first), retry_after or 0.0)
                self._paused_until = max(self._paused_until, now + pause)
            self._requeue(item, now + delay)
        self._stats.incr("retried")
        self._stats.log_limited(
            ("retry", reason),
            logging.WARNING,
            "otas-capture: Brain is not accepting events (%s%s); retrying with backoff",
            reason,
            f", {detail}" if detail else "",
        )

    def _key_refused(self, item: _Item, description: str) -> None:
        with self._lock:
            self._key_streak += 1
            pause = backoff(self._key_streak, self._config.retry_backoff)
            now = perf_counter()
            self._paused_until = max(self._paused_until, now + pause)
            self._requeue(item, now + pause)
        self._stats.incr("retried")
        self._stats.log_limited(
            "key_refused",
            logging.ERROR,
            "otas-capture: Brain refused the SDK key (%s): check OTAS_SDK_KEY. Brain also says "
            "this while UASAM is down, so shipping is paused and will be tried again; events "
            "wait in the queue meanwhile",
            description,
        )

    def _hold(self, item: _Item) -> None:
        """Put an item back, due at once, without spending a retry (shipping is paused)."""
        with self._lock:
            self._requeue(item, perf_counter())

    def _requeue(self, item: _Item, due: float) -> None:
        # Called with the lock held.
        if item.settled:
            return
        self._inflight.pop(item.seq, None)
        heapq.heappush(self._retry, (due, item.seq, item))
        self._work.notify()

    # -- the project id -----------------------------------------------------------------

    def _resolve_project_id(self) -> str | None:
        """Ask UASAM once which project the SDK key belongs to; pause shipping if it can't say."""
        with self._resolve_lock:
            if self._project_id:
                return self._project_id
            if perf_counter() < self._paused_until:
                return None  # another thread just failed; wait out the pause
            problem = _authenticate(self._config)
            if isinstance(problem, uuid.UUID):
                self._project_id = str(problem)
                logger.info("otas-capture: shipping events for project %s", self._project_id)
                return self._project_id
            with self._lock:
                self._key_streak += 1
                pause = backoff(self._key_streak, self._config.retry_backoff)
                self._paused_until = max(self._paused_until, perf_counter() + pause)
            self._stats.log_limited(
                "project_id",
                logging.ERROR,
                "otas-capture: cannot learn the project id from UASAM at %s: %s. Set "
                "OTAS_PROJECT_ID, or fix OTAS_SDK_KEY / OTAS_UASAM_URL; trying again in %.1f s",
                self._config.uasam_url,
                problem,
                pause,
            )
            return None


def _authenticate(config: Config) -> Any:
    """The project UUID for the SDK key, or a sentence saying why UASAM did not give it."""
    url = config.uasam_url + AUTHENTICATE_PATH
    try:
        response = requests.post(
            url,
            headers={SDK_KEY_HEADER: config.sdk_key or "", "User-Agent": USER_AGENT},
            timeout=config.timeout,
        )
    except requests.RequestException as exc:
        return f"UASAM is unreachable ({type(exc).__name__})"
    answer = _parse_answer(response.content)
    if response.status_code != 200:
        why = answer.get("error") or answer.get("status_description") or "no reason given"
        return f"UASAM answered HTTP {response.status_code} ({why})"
    try:
        return uuid.UUID(str(answer["response"]["project"]["id"]))
    except (KeyError, TypeError, ValueError):
        return "UASAM's answer has no project id"


def _parse_answer(data: bytes) -> dict[str, Any]:
    try:
        answer = json.loads(data)
    except ValueError:
        return {}
    return answer if isinstance(answer, dict) else {}


_live_senders: weakref.WeakSet[Sender] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for sender in list(_live_senders):
        sender._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
