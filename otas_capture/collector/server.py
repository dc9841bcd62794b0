"""Serving the collector on a local port, with waitress, from a background thread.

A real WSGI server rather than a hand-written one: waitress keeps HTTP/1.1
connections alive (so the SDK's connection reuse is exercised and measured), parses
chunked bodies, answers malformed requests with 400 by itself, and is pure Python.
It is an optional dependency: ``pip install 'otas-capture[collector]'``.

``CollectorServer`` runs waitress's event loop in a daemon thread and stops it at once
when asked: the loop is woken through waitress's trigger instead of waiting out a poll
interval, so test fixtures that start and stop servers cost milliseconds.
"""

from __future__ import annotations

import socket
import threading
from typing import Any, Callable

from .app import Collector

try:
    from waitress import wasyncore
    from waitress.server import BaseWSGIServer, create_server
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError(
        "the local collector needs waitress: pip install 'otas-capture[collector]'"
    ) from exc

__all__ = ["CollectorServer", "serve"]

# Enough worker threads that the SDK's calls in flight queue inside the collector's
# own capacity emulation, never in waitress's task queue.
DEFAULT_THREADS = 100


class _AccessLog:
    """WSGI wrapper writing one line per request to the server's error stream."""

    def __init__(self, app: Callable[..., Any]) -> None:
        self._app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        def logging_start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
            line = (
                f'{environ.get("REMOTE_ADDR", "-")} "{environ.get("REQUEST_METHOD")} '
                f'{environ.get("PATH_INFO")}" {status.split(" ", 1)[0]}\n'
            )
            environ["wsgi.errors"].write(line)
            environ["wsgi.errors"].flush()
            return start_response(status, headers, exc_info)

        return self._app(environ, logging_start_response)


class CollectorServer:
    """Runs a Collector on a local port in a background thread; a context manager.

    Parameters:
        collector: the app to serve; a new ``Collector()`` if None.
        host: interface to listen on.
        port: port to listen on; 0 picks a free one (read ``url`` after ``start()``).
        log_requests: write an access line per request to standard error.
        threads: waitress worker threads, the most calls answered at once.

    Example::

        with CollectorServer() as server:
            requests.post(server.url + AUTHENTICATE_PATH, headers={SDK_KEY_HEADER: DEMO_SDK_KEY})
            server.collector.events()
    """

    def __init__(
        self,
        collector: Collector | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        log_requests: bool = False,
        threads: int = DEFAULT_THREADS,
    ) -> None:
        self.collector = collector if collector is not None else Collector()
        self.host = host
        self.port = port
        self.url = ""
        self._log_requests = log_requests
        self._threads = threads
        self._server: BaseWSGIServer | None = None
        self._map: dict[int, Any] = {}
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> CollectorServer:
        """Listen and serve in a background thread; raises OSError if the port is taken."""
        if self._server is not None:
            raise RuntimeError("CollectorServer is already running")
        family, kind, proto, _, address = socket.getaddrinfo(
            self.host, self.port, type=socket.SOCK_STREAM
        )[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
        except OSError:
            sock.close()
            raise
        app: Callable[..., Any] = self.collector
        if self._log_requests:
            app = _AccessLog(app)
        self._map = {}
        self._stopping.clear()
        server = create_server(
            app,
            map=self._map,
            sockets=[sock],
            threads=self._threads,
            connection_limit=1000,
        )
        assert isinstance(server, BaseWSGIServer)  # one socket gives one server
        self._server = server
        self.port = sock.getsockname()[1]
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.url = f"http://{host}:{self.port}"
        self._thread = threading.Thread(
            target=self._serve, name=f"otas-collector-{self.port}", daemon=True
        )
        self._thread.start()
        return self

    def _serve(self) -> None:
        server, stopping = self._server, self._stopping
        assert server is not None
        try:
            while not stopping.is_set():
                # One poll at a time so the stop flag is seen; stop() wakes the poll.
                wasyncore.loop(timeout=30.0, use_poll=True, map=self._map, count=1)
        finally:
            wasyncore.close_all(self._map)
            # Idle workers exit now; one busy in a slow answer exits when it is done
            # (its client is already disconnected), without holding up stop().
            server.task_dispatcher.set_thread_count(0)

    def stop(self) -> None:
        """Close the port and every connection; returns at once. Safe to call twice."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        try:
            server.pull_trigger()
        except OSError:  # the serve loop saw the flag first and closed the trigger
            pass
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> CollectorServer:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()


def serve(
    collector: Collector | None = None, host: str = "127.0.0.1", port: int = 0
) -> CollectorServer:
    """Start a CollectorServer and return it; call ``stop()`` when done."""
    return CollectorServer(collector, host, port).start()
