"""The WSGI wrapper: decides which requests to capture and hands each to the sender.

An agent marks its requests with the ``X-OTAS-AGENT-SESSION-TOKEN`` header. For each
such request the middleware tees the request body as the application reads it, wraps
``start_response`` and the response iterable to count and keep the response (see
:mod:`otas_capture.capture.response`), and hands the whole exchange to the background sender as
soon as the response is done: iterated to the end or closed, whichever comes first.
Other requests pass straight through.

The application and the server see exactly what they would without the middleware:
the same bytes, the same objects where the server looks for its own (its file wrapper),
the same exceptions raised by the server's own code, ``close()`` called once. Nothing
here waits on the network or raises an error of its own into the application.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from time import perf_counter
from typing import TYPE_CHECKING, Any, Callable

from ..config import BeforeSend, Config
from ..contract import LOGGER_NAME, SESSION_TOKEN_ENVIRON
from ..delivery.stats import Stats
from ..event.context import note_current_span
from . import registry, shutdown
from .annotate import CURRENT_EXCHANGE
from .exchange import (
    EXCHANGE_ENVIRON_KEY,
    BodyBuffer,
    Exchange,
    decoded_path,
    is_encoded,
    is_textual,
    mark_unread,
)
from .handoff import Handoff, ship_orphans
from .response import (
    CapturedResponse,
    SizedCapturedResponse,
    count_chunk,
    is_server_file,
    pass_file,
    record_start,
)
from .tee import InputTee

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from ..delivery.sender import Sender

# The framework integrations find a request's exchange under EXCHANGE_ENVIRON_KEY.
__all__ = ["EXCHANGE_ENVIRON_KEY", "TOKEN_ENVIRON_KEY", "OtasMiddleware"]

logger = logging.getLogger(LOGGER_NAME)

# Seconds close() waits, out of its timeout, for responses being finished (see close).
RESPONSE_GRACE = 0.25

TOKEN_ENVIRON_KEY = SESSION_TOKEN_ENVIRON
# The parameters of OtasMiddleware.__init__ that are not settings of Config.
_NOT_SETTINGS = frozenset({"self", "app"})


class OtasMiddleware:
    """Capture the requests AI agents make to a WSGI application and ship them to OTAS.

    :param app: the WSGI application to wrap.

    Every other parameter is a setting of :class:`~otas_capture.config.Config`, keyword
    only. ``None`` (the default) means "not given": the setting is read from its
    ``OTAS_<NAME>`` environment variable, else takes its default. A bad value given here
    raises :class:`~otas_capture.ConfigError` naming it, at start-up; a bad variable never
    does: it is logged, then replaced (see :mod:`otas_capture.config`). The docs'
    configuration reference (docs/configuration.md) gives each default and what it accepts.

    :param sdk_key: the backend SDK key, ``otas_<prefix>_<secret>``; without one nothing
        is captured.
    :param project_id: the project UUID; learned from UASAM when not set.
    :param brain_url: OTAS Brain's base URL (event ingestion).
    :param uasam_url: OTAS UASAM's base URL (keys and projects).
    :param enabled: ``False`` turns capture off entirely.
    :param max_body_bytes: bytes kept of each body (at most 1 MiB).
    :param sensitive_headers: header names redacted on top of the built-in ones.
    :param sensitive_fields: field names masked on top of the masking rule.
    :param skip_paths: path prefixes never captured.
    :param sample_rate: the fraction of agent requests captured, 0 to 1.
    :param queue_size: events waiting to be sent, at most.
    :param queue_max_bytes: memory those events may hold, at most.
    :param batch_size: deprecated, no effect (a ``DeprecationWarning`` says so).
    :param flush_interval: deprecated, no effect (a ``DeprecationWarning`` says so).
    :param concurrency: calls to Brain in flight at once, at most, from this process; the
        ceiling of the limit the processes of a host share.
    :param timeout: seconds one call to OTAS may take in all.
    :param answer_timeout: seconds to wait for Brain's answer to a call sent whole.
    :param max_retries: retries of one event that keeps failing.
    :param retry_backoff: seconds before the first retry (doubling after).
    :param shutdown_timeout: seconds the flush at process exit may take.
    :param spool_dir: a directory for what is undelivered at exit (opt-in).
    :param ca_bundle: CA certificates (a PEM file or directory) trusted for https.
    :param safe_fields: field names the masking rule must leave alone.
    :param before_send: ``before_send(event) -> event | None`` run on each finished
        event (or its dotted path ``package.module:function``).
    :param environment: the deployment's name (``production``), in each event's metadata.
    :param release: the app's version or commit, in each event's metadata.

    Without an SDK key (or with ``enabled=False``) the middleware passes every request
    through untouched and ships nothing. Examples for each framework: docs/.
    """

    # The settings are spelled out so that editors complete them and type checkers check
    # them; Config.load() still parses them all. tests/test_config.py keeps this list and
    # Config's fields equal.
    def __init__(
        self,
        app: WSGIApplication,
        *,
        sdk_key: str | None = None,
        project_id: str | None = None,
        brain_url: str | None = None,
        uasam_url: str | None = None,
        enabled: bool | None = None,
        max_body_bytes: int | None = None,
        sensitive_headers: str | Iterable[str] | None = None,
        sensitive_fields: str | Iterable[str] | None = None,
        skip_paths: str | Iterable[str] | None = None,
        sample_rate: float | None = None,
        queue_size: int | None = None,
        queue_max_bytes: int | None = None,
        batch_size: int | None = None,
        flush_interval: float | None = None,
        concurrency: int | None = None,
        timeout: float | None = None,
        answer_timeout: float | None = None,
        max_retries: int | None = None,
        retry_backoff: float | None = None,
        shutdown_timeout: float | None = None,
        spool_dir: str | os.PathLike[str] | None = None,
        ca_bundle: str | os.PathLike[str] | None = None,
        safe_fields: str | Iterable[str] | None = None,
        before_send: BeforeSend | str | None = None,
        environment: str | None = None,
        release: str | None = None,
    ) -> None:
        # Every keyword is a setting: hand them all to the one parser, by name.
        options = {name: value for name, value in locals().items() if name not in _NOT_SETTINGS}
        self.app = app
        self.config = Config.load(options)
        self._stats = Stats()
        self._sender: Sender | None = None
        # False without a key, and again once close() began: requests then pass through.
        self._capturing = False
        self._closed = False
        self._serving = False  # True from the first request on
        # What the response wrappers and close() end exchanges through: neither a request
        # nor the SIGTERM handler (which may finish an exchange while the main thread is
        # anywhere) ever waits on a lock there.
        self._handoff = Handoff(self._ship)
        if self.config.shipping:
            # Imported here: the sender's modules (the event builder, the masker, the
            # transport) are most of the package's import time, and a middleware that
            # ships nothing, or code that only imports the package, never needs them.
            from ..delivery.sender import Sender

            self._sender = Sender(self.config, self._stats)
            self._capturing = True
            shutdown.register(self.close, self.config.shutdown_timeout)
        elif self.config.enabled:
            logger.warning("otas-capture: OTAS_SDK_KEY is not set; requests pass through")
        elif not self.config.env_refused:  # else off for a refused value: config said so
            logger.info("otas-capture: disabled by OTAS_ENABLED; requests pass through")
        self._skip_paths = tuple(self.config.skip_paths)
        self._sample_rate = self.config.sample_rate
        self._sample = _sampler(self._sample_rate)
        self._body_limit = self.config.max_body_bytes
        registry.register(self)  # for otas_capture.flush()/close()/stats(), Flask by hand

    def __repr__(self) -> str:
        return f"<OtasMiddleware app={self.app!r} shipping={self._sender is not None}>"

    # -- public API --------------------------------------------------------------------

    @property
    def capturing(self) -> bool:
        """Whether agent requests are captured now: a key is set and close() has not run."""
        return self._capturing

    @property
    def closed(self) -> bool:
        """Whether close() has run."""
        return self._closed

    @property
    def handoff(self) -> Handoff:
        """Where this middleware's exchanges end (see :mod:`otas_capture.capture.handoff`)."""
        return self._handoff

    def start_serving(self) -> None:
        """Called on the first request of any kind: the server has forked its workers by
        now, so the sender may start its threads (it ships what a spool holds)."""
        if not self._serving:
            self._serving = True
            if self._sender is not None:
                self._sender.start()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every event captured so far is delivered or given up.

        A request counts as captured once its response is done: iterated to the end or
        closed by the server, whichever comes first (a response a test client left
        unread counts once it is garbage-collected). Returns False if ``timeout``
        seconds pass first (for instance while OTAS is down).
        ``otas_capture.flush()`` does this for every middleware.
        """
        if self._sender is None:
            return True
        ship_orphans()
        return self._sender.flush(timeout)

    def close(self, timeout: float | None = None) -> None:
        """Flush for up to ``timeout`` seconds, then stop the sender. Safe to call twice.

        ``timeout`` defaults to ``shutdown_timeout`` (``OTAS_SHUTDOWN_TIMEOUT``). Also
        runs at interpreter exit, and on SIGTERM when the process has no handler of its
        own (see :mod:`otas_capture.capture.shutdown`). Events still undelivered are counted
        (reason ``shutdown``) and summed up in one log line. A response still unfinished
        after a short grace is shipped with what is known of it (``unclosed``). Requests
        after ``close`` pass through untouched and uncounted. ``otas_capture.close()``
        does this for every middleware.
        """
        sender = self._sender
        if sender is None or self._closed:
            return
        self._closed = True
        self._capturing = False
        shutdown.unregister(self.close)
        timeout = self.config.shutdown_timeout if timeout is None else timeout
        # A response already sent may be a moment from its end (a threaded server
        # iterates once more after the last chunk, then closes it): SIGTERM right after
        # the client got its answer must not lose that request. A short grace, since a
        # long stream still going would only hold the whole shutdown up.
        began = perf_counter()
        self._handoff.wait(min(timeout, RESPONSE_GRACE))
        self._handoff.abandon_unfinished()
        sender.close(max(0.0, timeout - (perf_counter() - began)))
        shutdown.log_summary(self.stats())

    def stats(self) -> dict[str, Any]:
        """Counts of what happened to captured requests, with reasons.

        ``captured``: requests recorded; ``sent``: accepted by Brain; ``failed``: refused
        for good or out of retries; ``retried``: retries scheduled; ``dropped``: lost to a
        full queue or shutdown; ``skipped``: not shipped by design (no session token,
        skipped path, sampled out, a token Brain would refuse); ``queued``: events not yet
        settled (queued, in flight or waiting to retry); ``unclosed``: responses neither
        iterated to the end nor closed (by a test client, usually), counted in
        ``captured`` and shipped when they were garbage-collected. ``reasons`` breaks
        down ``failed``, ``dropped`` and ``skipped``. ``otas_capture.stats()`` adds up
        every middleware's.
        """
        ship_orphans()
        pending = self._sender.pending if self._sender is not None else 0
        return self._stats.snapshot(queued=pending, unclosed=self._handoff.unclosed)

    # -- the request path --------------------------------------------------------------

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if not self._capturing:
            return self.app(environ, start_response)
        if not self._serving:
            self.start_serving()
        token = environ.get(TOKEN_ENVIRON_KEY)
        if not token:
            self.skip_untokened()
            return self.app(environ, start_response)
        if EXCHANGE_ENVIRON_KEY in environ:
            # Wrapped twice (an OtasMiddleware around this one's app, or the reverse):
            # the outer one captures this request, so this one only passes it on.
            return self.app(environ, start_response)
        if self._skip_paths:
            path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
            if not path.isascii():
                path = decoded_path(path)
        else:
            path = ""
        if not self.admits(path):
            return self.app(environ, start_response)
        return self._capture(environ, start_response, token)

    def admits(self, path: str) -> bool:
        """Whether an agent request to ``path`` (as text) is captured: not a skipped path,
        not sampled out. A request turned away is counted with its reason."""
        if self._skip_paths and path.startswith(self._skip_paths):
            self._stats.incr("skipped", "skip_path")
            return False
        if self._sample_rate < 1.0 and self._sample() >= self._sample_rate:
            self._stats.incr("skipped", "sampled_out")
            return False
        return True

    def skip_untokened(self) -> None:
        """Count a request without a session token (passed through untouched)."""
        self._stats.incr("skipped", "no_token")

    def _capture(
        self, environ: WSGIEnvironment, start_response: StartResponse, token: str
    ) -> Iterable[bytes]:
        start = perf_counter()
        body_limit = self._body_limit
        request_limit = body_limit
        if not is_textual(environ.get("CONTENT_TYPE")) or is_encoded(
            environ.get("HTTP_CONTENT_ENCODING")
        ):
            request_limit = 0  # counted, not kept: binary, or compressed text
        request_body = BodyBuffer(request_limit)
        exchange = Exchange(token, time.time(), start, environ, request_body)
        handoff = self._handoff
        handoff.begin(exchange)
        environ[EXCHANGE_ENVIRON_KEY] = exchange
        stream = environ.get("wsgi.input")
        if stream is not None:
            environ["wsgi.input"] = InputTee(stream, request_body)

        def capturing_start_response(*args: Any, **kwargs: Any) -> Callable[..., Any]:
            # The server's start_response runs first, with exactly what the app gave:
            # its checks raise its own errors, and a call it refuses (exc_info after
            # the headers went out re-raises) leaves the event with what was sent.
            write = start_response(*args, **kwargs)
            record_start(exchange, args, kwargs, body_limit)
            note_current_span(exchange)  # the app's OpenTelemetry span is current here

            def capturing_write(*data: Any, **kw: Any) -> Any:
                result = write(*data, **kw)
                if data:
                    count_chunk(exchange, data[0])
                return result

            return capturing_write

        # annotate(**props) finds the exchange here while the application runs.
        context = CURRENT_EXCHANGE.set(exchange)
        try:
            result = self.app(environ, capturing_start_response)
        except BaseException as exc:
            exchange.fail(exc)
            handoff.finish(exchange)
            raise
        finally:
            CURRENT_EXCHANGE.reset(context)
        handoff.returned(exchange)
        if type(result) is not list:
            file_wrapper = environ.get("wsgi.file_wrapper")
            if file_wrapper is not None and is_server_file(result, file_wrapper):
                return pass_file(result, exchange, handoff.finish)
        wrapper = SizedCapturedResponse if hasattr(result, "__len__") else CapturedResponse
        return wrapper(result, exchange, handoff)

    def _ship(self, exchange: Exchange) -> None:
        """Hand a complete exchange to the sender (the hand-off calls this once per
        exchange). Never raises into the server."""
        try:
            if exchange.end is None:
                exchange.end = perf_counter()
            body = exchange.request_body
            if body.size == 0 and exchange.content_length:
                mark_unread(exchange, body)
            exchange.sealed = True
            assert self._sender is not None
            try:
                self._sender.submit(exchange)
            finally:
                # Counted once queued (or dropped as it came), so that a flush() that
                # saw a request captured waits for its event, whichever thread shipped it.
                self._stats.incr("captured")
        except Exception:  # a bug of ours: count it, say it, never raise it
            self._stats.incr("dropped", "internal_error")
            self._stats.log_limited(
                "queue_error",
                logging.ERROR,
                "otas-capture: could not queue an event",
                exc_info=True,
            )


def _sampler(rate: float) -> Callable[[], float]:
    """A source of uniform numbers in [0, 1) for sampling at ``rate``.

    ``random`` is imported only when some requests are sampled out: it is a few
    milliseconds of ``import otas_capture`` otherwise.
    """
    if rate >= 1.0:
        return float  # never called: every request is captured
    import random

    return random.random
