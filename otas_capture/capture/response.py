"""The response side of a captured request: what the server accepts, counted and kept.

The middleware (:mod:`otas_capture.capture.middleware`) decides which requests to capture and
owns their life cycle; this module holds what stands between the application and the
server for one captured response: the record of ``start_response``, the wrapper that
counts and keeps the body as the server iterates it, and the pass-through for the
server's own file wrapper. Each hands the finished exchange back through one callback
(``finish``), exactly once, and none of them raises an error of its own into the
server.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from time import perf_counter
from typing import Any, Callable

from .annotate import CURRENT_EXCHANGE
from .exchange import BodyBuffer, Exchange, is_encoded, is_textual
from .handoff import Handoff


def record_start(
    exchange: Exchange, args: tuple[Any, ...], kwargs: dict[str, Any], body_limit: int
) -> None:
    """Note what the server accepted from start_response. Never raises."""
    try:
        status = args[0] if args else kwargs.get("status")
        # PEP 3333 names them status, response_headers, exc_info.
        headers = args[1] if len(args) > 1 else kwargs.get("response_headers")
        if isinstance(status, bytes):
            status = status.decode("latin-1")
        exchange.status = status if isinstance(status, str) else None
        limit, exchange.response_headers = _inspect_headers(headers, body_limit)
        body = exchange.response_body
        # A second start_response (with exc_info, before any byte went out) replaces the
        # headers; bytes already counted stay counted.
        if body is None or body.size == 0:
            exchange.response_body = BodyBuffer(limit)
    except Exception:  # whatever the app handed over, the server already judged it
        pass


def _inspect_headers(headers: Any, limit: int) -> tuple[int, list[tuple[str, str]]]:
    """(how much of the response body to keep, the headers as text pairs).

    None of binary or compressed content is kept. Headers of an unexpected shape
    (bytes, None values, not a list) are the server's business: the event gets a text
    copy and no body.
    """
    try:
        for name, value in headers:
            lower = name.lower()
            if lower == "content-type" and not is_textual(value):
                limit = 0
            elif lower == "content-encoding" and is_encoded(value):
                limit = 0
        if type(headers) is list:
            return limit, headers
    except Exception:
        pass
    pairs: list[tuple[str, str]] = []
    try:
        for item in list(headers) if isinstance(headers, (list, tuple)) else ():
            if isinstance(item, (list, tuple)) and len(item) == 2:
                pairs.append((_text(item[0]), _text(item[1])))
    except Exception:
        pass
    return 0, pairs


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return str(value)


def count_chunk(exchange: Exchange, chunk: Any) -> None:
    if exchange.sealed:  # shipped unfinished already: the sender thread reads it now
        return
    if exchange.first_byte is None:
        exchange.first_byte = perf_counter()
    body = exchange.response_body
    if body is None:  # a chunk before start_response: the server will refuse it anyway
        body = exchange.response_body = BodyBuffer(0)
    if type(chunk) is bytes or isinstance(chunk, (bytearray, memoryview)):
        body.add(chunk)
    # Anything else (str, None) is refused by the server with its own error.


def pass_file(
    result: Any, exchange: Exchange, finish: Callable[[Exchange], None]
) -> Iterable[bytes]:
    """Hand the server its own file wrapper, untouched but for a hook on ``close``.

    The server recognises its object and sends the file its way (sendfile, a
    Content-Length of its own); the event gets the size the file will send.
    """
    body = exchange.response_body
    if body is None:
        body = exchange.response_body = BodyBuffer(0)
    body.limit = 0
    if exchange.method != "HEAD":
        body.size = _file_size(result, exchange.response_headers)
    exchange.add_metadata(response_body_omitted="file sent by the server")
    original = getattr(result, "close", None)

    def close() -> None:
        try:
            if original is not None:
                original()
        except BaseException as exc:
            exchange.fail(exc)
            raise
        finally:
            finish(exchange)

    try:
        result.close = close
    except Exception:  # an object that takes no attributes: the event ends here
        finish(exchange)
    return result  # type: ignore[no-any-return]


def is_server_file(result: Any, file_wrapper: Any) -> bool:
    """Whether ``result`` is what the server's ``wsgi.file_wrapper`` made."""
    if isinstance(file_wrapper, type):
        return isinstance(result, file_wrapper)
    # A file_wrapper that is a function (uWSGI's) hands back the file itself.
    return hasattr(result, "read") and hasattr(result, "fileno")


def _file_size(result: Any, headers: list[tuple[str, str]]) -> int:
    """Bytes a file response will send: the rest of the file, cut by Content-Length."""
    size = 0
    try:
        # wsgiref and gunicorn call the file "filelike", waitress and werkzeug "file".
        file = getattr(result, "filelike", None) or getattr(result, "file", None) or result
        position = file.tell()
        try:
            end = os.fstat(file.fileno()).st_size
        except Exception:  # not a real file (BytesIO): ask it, then put it back
            end = file.seek(0, os.SEEK_END)
            file.seek(position)
        size = max(0, end - position)
    except Exception:
        pass
    for name, value in headers:
        if name.lower() == "content-length":
            try:
                size = min(size, int(value))
            except ValueError:
                pass
    return size


class CapturedResponse:
    """The application's response iterable, counted and kept as the server iterates it.

    The exchange is complete, and handed to the sender, when the iterable is exhausted
    or closed (or raises), whichever comes first, exactly once. ``close()`` closes the
    application's iterable exactly once. A response that is never finished nor closed
    (a test client's, left unread) is shipped with what is known when it is
    garbage-collected (within moments: see :mod:`otas_capture.capture.handoff`), and
    counted as ``unclosed``.
    """

    __slots__ = ("_result", "_iterator", "_exchange", "_handoff", "_closed", "_done")

    def __init__(self, result: Iterable[bytes], exchange: Exchange, handoff: Handoff) -> None:
        self._result = result
        self._iterator: Iterator[bytes] | None = None
        self._exchange = exchange
        self._handoff = handoff
        self._closed = False
        self._done = False

    def __iter__(self) -> CapturedResponse:
        return self

    def __next__(self) -> bytes:
        # A streaming app's code runs here, in the server's next(): annotate(**props)
        # there (say, a count known only at the end of the stream) still finds the request.
        context = CURRENT_EXCHANGE.set(self._exchange)
        try:
            if self._iterator is None:
                self._iterator = iter(self._result)
            chunk = next(self._iterator)
        except StopIteration:
            self._complete()
            raise
        except BaseException as exc:
            self._exchange.fail(exc)
            self._complete()
            raise
        finally:
            CURRENT_EXCHANGE.reset(context)
        count_chunk(self._exchange, chunk)
        return chunk

    def _complete(self) -> None:
        if not self._done:
            self._done = True
            exchange = self._exchange
            if not exchange.sealed:  # not shipped unfinished already (see handoff)
                exchange.end = perf_counter()
            self._handoff.finish(exchange)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        context = CURRENT_EXCHANGE.set(self._exchange)  # the app's close() is its code too
        try:
            close = getattr(self._result, "close", None)
            if close is not None:
                close()
        except BaseException as exc:
            self._exchange.fail(exc)
            raise
        finally:
            CURRENT_EXCHANGE.reset(context)
            self._complete()

    def __del__(self) -> None:
        # Only lock-free work here: this may run inside any code of any thread.
        try:
            if not self._done:
                self._done = True
                self._handoff.orphan(self._exchange)
        except Exception:  # half-built, or the interpreter is going away
            pass


class SizedCapturedResponse(CapturedResponse):
    """A :class:`CapturedResponse` that keeps ``len()``, which some servers use
    (wsgiref sets Content-Length for a one-item list)."""

    __slots__ = ()

    def __len__(self) -> int:
        return len(self._result)  # type: ignore[arg-type]
