"""Serving a WSGI app (the collector, the demo's app) on a local port from a background thread.

With waitress installed (the ``collector`` or ``demo`` extra) it is the server: a real
WSGI server that keeps HTTP/1.1 connections alive (so the SDK's connection reuse is
exercised and measured), parses chunked bodies, answers malformed requests with 400 by
itself, and is pure Python. Like the public Brain, it finishes a call whose client
has given up, even one still waiting for a worker thread: waitress reads nothing more
from a connection whose request is queued, so it does not see the hang-up (with its
default ``channel_request_lookahead`` of 0, which this module keeps). ``AppServer``
runs waitress's event loop in a daemon thread and stops it at once when asked: the loop is
woken through waitress's trigger instead of waiting out a poll interval, so test
fixtures that start and stop servers cost milliseconds.

Without waitress, the standard library's ``wsgiref`` serves instead, one daemon thread
per connection. That fallback is for the demo and for trying the collector after a
plain ``pip install``: it speaks HTTP/1.0, so it closes the connection after each call
(no keep-alive to measure) and sees no body in a chunked request. Install the extra
for anything else.
"""

from __future__ import annotations

import socket
import socketserver
import threading
from typing import Any, Callable
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from .app import Collector

try:
    from waitress import wasyncore
    from waitress.server import BaseWSGIServer, create_server

    HAVE_WAITRESS = True
except ImportError:  # pragma: no cover - depends on the installation
    HAVE_WAITRESS = False

__all__ = ["HAVE_WAITRESS", "AppServer", "CollectorServer", "serve"]

# Enough worker threads that the SDK's calls in flight queue inside the collector's
# own capacity emulation, never in waitress's task queue.
DEFAULT_THREADS = 100

# How often the standard-library server looks at its stop flag: stop() waits this long
# at most.
_POLL_INTERVAL = 0.05


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


class _QuietHandler(WSGIRequestHandler):
    """wsgiref's handler without its own access log (``_AccessLog`` writes one if asked)."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    """wsgiref's server, one daemon thread per connection so a slow call blocks no other."""

    daemon_threads = True


class AppServer:
    """Runs a WSGI app on a local port in a background thread; a context manager.

    Parameters:
        app: the WSGI application to serve.
        host: interface to listen on.
        port: port to listen on; 0 picks a free one (read ``url`` after ``start()``).
        log_requests: write an access line per request to standard error.
        threads: waitress worker threads, the most calls answered at once (the
            standard-library fallback starts a thread per connection instead).
        use_waitress: None (the default) serves with waitress when it is installed;
            False forces the standard-library server; True requires waitress.

    Example::

        with AppServer(app) as server:
            requests.get(server.url + "/")
    """

    def __init__(
        self,
        app: Callable[..., Any],
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        log_requests: bool = False,
        threads: int = DEFAULT_THREADS,
        use_waitress: bool | None = None,
    ) -> None:
        if use_waitress and not HAVE_WAITRESS:
            raise ImportError("waitress is not installed: pip install 'otas-capture[collector]'")
        self.app = app
        self.host = host
        self.port = port
        self.url = ""
        self.uses_waitress = HAVE_WAITRESS if use_waitress is None else use_waitress
        self._log_requests = log_requests
        self._threads = threads
        self._server: Any = None  # waitress's BaseWSGIServer or _ThreadingWSGIServer
        self._map: dict[int, Any] = {}
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> AppServer:
        """Listen and serve in a background thread; raises OSError if the port is taken."""
        if self._server is not None:
            raise RuntimeError("the server is already running")
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
        app: Callable[..., Any] = self.app
        if self._log_requests:
            app = _AccessLog(app)
        self._stopping.clear()
        if self.uses_waitress:
            target = self._start_waitress(sock, app)
        else:
            target = self._start_wsgiref(sock, app)
        self.port = sock.getsockname()[1]
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.url = f"http://{host}:{self.port}"
        self._thread = threading.Thread(target=target, name=f"otas-server-{self.port}", daemon=True)
        self._thread.start()
        return self

    def _start_waitress(self, sock: socket.socket, app: Callable[..., Any]) -> Callable[[], None]:
        self._map = {}
        server = create_server(
            app,
            map=self._map,
            sockets=[sock],
            threads=self._threads,
            connection_limit=1000,
        )
        assert isinstance(server, BaseWSGIServer)  # one socket gives one server
        self._server = server
        return self._serve_waitress

    def _start_wsgiref(self, sock: socket.socket, app: Callable[..., Any]) -> Callable[[], None]:
        server = _ThreadingWSGIServer(sock.getsockname(), _QuietHandler, bind_and_activate=False)
        # Serve the socket bound above (its family may be IPv6) instead of a new one.
        server.socket.close()
        server.socket = sock
        server.server_address = sock.getsockname()
        server.server_activate()
        # What WSGIServer.server_bind would have set up for the environ (without its
        # reverse DNS lookup of the host).
        server.server_name = self.host or "localhost"
        server.server_port = sock.getsockname()[1]
        server.setup_environ()
        server.set_app(app)
        self._server = server
        return lambda: server.serve_forever(poll_interval=_POLL_INTERVAL)

    def _serve_waitress(self) -> None:
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
        """Close the port and stop serving; returns promptly. Safe to call twice."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        if self.uses_waitress:
            try:
                server.pull_trigger()
            except OSError:  # the serve loop saw the flag first and closed the trigger
                pass
        else:
            # Returns within a poll interval; calls in flight finish in their daemon
            # threads, which do not keep the process alive.
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> AppServer:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()


class CollectorServer(AppServer):
    """Runs a Collector on a local port in a background thread; a context manager.

    Parameters as for :class:`AppServer`, with ``collector`` (a new ``Collector()`` if
    None) as the app.

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
        use_waitress: bool | None = None,
    ) -> None:
        self.collector = collector if collector is not None else Collector()
        super().__init__(
            self.collector,
            host,
            port,
            log_requests=log_requests,
            threads=threads,
            use_waitress=use_waitress,
        )

    def start(self) -> CollectorServer:
        super().start()
        return self

    def __enter__(self) -> CollectorServer:
        return self.start()


def serve(
    collector: Collector | None = None, host: str = "127.0.0.1", port: int = 0
) -> CollectorServer:
    """Start a CollectorServer and return it; call ``stop()`` when done."""
    return CollectorServer(collector, host, port).start()
