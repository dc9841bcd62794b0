"""The OTAS client: one delivery attempt of one event, and what Brain's answer means.

The delivery worker (:mod:`otas_capture.delivery.worker`) calls :meth:`OtasClient.export` from its
threads. On the first attempt the client checks the session token, learns the project
id from UASAM if it was not configured, and builds the JSON body
(:mod:`otas_capture.event.build`); the body is kept for retries. Then it POSTs the body over
a pooled keep-alive connection and turns Brain's answer into an outcome with
:func:`interpret`, a pure function of (status, parsed body, Retry-After):

===============================================  =========================================
Brain answers                                    outcome
===============================================  =========================================
201                                              sent
401 about the SDK key                            pause for key (Brain also says so while
                                                 UASAM is down, so shipping resumes later)
400, 401 about the session token                 failed, with Brain's reason
429, 502, 503, 504                               retry, server-wide, with Retry-After
500 and other 5xx                                retry, maybe about this event only
other statuses (404 on a wrong URL, ...)         failed, ``http_<status>``
timeout, refused or broken connection            retry, server-wide
===============================================  =========================================

The connection sits behind the small :class:`Transport` interface, so another HTTP
client can replace the default without touching the rules. The default,
:class:`WireTransport`, is :mod:`otas_capture.otas.wire`'s keep-alive connection: the fixed
request headers formatted once, one ``sendall`` per call, a strict answer parser. It
costs about a third of the CPU of an ``http.client`` POST (:class:`HttpTransport`,
kept as the alternative), and the sender shares the interpreter with the application.
``OTAS_TIMEOUT`` is a deadline for the whole call (connect, send, answer), not per
socket operation, so a Brain that trickles its answer cannot hold a call longer;
connecting has its own shorter limit. The one UASAM lookup goes over ``wire`` too, so
importing this module loads neither ``requests`` nor ``http.client``.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import socket
import threading
import time
import uuid
import weakref
from datetime import timezone
from time import perf_counter
from typing import TYPE_CHECKING, Any, Callable, Protocol
from urllib.parse import urlsplit

from .._version import __version__
from ..capture.exchange import Exchange
from ..config import Config
from ..contract import (
    AUTHENTICATE_PATH,
    INVALID_SDK_KEY,
    LOGGER_NAME,
    MISSING_SDK_KEY,
    SDK_KEY_HEADER,
    SDK_LOG_PATH,
    SESSION_TOKEN_HEADER,
)
from ..delivery.outcomes import Attempt, Failed, Outcome, PauseForKey, Retry, Sent
from ..delivery.stats import Stats
from ..event.build import EventBuilder, EventRefused
from . import wire

if TYPE_CHECKING:
    import http.client

logger = logging.getLogger(LOGGER_NAME)

USER_AGENT = f"otas-capture/{__version__}"
CONNECT_TIMEOUT = 3.0  # seconds; a TCP handshake that takes longer is not coming
MAX_RETRY_AFTER = 300.0
# Answers that say the server as a whole is in trouble, not this event.
SERVER_WIDE = frozenset({429, 502, 503, 504})
KEY_REFUSALS = frozenset({INVALID_SDK_KEY, MISSING_SDK_KEY})
# What a prepared event costs beside its body and token: the objects holding them.
_PREPARED_OVERHEAD = 200
_SENT = Sent()  # immutable: one for every delivered event


# -- the rules (pure) ----------------------------------------------------------------


def interpret(status: int, answer: dict[str, Any], retry_after: float | None) -> Outcome:
    """What Brain's answer to one log call means for the event (see the module table)."""
    description = str(answer.get("status_description") or f"http_{status}")
    if status == 201:
        return Sent()
    if status == 401 and description in KEY_REFUSALS:
        return PauseForKey(description)
    if status in (400, 401):
        missing = answer.get("missing_fields")
        return Failed(description, f"missing_fields={missing!r}" if missing else "")
    if status in SERVER_WIDE:
        return Retry(description, server_wide=True, retry_after=retry_after)
    if status >= 500:
        # Brain says event_capture_failed both when its database is down and when this
        # one event cannot be stored; the worker tells them apart by what else succeeds.
        return Retry(description, server_wide=False, retry_after=retry_after)
    hint = " (is OTAS_BRAIN_URL right?)" if status in (404, 405) else ""
    return Failed(f"http_{status}", f"Brain answered HTTP {status}{hint}")


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: delay-seconds or an HTTP date.

    ``now`` is the Unix time to measure a date from (default: the clock). Capped at
    ``MAX_RETRY_AFTER``; a date in the past means now; anything unreadable is None.
    """
    if not value:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        import email.utils  # rarely needed, and slow to import

        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when is None:  # Python 3.9 returns None for some unreadable dates
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def parse_answer(data: bytes) -> dict[str, Any]:
    """Brain's JSON answer as a dict; {} for anything else (an HTML error page)."""
    try:
        answer = json.loads(data)
    except (ValueError, RecursionError):
        return {}
    return answer if isinstance(answer, dict) else {}


# -- the transport --------------------------------------------------------------------


class TransportError(Exception):
    """A call that got no answer. ``timeout``: the deadline passed; ``sent``: the whole
    request had been written first, so the server may have acted on it."""

    def __init__(self, detail: str, *, timeout: bool, sent: bool) -> None:
        super().__init__(detail)
        self.detail = detail
        self.timeout = timeout
        self.sent = sent


class Transport(Protocol):
    """One connection to Brain's SDK log endpoint, used by one thread at a time."""

    def post(
        self, body: bytes, headers: dict[str, str], timeout: float
    ) -> tuple[int, bytes, str | None]:
        """(status, body, Retry-After) of one POST finished within ``timeout`` seconds.

        Raises :class:`TransportError` when there is no answer, ``ValueError`` when a
        header value cannot be sent.
        """
        ...

    def close(self) -> None: ...


class _DeadlineSocket:
    """A socket whose every operation times out at one deadline, the call's."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.deadline = math.inf
        # As socket.socket does: a response still being read keeps the socket open
        # after close(). http.client closes the connection as soon as an answer says
        # it will close (HTTP/1.0, "Connection: close"), before its body is read.
        self._io_refs = 0
        self._closed = False

    def _arm(self) -> None:
        remaining = self.deadline - perf_counter()
        if remaining <= 0:
            raise socket.timeout("deadline passed")
        self._sock.settimeout(remaining)

    def sendall(self, data: Any, *args: Any) -> None:
        self._arm()
        self._sock.sendall(data, *args)

    def recv_into(self, buffer: Any, *args: Any) -> int:
        self._arm()
        return self._sock.recv_into(buffer, *args)

    def makefile(self, mode: str = "rb", *args: Any, **kwargs: Any) -> io.BufferedReader:
        # What socket.makefile does, but reading through this wrapper.
        self._io_refs += 1
        return io.BufferedReader(socket.SocketIO(self, "rb"))  # type: ignore[arg-type]

    def _decref_socketios(self) -> None:
        # Called when a file from makefile() closes.
        if self._io_refs > 0:
            self._io_refs -= 1
        if self._closed and self._io_refs == 0:
            self._sock.close()

    def fileno(self) -> int:
        return self._sock.fileno()

    def close(self) -> None:
        self._closed = True
        if self._io_refs == 0:
            self._sock.close()


class WireTransport:
    """A keep-alive :mod:`otas_capture.otas.wire` connection with a whole-call deadline (the
    default transport).

    The headers the client passes are the same on every call but the session token, so
    the others are formatted into the request head once, on the first call.
    """

    def __init__(self, brain_url: str) -> None:
        self._url = brain_url
        self._fixed: dict[str, str] | None = None
        self._conn: wire.KeepAliveConnection | None = None
        # The last call's headers (a copy) and the token header made of them: the next
        # call usually has the same, and then skips taking them apart again.
        self._headers: dict[str, str] | None = None
        self._token: tuple[tuple[str, str], ...] = ()

    def post(
        self, body: bytes, headers: dict[str, str], timeout: float
    ) -> tuple[int, bytes, str | None]:
        conn = self._conn
        if conn is None or headers != self._headers:
            fixed = {k: v for k, v in headers.items() if k != SESSION_TOKEN_HEADER}
            if conn is None or fixed != self._fixed:
                self.close()
                conn = wire.KeepAliveConnection(
                    self._url, SDK_LOG_PATH, fixed, timeout, connect_timeout=CONNECT_TIMEOUT
                )
                self._conn, self._fixed = conn, fixed
            token = headers.get(SESSION_TOKEN_HEADER)
            self._token = () if token is None else ((SESSION_TOKEN_HEADER, token),)
            self._headers = dict(headers)
        try:
            response = conn.post(body, self._token, timeout)
        except (socket.timeout, TimeoutError):
            raise TransportError("timeout", timeout=True, sent=conn.sent) from None
        except OSError as exc:
            raise TransportError(type(exc).__name__, timeout=False, sent=conn.sent) from None
        return response.status, response.body, response.retry_after

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


class HttpTransport:
    """A keep-alive ``http.client`` connection with a whole-call deadline (the
    alternative to :class:`WireTransport`)."""

    def __init__(self, brain_url: str) -> None:
        import http.client  # only when chosen: it is slow to import

        parts = urlsplit(brain_url)
        self._factory = (
            http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        )
        self._host = parts.hostname or "localhost"
        self._port = parts.port
        self.path = parts.path.rstrip("/") + SDK_LOG_PATH
        self._conn: http.client.HTTPConnection | None = None
        self._sock: _DeadlineSocket | None = None

    def post(
        self, body: bytes, headers: dict[str, str], timeout: float
    ) -> tuple[int, bytes, str | None]:
        import http.client

        deadline = perf_counter() + timeout
        while True:
            fresh = self._conn is None
            sent = False
            try:
                conn, sock = self._connection(deadline)
                sock.deadline = deadline
                conn.request("POST", self.path, body, headers)
                sent = True
                response = conn.getresponse()
                data = response.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
                self.close()
                if fresh:
                    raise TransportError(type(exc).__name__, timeout=False, sent=sent) from None
                # A reused connection the server had already closed while idle: the
                # request never reached the app, so one try on a new connection is safe
                # (the usual keep-alive race, handled the same way by urllib3).
                continue
            except (socket.timeout, TimeoutError):
                self.close()
                raise TransportError("timeout", timeout=True, sent=sent) from None
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                raise TransportError(type(exc).__name__, timeout=False, sent=sent) from None
            except BaseException:
                self.close()
                raise
            if response.will_close:
                self.close()
            return response.status, data, response.getheader("Retry-After")

    def _connection(self, deadline: float) -> tuple[http.client.HTTPConnection, _DeadlineSocket]:
        if self._conn is not None and self._sock is not None:
            return self._conn, self._sock
        remaining = deadline - perf_counter()
        if remaining <= 0:
            raise socket.timeout("deadline passed")
        conn = self._factory(self._host, self._port, timeout=min(CONNECT_TIMEOUT, remaining))
        conn.connect()
        # http.client writes the headers and the body separately; without TCP_NODELAY
        # the body can wait for the server's delayed ACK (~40 ms) on every call.
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock = _DeadlineSocket(conn.sock)
        conn.sock = sock
        self._conn, self._sock = conn, sock
        return conn, sock

    def close(self) -> None:
        conn, self._conn, self._sock = self._conn, None, None
        if conn is not None:
            conn.close()


# -- the client -----------------------------------------------------------------------


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
        transport: makes a connection to ``config.brain_url``; ``WireTransport`` by default.
    """

    def __init__(
        self,
        config: Config,
        stats: Stats,
        transport: Callable[[str], Transport] = WireTransport,
    ) -> None:
        self._config = config
        self._stats = stats
        self._builder = EventBuilder(config)
        # Imported here, not at the top: PyJWT (with the urllib and http.client it pulls
        # in) is the slowest import of the package, and a client is made only when the
        # middleware has a key to ship with.
        from .tokens import TokenChecker

        self._tokens = TokenChecker()
        self._make_transport = transport
        self._project_id = config.project_id
        self._reset()
        _live_clients.add(self)

    def _reset(self) -> None:
        self._pool_lock = threading.Lock()
        self._idle: list[Transport] = []  # connections not in use, kept alive
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
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            SDK_KEY_HEADER: self._config.sdk_key or "",
            SESSION_TOKEN_HEADER: record.token,
        }
        transport = self._take_transport()
        try:
            status, data, retry_after = transport.post(
                record.payload, headers, self._config.timeout
            )
        except TransportError as exc:
            if exc.timeout:
                return Retry("timeout", server_wide=True, maybe_delivered=exc.sent)
            return Retry("connection_error", server_wide=True, detail=exc.detail)
        except ValueError:  # the transport refuses a header value (a token with a newline)
            return Failed("unsendable_token", called=False)
        finally:
            self._return_transport(transport)
        if status == 201:
            # What interpret() makes of every 201, whatever the body says: the usual
            # answer skips decoding Brain's JSON, a noticeable part of a call's CPU.
            return _SENT
        outcome = interpret(status, parse_answer(data), parse_retry_after(retry_after))
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
        with self._pool_lock:
            self._shut = True
            idle, self._idle = self._idle, []
        for transport in idle:
            transport.close()

    def _take_transport(self) -> Transport:
        with self._pool_lock:
            if self._idle:
                return self._idle.pop()
        return self._make_transport(self._config.brain_url)

    def _return_transport(self, transport: Transport) -> None:
        with self._pool_lock:
            if not self._shut:
                self._idle.append(transport)
                return
        transport.close()

    # -- the project id -----------------------------------------------------------------

    def _resolve_project_id(self) -> str | None:
        """Ask UASAM once which project the SDK key belongs to (one thread asks at a time)."""
        asked_at = perf_counter()
        with self._lookup_lock:
            if self._project_id:
                return self._project_id
            if self._lookup_failed_at >= asked_at:
                return None  # another thread just asked and failed: wait out the pause
            found = authenticate(self._config)
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


def authenticate(config: Config) -> uuid.UUID | str:
    """The project UUID for the SDK key, or a sentence saying why UASAM did not give it."""
    fixed = {SDK_KEY_HEADER: config.sdk_key or "", "User-Agent": USER_AGENT}
    try:
        conn = wire.KeepAliveConnection(
            config.uasam_url,
            AUTHENTICATE_PATH,
            fixed,
            config.timeout,
            connect_timeout=min(CONNECT_TIMEOUT, config.timeout),
        )
        try:
            response = conn.post(b"")
        finally:
            conn.close()
    except (OSError, ValueError) as exc:  # ValueError: a URL or key that cannot be sent
        return f"UASAM is unreachable ({type(exc).__name__})"
    answer = parse_answer(response.body)
    if response.status != 200:
        why = answer.get("error") or answer.get("status_description") or "no reason given"
        return f"UASAM answered HTTP {response.status} ({why})"
    try:
        return uuid.UUID(str(answer["response"]["project"]["id"]))
    except (KeyError, TypeError, ValueError):
        return "UASAM's answer has no project id"


_live_clients: weakref.WeakSet[OtasClient] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for client in list(_live_clients):
        client._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
