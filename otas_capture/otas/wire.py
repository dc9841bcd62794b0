"""A lean HTTP/1.1 client for the calls to OTAS: one buffer out, one strict parser in.

Brain takes one event per call, so the sender's CPU per call is its CPU per event.
``http.client`` formats every header line anew, writes headers and body separately and
parses the answer through ``email.parser``; for the same bytes this module spends about
a tenth of that (``benchmarks/wire_call.py``):

* The request line and the headers that never change (Host, User-Agent, Content-Type,
  the SDK key) are formatted once, when the connection object is made. Per call only
  the session token and ``Content-Length`` are added, and the request goes out with one
  ``sendall`` of one buffer.
* :class:`~otas_capture.otas.parser.ResponseParser` reads the answer as h11 does, in
  time linear in what it is fed. A malformed answer raises :class:`ProtocolError` (an
  ``OSError``, as a broken connection would be) and the connection is dropped, never
  reused in an unknown state; so is one that says it closes, or that carried both
  ``Transfer-Encoding`` and ``Content-Length``, or bytes past its end.
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

import select
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from time import perf_counter
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from .parser import TOKEN_CHARACTERS, ClosedEarly, ProtocolError, Response, ResponseParser

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

_RECV = 65536
_SLACK = 0.01  # seconds a receive may outlast the deadline rather than reset its bound
_CRLF = b"\r\n"


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


def header_line(name: str, value: str) -> bytes:
    """``name: value`` and CRLF; refuses what would split or corrupt the request."""
    try:
        raw_name, data = name.encode("ascii"), value.encode("latin-1")
    except UnicodeEncodeError:
        raise UnsendableHeader(f"header {name!r} is not latin-1 text") from None
    if not raw_name or raw_name.translate(None, TOKEN_CHARACTERS):
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
    if _poll is None:
        return not select.select([sock], [], [], 0)[0]
    poller = _poll()  # select() fails on descriptors above FD_SETSIZE: poll where there is
    poller.register(sock, select.POLLIN)
    return not poller.poll(0)


_poll = getattr(select, "poll", None)


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
        self._aborted = False
        # The last call's own headers and their lines: the sender's change only with
        # the session token, so most calls skip checking and formatting them again.
        self._extra: tuple[tuple[str, str], ...] | None = None
        self._extra_lines = b""
        self.sent = False

    @property
    def path(self) -> str:
        return self._endpoint.path

    def post(
        self,
        body: bytes,
        headers: Iterable[tuple[str, str]] = (),
        timeout: float | None = None,
        answer_timeout: float | None = None,
    ) -> Response:
        """POST ``body`` with ``headers`` added to the fixed ones; return the answer.

        ``timeout`` replaces the connection's own for this call. Once the request is
        written whole, its answer is awaited ``answer_timeout`` s if that ends later
        than ``timeout`` would (a resend would cost the server more). Raises ``OSError``
        (``socket.timeout`` past the deadline, :class:`ProtocolError` for a malformed
        answer) or :class:`UnsendableHeader`, before sending anything. After a call,
        :attr:`sent` says whether the whole request had been written (so whether the
        server may have acted on it, when the call failed). Never sends it twice.
        """
        self.sent = False
        if headers != self._extra:  # a list or generator is never equal: formatted anew
            pairs = tuple(headers)
            self._extra_lines = b"".join([header_line(name, value) for name, value in pairs])
            self._extra = pairs
        request = b"".join(
            (
                self._endpoint.head,
                self._extra_lines,
                b"Content-Length: %d\r\n\r\n" % len(body),
                body,
            )
        )
        deadline = perf_counter() + (self._timeout if timeout is None else timeout)
        try:
            if self._aborted:
                raise ConnectionAbortedError("the connection was aborted")
            sock = self._sock
            if sock is not None and not _idle_and_open(sock):
                self.close()
                sock = None
            if sock is None:
                sock = self._sock = self._connect(deadline)
            bound = _remaining(deadline)
            sock.settimeout(bound)  # a system call: set again only when it must change
            sock.sendall(request)  # the timeout bounds the whole sendall
            self.sent = True
            if answer_timeout is not None:
                deadline = max(deadline, perf_counter() + answer_timeout)
            if self._aborted:  # abort() came before there was a socket to shut down
                raise ConnectionAbortedError("the connection was aborted")
            parser = ResponseParser()
            while True:
                # The bound set before sending still fits the deadline, unless the send
                # took a while or the answer is waited for longer.
                left = _remaining(deadline)
                if not left <= bound <= left + _SLACK:
                    bound = left
                    sock.settimeout(bound)
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

    def abort(self) -> None:
        """From another thread: end the call in progress now (it raises ``OSError``),
        and every later one."""
        self._aborted = True
        sock = self._sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes a blocked send or receive
            except OSError:
                pass  # already closed by its own thread


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
