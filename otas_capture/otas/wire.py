"""A lean HTTP/1.1 client for the calls to OTAS: one buffer out, one strict parser in.

Brain takes one event per call, so the sender's CPU per call is its CPU per event.
``http.client`` formats every header line anew, writes headers and body separately and
parses the answer through ``email.parser``; for the same bytes this module spends about
a tenth of that (``benchmarks/wire_call.py``):

* The request line and the headers that never change (Host, User-Agent, Content-Type,
  the SDK key) are formatted once, when the connection object is made. Per call only
  the session token and ``Content-Length`` are added, and the request goes out with one
  ``sendall`` of one buffer.
* :class:`ResponseParser` reads the answer as h11 does (RFC 9110/9112's grammar: token
  header names, values without NUL, CR or LF, at most 20 digits of ``Content-Length``,
  ``chunked`` as the only transfer coding), stricter in places (no obsolete line
  folding, no bare LF), and in time linear in the bytes and chunks it is fed. Anything
  malformed raises :class:`ProtocolError` (an ``OSError``, as a broken connection would
  be) and the connection is dropped, never reused in an unknown state; so is one whose
  answer carried both ``Transfer-Encoding`` and ``Content-Length`` (RFC 9112, 6.3).
* Every call has a deadline: each blocking step gets what is left of it, so a server
  that trickles bytes cannot stretch one call beyond ``timeout``.
* A request is never sent twice. A kept-alive connection is checked before reuse (an
  idle one that has something to read was closed by the server, as urllib3 checks), and
  :attr:`KeepAliveConnection.sent` says whether a failed call had been written whole,
  so that the caller can count it as possibly delivered.

A :class:`Proxy` (:mod:`otas_capture.otas.route` reads it from the environment) is
reached as requests does: plain HTTP in absolute form through it, HTTPS through a
``CONNECT`` tunnel. HTTPS uses the standard library's ``ssl`` with the caller's context.
"""

from __future__ import annotations

import re
import select
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from time import perf_counter
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import ssl

__all__ = [
    "ClosedEarly",
    "KeepAliveConnection",
    "ProtocolError",
    "Proxy",
    "ProxyError",
    "Response",
    "ResponseParser",
    "UnsendableHeader",
    "build_request_head",
]

MAX_HEAD_BYTES = 64 * 1024  # status line and headers of one answer
MAX_BODY_BYTES = 1024 * 1024  # Brain's answers are a few dozen bytes
MAX_LENGTH_DIGITS = 20  # h11's cap: a longer Content-Length is no length (10**20 B)
_MAX_LINE = 4096  # a chunk-size line
_RECV = 65536
_CRLF = b"\r\n"

# The grammar of RFC 9110 as h11 enforces it. A header line is a token, a colon, and
# a value of visible bytes (anything but NUL and whitespace) with spaces or tabs between.
# In a whole head: one expression for the status line, one for the header lines (one
# per line costs several times more). Possessive (*+): a line never needs a second try.
_FIELD_LINE = re.compile(
    rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+:[ \t]*(?:[^\x00\s]+(?:[ \t]+[^\x00\s]+)*)?[ \t]*"
)
_TOKEN_BYTES = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) ([0-9]{3})(?: ([^\x00\r\n\x0b\x0c]*+))?")
_FIELD_LINES = re.compile(rb"(?:\r\n[-!#$%&'*+.^_`|~0-9A-Za-z]++:[^\x00\r\n\x0b\x0c]*+)*+")
_CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]{1,20})(?:;[^\n]*)?[ \t]*")

# What the parser is reading: its states.
_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILER, _UNTIL_CLOSE, _DONE = range(8)


class ProtocolError(OSError):
    """The server's answer is not HTTP/1.1 as this client accepts it.

    An ``OSError`` so that callers handle it like a broken connection: the call may be
    retried on a new connection, and this one is never reused.
    """


class ClosedEarly(ProtocolError):
    """The server closed the connection before sending any byte of an answer."""


class ProxyError(OSError):
    """The proxy refused to open a tunnel (its status is in the message)."""


class UnsendableHeader(ValueError):
    """A header name or value that cannot travel in a request; nothing was sent."""


@dataclass(frozen=True)
class Proxy:
    """A forward proxy: where it listens, and the ``Proxy-Authorization`` it wants."""

    host: str
    port: int
    authorization: str | None = None

    def __repr__(self) -> str:
        # The credentials never reach a log.
        return f"Proxy({self.host!r}, {self.port})"


class Response:
    """One answer: status, reason, body, and its head's header lines.

    ``headers`` (names lower-cased, repeats joined by ``", "``) is made from those
    lines when first asked for: the sender reads no header of a usual answer.
    """

    __slots__ = ("status", "reason", "body", "will_close", "_fields", "_headers")

    def __init__(
        self, status: int, reason: str, fields: bytes, body: bytes, will_close: bool
    ) -> None:
        self.status = status
        self.reason = reason
        self.body = body
        self.will_close = will_close
        self._fields = fields  # the head's header lines, each after a CRLF; checked
        self._headers: dict[str, str] | None = None

    @property
    def headers(self) -> dict[str, str]:
        if self._headers is None:
            self._headers = {}
            for line in self._fields.decode("latin-1").split("\r\n")[1:]:
                name, _, value = line.partition(":")
                _add(self._headers, name.lower(), value.strip(" \t"))
        return self._headers

    @property
    def retry_after(self) -> str | None:
        return self.headers.get("retry-after")

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason!r} {len(self.body)} bytes>"


def _add(headers: dict[str, str], name: str, value: str) -> None:
    """One header line more: a repeated name's values are joined, as RFC 9110 allows."""
    headers[name] = f"{headers[name]}, {value}" if name in headers else value


def header_line(name: str, value: str) -> bytes:
    """``name: value`` and CRLF; refuses what would split or corrupt the request."""
    try:
        raw_name, data = name.encode("ascii"), value.encode("latin-1")
    except UnicodeEncodeError:
        raise UnsendableHeader(f"header {name!r} is not latin-1 text") from None
    if not raw_name or raw_name.translate(None, _TOKEN_BYTES):
        raise UnsendableHeader(f"bad header name {name!r}")
    if len(data.translate(None, b"\r\n\x00")) != len(data):
        raise UnsendableHeader(f"header {name} contains a line break or NUL")
    return b"%s: %s\r\n" % (raw_name, data)


def build_request_head(
    method: str, target: str, host: str, headers: Iterable[tuple[str, str]]
) -> bytes:
    """The request line and fixed header lines, each ending in CRLF (no blank line yet)."""
    lines = [f"{method} {target} HTTP/1.1\r\n".encode("ascii"), header_line("Host", host)]
    lines.extend(header_line(name, value) for name, value in headers)
    return b"".join(lines)


class ResponseParser:
    """Incremental, strict parser of one HTTP/1.x answer to ``method``.

    ``feed`` bytes as they arrive until it returns True; call ``eof`` when the peer
    closes first (which completes a close-delimited body and is an error otherwise).
    ``response`` is then the answer and ``leftover`` any bytes past its end. Each byte
    is looked at a bounded number of times, however the answer is cut into pieces.
    """

    __slots__ = (
        "_method",
        "_max_body",
        "_buffer",
        "_scanned",
        "_state",
        "_remaining",
        "_body",
        "_size",
        "_trailer",
        "_head",
        "_started",
        "response",
        "leftover",
    )

    def __init__(self, method: str = "POST", max_body: int = MAX_BODY_BYTES) -> None:
        self._method = method
        self._max_body = max_body
        self._buffer = bytearray()  # bytes received and not yet consumed
        self._scanned = 0  # how far into _buffer a line's end was already looked for
        self._state = _HEAD
        self._remaining = 0  # of the body (Content-Length) or of the chunk
        self._body: list[bytes] = []
        self._size = 0  # bytes in _body
        self._trailer = 0  # bytes of trailer lines
        self._head: tuple[int, str, bytes, bool] = (0, "", b"", False)
        self._started = False
        self.response: Response | None = None
        self.leftover = b""

    @property
    def started(self) -> bool:
        """Whether any byte of the answer has arrived."""
        return self._started

    def feed(self, data: bytes) -> bool:
        """Take more bytes; True once the answer is complete."""
        if self.response is not None:
            self.leftover += data
            return True
        self._started = self._started or bool(data)
        buffer: bytes | bytearray = data
        if self._buffer:
            self._buffer += data
            buffer = self._buffer
        at = self._advance(buffer)
        if self.response is not None:
            self.leftover = bytes(buffer[at:])
            self._buffer = bytearray()
            return True
        if buffer is self._buffer:
            del self._buffer[:at]  # amortised: a bytearray drops its front in place
        else:
            self._buffer = bytearray(memoryview(data)[at:])
        return False

    def eof(self) -> bool:
        """The peer closed the connection; True if that completed the answer."""
        if self.response is not None:
            return True
        if self._state == _UNTIL_CLOSE:
            self._finish()
            return True
        if not self._started:
            raise ClosedEarly("connection closed before any answer")
        raise ProtocolError("connection closed in the middle of an answer")

    def _advance(self, buffer: bytes | bytearray) -> int:
        """Consume what ``buffer`` completes; return where the unconsumed rest starts."""
        at = 0
        end = len(buffer)
        while True:
            state = self._state
            if state == _LENGTH or state == _CHUNK_DATA or state == _UNTIL_CLOSE:
                take = end - at if state == _UNTIL_CLOSE else min(self._remaining, end - at)
                if take:
                    self._add_body(buffer[at : at + take])
                    at += take
                    self._remaining -= take
                if state == _UNTIL_CLOSE or self._remaining:
                    return at
                if state == _LENGTH:
                    self._finish()
                    return at
                self._state = _CHUNK_END
            elif state == _CHUNK_END:
                if end - at < 2:
                    if end > at and buffer[at] != 13:  # the first byte is not CR
                        raise ProtocolError("chunk not followed by CRLF")
                    return at
                if buffer[at : at + 2] != _CRLF:
                    raise ProtocolError("chunk not followed by CRLF")
                at += 2
                self._state = _CHUNK_SIZE
            elif state == _DONE:
                return at
            else:  # the head, a chunk-size line or a trailer line: up to a CRLF
                limit = MAX_HEAD_BYTES if state != _CHUNK_SIZE else _MAX_LINE
                separator = b"\r\n\r\n" if state == _HEAD else _CRLF
                stop = buffer.find(separator, at + self._scanned)
                if stop < 0 or stop - at > limit:
                    if end - at > limit:
                        raise ProtocolError("response head or line too long")
                    self._scanned = max(0, end - at - len(separator) + 1)
                    return at
                self._scanned = 0
                line = buffer[at:stop]
                at = stop + len(separator)
                if state == _HEAD:
                    self._read_head(line)
                elif state == _CHUNK_SIZE:
                    self._read_chunk_size(line)
                elif not line:
                    self._finish()  # the blank line that ends the trailer
                else:
                    # Trailer fields carry nothing the sender needs: checked, skipped.
                    self._trailer += len(line) + 2
                    if not _FIELD_LINE.fullmatch(line) or self._trailer > MAX_HEAD_BYTES:
                        raise ProtocolError("malformed trailer")

    def _add_body(self, data: bytes | bytearray) -> None:
        self._size += len(data)
        if self._size > self._max_body:
            raise ProtocolError("response body too large")
        self._body.append(bytes(data))

    def _read_chunk_size(self, line: bytes | bytearray) -> None:
        match = _CHUNK_LINE.fullmatch(line)
        if match is None:
            raise ProtocolError("bad chunk size line")
        size = int(match[1], 16)
        if size == 0:
            self._state = _TRAILER
        elif self._size + size > self._max_body:
            raise ProtocolError("response body too large")
        else:
            self._remaining = size
            self._state = _CHUNK_DATA

    def _read_head(self, head: bytes | bytearray) -> None:
        """Check the status line and header lines; choose how the body is delimited."""
        head = bytes(head)
        first = head.find(_CRLF)
        if first < 0:
            first = len(head)
        status_line = _STATUS_LINE.fullmatch(head, 0, first)
        if status_line is None or not _FIELD_LINES.fullmatch(head, first):
            raise ProtocolError("malformed status line or header line")
        version, code, reason = status_line.groups()
        fields = head[first:]
        lowered = fields.lower()  # names compare in any case
        connection = _field(fields, lowered, b"\r\nconnection:")
        length = _field(fields, lowered, b"\r\ncontent-length:")
        coding = _field(fields, lowered, b"\r\ntransfer-encoding:")
        status = int(code)
        reason = (reason or b"").decode("latin-1")
        will_close = version == b"0" or (connection is not None and "close" in _tokens(connection))
        size = None if length is None else _content_length(length)
        if coding is not None and coding.lower() != "chunked":
            raise ProtocolError("unsupported Transfer-Encoding")
        if status < 200:
            if status < 100 or status == 101:
                raise ProtocolError("bad status, or an unexpected protocol switch")
            return  # an interim (1xx) answer: the real one follows, state stays _HEAD
        self._head = (status, reason, fields, will_close)
        method = self._method
        if method == "HEAD" or status in (204, 304) or (method == "CONNECT" and status < 300):
            self._finish()
        elif coding is not None:
            # With a Content-Length too the answer may be a smuggling attempt: read it
            # as chunked, as RFC 9112 says, and never reuse the connection.
            if size is not None:
                self._head = (status, reason, fields, True)
            self._state = _CHUNK_SIZE
        elif size is not None:
            if size > self._max_body:
                raise ProtocolError("response body too large")
            self._remaining = size
            self._state = _LENGTH
            if not size:
                self._finish()
        else:  # the body ends when the connection does
            self._head = (status, reason, fields, True)
            self._state = _UNTIL_CLOSE

    def _finish(self) -> None:
        status, reason, fields, will_close = self._head
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        self.response = Response(status, reason, fields, body, will_close)
        self._state = _DONE


def _field(fields: bytes, lowered: bytes, key: bytes) -> str | None:
    """The value of the header line(s) ``key`` (CRLF, a lower-case name, a colon) starts."""
    at = lowered.find(key)
    if at < 0:
        return None
    values = []
    while at >= 0:
        start = at + len(key)
        end = lowered.find(_CRLF, start)
        end = len(fields) if end < 0 else end
        values.append(fields[start:end].strip(b" \t").decode("latin-1"))
        at = lowered.find(key, end)
    return ", ".join(values)


def _tokens(value: str) -> set[str]:
    return {token.strip(" \t").lower() for token in value.split(",")}


def _content_length(value: str) -> int:
    if value.isdigit() and value.isascii() and len(value) <= MAX_LENGTH_DIGITS:
        return int(value)
    # Repeated (joined by commas): acceptable only if every copy is the same.
    values = {v.strip(" \t") for v in value.split(",")}
    length = values.pop()
    if values or len(length) > MAX_LENGTH_DIGITS or not length.isdigit() or not length.isascii():
        raise ProtocolError("bad Content-Length")
    return int(length)


def _remaining(deadline: float) -> float:
    left = deadline - perf_counter()
    if left <= 0:
        raise socket.timeout("timed out")
    return left


def _idle_and_open(sock: socket.socket) -> bool:
    """Whether a kept-alive connection can carry a request: nothing to read on it.

    Between calls the server has nothing to say; a readable socket means it closed
    the connection (EOF or reset) or is out of step. TLS may hold decrypted bytes.
    """
    pending = getattr(sock, "pending", None)
    if pending is not None and pending():
        return False
    if hasattr(select, "poll"):  # select() fails on descriptors above FD_SETSIZE
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return not poller.poll(0)
    return not select.select([sock], [], [], 0)[0]


class _Endpoint:
    """Where the calls go, through which proxy, and the fixed part of every request."""

    def __init__(
        self, url: str, path: str, headers: Mapping[str, str], proxy: Proxy | None
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.tls = parts.scheme == "https"
        self.host = parts.hostname or "localhost"
        default_port = 443 if self.tls else 80
        self.port = parts.port or default_port
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.authority = f"{host}:{self.port}"
        host_header = host if self.port == default_port else self.authority
        self.path = parts.path.rstrip("/") + path
        self.proxy = proxy
        self.address = (self.host, self.port) if proxy is None else (proxy.host, proxy.port)
        fixed = list(headers.items())
        target = self.path
        if proxy is not None and not self.tls:
            # Plain HTTP through a proxy: the absolute URL, and the proxy's credentials.
            target = f"http://{host_header}{self.path}"
            if proxy.authorization:
                fixed.append(("Proxy-Authorization", proxy.authorization))
        self.head = build_request_head("POST", target, host_header, fixed)


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
        proxy: reach the server through this proxy; None: directly.
    """

    def __init__(
        self,
        url: str,
        path: str,
        headers: Mapping[str, str],
        timeout: float,
        ssl_context: ssl.SSLContext | None = None,
        connect_timeout: float | None = None,
        proxy: Proxy | None = None,
    ) -> None:
        self._endpoint = _Endpoint(url, path, headers, proxy)
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._ssl_context = ssl_context
        self._sock: socket.socket | None = None
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
        answer) or :class:`UnsendableHeader`, before sending anything. After a call,
        :attr:`sent` says whether the whole request had been written (so whether the
        server may have acted on it, when the call failed). Never sends it twice.
        """
        self.sent = False
        lines = b"".join([header_line(name, value) for name, value in headers])
        request = b"".join(
            (self._endpoint.head, lines, b"Content-Length: %d\r\n\r\n" % len(body), body)
        )
        deadline = perf_counter() + (self._timeout if timeout is None else timeout)
        try:
            sock = self._sock
            if sock is not None and not _idle_and_open(sock):
                self.close()
                sock = None
            if sock is None:
                sock = self._sock = self._connect(deadline)
            sock.settimeout(_remaining(deadline))
            sock.sendall(request)  # the timeout bounds the whole sendall
            self.sent = True
            parser = ResponseParser()
            while True:
                sock.settimeout(_remaining(deadline))
                data = sock.recv(_RECV)
                if not data:
                    parser.eof()
                    break
                if parser.feed(data):
                    break
        except BaseException:
            self.close()
            raise
        response = parser.response
        assert response is not None
        # Bytes past the answer were never asked for (no pipelining here): the
        # connection's state is unknown, so it is not reused.
        if response.will_close or parser.leftover:
            self.close()
        return response

    def _connect(self, deadline: float) -> socket.socket:
        endpoint = self._endpoint
        limit = _remaining(deadline)
        if self._connect_timeout is not None:
            limit = min(limit, self._connect_timeout)
        sock = socket.create_connection(endpoint.address, limit)
        try:
            # One sendall per call, but a large body still crosses several segments.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if endpoint.tls:
                if endpoint.proxy is not None:
                    _open_tunnel(sock, endpoint.authority, endpoint.proxy, deadline)
                context = self._ssl_context
                if context is None:
                    import ssl  # only for https: it is slow to import

                    context = ssl.create_default_context()
                sock.settimeout(_remaining(deadline))
                sock = context.wrap_socket(sock, server_hostname=endpoint.host)
        except BaseException:
            sock.close()
            raise
        return sock

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()


def _open_tunnel(sock: socket.socket, authority: str, proxy: Proxy, deadline: float) -> None:
    """Ask the proxy for a tunnel to ``authority`` (host:port) over ``sock``."""
    extra = [("Proxy-Authorization", proxy.authorization)] if proxy.authorization else []
    sock.settimeout(_remaining(deadline))
    sock.sendall(build_request_head("CONNECT", authority, authority, extra) + _CRLF)
    parser = ResponseParser("CONNECT")
    while True:
        sock.settimeout(_remaining(deadline))
        data = sock.recv(_RECV)
        if not data:
            parser.eof()
            break
        if parser.feed(data):
            break
    assert parser.response is not None
    if not 200 <= parser.response.status < 300:
        raise ProxyError(f"the proxy answered {parser.response.status} to CONNECT")
    if parser.leftover:
        raise ProtocolError("the proxy sent bytes before the tunnel's TLS")
