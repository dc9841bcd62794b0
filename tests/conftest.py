"""Shared fixtures: a real collector on loopback, and middlewares that ship to it.

Everything the SDK sends in these tests crosses a real TCP connection to
:class:`otas_capture.collector.Collector`, exactly as it would reach OTAS in production.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from typing import Any, Callable
from wsgiref.simple_server import WSGIRequestHandler
from wsgiref.simple_server import make_server as wsgiref_server

import pytest
from werkzeug.serving import make_server

from otas_capture import OtasMiddleware
from otas_capture.collector import DEMO_SDK_KEY, Collector, CollectorServer
from otas_capture.contract import SESSION_TOKEN_HEADER

TOKEN_HEADER = SESSION_TOKEN_HEADER


@pytest.fixture(scope="session")
def collector_server() -> Iterator[CollectorServer]:
    with CollectorServer() as server:
        yield server


@pytest.fixture
def collector(collector_server: CollectorServer) -> Iterator[Collector]:
    """The collector, emptied and healthy before and after each test."""
    collector = collector_server.collector
    collector.reset()
    yield collector
    collector.reset()


@pytest.fixture
def token(collector: Collector) -> str:
    """A valid agent session token, as UASAM would issue it."""
    return collector.issue_token()


@pytest.fixture
def agent(token: str) -> dict:
    """The headers an agent sends on every request."""
    return {TOKEN_HEADER: token}


@pytest.fixture
def make_middleware(
    collector_server: CollectorServer, collector: Collector
) -> Iterator[Callable[..., OtasMiddleware]]:
    """Build middlewares that ship to the test collector quickly; all closed afterwards."""
    made: list[OtasMiddleware] = []

    def make(app: Any, **options: Any) -> OtasMiddleware:
        settings = dict(
            sdk_key=DEMO_SDK_KEY,
            brain_url=collector_server.url,
            uasam_url=collector_server.url,
            retry_backoff=0.01,
            timeout=2.0,
        )
        settings.update(options)
        middleware = OtasMiddleware(app, **settings)
        made.append(middleware)
        return middleware

    yield make
    for middleware in made:
        middleware.close(timeout=2.0)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args: Any) -> None:  # keep test output clean
        pass


@pytest.fixture
def serve_app() -> Iterator[Callable[[Any], str]]:
    """Run WSGI apps on a real loopback HTTP server; returns the base URL.

    werkzeug's threaded server by default; ``wsgiref=True`` for the standard library's,
    which offers ``wsgi.file_wrapper`` and sets Content-Length for one-item responses.
    """
    servers = []

    def serve(app: Any, wsgiref: bool = False) -> str:
        if wsgiref:
            server = wsgiref_server("127.0.0.1", 0, app, handler_class=_QuietHandler)
        else:
            server = make_server("127.0.0.1", 0, app, threaded=True)
        # A short poll interval: shutdown() waits for the loop to notice, and the
        # default half second per server was half of the suite's wall time.
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        thread.start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}"

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


def default_sigint() -> None:
    """``preexec_fn`` for a child a test stops with Ctrl-C (SIGINT).

    Python raises KeyboardInterrupt on SIGINT only if SIGINT was not ignored when it
    started, and a test run started in the background by a shell (``pytest &``) ignores
    it, as would every child it starts.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def settle(middleware: OtasMiddleware, captured: int = 1, timeout: float = 5.0) -> dict:
    """Wait until ``captured`` requests are recorded and every event is settled.

    A real server closes the response (which completes the capture) just after the
    client has its last byte, so a test must wait for the capture before flushing.
    """
    deadline = time.monotonic() + timeout
    while middleware.stats()["captured"] < captured:
        assert time.monotonic() < deadline, middleware.stats()
        time.sleep(0.005)
    assert middleware.flush(timeout), middleware.stats()
    return middleware.stats()
