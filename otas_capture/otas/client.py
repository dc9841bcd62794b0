"""The OTAS client: one delivery attempt of one event.

The delivery worker (:mod:`otas_capture.delivery.worker`) calls :meth:`OtasClient.export` from its
threads. On the first attempt the client checks the session token, learns the project
id from UASAM (:mod:`.uasam`) if it was not configured, and builds the JSON body
(:mod:`otas_capture.event.build`); the body is kept for retries. Then it POSTs the body over
a pooled keep-alive :mod:`.wire` connection (reached as :mod:`.route` says: proxy, TLS
trust) and turns Brain's answer into an outcome with :func:`.answers.interpret`.

A call that got no answer is a server-wide retry: ``timeout`` past ``OTAS_TIMEOUT`` (a
deadline for the whole call: connect, send, answer), ``protocol_error`` for a malformed
answer, ``connection_error`` otherwise. When the request had been written whole before
it failed, Brain may have stored the event: the retry says so (``maybe_delivered``), so
that the worker counts a possible duplicate; the connection never sends it again by
itself.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import uuid
import weakref
from time import perf_counter
from typing import Any

from ..capture.exchange import Exchange
from ..config import Config
from ..contract import LOGGER_NAME, SDK_KEY_HEADER, SDK_LOG_PATH, SESSION_TOKEN_HEADER
from ..delivery.outcomes import Attempt, Failed, Outcome, PauseForKey, Retry, Sent
from ..delivery.stats import Stats
from ..event.build import EventBuilder, EventRefused
from . import wire
from .answers import interpret, parse_answer, parse_retry_after
from .route import Routes
from .uasam import USER_AGENT, authenticate

__all__ = ["OtasClient", "Prepared"]

logger = logging.getLogger(LOGGER_NAME)

# What a prepared event costs beside its body and token: the objects holding them.
_PREPARED_OVERHEAD = 200
_SENT = Sent()  # immutable: one for every delivered event


class Prepared:
    """An event ready to send again: its JSON body and the session token it goes with."""

    __slots__ = ("payload", "token")
    # A spooled record: this mark, the token (latin-1, as HTTP carries it), a newline,
    # the body. A token never holds a newline: it could not be sent as a header.
    _MARK = b"otas-event-1\n"

    def __init__(self, payload: bytes, token: str) -> None:
        self.payload = payload
        self.token = token

    @property
    def size(self) -> int:
        return len(self.payload) + len(self.token) + _PREPARED_OVERHEAD

    def to_bytes(self) -> bytes | None:
        """The record a spool keeps; None if the token cannot travel as a header."""
        try:
            token = self.token.encode("latin-1")
        except UnicodeEncodeError:
            return None
        if b"\n" in token:
            return None
        return self._MARK + token + b"\n" + self.payload

    @classmethod
    def from_bytes(cls, data: bytes) -> Prepared | None:
        """The event :meth:`to_bytes` wrote; None for anything else."""
        if not data.startswith(cls._MARK):
            return None
        token, newline, payload = data[len(cls._MARK) :].partition(b"\n")
        return cls(payload, token.decode("latin-1")) if newline else None


class OtasClient:
    """Delivers one event per :meth:`export` call to Brain; shared by the worker's threads.

    Parameters:
        config: the checked settings; ``sdk_key`` must be set.
        stats: where the client's own troubles are logged (rate-limited).
    """

    def __init__(self, config: Config, stats: Stats) -> None:
        self._config = config
        self._stats = stats
        self._builder = EventBuilder(config)
        # Imported here, not at the top: PyJWT (with the urllib and http.client it pulls
        # in) is the slowest import of the package, and a client is made only when the
        # middleware has a key to ship with.
        from .tokens import TokenChecker

        self._tokens = TokenChecker()
        self._routes = Routes(config)
        self._fixed = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            SDK_KEY_HEADER: config.sdk_key or "",
        }
        self._project_id = config.project_id
        self._reset()
        _live_clients.add(self)

    def _reset(self) -> None:
        self._pool_lock = threading.Lock()
        self._idle: list[wire.KeepAliveConnection] = []  # connections not in use, kept alive
        self._busy: set[wire.KeepAliveConnection] = set()  # in a call now
        self._shut = False
        self._lookup_lock = threading.Lock()
        self._lookup_failed_at = -math.inf

    def _after_fork(self) -> None:
        # The parent's connections are the parent's: drop them without closing.
        self._reset()

    def export(self, record: Exchange | Prepared) -> Attempt[Exchange | Prepared]:
        if isinstance(record, Prepared):
            return Attempt(self._post(record))
        prepared = self._prepare(record)
        if not isinstance(prepared, Prepared):
            return Attempt(prepared)
        # The worker keeps the body for retries, and the exchange is freed.
        return Attempt(self._post(prepared), prepared, prepared.size)

    def _post(self, record: Prepared) -> Outcome:
        conn = self._take_connection()
        try:
            response = conn.post(
                record.payload,
                ((SESSION_TOKEN_HEADER, record.token),),
                answer_timeout=self._config.answer_timeout,
            )
        except wire.UnsendableHeader:  # a token with a newline: nothing was sent
            return Failed("unsendable_token", called=False)
        except OSError as exc:
            return _no_answer(exc, conn.sent)
        finally:
            self._return_connection(conn)
        if response.status == 201:
            # What interpret() makes of every 201, whatever the body says: the usual
            # answer skips decoding Brain's JSON, a noticeable part of a call's CPU.
            return _SENT
        outcome = interpret(
            response.status, parse_answer(response.body), parse_retry_after(response.retry_after)
        )
        if isinstance(outcome, PauseForKey):
            self._stats.log_limited(
                "key_refused",
                logging.ERROR,
                "otas-capture: Brain refused the SDK key (%s): check OTAS_SDK_KEY. Brain also "
                "says this while UASAM is down, so shipping is paused and will be tried again; "
                "events wait in the queue meanwhile",
                outcome.reason,
            )
        return outcome

    def _prepare(self, exchange: Exchange) -> Prepared | Outcome:
        problem = self._tokens.problem(exchange.token)
        if problem is not None:
            return Failed(problem, "Brain refuses this session token", kind="skipped", called=False)
        project_id = self._project_id or self._resolve_project_id()
        if project_id is None:
            return PauseForKey("project_id_unknown", called=False)
        try:
            payload = self._builder.build(exchange, project_id)
        except EventRefused as refused:
            return Failed(refused.reason, kind=refused.kind, called=False)
        return Prepared(payload, exchange.token)

    def encode(self, record: Any) -> bytes | None:
        """``record`` as bytes a spool can keep, without calling anyone (so an exchange
        is only built when the project id is already known); None if it cannot be."""
        if isinstance(record, Exchange):
            if not self._project_id:
                return None
            prepared = self._prepare(record)
            record = prepared if isinstance(prepared, Prepared) else None
        return record.to_bytes() if isinstance(record, Prepared) else None

    def shutdown(self) -> None:
        """Close the idle connections and end the calls still waiting for an answer:
        the worker calls this once its shutdown time is up, and a long answer wait
        (``answer_timeout``) must not outlast it."""
        with self._pool_lock:
            self._shut = True
            idle, self._idle = self._idle, []
            busy = list(self._busy)
        for conn in idle:
            conn.close()
        for conn in busy:
            conn.abort()

    def _take_connection(self) -> wire.KeepAliveConnection:
        with self._pool_lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            config = self._config
            conn = self._routes.connection(
                config.brain_url, SDK_LOG_PATH, self._fixed, config.timeout
            )
        with self._pool_lock:
            self._busy.add(conn)
        return conn

    def _return_connection(self, conn: wire.KeepAliveConnection) -> None:
        with self._pool_lock:
            self._busy.discard(conn)
            if not self._shut:
                self._idle.append(conn)
                return
        conn.close()

    # -- the project id -----------------------------------------------------------------

    def _resolve_project_id(self) -> str | None:
        """Ask UASAM once which project the SDK key belongs to (one thread asks at a time)."""
        asked_at = perf_counter()
        with self._lookup_lock:
            if self._project_id:
                return self._project_id
            if self._lookup_failed_at >= asked_at:
                return None  # another thread just asked and failed: wait out the pause
            found = authenticate(self._config, self._routes)
            if isinstance(found, uuid.UUID):
                self._project_id = str(found)
                logger.info("otas-capture: shipping events for project %s", self._project_id)
                return self._project_id
            self._lookup_failed_at = perf_counter()
        self._stats.log_limited(
            "project_id",
            logging.ERROR,
            "otas-capture: cannot learn the project id from UASAM at %s: %s. Set "
            "OTAS_PROJECT_ID, or fix OTAS_SDK_KEY / OTAS_UASAM_URL; trying again later",
            self._config.uasam_url,
            found,
        )
        return None


def _no_answer(exc: OSError, sent: bool) -> Retry:
    """The retry for a call that got no usable answer (``sent``: written whole first)."""
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return Retry("timeout", server_wide=True, maybe_delivered=sent)
    detail = type(exc).__name__
    if isinstance(exc, (wire.ProtocolError, wire.ProxyError)):
        detail = f"{detail}: {exc}"  # the parser's and proxy's words hold no secret
    reason = "protocol_error" if isinstance(exc, wire.ProtocolError) else "connection_error"
    return Retry(reason, server_wide=True, detail=detail, maybe_delivered=sent)


_live_clients: weakref.WeakSet[OtasClient] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for client in list(_live_clients):
        client._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
