"""One captured ASGI request: its scope copied into an Exchange, its messages teed.

:class:`Recorder` stands between the application and the server for one ``http`` scope.
Its ``receive`` and ``send`` hand every message on unchanged (the same object, in the
same order) and, on the way, count and keep what the WSGI side keeps: the request body
as the application reads it (never ahead of it), the status and headers the server
accepted, and the response body, up to ``max_body_bytes`` of each. Times are taken at
the first and the last body message. Nothing here awaits anything but the server's own
``receive`` and ``send``, takes a lock or does I/O: decoding, masking and JSON happen on
the sender's threads (see :mod:`otas_capture.event.build`).

The :class:`~otas_capture.capture.exchange.Exchange` is filled as the WSGI middleware
fills it from an environ (PEP 3333's conventions: header keys ``HTTP_*``, text that is
bytes carried as Latin-1), so that the event builder treats both alike.
"""

from __future__ import annotations

import functools
import http
import time
from collections.abc import Awaitable, Iterable, MutableMapping
from time import perf_counter
from typing import Any, Callable

from ..event.context import note_current_span
from .exchange import BodyBuffer, Exchange, is_encoded, is_textual
from .response import count_chunk, record_start

__all__ = ["Message", "Receive", "Recorder", "Scope", "Send", "new_exchange", "session_token"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_TOKEN_NAME = b"x-otas-agent-session-token"
# What a server writes after the code, as WSGI apps write it: "404 Not Found". The
# event's error for a 4xx/5xx answer without an exception is this line, on both sides.
_STATUS_LINES = {status.value: f"{status.value} {status.phrase}" for status in http.HTTPStatus}
_START = "http.response.start"
_BODY = "http.response.body"
# The extensions by which the server sends a file itself.
_FILES = frozenset({"http.response.pathsend", "http.response.zerocopysend"})


def session_token(headers: Iterable[Any]) -> str | None:
    """The agent's session token among ASGI headers (names are lower case bytes)."""
    for name, value in headers:
        if name == _TOKEN_NAME:
            return value.decode("latin-1") or None
    return None


@functools.lru_cache(maxsize=512)  # the same few dozen names come with every request
def _environ_key(name: bytes) -> str:
    """``b"x-request-id"`` -> ``"HTTP_X_REQUEST_ID"``, as a WSGI server names it."""
    key = name.decode("latin-1").upper().replace("-", "_")
    return key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + key


# The request headers that decide how the body is kept, and its declared size.
_BODY_HEADERS = frozenset({"CONTENT_TYPE", "CONTENT_LENGTH", "HTTP_CONTENT_ENCODING"})


def new_exchange(scope: Scope, token: str, body_limit: int) -> Exchange:
    """An Exchange for ``scope``, keeping at most ``body_limit`` bytes of the request body."""
    path: str = scope.get("path", "")
    root_path: str = scope.get("root_path", "")
    # ASGI servers differ on whether "path" already holds "root_path" (the spec now
    # says it does): the event's path is the whole path either way.
    if root_path and not path.startswith(root_path):
        path = root_path + path
    if not path.isascii():  # decoded text; PEP 3333 carries UTF-8 bytes as Latin-1
        path = path.encode("utf-8", "surrogateescape").decode("latin-1")
    query: bytes = scope.get("query_string", b"")
    environ = {
        "REQUEST_METHOD": scope.get("method", "GET"),
        "PATH_INFO": path,
        "QUERY_STRING": query.decode("latin-1"),
    }
    raw = scope.get("headers", ())
    try:
        headers = [(_environ_key(n), v.decode("latin-1")) for n, v in raw]
    except TypeError:  # bytearray names (unhashable), which the spec allows
        headers = [(_environ_key(bytes(n)), bytes(v).decode("latin-1")) for n, v in raw]
    found = {key: text for key, text in headers if key in _BODY_HEADERS}
    content_type = found.get("CONTENT_TYPE")
    content_length = found.get("CONTENT_LENGTH")
    content_encoding = found.get("HTTP_CONTENT_ENCODING")
    if not is_textual(content_type) or is_encoded(content_encoding):
        body_limit = 0  # counted, not kept: binary, or compressed text
    exchange = Exchange(token, time.time(), perf_counter(), environ, BodyBuffer(body_limit))
    exchange.request_headers = headers
    exchange.content_length = content_length
    return exchange


class Recorder:
    """The ``receive`` and ``send`` a captured application is given, for one request.

    ``receive`` and ``send`` return and raise exactly what the server's do; recording
    never raises into either side.
    """

    __slots__ = ("exchange", "_receive", "_send", "_body_limit", "ending", "done")

    def __init__(self, exchange: Exchange, receive: Receive, send: Send, body_limit: int) -> None:
        self.exchange = exchange
        self._receive = receive
        self._send = send
        self._body_limit = body_limit
        # ending: the last message of the response is on its way to the server (a
        # disconnect seen from then on is the connection's normal end); done: it got there.
        self.ending = False
        self.done = False

    async def receive(self) -> Message:
        message = await self._receive()
        try:
            kind = message["type"]
            if kind == "http.request":
                body = message.get("body")
                if body:
                    self.exchange.request_body.add(body)
            elif kind == "http.disconnect" and not self.ending:
                self.exchange.add_metadata(client_disconnected=True)
        except Exception:  # a message of a shape the server and app agree on: theirs
            pass
        return message

    async def send(self, message: Message) -> None:
        final = False
        try:
            kind = message["type"]
            # The last body message ends the response (trailers, if any, follow it).
            final = (kind == _BODY or kind in _FILES) and not message.get("more_body", False)
        except Exception:
            kind = None
        if final:
            self.ending = True
        try:
            await self._send(message)
        except OSError:  # the connection is gone: the server says so its own way
            self.exchange.add_metadata(client_disconnected=True)
            raise
        try:
            if kind == _START:
                self._start(message)
                note_current_span(self.exchange)  # the app's OpenTelemetry span is current here
            elif kind == _BODY:
                count_chunk(self.exchange, message.get("body", b""))
            elif kind in _FILES:
                self._file(message)
        except Exception:  # what the server accepted is the server's business
            pass
        if final:
            self.exchange.end = perf_counter()
            self.done = True

    def _start(self, message: Message) -> None:
        status = message["status"]
        line = _STATUS_LINES.get(status) if type(status) is int else None
        headers = [
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in message.get("headers", ())
        ]
        record_start(self.exchange, (line or str(status), headers), {}, self._body_limit)

    def _file(self, message: Message) -> None:
        """The server sends a file itself (``pathsend``, ``zerocopysend``): its size is
        what the response's Content-Length says, or the count asked for; nothing is kept
        and no file is opened here."""
        exchange = self.exchange
        if exchange.first_byte is None:
            exchange.first_byte = perf_counter()
        body = exchange.response_body
        if body is None:
            body = exchange.response_body = BodyBuffer(0)
        body.limit = 0
        count = message.get("count")
        if count is None:
            for name, value in exchange.response_headers:
                if name.lower() == "content-length" and value.isdigit():
                    count = int(value)
        if isinstance(count, int) and count > 0:
            body.size += count
        exchange.add_metadata(response_body_omitted="file sent by the server")
