"""A strict, incremental parser of HTTP/1.x answers, linear in what it is fed.

It reads an answer as h11 does (RFC 9110/9112's grammar: token header names, values
without NUL, CR or LF, at most 20 digits of ``Content-Length``, ``chunked`` as the only
transfer coding; ``tests/test_wire_h11.py`` holds it to h11's answers), stricter in
places (no obsolete line folding, no bare LF, HTTP/1.0 and 1.1 only). Each byte is
looked at a bounded number of times however the answer is cut, so an answer in a
hundred thousand one-byte chunks costs what one chunk does per byte. Anything malformed
raises :class:`ProtocolError`, an ``OSError``: the caller drops the connection as it
would a broken one. An answer with both ``Transfer-Encoding`` and ``Content-Length`` is
read as chunked and marked to close the connection (RFC 9112, 6.3).
"""

from __future__ import annotations

import re

__all__ = [
    "MAX_BODY_BYTES",
    "TOKEN_CHARACTERS",
    "ClosedEarly",
    "ProtocolError",
    "Response",
    "ResponseParser",
]

MAX_HEAD_BYTES = 64 * 1024  # status line and headers of one answer
MAX_BODY_BYTES = 1024 * 1024  # Brain's answers are a few dozen bytes
MAX_LENGTH_DIGITS = 20  # h11's cap: a longer Content-Length is no length (10**20 B)
_MAX_LINE = 4096  # a chunk-size line
_CRLF = b"\r\n"

# The grammar of RFC 9110 as h11 enforces it. A header line is a token, a colon, and
# a value of visible bytes (anything but NUL and whitespace) with spaces or tabs between.
# In a whole head: one expression for the status line, one for the header lines (one
# per line costs several times more). Possessive (*+): a line never needs a second try.
TOKEN_CHARACTERS = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_TOKEN = b"[" + re.escape(TOKEN_CHARACTERS) + b"]"
_FIELD_LINE = re.compile(_TOKEN + rb"+:[ \t]*(?:[^\x00\s]+(?:[ \t]+[^\x00\s]+)*)?[ \t]*")
_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) ([0-9]{3})(?: ([^\x00\r\n\x0b\x0c]*+))?")
_FIELD_LINES = re.compile(rb"(?:\r\n" + _TOKEN + rb"++:[^\x00\r\n\x0b\x0c]*+)*+")
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
        will_close = version == b"0" or (connection is not None and _closes(connection))
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
    return values[0] if len(values) == 1 else ", ".join(values)


def _closes(connection: str) -> bool:
    """Whether a ``Connection`` value holds the token ``close``."""
    value = connection.lower()
    return "close" in value and "close" in {token.strip(" \t") for token in value.split(",")}


def _content_length(value: str) -> int:
    if value.isdigit() and value.isascii() and len(value) <= MAX_LENGTH_DIGITS:
        return int(value)
    # Repeated (joined by commas): acceptable only if every copy is the same.
    values = {v.strip(" \t") for v in value.split(",")}
    length = values.pop()
    if values or len(length) > MAX_LENGTH_DIGITS or not length.isdigit() or not length.isascii():
        raise ProtocolError("bad Content-Length")
    return int(length)
