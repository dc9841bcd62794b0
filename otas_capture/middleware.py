"""The WSGI wrapper: measures every request an AI agent makes and hands it to the sender.

An agent marks its requests with the ``X-OTAS-AGENT-SESSION-TOKEN`` header. For each
such request the middleware tees the request body as the application reads it, wraps
``start_response`` and the response iterable to count and keep the response, and when
the server closes the response it hands the whole exchange to the background sender.
Other requests pass straight through.

The application and the server see exactly what they would without the middleware:
the same bytes, the same exceptions, ``close()`` called once. Nothing here waits on the
network or raises an error of its own into the application.
"""

from __future__ import annotations

import atexit
import logging
import random
import time
from collections.abc import Iterable, Iterator
from time import perf_counter
from typing import TYPE_CHECKING, Any, Callable

from .capture import BodyBuffer, Exchange, InputTee, is_textual
from .config import Config
from .contract import LOGGER_NAME, SESSION_TOKEN_ENVIRON
from .sender import Sender
from .stats import Stats

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

logger = logging.getLogger(LOGGER_NAME)

TOKEN_ENVIRON_KEY = SESSION_TOKEN_ENVIRON
# Where the exchange of a captured request lives in its environ, for annotate().
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
            atexit.register(self.close)
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

        A request counts as captured once the server has closed its response, which
        happens just after the client received the last byte. Returns False if
        ``timeout`` seconds pass first (for instance while OTAS is down).
        """
        return True if self._sender is None else self._sender.flush(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Flush for up to ``timeout`` seconds, then stop the sender. Safe to call twice.

        Also runs once at interpreter exit. Events still undelivered are counted as
        dropped (reason ``shutdown``); requests after ``close`` pass through uncaptured.
        """
        sender = self._sender
        if sender is None:
            return
        atexit.unregister(self.close)
        sender.close(timeout)

    def stats(self) -> dict[str, Any]:
        """Counts of what happened to captured requests, with reasons.

        ``captured``: requests recorded; ``sent``: accepted by Brain; ``failed``: refused
        for good or out of retries; ``retried``: retries scheduled; ``dropped``: lost to a
        full queue or shutdown; ``skipped``: not shipped by design (no session token,
        skipped path, sampled out, a token Brain would refuse); ``queued``: events not yet
        settled (queued, in flight or waiting to retry). ``reasons`` breaks down
        ``failed``, ``dropped`` and ``skipped``.
        """
        pending = self._sender.pending if self._sender is not None else 0
        return self._stats.snapshot(queued=pending)

    # -- the request path --------------------------------------------------------------

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if self._sender is None:
            return self.app(environ, start_response)
        token = environ.get(TOKEN_ENVIRON_KEY)
        if not token:
            self._stats.incr("skipped", "no_token")
            return self.app(environ, start_response)
        if self._skip_paths:
            path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
            if path.startswith(self._skip_paths):
                self._stats.incr("skipped", "skip_path")
                return self.app(environ, start_response)
        if self._sample_rate < 1.0 and random.random() >= self._sample_rate:
            self._stats.incr("skipped", "sampled_out")
            return self.app(environ, start_response)
        return self._capture(environ, start_response, token)

    def _capture(
        self, environ: WSGIEnvironment, start_response: StartResponse, token: str
    ) -> Iterable[bytes]:
        start = perf_counter()
        body_limit = self._body_limit
        request_body = BodyBuffer(body_limit if is_textual(environ.get("CONTENT_TYPE")) else 0)
        exchange = Exchange(token, time.time(), start, environ, request_body)
        environ[EXCHANGE_ENVIRON_KEY] = exchange
        stream = environ.get("wsgi.input")
        if stream is not None:
            environ["wsgi.input"] = InputTee(stream, request_body)

        def capturing_start_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Callable[[bytes], Any]:
            exchange.status = status
            exchange.response_headers = headers
            exchange.response_body = BodyBuffer(_response_limit(headers, body_limit))
            if exc_info is None:
                write = start_response(status, headers)
            else:
                write = start_response(status, headers, exc_info)

            def capturing_write(data: bytes) -> Any:
                _count_chunk(exchange, data)
                return write(data)

            return capturing_write

        try:
            result = self.app(environ, capturing_start_response)
        except BaseException as exc:
            exchange.fail(exc)
            self._finish(exchange)
            raise
        wrapper = SizedCapturedResponse if hasattr(result, "__len__") else CapturedResponse
        return wrapper(result, exchange, self._finish)

    def _finish(self, exchange: Exchange) -> None:
        """Hand a complete exchange to the sender. Never raises into the server."""
        if exchange.end is None:
            exchange.end = perf_counter()
        try:
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


def _response_limit(headers: list[tuple[str, str]], limit: int) -> int:
    """How much of the response body to keep: none of binary or compressed content."""
    for name, value in headers:
        lower = name.lower()
        if lower == "content-type" and not is_textual(value):
            return 0
        if lower == "content-encoding" and value.strip().lower() not in ("", "identity"):
            return 0
    return limit


def _count_chunk(exchange: Exchange, chunk: bytes) -> None:
    if exchange.first_byte is None:
        exchange.first_byte = perf_counter()
    body = exchange.response_body
    if body is None:  # a chunk before start_response: the server will refuse it anyway
        body = exchange.response_body = BodyBuffer(0)
    body.add(chunk)


class CapturedResponse:
    """The application's response iterable, counted and kept as the server iterates it.

    ``close()`` closes the application's iterable exactly once, then completes the
    exchange: latency runs until the server has sent the last byte and closed.
    """

    __slots__ = ("_result", "_iterator", "_exchange", "_finish", "_closed")

    def __init__(
        self, result: Iterable[bytes], exchange: Exchange, finish: Callable[[Exchange], None]
    ) -> None:
        self._result = result
        self._iterator: Iterator[bytes] | None = None
        self._exchange = exchange
        self._finish = finish
        self._closed = False

    def __iter__(self) -> CapturedResponse:
        return self

    def __next__(self) -> bytes:
        try:
            if self._iterator is None:
                self._iterator = iter(self._result)
            chunk = next(self._iterator)
        except StopIteration:
            raise
        except BaseException as exc:
            self._exchange.fail(exc)
            raise
        _count_chunk(self._exchange, chunk)
        return chunk

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
            self._exchange.end = perf_counter()
            self._finish(self._exchange)


class SizedCapturedResponse(CapturedResponse):
    """A :class:`CapturedResponse` that keeps ``len()``, which some servers use
    (wsgiref sets Content-Length for a one-item list)."""

    __slots__ = ()

    def __len__(self) -> int:
        return len(self._result)  # type: ignore[arg-type]


def annotate(environ: WSGIEnvironment, **props: Any) -> None:
    """Add ``props`` to the ``custom_properties`` of the event for this request.

    Does nothing for a request that is not captured (no agent token, skipped, sampled
    out), so it is always safe to call.

    .. code-block:: python

        def app(environ, start_response):
            annotate(environ, tenant="acme", plan="pro")
    """
    exchange = environ.get(EXCHANGE_ENVIRON_KEY)
    if exchange is not None:
        exchange.annotate(props)
