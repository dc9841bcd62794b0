"""The WSGI wrapper: measures every request an AI agent makes and hands it to the sender.

An agent marks its requests with the ``X-OTAS-AGENT-SESSION-TOKEN`` header. For each
such request the middleware tees the request body as the application reads it, wraps
``start_response`` and the response iterable to count and keep the response, and hands
the whole exchange to the background sender as soon as the response is done: iterated
to the end or closed, whichever comes first. Other requests pass straight through.

The application and the server see exactly what they would without the middleware:
the same bytes, the same objects where the server looks for its own (its file wrapper),
the same exceptions raised by the server's own code, ``close()`` called once. Nothing
here waits on the network or raises an error of its own into the application.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from time import perf_counter
from typing import TYPE_CHECKING, Any, Callable

from . import shutdown
from .capture import BodyBuffer, Exchange, InputTee, is_textual
from .config import Config
from .contract import LOGGER_NAME, SESSION_TOKEN_ENVIRON
from .sender import Sender
from .stats import Stats

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

logger = logging.getLogger(LOGGER_NAME)

# Seconds close() waits, out of its timeout, for responses being finished (see close).
RESPONSE_GRACE = 0.25

TOKEN_ENVIRON_KEY = SESSION_TOKEN_ENVIRON
# Where the exchange of a captured request lives in its environ, for annotate(). Its
# presence also tells a second OtasMiddleware around the same app that the request is
# already being captured.
EXCHANGE_ENVIRON_KEY = "otas_capture.exchange"


class OtasMiddleware:
    """Capture the requests AI agents make to a WSGI application and ship them to OTAS.

    :param app: the WSGI application to wrap.
    :param options: any setting of :class:`~otas_capture.config.Config` by its lower-case
        name (``sdk_key``, ``brain_url``, ``sample_rate``, ...). Each one not given is read
        from its ``OTAS_*`` environment variable, else takes its default. A bad option
        raises :class:`~otas_capture.ConfigError` here, at start-up; a bad variable never
        does: it is logged, then replaced (see :mod:`otas_capture.config`).

    Without an SDK key (or with ``enabled=False``) the middleware passes every request
    through untouched and ships nothing.

    .. code-block:: python

        from otas_capture import OtasMiddleware

        app.wsgi_app = OtasMiddleware(app.wsgi_app)  # OTAS_SDK_KEY from the environment
    """

    def __init__(self, app: WSGIApplication, **options: Any) -> None:
        self.app = app
        self.config = Config.load(options)
        self._stats = Stats()
        self._sender: Sender | None = None
        # False without a key, and again once close() began: requests then pass through.
        self._capturing = False
        self._closed = False
        # Exchanges whose response was garbage-collected unfinished. __del__ may run in
        # any thread at any allocation, even one holding the sender's lock, so it only
        # appends here (atomic, lock-free); the queue is drained on the next request,
        # flush(), stats() or close().
        self._orphans: deque[Exchange] = deque()
        self._unclosed = 0
        self._drain_lock = threading.Lock()
        # Exchanges begun and not finished yet, for close() to wait for a response
        # being finished (a lock held for an addition, twice a request). Reentrant: the
        # SIGTERM handler may finish an exchange in the main thread while it holds it.
        self._in_progress = 0
        self._progress_lock = threading.RLock()
        if not self.config.enabled and self.config.env_refused:
            pass  # off because a variable was refused: config logged that, naming it
        elif not self.config.enabled:
            logger.info("otas-capture: disabled by OTAS_ENABLED; requests pass through")
        elif self.config.sdk_key is None:
            logger.warning(
                "otas-capture: OTAS_SDK_KEY is not set; requests pass through and nothing "
                "is sent to OTAS"
            )
        else:
            self._sender = Sender(self.config, self._stats)
            self._capturing = True
            shutdown.register(self)
        self._skip_paths = tuple(self.config.skip_paths)
        self._sample_rate = self.config.sample_rate
        self._body_limit = self.config.max_body_bytes
        # Lets Flask wrapped by hand keep its route and exception, and the pytest plugin
        # flush every middleware (see _frameworks).
        from ._frameworks import middleware_created

        middleware_created(self)

    def __repr__(self) -> str:
        return f"<OtasMiddleware app={self.app!r} shipping={self._sender is not None}>"

    # -- public API --------------------------------------------------------------------

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every event captured so far is delivered or given up.

        A request counts as captured once its response is done: iterated to the end or
        closed by the server, whichever comes first (a response a test client left
        unread counts once it is garbage-collected). Returns False if ``timeout``
        seconds pass first (for instance while OTAS is down).
        """
        if self._sender is None:
            return True
        self._drain_orphans()
        return self._sender.flush(timeout)

    def close(self, timeout: float | None = None) -> None:
        """Flush for up to ``timeout`` seconds, then stop the sender. Safe to call twice.

        ``timeout`` defaults to ``shutdown_timeout`` (``OTAS_SHUTDOWN_TIMEOUT``). Also
        runs at interpreter exit, and on SIGTERM when the process has no handler of its
        own (see :mod:`otas_capture.shutdown`). Events still undelivered are counted
        (reason ``shutdown``) and summed up in one log line. Requests after ``close``
        pass through untouched and uncounted.
        """
        sender = self._sender
        if sender is None or self._closed:
            return
        self._closed = True
        self._capturing = False
        shutdown.unregister(self)
        timeout = self.config.shutdown_timeout if timeout is None else timeout
        # A response already sent may be a moment from its end (a threaded server
        # iterates once more after the last chunk, then closes it): SIGTERM right after
        # the client got its answer must not lose that request. A short grace, since a
        # long stream still going would only hold the whole shutdown up.
        began = perf_counter()
        self._drain_orphans()
        self._wait_for_responses(min(timeout, RESPONSE_GRACE))
        sender.close(max(0.0, timeout - (perf_counter() - began)))
        shutdown.log_summary(self.stats())

    def _wait_for_responses(self, timeout: float) -> None:
        """Wait up to ``timeout`` s until every exchange begun has been finished (those
        begun before close(): later requests pass through uncaptured)."""
        deadline = perf_counter() + timeout
        while self._in_progress > 0 and perf_counter() < deadline:
            time.sleep(0.005)  # only at close: a poll costs nothing meanwhile
            self._drain_orphans()

    def stats(self) -> dict[str, Any]:
        """Counts of what happened to captured requests, with reasons.

        ``captured``: requests recorded; ``sent``: accepted by Brain; ``failed``: refused
        for good or out of retries; ``retried``: retries scheduled; ``dropped``: lost to a
        full queue or shutdown; ``skipped``: not shipped by design (no session token,
        skipped path, sampled out, a token Brain would refuse); ``queued``: events not yet
        settled (queued, in flight or waiting to retry); ``unclosed``: responses neither
        iterated to the end nor closed (by a test client, usually), counted in
        ``captured`` and shipped when they were garbage-collected. ``reasons`` breaks
        down ``failed``, ``dropped`` and ``skipped``.
        """
        if self._orphans:
            self._drain_orphans()
        pending = self._sender.pending if self._sender is not None else 0
        return self._stats.snapshot(queued=pending, unclosed=self._unclosed)

    # -- the request path --------------------------------------------------------------

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if not self._capturing:
            return self.app(environ, start_response)
        token = environ.get(TOKEN_ENVIRON_KEY)
        if not token:
            self._stats.incr("skipped", "no_token")
            return self.app(environ, start_response)
        if EXCHANGE_ENVIRON_KEY in environ:
            # Wrapped twice (an OtasMiddleware around this one's app, or the reverse):
            # the outer one captures this request, so this one only passes it on.
            return self.app(environ, start_response)
        if self._skip_paths:
            path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
            if not path.isascii():
                path = _decoded_path(path)
            if path.startswith(self._skip_paths):
                self._stats.incr("skipped", "skip_path")
                return self.app(environ, start_response)
        if self._sample_rate < 1.0 and random.random() >= self._sample_rate:
            self._stats.incr("skipped", "sampled_out")
            return self.app(environ, start_response)
        if self._orphans:
            self._drain_orphans()
        return self._capture(environ, start_response, token)

    def _capture(
        self, environ: WSGIEnvironment, start_response: StartResponse, token: str
    ) -> Iterable[bytes]:
        start = perf_counter()
        body_limit = self._body_limit
        request_limit = body_limit
        if not is_textual(environ.get("CONTENT_TYPE")) or _encoded(
            environ.get("HTTP_CONTENT_ENCODING")
        ):
            request_limit = 0  # counted, not kept: binary, or compressed text
        request_body = BodyBuffer(request_limit)
        exchange = Exchange(token, time.time(), start, environ, request_body)
        with self._progress_lock:
            self._in_progress += 1
        environ[EXCHANGE_ENVIRON_KEY] = exchange
        stream = environ.get("wsgi.input")
        if stream is not None:
            environ["wsgi.input"] = InputTee(stream, request_body)

        def capturing_start_response(*args: Any, **kwargs: Any) -> Callable[..., Any]:
            # The server's start_response runs first, with exactly what the app gave:
            # its checks raise its own errors, and a call it refuses (exc_info after
            # the headers went out re-raises) leaves the event with what was sent.
            write = start_response(*args, **kwargs)
            _record_start(exchange, args, kwargs, body_limit)

            def capturing_write(*data: Any, **kw: Any) -> Any:
                result = write(*data, **kw)
                if data:
                    _count_chunk(exchange, data[0])
                return result

            return capturing_write

        try:
            result = self.app(environ, capturing_start_response)
        except BaseException as exc:
            exchange.fail(exc)
            self._finish(exchange)
            raise
        if type(result) is not list:
            file_wrapper = environ.get("wsgi.file_wrapper")
            if file_wrapper is not None and _is_server_file(result, file_wrapper):
                return self._pass_file(result, exchange)
        wrapper = SizedCapturedResponse if hasattr(result, "__len__") else CapturedResponse
        return wrapper(result, exchange, self)

    def _pass_file(self, result: Any, exchange: Exchange) -> Iterable[bytes]:
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
        finish = self._finish

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

    def _finish(self, exchange: Exchange) -> None:
        """Hand a complete exchange to the sender, once. Never raises into the server."""
        if exchange.sealed:
            return
        with self._progress_lock:
            self._in_progress -= 1
        try:
            if exchange.end is None:
                exchange.end = perf_counter()
            body = exchange.request_body
            if body.size == 0 and exchange.content_length:
                _mark_unread(exchange, body)
            exchange.sealed = True
            self._stats.incr("captured")
            assert self._sender is not None
            self._sender.submit(exchange)
        except Exception:  # a bug of ours: count it, say it, never raise it
            self._stats.incr("dropped", "internal_error")
            self._stats.log_limited(
                "queue_error",
                logging.ERROR,
                "otas-capture: could not queue an event",
                exc_info=True,
            )

    def _drain_orphans(self) -> None:
        """Ship the exchanges of responses garbage-collected unfinished."""
        if not self._drain_lock.acquire(blocking=False):
            return  # another thread is at it
        try:
            while self._orphans:
                exchange = self._orphans.popleft()
                self._unclosed += 1
                self._finish(exchange)
        finally:
            self._drain_lock.release()


def _decoded_path(path: str) -> str:
    """A PEP 3333 path (UTF-8 bytes carried as latin-1) as the text it spells."""
    try:
        return path.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return path


def _encoded(content_encoding: Any) -> bool:
    """Whether a Content-Encoding value says the body is compressed (not identity)."""
    if not content_encoding:
        return False
    return str(content_encoding).strip().lower() not in ("", "identity")


def _mark_unread(exchange: Exchange, body: BodyBuffer) -> None:
    """The app never read a body the request declared: take its size from Content-Length."""
    try:
        declared = int(exchange.content_length or 0)
    except ValueError:
        return
    if declared > 0:
        body.size = declared
        body.limit = 0
        exchange.add_metadata(
            request_body_read=False, request_body_omitted="not read by the application"
        )


def _record_start(
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
            elif lower == "content-encoding" and _encoded(value):
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


def _count_chunk(exchange: Exchange, chunk: Any) -> None:
    if exchange.first_byte is None:
        exchange.first_byte = perf_counter()
    body = exchange.response_body
    if body is None:  # a chunk before start_response: the server will refuse it anyway
        body = exchange.response_body = BodyBuffer(0)
    if type(chunk) is bytes or isinstance(chunk, (bytearray, memoryview)):
        body.add(chunk)
    # Anything else (str, None) is refused by the server with its own error.


def _is_server_file(result: Any, file_wrapper: Any) -> bool:
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
    garbage-collected, and counted as ``unclosed``.
    """

    __slots__ = ("_result", "_iterator", "_exchange", "_owner", "_closed", "_done")

    def __init__(self, result: Iterable[bytes], exchange: Exchange, owner: OtasMiddleware) -> None:
        self._result = result
        self._iterator: Iterator[bytes] | None = None
        self._exchange = exchange
        self._owner = owner
        self._closed = False
        self._done = False

    def __iter__(self) -> CapturedResponse:
        return self

    def __next__(self) -> bytes:
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
        _count_chunk(self._exchange, chunk)
        return chunk

    def _complete(self) -> None:
        if not self._done:
            self._done = True
            self._exchange.end = perf_counter()
            self._owner._finish(self._exchange)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            close = getattr(self._result, "close", None)
            if close is not None:
                close()
        except BaseException as exc:
            self._exchange.fail(exc)
            raise
        finally:
            self._complete()

    def __del__(self) -> None:
        # Only lock-free work here: this may run inside any code of any thread.
        try:
            if not self._done:
                self._done = True
                exchange = self._exchange
                if exchange.end is None:
                    exchange.end = exchange.first_byte or perf_counter()
                exchange.add_metadata(response_unfinished=True)
                self._owner._orphans.append(exchange)
        except Exception:  # half-built, or the interpreter is going away
            pass


class SizedCapturedResponse(CapturedResponse):
    """A :class:`CapturedResponse` that keeps ``len()``, which some servers use
    (wsgiref sets Content-Length for a one-item list)."""

    __slots__ = ()

    def __len__(self) -> int:
        return len(self._result)  # type: ignore[arg-type]


_misuse_lock = threading.Lock()
_misuse_logged: dict[str, float] = {}


def _log_misuse(key: str, message: str) -> None:
    """Log a wrong call of ours once a minute at most: never raise it into the app."""
    now = time.monotonic()
    with _misuse_lock:
        last = _misuse_logged.get(key)
        if last is not None and now - last < 60.0:
            return
        _misuse_logged[key] = now
    logger.error(message)


def annotate(environ: Any = None, /, *args: Any, **props: Any) -> None:
    """Add ``props`` to the ``custom_properties`` of the event for this request.

    Does nothing for a request that is not captured (no agent token, skipped, sampled
    out), so it is always safe to call. A wrong call (no environ, extra positional
    arguments) logs one clear error, rate-limited, and is ignored: it never raises.

    .. code-block:: python

        def app(environ, start_response):
            annotate(environ, tenant="acme", plan="pro")
    """
    try:
        exchange = environ.get(EXCHANGE_ENVIRON_KEY)
    except Exception:
        _log_misuse(
            "annotate_environ",
            "otas-capture: annotate() needs the request's WSGI environ as its first "
            f"argument, as in annotate(environ, tenant='acme'); got {type(environ).__name__}"
            "; the call was ignored",
        )
        return
    if args:
        _log_misuse(
            "annotate_args",
            "otas-capture: annotate() takes properties as keyword arguments, as in "
            "annotate(environ, tenant='acme'); the call was ignored",
        )
        return
    if exchange is not None and props:
        try:
            exchange.annotate(props)
        except Exception:
            _log_misuse(
                "annotate_exchange",
                f"otas-capture: environ[{EXCHANGE_ENVIRON_KEY!r}] is not ours; "
                "annotate() was ignored",
            )
