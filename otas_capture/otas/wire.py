"""A lean HTTP/1.1 client for Brain's log calls: one buffer out, a strict parser in.

Brain takes one event per call, so the sender makes one HTTP request per event and its
CPU per call is the CPU per event. ``http.client`` spends most of a keep-alive POST on
machinery the log call does not need: it formats every header line anew, writes the
headers and the body in separate calls, and parses the answer's headers through
``email.parser``. Measured on this project's benchmark machine (``benchmarks/transport.py``)
that is about 120 µs of CPU per call, against a few tens of microseconds for the same
bytes written here.

What this module does instead:

* The request line and the headers that never change (Host, User-Agent, Content-Type,
  the SDK key) are formatted once, when the connection object is made. Per call only the
  session token and ``Content-Length`` are added, and the request goes out with one
  ``sendall`` of one buffer.
* :class:`ResponseParser` reads the answer strictly: the status line, header lines
  (no obsolete line folding, no bare LF), a body delimited by ``Content-Length``,
  chunked transfer coding, or the connection closing. ``Connection: close`` and
  HTTP/1.0 answers close the connection afterwards; ``Retry-After`` is kept. Anything
  else malformed raises :class:`ProtocolError` (an ``OSError``, as a broken connection
  would be) and the connection is dropped, never reused in an unknown state.
* The usual answer (it came whole in the first receive, its body delimited by
  ``Content-Length``) is read in one pass without a parser object, and the header
  lines (and whole heads but for their ``Date``) that passed the checks are
  remembered, so that a server's same lines are not checked again on every call: the
  head was most of the CPU of a call. Anything else gets the whole of the checks.
* Every call has a deadline: each blocking send and receive gets what is left of it, so
  a server that trickles bytes cannot stretch one call beyond ``timeout``. On 64-bit
  Linux the kernel enforces those bounds on a blocking plain-TCP socket, which spares
  the ``poll`` Python runs before each send and receive of a socket with a timeout.

:class:`KeepAliveConnection` is the blocking form, one per sender thread;
:class:`BrainConnection` wraps it in the interface of the sender's own
``BrainConnection``, so that the sender can switch with one line. HTTPS works through
the standard library's ``ssl`` (the same default context ``http.client`` would use).
:class:`Multiplexer` keeps several non-blocking connections in flight from a single
thread with :mod:`selectors`, so that ``concurrency`` calls can wait on a slow Brain
without ``concurrency`` threads taking turns at the interpreter lock; it speaks plain
HTTP only, so an ``https`` Brain URL uses :class:`KeepAliveConnection` threads instead
(:func:`multiplexable` says which).
"""

from __future__ import annotations

import _socket
import errno
import math
import os
import selectors
import socket
import struct
import sys
from collections import deque
from collections.abc import Iterable, Mapping
from functools import lru_cache
from time import perf_counter
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from ..contract import SDK_LOG_PATH, SESSION_TOKEN_HEADER

if TYPE_CHECKING:
    import ssl

__all__ = [
    "BrainConnection",
    "ClosedEarly",
    "KeepAliveConnection",
    "Multiplexer",
    "ProtocolError",
    "Response",
    "ResponseParser",
    "build_request_head",
    "multiplexable",
]

MAX_HEAD_BYTES = 64 * 1024  # status line and headers of one answer
MAX_BODY_BYTES = 1024 * 1024  # Brain's answers are a few dozen bytes
_RECV = 65536
_CRLF = b"\r\n"
_T = TypeVar("_T")
# Plain TCP on 64-bit Linux: KeepAliveConnection's socket blocks and the kernel bounds
# each send and receive (SO_SNDTIMEO, SO_RCVTIMEO, a struct timeval of two longs). A
# socket with a Python timeout polls before every send and every receive: two more
# system calls and two more hand-offs of the interpreter lock per call, about a quarter
# of the CPU of a whole call on loopback. Elsewhere, and for TLS, Python's timeouts.
_KERNEL_TIMEOUTS = sys.platform.startswith("linux") and struct.calcsize("l") == 8
# Setting the kernel's bound is a system call, so a bound already set is kept while it
# lies between half of what is left of the call and that plus this slack (the kernel
# rounds it to its clock tick anyway). A bound that ends before the deadline only
# costs one more wait with a new bound.
_TIMEOUT_SLACK = 0.001
# connect_ex() answers of a non-blocking connect that is under way (or done).
_CONNECTING = frozenset(
    {0, errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN, getattr(errno, "WSAEWOULDBLOCK", -1)}
)


class ProtocolError(OSError):
    """The server's answer is not HTTP/1.1 as this client accepts it.

    An ``OSError`` so that callers handle it like a broken connection: the call may be
    retried on a new connection, and this one is never reused.
    """


class ClosedEarly(ProtocolError):
    """The server closed the connection before sending any byte of an answer."""


class Response:
    """One answer: status, headers (names lower-cased; repeats joined by ``", "``), body."""

    __slots__ = ("status", "reason", "headers", "body", "will_close")

    def __init__(
        self, status: int, reason: str, headers: dict[str, str], body: bytes, will_close: bool
    ) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body
        self.will_close = will_close

    @property
    def retry_after(self) -> str | None:
        return self.headers.get("retry-after")

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason!r} {len(self.body)} bytes>"


def _check_field(value: str, what: str) -> bytes:
    """A header value as bytes; refuses what would split or corrupt the request."""
    try:
        data = value.encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError(f"{what} is not latin-1 text") from None
    if b"\r" in data or b"\n" in data or b"\0" in data:
        raise ValueError(f"{what} contains a line break or NUL")
    return data


def build_request_head(
    method: str, path: str, host: str, headers: Iterable[tuple[str, str]]
) -> bytes:
    """The request line and fixed header lines, each ending in CRLF (no blank line yet)."""
    lines = [f"{method} {path} HTTP/1.1".encode("ascii"), b"Host: " + _check_field(host, "Host")]
    for name, value in headers:
        if not name or any(c in name for c in " \t\r\n:\0"):
            raise ValueError(f"bad header name {name!r}")
        lines.append(name.encode("ascii") + b": " + _check_field(value, f"header {name}"))
    return _CRLF.join(lines) + _CRLF


class ResponseParser:
    """Incremental, strict parser of one HTTP/1.x answer.

    ``feed`` bytes as they arrive until it returns True; call ``eof`` when the peer
    closes first (which completes a close-delimited body and is an error otherwise).
    ``response`` is then the answer and ``leftover`` any bytes past its end.
    """

    __slots__ = (
        "_buffer",
        "_head_request",
        "_state",
        "_status",
        "_reason",
        "_headers",
        "_will_close",
        "_remaining",
        "_body",
        "_max_body",
        "response",
        "leftover",
    )

    def __init__(self, head_request: bool = False, max_body: int = MAX_BODY_BYTES) -> None:
        self._buffer = b""
        self._head_request = head_request
        self._state = "head"  # head, length, chunk_size, chunk_data, chunk_crlf, trailer, close
        self._status = 0
        self._reason = ""
        self._headers: dict[str, str] = {}
        self._will_close = False
        self._remaining = 0
        self._body: list[bytes] = []
        self._max_body = max_body
        self.response: Response | None = None
        self.leftover = b""

    def feed(self, data: bytes) -> bool:
        """Take more bytes; True once the answer is complete."""
        if self.response is not None:
            self.leftover += data
            return True
        buffer = self._buffer + data if self._buffer else data
        self._buffer = b""
        while True:
            state = self._state
            if state == "head":
                end = buffer.find(b"\r\n\r\n")
                if end < 0:
                    if len(buffer) > MAX_HEAD_BYTES:
                        raise ProtocolError("response headers too long")
                    self._buffer = buffer
                    return False
                if end > MAX_HEAD_BYTES:
                    raise ProtocolError("response headers too long")
                head, buffer = buffer[:end], buffer[end + 4 :]
                if self._parse_head(head):
                    continue  # an informational (1xx) answer: the real one follows
                if self._state == "done":
                    return self._finish(buffer)
            elif state == "length":
                if len(buffer) < self._remaining:
                    self._buffer = buffer
                    return False
                self._body.append(buffer[: self._remaining])
                return self._finish(buffer[self._remaining :])
            elif state == "chunk_size":
                end = buffer.find(_CRLF)
                if end < 0:
                    if len(buffer) > 4096:
                        raise ProtocolError("chunk size line too long")
                    self._buffer = buffer
                    return False
                line, buffer = buffer[:end], buffer[end + 2 :]
                size_text = line.split(b";", 1)[0].strip(b" \t")
                if not size_text or size_text.strip(b"0123456789abcdefABCDEF"):
                    raise ProtocolError("bad chunk size")
                size = int(size_text, 16)
                if size == 0:
                    self._state = "trailer"
                else:
                    self._grow(size)
                    self._remaining = size
                    self._state = "chunk_data"
            elif state == "chunk_data":
                if len(buffer) < self._remaining:
                    self._buffer = buffer
                    return False
                self._body.append(buffer[: self._remaining])
                buffer = buffer[self._remaining :]
                self._state = "chunk_crlf"
            elif state == "chunk_crlf":
                if len(buffer) < 2:
                    self._buffer = buffer
                    return False
                if buffer[:2] != _CRLF:
                    raise ProtocolError("chunk not followed by CRLF")
                buffer = buffer[2:]
                self._state = "chunk_size"
            elif state == "trailer":
                end = buffer.find(_CRLF)
                if end < 0:
                    if len(buffer) > MAX_HEAD_BYTES:
                        raise ProtocolError("trailer too long")
                    self._buffer = buffer
                    return False
                line, buffer = buffer[:end], buffer[end + 2 :]
                if not line:
                    return self._finish(buffer)
                # Trailer fields carry nothing the sender needs; they are skipped.
            else:  # close-delimited: everything until the peer closes
                if buffer:
                    self._grow(len(buffer))
                    self._body.append(buffer)
                return False

    def eof(self) -> bool:
        """The peer closed the connection; True if that completed the answer."""
        if self.response is not None:
            return True
        if self._state == "close":
            return self._finish(b"")
        if self._state == "head" and not self._buffer:
            raise ClosedEarly("connection closed before any answer")
        raise ProtocolError("connection closed in the middle of an answer")

    @property
    def started(self) -> bool:
        """Whether any byte of the answer has arrived."""
        return bool(self._buffer) or self._state != "head" or self.response is not None

    def _grow(self, size: int) -> None:
        if sum(map(len, self._body)) + size > self._max_body:
            raise ProtocolError("response body too large")

    def _parse_head(self, head: bytes) -> bool:
        """Parse status line and headers; True for a 1xx answer to skip."""
        parsed = _read_head(head, self._head_request, self._max_body)
        if parsed is None:
            return True
        (
            self._status,
            self._reason,
            self._headers,
            self._will_close,
            self._state,
            self._remaining,
        ) = parsed
        return False

    def _finish(self, rest: bytes) -> bool:
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        # Bytes after the answer were never asked for (no pipelining here): the
        # connection's state is unknown, so it is not reused.
        will_close = self._will_close or bool(rest)
        self.response = Response(self._status, self._reason, self._headers, body, will_close)
        self.leftover = rest
        self._state = "done"
        return True


# What a head says: status, reason, headers, whether the connection closes after the
# answer, how the body is delimited (a ResponseParser state) and its length if known.
_Head = tuple[int, str, dict[str, str], bool, str, int]


def _read_head(head: bytes, head_request: bool, max_body: int) -> _Head | None:
    """What ``head`` (without its blank line) says; None for a 1xx answer to skip."""
    (status, reason, keep_alive_default), headers = _head_fields(head)
    if status < 200:
        if status == 101:
            raise ProtocolError("unexpected protocol switch")
        return None
    connection = headers.get("connection")
    if connection is None:
        will_close = not keep_alive_default
    else:
        will_close = _closes(connection, keep_alive_default)
    if head_request or status in (204, 304):
        return status, reason, headers, will_close, "done", 0
    encoding = headers.get("transfer-encoding")
    if encoding is not None:
        codings = [c.strip().lower() for c in encoding.split(",")]
        if codings[-1] != "chunked":
            # The body then ends when the connection does (RFC 9112, 6.3).
            return status, reason, headers, True, "close", 0
        return status, reason, headers, will_close, "chunk_size", 0
    length = headers.get("content-length")
    if length is not None:
        size = _content_length(length)
        if size > max_body:
            raise ProtocolError("response body too large")
        return status, reason, headers, will_close, "length", size
    return status, reason, headers, True, "close", 0


# Both depend on one header value only, and Brain's are the same on every call.
@lru_cache(maxsize=64)
def _closes(connection: str, keep_alive_default: bool) -> bool:
    """Whether a ``Connection`` header value says the connection closes."""
    tokens = {token.strip() for token in connection.lower().split(",")}
    return "close" in tokens or (not keep_alive_default and "keep-alive" not in tokens)


@lru_cache(maxsize=64)
def _content_length(value: str) -> int:
    if "," in value:  # repeated: acceptable only if every copy agrees
        values = {v.strip() for v in value.split(",")}
        if len(values) != 1:
            raise ProtocolError("conflicting Content-Length")
        value = values.pop()
    else:
        value = value.strip()
    if not value.isdigit() or not value.isascii():
        raise ProtocolError("bad Content-Length")
    return int(value)


# Parsing a head is most of the CPU of a call (about 80 000 of the 95 000 instructions
# of one with Brain's dozen header lines, under valgrind), nearly all of it per line.
# Yet Brain sends the same lines on every call but Date's, and what a line parses to
# depends on nothing but the line: so each line that passed the checks is remembered
# with what it parsed to, the lines of a head are looked up all at once (map, in C),
# and only the lines not found go through the checks, one by one, as before.
# The memory is bounded: at most _REMEMBERED lines, each at most _REMEMBERED_CHARS long
# (Date's, new every second, fill it; it is then emptied and starts again).
_REMEMBERED = 256
_REMEMBERED_CHARS = 256
_STATUS_LINES: dict[bytes, tuple[int, str, bool]] = {}  # status, reason, keep-alive default
_FIELD_LINES: dict[bytes, tuple[str, str]] = {}  # lower-cased name, value


def _remember(memory: dict[bytes, _T], line: bytes, parsed: _T) -> None:
    if len(line) <= _REMEMBERED_CHARS:
        if len(memory) >= _REMEMBERED:
            memory.clear()
        memory[line] = parsed


# Every HTTP/1.1 server with a clock sends Date (RFC 9110, 6.6.1), which changes every
# second; the rest of a server's head is usually the same on every call. So a whole head
# that passed is remembered as it reads without its Date line (and where that line
# was), with what it parsed to; a head that reads the same but for Date takes that,
# with its own date, in a few calls instead of a lookup per line. Only a head whose
# Date line is its only "date" field is remembered, so that the date is its own
# value, not joined with another's. Bounded as the lines are: _REMEMBERED_HEADS heads
# of at most _REMEMBERED_HEAD_BYTES.
_REMEMBERED_HEADS = 64
_REMEMBERED_HEAD_BYTES = 4096
_HEADS: dict[tuple[int, bytes], tuple[tuple[int, str, bool], dict[str, str]]] = {}
_DATE = b"\r\nDate:"


def _head_fields(head: bytes) -> tuple[tuple[int, str, bool], dict[str, str]]:
    """(status, reason, keep-alive default) and headers of a head; raises ProtocolError."""
    at = head.find(_DATE)
    if at >= 0:
        end = head.find(b"\r\n", at + 2)
        if end < 0:
            end = len(head)
        key = (at, head[:at] + head[end:])
        known = _HEADS.get(key)
        date = head[at + 7 : end].decode("latin-1").strip(" \t")
        # The rest of the head passed every check; the Date line is a well-formed
        # header line (its name is "Date"), and a bare LF is the one thing it could
        # hold that the checks refuse.
        if known is not None and "\n" not in date:
            first, headers = known
            headers = headers.copy()  # each answer has its own
            headers["date"] = date
            return first, headers
        first, headers = _line_fields(head)
        if len(head) <= _REMEMBERED_HEAD_BYTES and headers.get("date") == date:
            if len(_HEADS) >= _REMEMBERED_HEADS:
                _HEADS.clear()
            _HEADS[key] = (first, headers.copy())
        return first, headers
    return _line_fields(head)


def _line_fields(head: bytes) -> tuple[tuple[int, str, bool], dict[str, str]]:
    """What _head_fields returns, line by line."""
    lines = head.split(b"\r\n")
    first = _STATUS_LINES.get(lines[0])
    # Any: once checked, no item is None (a cast would cost a Python call per head).
    fields: list[Any] = list(map(_FIELD_LINES.get, lines[1:]))
    if first is None or None in fields:
        first = _check_lines(head, lines, first, fields)
    headers: dict[str, str] = dict(fields)
    if len(headers) != len(fields):  # a repeated name: its values are joined
        headers = {}
        for key, value in fields:
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return first, headers


def _check_lines(
    head: bytes,
    lines: list[bytes],
    first: tuple[int, str, bool] | None,
    fields: list[tuple[str, str] | None],
) -> tuple[int, str, bool]:
    """Check the lines of a head not remembered (None) and fill ``fields`` in.

    The checks run in the order they always have, so the first to fail is the same;
    a remembered line passed them all. Returns the status line's (status, reason,
    keep-alive default). What passed is remembered once the whole head has passed.
    """
    # The lines were split at each CRLF: any other LF is a bare one.
    if head.count(b"\n") != len(lines) - 1:
        raise ProtocolError("bare LF in response head")
    new: list[tuple[bytes, tuple[str, str]]] = []
    # Each line is decoded as latin-1, which maps each byte to one character: the
    # checks see exactly the bytes, and str's lower() and strip() do what they did.
    if first is None:
        version, _, rest = lines[0].decode("latin-1").partition(" ")
        if version == "HTTP/1.1":
            keep_alive_default = True
        elif version == "HTTP/1.0":
            keep_alive_default = False
        else:
            raise ProtocolError("not an HTTP/1.x status line")
        code, _, reason = rest.partition(" ")
        # isascii: str.isdigit also takes latin-1's superscript digits.
        if len(code) != 3 or not code.isascii() or not code.isdigit():
            raise ProtocolError("bad status code")
        status = int(code)
        if status < 100:
            raise ProtocolError("bad status code")
        first = (status, reason, keep_alive_default)
        remember_status = True
    else:
        remember_status = False
    index = -1
    for _ in range(fields.count(None)):  # the lines not remembered, in order
        index = fields.index(None, index + 1)
        line = lines[index + 1]
        name, colon, value = line.decode("latin-1").partition(":")
        # No name, whitespace around it (obsolete line folding starts a line with
        # it), or no colon at all: the header line is malformed.
        if not colon or not name or name[0] in " \t" or name[-1] in " \t":
            raise ProtocolError("malformed header line")
        fields[index] = field = (name.lower(), value.strip(" \t"))
        new.append((line, field))
    if remember_status:
        _remember(_STATUS_LINES, lines[0], first)
    for line, field in new:
        _remember(_FIELD_LINES, line, field)
    return first


def _whole_answer(data: bytes) -> Response | None:
    """The answer, if ``data`` (a first receive) holds all of a usual one; else None.

    Usual: a final answer (no 1xx before it) whose body is delimited by
    ``Content-Length`` or absent (204, 304). That is nearly every answer from Brain,
    and it is read here in one pass, without the general parser's object and states.
    For anything else None says that the general parser must read ``data`` instead;
    a malformed head raises what the general parser would (the same checks run).
    """
    end = data.find(b"\r\n\r\n")
    if end < 0 or end > MAX_HEAD_BYTES:
        return None
    head = _read_head(data[:end], False, MAX_BODY_BYTES)
    if head is None:
        return None
    status, reason, headers, will_close, state, length = head
    start = end + 4
    if state == "length":
        stop = start + length
        if len(data) < stop:
            return None
    elif state == "done":
        stop = start
    else:
        return None
    # Bytes after the answer were never asked for (no pipelining here): the
    # connection's state is unknown, so it is not reused.
    return Response(status, reason, headers, data[start:stop], will_close or len(data) > stop)


def _remaining(deadline: float) -> float:
    left = deadline - perf_counter()
    if left <= 0:
        raise socket.timeout("timed out")
    return left


class _Endpoint:
    """Where the log calls go, and the fixed part of every request to it."""

    def __init__(self, url: str, path: str, headers: Mapping[str, str]) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.tls = parts.scheme == "https"
        self.host = parts.hostname or "localhost"
        self.port = parts.port or (443 if self.tls else 80)
        default_port = 443 if self.tls else 80
        host_header = f"[{self.host}]" if ":" in self.host else self.host
        if self.port != default_port:
            host_header += f":{self.port}"
        self.path = parts.path.rstrip("/") + path
        self.head = build_request_head("POST", self.path, host_header, headers.items())


class KeepAliveConnection:
    """One blocking keep-alive connection, owned by one thread.

    Parameters:
        url: the server's base URL (``http://`` or ``https://``).
        path: the path of the calls, appended to the URL's own path.
        headers: headers sent with every call, formatted once here.
        timeout: seconds one call may take in all (connect, send, answer).
        ssl_context: for ``https``; the default is ``ssl.create_default_context()``.
        connect_timeout: at most this many seconds for the TCP handshake (within the
            call's deadline); None: only the deadline.
    """

    def __init__(
        self,
        url: str,
        path: str,
        headers: Mapping[str, str],
        timeout: float,
        ssl_context: ssl.SSLContext | None = None,
        connect_timeout: float | None = None,
    ) -> None:
        self._endpoint = _Endpoint(url, path, headers)
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._ssl_context = ssl_context
        self._sock: socket.socket | None = None
        # The last call's own headers, as a tuple of (name, value) pairs, and their lines:
        # the sender's differ only when the session token does, which is seldom.
        self._extra: tuple[tuple[str, str], ...] | None = None
        self._extra_lines = b""
        # The kernel's bound on each send and receive of this socket, when the kernel
        # bounds them (see _KERNEL_TIMEOUTS); None: Python's own timeout does.
        self._kernel_timeout: float | None = None
        # The general parser of the call's answer, when the answer needed it (so
        # whether any of it had arrived when the call failed).
        self._parser: ResponseParser | None = None
        self.sent = False

    @property
    def path(self) -> str:
        return self._endpoint.path

    def post(
        self,
        body: bytes,
        headers: Iterable[tuple[str, str]] = (),
        timeout: float | None = None,
    ) -> Response:
        """POST ``body`` with ``headers`` added to the fixed ones; return the answer.

        ``timeout`` replaces the connection's own for this call. Raises ``OSError``
        (``socket.timeout`` past the deadline, :class:`ProtocolError` for a malformed
        answer) or ``ValueError`` for a header value that cannot be sent. After a call,
        :attr:`sent` says whether the whole request had been written (so whether the
        server may have acted on it, when the call failed).
        """
        self.sent = False
        # A value comparison: a list, a generator or another iterable is never equal to
        # the tuple kept, so only the same pairs again reuse the checked lines.
        if headers != self._extra:
            pairs = tuple((name, value) for name, value in headers)
            self._extra_lines = _header_lines(pairs)  # ValueError: nothing is kept
            self._extra = pairs
        request = _join_request(self._endpoint.head, self._extra_lines, body)
        deadline = perf_counter() + (self._timeout if timeout is None else timeout)
        while True:
            fresh = self._sock is None
            self._parser = None
            try:
                sock = self._sock if self._sock is not None else self._connect(deadline)
                self._sock = sock
                self._send(sock, request, deadline)
                self.sent = True
                response = self._read(sock, deadline)
            except OSError as exc:
                self.close()
                parser = self._parser
                if fresh or (parser is not None and parser.started) or not _stale(exc):
                    raise
                self.sent = False
                # A reused connection the server had closed while idle: the request
                # never reached the app, so one try on a new connection is safe (the
                # usual keep-alive race, handled the same way by urllib3).
                continue
            except BaseException:
                self.close()
                raise
            if response.will_close:
                self.close()
            return response

    def _bound(self, sock: socket.socket, seconds: float) -> None:
        """Let the next blocking send or receive take at most ``seconds``."""
        kernel = self._kernel_timeout
        if kernel is None:
            sock.settimeout(seconds)
        elif not seconds / 2 <= kernel <= seconds + _TIMEOUT_SLACK:
            # Rounded up to the microsecond: a zero timeval would mean no bound at all.
            micros = max(1, math.ceil(seconds * 1e6))
            value = struct.pack("@ll", *divmod(micros, 1_000_000))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
            self._kernel_timeout = seconds

    def _send(self, sock: socket.socket, request: bytes, deadline: float) -> None:
        self._bound(sock, _remaining(deadline))
        if self._kernel_timeout is None:
            sock.sendall(request)
            return
        # Not sendall: it would give each partial send the kernel's whole bound again.
        sent = 0
        while True:
            try:
                sent += sock.send(memoryview(request)[sent:] if sent else request)
            except BlockingIOError:  # the kernel's bound ran out, nothing was sent
                pass
            else:
                if sent == len(request):
                    return
            # The server is not reading (its buffer is full): wait on, to the deadline.
            self._bound(sock, _remaining(deadline))

    def _read(self, sock: socket.socket, deadline: float) -> Response:
        data = self._receive(sock, deadline)
        if data:
            response = _whole_answer(data)
            if response is not None:
                return response
        # Anything else (an answer in pieces, 1xx, chunked, close-delimited, a close
        # before any answer) goes through the general parser, from the first byte.
        parser = self._parser = ResponseParser()
        while True:
            if not data:
                parser.eof()
                break
            if parser.feed(data):
                break
            self._bound(sock, _remaining(deadline))
            data = self._receive(sock, deadline)
        assert parser.response is not None
        return parser.response

    def _receive(self, sock: socket.socket, deadline: float) -> bytes:
        while True:
            try:
                return sock.recv(_RECV)
            except BlockingIOError:  # the kernel's bound ran out: wait on, to the deadline
                self._bound(sock, _remaining(deadline))

    def _connect(self, deadline: float) -> socket.socket:
        endpoint = self._endpoint
        limit = _remaining(deadline)
        if self._connect_timeout is not None:
            limit = min(limit, self._connect_timeout)
        sock = socket.create_connection((endpoint.host, endpoint.port), limit)
        self._kernel_timeout = None
        try:
            # One sendall per call, but a large body still crosses several segments.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # Only the standard library's own socket: a green one (gevent, eventlet)
            # waits in its event loop, where only its own timeout ends the wait.
            if _KERNEL_TIMEOUTS and not endpoint.tls and isinstance(sock, _socket.socket):
                sock.settimeout(None)  # blocking from here on; _bound sets the kernel's
                self._kernel_timeout = -1.0  # no bound set yet: _bound sets one first
            if endpoint.tls:
                import ssl  # only for https: it is slow to import

                context = self._ssl_context or ssl.create_default_context()
                sock.settimeout(_remaining(deadline))
                sock = context.wrap_socket(sock, server_hostname=endpoint.host)
        except BaseException:
            sock.close()
            raise
        return sock

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None


def _stale(exc: OSError) -> bool:
    """Whether ``exc`` is how a connection the server closed while idle fails."""
    return isinstance(exc, (ConnectionResetError, BrokenPipeError, ClosedEarly))


def _header_lines(headers: Iterable[tuple[str, str]]) -> bytes:
    lines = [
        b"%s: %s\r\n" % (name.encode("ascii"), _check_field(value, f"header {name}"))
        for name, value in headers
    ]
    return b"".join(lines)


def _request_bytes(head: bytes, body: bytes, headers: Iterable[tuple[str, str]]) -> bytes:
    return _join_request(head, _header_lines(headers), body)


def _join_request(head: bytes, header_lines: bytes, body: bytes) -> bytes:
    return b"".join((head, header_lines, b"Content-Length: %d\r\n\r\n" % len(body), body))


def multiplexable(url: str) -> bool:
    """Whether :class:`Multiplexer` can serve ``url`` (plain HTTP only)."""
    return urlsplit(url).scheme == "http"


class _Slot:
    """One connection of a Multiplexer and the call it carries."""

    __slots__ = ("sock", "out", "parser", "tag", "request", "deadline", "reused", "events")

    def __init__(self) -> None:
        self.sock: socket.socket | None = None
        self.out = memoryview(b"")
        self.parser = ResponseParser()
        self.tag: Any = None
        self.request = b""
        self.deadline = 0.0
        self.reused = False
        self.events = 0  # what the selector watches for; 0 when not registered


class Multiplexer:
    """Up to ``connections`` keep-alive calls in flight, driven by one thread.

    ``submit(tag, body, headers)`` starts a call on a free connection (``free`` says how
    many there are); ``poll(timeout)`` waits for I/O and returns the calls that ended
    as ``(tag, Response | OSError)`` pairs. ``wake()``, from any thread, makes a waiting
    ``poll`` return early (for example when new work is queued). Not thread-safe
    otherwise: one thread submits and polls.

    Connections stay registered for reading between calls, so a call on a kept-alive
    connection costs one ``send``, one wait and one ``recv``, with no selector changes;
    and a connection the server closes while idle is noticed and dropped at once.
    """

    def __init__(
        self, url: str, path: str, headers: Mapping[str, str], timeout: float, connections: int
    ) -> None:
        if not multiplexable(url):
            raise ValueError("Multiplexer speaks plain HTTP only; use KeepAliveConnection")
        if connections < 1:
            raise ValueError("connections must be at least 1")
        self._endpoint = _Endpoint(url, path, headers)
        self._timeout = timeout
        self._selector = selectors.DefaultSelector()
        self._slots = [_Slot() for _ in range(connections)]
        self._idle: deque[_Slot] = deque(self._slots)
        self._busy: set[_Slot] = set()
        self._done: list[tuple[Any, Response | OSError]] = []
        self._waker_r, self._waker_w = socket.socketpair()
        self._waker_r.setblocking(False)
        self._waker_w.setblocking(False)
        self._selector.register(self._waker_r, selectors.EVENT_READ, None)

    @property
    def free(self) -> int:
        return len(self._idle)

    @property
    def in_flight(self) -> int:
        return len(self._busy)

    def wake(self) -> None:
        """Make a ``poll`` waiting in another thread return now."""
        try:
            self._waker_w.send(b"\0")
        except OSError:
            pass  # the pipe is full (already awake), or closed

    def submit(self, tag: Any, body: bytes, headers: Iterable[tuple[str, str]] = ()) -> None:
        """Start one call; raises ValueError for an unsendable header (nothing is sent).

        Its outcome comes out of a later ``poll``. Needs a free connection (``free``).
        """
        if not self._idle:
            raise RuntimeError("no free connection: wait for poll() to end a call")
        request = _request_bytes(self._endpoint.head, body, headers)
        slot = self._idle.pop()  # the most recently used: likeliest still open
        slot.tag = tag
        slot.request = request
        slot.deadline = perf_counter() + self._timeout
        self._busy.add(slot)
        self._start(slot)

    def _start(self, slot: _Slot) -> None:
        slot.parser = ResponseParser()
        slot.out = memoryview(slot.request)
        if slot.sock is not None:
            slot.reused = True
            self._write(slot)
            return
        slot.reused = False
        try:
            family, address = self._address()
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError as exc:
            self._fail(slot, exc)
            return
        slot.sock = sock
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        error = sock.connect_ex(address)
        if error not in _CONNECTING:
            self._fail(slot, ConnectionRefusedError(error, os.strerror(error)))
            return
        self._watch(slot, selectors.EVENT_WRITE)  # writable once connected

    def _address(self) -> tuple[socket.AddressFamily, Any]:
        # Resolved per new connection, as socket.create_connection does.
        endpoint = self._endpoint
        info = socket.getaddrinfo(endpoint.host, endpoint.port, type=socket.SOCK_STREAM)
        return info[0][0], info[0][4]

    def _watch(self, slot: _Slot, events: int) -> None:
        if slot.events == events:
            return
        assert slot.sock is not None
        if slot.events:
            self._selector.modify(slot.sock, events, slot)
        else:
            self._selector.register(slot.sock, events, slot)
        slot.events = events

    def poll(self, timeout: float | None) -> list[tuple[Any, Response | OSError]]:
        """Wait up to ``timeout`` s for I/O; return the calls that ended meanwhile."""
        if self._done:
            timeout = 0.0  # a call already ended (refused at once): report it now
        if self._busy:
            nearest = min(slot.deadline for slot in self._busy) - perf_counter()
            timeout = max(0.0, nearest if timeout is None else min(timeout, nearest))
        for key, events in self._selector.select(timeout):
            slot = key.data
            if slot is None:
                self._drain_waker()
            elif slot not in self._busy:
                self._drop(slot)  # an idle connection spoke: closed by the server
            elif events & selectors.EVENT_WRITE:
                self._writable(slot)
            else:
                self._read(slot)
        if self._busy:
            now = perf_counter()
            for slot in [s for s in self._busy if s.deadline <= now]:
                self._fail(slot, socket.timeout("timed out"))
        done, self._done = self._done, []
        return done

    def _drain_waker(self) -> None:
        try:
            while self._waker_r.recv(512):
                pass
        except OSError:
            pass

    def _writable(self, slot: _Slot) -> None:
        assert slot.sock is not None
        if not slot.reused and slot.out.nbytes == len(slot.request):
            error = slot.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if error:
                self._fail(slot, ConnectionRefusedError(error, os.strerror(error)))
                return
        self._write(slot)

    def _write(self, slot: _Slot) -> None:
        sock = slot.sock
        assert sock is not None
        try:
            sent = sock.send(slot.out)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            self._broken(slot, exc)
            return
        slot.out = slot.out[sent:]
        self._watch(slot, selectors.EVENT_WRITE if slot.out.nbytes else selectors.EVENT_READ)

    def _read(self, slot: _Slot) -> None:
        sock = slot.sock
        assert sock is not None
        try:
            data = sock.recv(_RECV)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._broken(slot, exc)
            return
        try:
            complete = slot.parser.eof() if not data else slot.parser.feed(data)
        except ProtocolError as exc:
            self._broken(slot, exc)
            return
        if complete:
            response = slot.parser.response
            assert response is not None
            if response.will_close:
                self._drop(slot)
            self._end(slot, response)

    def _broken(self, slot: _Slot, exc: OSError) -> None:
        stale = slot.reused and not slot.parser.started and _stale(exc)
        self._drop(slot)
        if stale:
            # The server closed the idle connection before our request reached it: one
            # try on a new connection is safe, as in KeepAliveConnection.
            self._start(slot)
            return
        self._end(slot, exc)

    def _fail(self, slot: _Slot, exc: OSError) -> None:
        self._drop(slot)
        self._end(slot, exc)

    def _end(self, slot: _Slot, outcome: Response | OSError) -> None:
        self._done.append((slot.tag, outcome))
        slot.tag = None
        slot.request = b""
        slot.out = memoryview(b"")
        self._busy.discard(slot)
        self._idle.append(slot)

    def _drop(self, slot: _Slot) -> None:
        if slot.sock is not None:
            if slot.events:
                self._selector.unregister(slot.sock)
                slot.events = 0
            slot.sock.close()
            slot.sock = None

    def close(self) -> None:
        """Close every connection; calls in flight are abandoned without an outcome."""
        for slot in self._slots:
            self._drop(slot)
        self._busy.clear()
        self._idle = deque(self._slots)
        self._selector.close()
        self._waker_r.close()
        self._waker_w.close()


class BrainConnection:
    """``KeepAliveConnection`` behind the interface of ``sender.BrainConnection``.

    A drop-in for the sender's http.client connection: same constructor, same
    ``post(body, headers) -> (status, body, Retry-After)``, same ``close()``. The headers
    the sender passes are the same on every call except the session token, so the first
    call's others are formatted once and only the token is added per call.
    """

    def __init__(self, brain_url: str, timeout: float) -> None:
        self._url = brain_url
        self._timeout = timeout
        self._fixed: dict[str, str] | None = None
        self._conn: KeepAliveConnection | None = None
        self.path = _Endpoint(brain_url, SDK_LOG_PATH, {}).path

    def post(self, body: bytes, headers: Mapping[str, str]) -> tuple[int, bytes, str | None]:
        """(status, body, Retry-After) of one POST; raises OSError or ValueError on failure."""
        fixed = {k: v for k, v in headers.items() if k != SESSION_TOKEN_HEADER}
        if self._conn is None or fixed != self._fixed:
            self.close()
            self._conn = KeepAliveConnection(self._url, SDK_LOG_PATH, fixed, self._timeout)
            self._fixed = fixed
        token = headers.get(SESSION_TOKEN_HEADER)
        response = self._conn.post(body, () if token is None else ((SESSION_TOKEN_HEADER, token),))
        return response.status, response.body, response.retry_after

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
