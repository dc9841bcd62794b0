"""The lean HTTP/1.1 client (otas_capture.otas.wire) against real loopback servers.

The parser's answers are checked against h11's in tests/test_wire_h11.py; proxies and
the TLS trust in tests/test_route.py.

The ordinary answers come from the project's collector, as Brain's would. Answers the
collector never gives (chunked bodies, bodies ended by closing, HTTP/1.0, malformed
heads, a server that closes idle connections or stalls) come from a small scripted
server on a real loopback socket that writes the exact bytes under test.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Callable

import pytest

from otas_capture.collector import DEMO_SDK_KEY, Collector, CollectorServer
from otas_capture.contract import (
    EVENT_CAPTURED,
    SDK_KEY_HEADER,
    SDK_LOG_PATH,
    SESSION_TOKEN_HEADER,
)
from otas_capture.otas.wire import (
    KeepAliveConnection,
    ProtocolError,
    ResponseParser,
    build_request_head,
)

FIXED = {"Content-Type": "application/json", SDK_KEY_HEADER: DEMO_SDK_KEY}


def event(path: str = "/api/items") -> bytes:
    return (
        b'{"project_id": "p", "path": "%s", "method": "GET", "status_code": 200, '
        b'"latency_ms": 1.5}' % path.encode()
    )


# -- a scripted server: reads one request at a time, writes the bytes it is given --------

CLOSE = "close"
RESET = "reset"
# What to do for one request: bytes to write, seconds to wait, CLOSE, or RESET (close
# with a TCP reset), in order. A script that returns neither keeps the connection open.
Script = Callable[[bytes], "list[bytes | float | str]"]


class ScriptedServer:
    """Loopback server; each connection answers its requests as ``script`` says."""

    def __init__(self, script: Script, tls: ssl.SSLContext | None = None) -> None:
        self.script = script
        self.requests: list[bytes] = []
        self.connections = 0
        self._tls = tls
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            if self._tls is not None:
                conn = self._tls.wrap_socket(conn, server_side=True)
            buffer = b""
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buffer += data
                head, _, rest = buffer.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(rest) < length:
                    rest += conn.recv(65536)
                request, buffer = head + b"\r\n\r\n" + rest[:length], rest[length:]
                self.requests.append(request)
                for action in self.script(request):
                    if action == RESET:
                        conn.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                        )
                    if action in (CLOSE, RESET):
                        return
                    if isinstance(action, bytes):
                        conn.sendall(action)
                    elif isinstance(action, float):
                        time.sleep(action)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        # Shut down first: that wakes the thread blocked in accept(), so that no thread
        # is left waiting on a closed descriptor whose number may be reused.
        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        self._thread.join(timeout=5)


@pytest.fixture
def scripted() -> Iterator[Callable[..., ScriptedServer]]:
    servers: list[ScriptedServer] = []

    def make(script: Script, tls: ssl.SSLContext | None = None) -> ScriptedServer:
        server = ScriptedServer(script, tls)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


def always(*actions: bytes | float | str) -> Script:
    return lambda request: list(actions)


CREATED = b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}"


# -- against the collector ----------------------------------------------------------------


def test_a_post_reaches_the_collector_and_its_answer_is_read(
    collector_server: CollectorServer, collector: Collector, token: str
) -> None:
    conn = KeepAliveConnection(collector_server.url, SDK_LOG_PATH, FIXED, timeout=5)
    try:
        answers = [conn.post(event(f"/n/{i}"), [(SESSION_TOKEN_HEADER, token)]) for i in range(3)]
    finally:
        conn.close()
    assert [a.status for a in answers] == [201, 201, 201]
    assert all(EVENT_CAPTURED.encode() in a.body for a in answers)
    assert [e["path"] for e in collector.events()] == ["/n/0", "/n/1", "/n/2"]


def test_the_connection_is_kept_alive_between_calls(
    scripted: Callable[..., ScriptedServer],
) -> None:
    server = scripted(always(CREATED))
    conn = KeepAliveConnection(server.url, SDK_LOG_PATH, FIXED, timeout=5)
    for _ in range(5):
        assert conn.post(event()).status == 201
    conn.close()
    assert server.connections == 1


def test_the_request_carries_fixed_and_per_call_headers_and_the_exact_body(
    scripted: Callable[..., ScriptedServer],
) -> None:
    server = scripted(always(CREATED))
    conn = KeepAliveConnection(server.url + "/base/", SDK_LOG_PATH, FIXED, timeout=5)
    body = event()
    conn.post(body, [(SESSION_TOKEN_HEADER, "tok")])
    conn.close()
    head, _, sent = server.requests[0].partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /base" + SDK_LOG_PATH.encode() + b" HTTP/1.1"
    assert f"Host: 127.0.0.1:{server.port}".encode() in lines
    assert f"{SDK_KEY_HEADER}: {DEMO_SDK_KEY}".encode() in lines
    assert f"{SESSION_TOKEN_HEADER}: tok".encode() in lines
    assert f"Content-Length: {len(body)}".encode() in lines
    assert sent == body


def test_each_call_carries_its_own_headers_whatever_the_last_call_sent(
    scripted: Callable[..., ScriptedServer],
) -> None:
    server = scripted(always(CREATED))
    conn = KeepAliveConnection(server.url, SDK_LOG_PATH, FIXED, timeout=5)
    calls: list[object] = [
        ((SESSION_TOKEN_HEADER, "a"),),
        ((SESSION_TOKEN_HEADER, "a"),),
        [(SESSION_TOKEN_HEADER, "b")],
        (pair for pair in [(SESSION_TOKEN_HEADER, "b")]),
        (),
        ((SESSION_TOKEN_HEADER, "a"), ("X-Extra", "1")),
        ((SESSION_TOKEN_HEADER, "a"),),
    ]
    for headers in calls:
        assert conn.post(event(), headers).status == 201  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        conn.post(event(), ((SESSION_TOKEN_HEADER, "a\nb"),))
    assert conn.post(event(), ((SESSION_TOKEN_HEADER, "a"),)).status == 201
    conn.close()
    extra = [
        [line for line in request.split(b"\r\n\r\n")[0].split(b"\r\n")[1:]
         if line.startswith((SESSION_TOKEN_HEADER.encode(), b"X-Extra"))]
        for request in server.requests
    ]  # fmt: skip
    token = SESSION_TOKEN_HEADER.encode() + b": "
    assert extra == [
        [token + b"a"],
        [token + b"a"],
        [token + b"b"],
        [token + b"b"],
        [],
        [token + b"a", b"X-Extra: 1"],
        [token + b"a"],
        [token + b"a"],
    ]


# -- answers the collector does not give ----------------------------------------------------


def test_a_chunked_answer_is_read_whole(scripted: Callable[..., ScriptedServer]) -> None:
    answer = (
        b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'4;ext=1\r\n{"a"\r\n4\r\n: 1}\r\n0\r\nX-Trailer: t\r\n\r\n'
    )
    server = scripted(always(answer))
    conn = KeepAliveConnection(server.url, SDK_LOG_PATH, FIXED, timeout=5)
    first, second = conn.post(event()), conn.post(event())
    conn.close()
    assert first.body == second.body == b'{"a": 1}'
    assert server.connections == 1  # the chunked answer left the connection reusable


def test_a_close_delimited_answer_is_read_until_the_server_closes(
    scripted: Callable[..., ScriptedServer],
) -> None:
    server = scripted(always(b"HTTP/1.1 500 Oops\r\nRetry-After: 7\r\n\r\nuntil close", CLOSE))
    conn = KeepAliveConnection(server.url, SDK_LOG_PATH, FIXED, timeout=5)
    first = conn.post(event())
    second = conn.post(event())  # needs, and gets, a new connection
    conn.close()
    assert (first.status, first.reason, first.body) == (500, "Oops", b"until close")
    assert first.retry_after == "7"
    assert first.will_close
    assert second.status == 500
    assert server.connections == 2


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 201 Created\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}",
        b"HTTP/1.0 201 Created\r\nContent-Length: 2\r\n\r\n{}",
    ],
    ids=["connection-close", "http-1.0"],
)
def test_an_answer_that_ends_the_connection_is_followed_by_a_new_one(
    scripted: Callable[..., ScriptedServer], answer: bytes
) -> None:
    server = scripted(always(answer))
    conn = KeepAliveConnection(server.url, SDK_LOG_PATH, FIXED, timeout=5)
    assert conn.post(event()).will_close
    assert conn.post(event()).status == 201
    conn.close()
    assert server.connections == 2


def test_an_interim_100_continue_is_skipped(scripted: Callable[..., ScriptedServer]) -> None:
    server = scripted(always(b"HTTP/1.1 100 Continue\r\n\r\n" + CREATED))
    conn = KeepAliveConnection(server.url, SDK_LOG_PATH, FIXED, timeout=5)
    response = conn.post(event())
    conn.close()
    assert (response.status, response.body) == (201, b"{}")


def test_an_answer_split_into_single_bytes_is_assembled(
    scripted: Callable[..., ScriptedServer],
) -> None:
    answer = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 5\r\n\r\nhello"
    actions: list[bytes | float | str] = []
    for i in range(len(answer)):
        actions += [answer[i : i + 1], 0.001]
    server = scripted(lambda request: actions)
    conn = KeepAliveConnection(server.url, SDK_LOG_PATH, FIXED, timeout=5)
    response = conn.post(event())
    conn.close()
    assert (response.status, response.body) == (400, b"hello")


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/2 201 Created\r\n\r\n",
        b"HTTP/1.1 20 Created\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 201 Created\r\nBad header\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 201 Created\r\n folded: x\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
        b"HTTP/1.1 201 Created\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 201 Created\r\nContent-Length: 10\r\n\r\nshort",
    ],
    ids=[
        "http2",
        "short-status",
        "no-colon",
        "folded",
        "two-lengths",
        "negative-length",
        "bad-chunk",
        "truncated-body",
    ],
)
def test_a_malformed_answer_raises_and_the_connection_is_not_reused(
    scripted: Callable[..., ScriptedServer], answer: bytes
) -> None:
    server = scripted(lambda request: [answer, CLOSE] if len(server.requests) == 1 else [CREATED])
    conn = KeepAliveConnection(server.url, SDK_LOG_PATH, FIXED, timeout=5)
    with pytest.raises(ProtocolError):
        conn.post(event())
    assert conn.post(event()).status == 201
    conn.close()
    assert server.connections == 2


def test_a_server_that_trickles_its_answer_cannot_stretch_the_deadline(
    scripted: Callable[..., ScriptedServer],
) -> None:
    trickle: list[bytes | float | str] = [b"HTTP/1.1 201 Created\r\n"]
    trickle += [b"X: y\r\n", 0.1] * 50
    server = scripted(lambda request: trickle)
    conn = KeepAliveConnection(server.url, SDK_LOG_PATH, FIXED, timeout=0.5)
    started = time.monotonic()
    with pytest.raises(socket.timeout):
        conn.post(event())
    assert time.monotonic() - started < 2.5
    conn.close()


def test_an_answer_within_a_longer_deadline_than_the_last_calls_is_waited_for(
    scripted: Callable[..., ScriptedServer],
) -> None:
    # The second call may last longer than the first: a bound kept from the first call
    # (the kernel's, on Linux) must not end it early.
    server = scripted(lambda request: [CREATED] if len(server.requests) == 1 else [1.3, CREATED])
    conn = KeepAliveConnection(server.url, SDK_LOG_PATH, FIXED, timeout=5)
    assert conn.post(event(), timeout=1.0).status == 201
    assert conn.post(event(), timeout=1.9).status == 201
    conn.close()
    assert server.connections == 1


def test_a_server_that_never_answers_times_out_at_the_deadline(
    scripted: Callable[..., ScriptedServer],
) -> None:
    server = scripted(always(10.0))
    conn = KeepAliveConnection(server.url, SDK_LOG_PATH, FIXED, timeout=0.3)
    started = time.monotonic()
    with pytest.raises(socket.timeout):
        conn.post(event())
    assert 0.25 < time.monotonic() - started < 1.5
    assert conn.sent  # the request went out: the server may have acted on it
    conn.close()


def test_a_server_that_stops_reading_cannot_stretch_the_deadline_of_the_send() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    threading.Thread(target=lambda: accepted.append(listener.accept()[0]), daemon=True).start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    conn = KeepAliveConnection(url, SDK_LOG_PATH, FIXED, timeout=0.5)
    started = time.monotonic()
    try:
        with pytest.raises(socket.timeout):
            conn.post(b"x" * (64 * 1024 * 1024))  # far more than the socket buffers hold
        assert 0.45 < time.monotonic() - started < 2.0
        assert not conn.sent
    finally:
        conn.close()
        for sock in accepted:
            sock.close()
        listener.close()


GREEN_STALL = """
import gevent.monkey; gevent.monkey.patch_all()
import socket, threading, time
from otas_capture.otas.wire import KeepAliveConnection
listener = socket.create_server(("127.0.0.1", 0))
def serve():
    conn, _ = listener.accept()
    conn.recv(65536)
    time.sleep(10)
threading.Thread(target=serve, daemon=True).start()
conn = KeepAliveConnection(f"http://127.0.0.1:{listener.getsockname()[1]}", "/x", {}, 0.3)
try:
    conn.post(b"{}")
except TimeoutError:
    print("timed out")
"""


def test_under_gevent_a_stalled_call_still_times_out() -> None:
    # gevent's sockets wait in its loop: the call's deadline must still end the wait.
    pytest.importorskip("gevent")
    done = subprocess.run(
        [sys.executable, "-c", GREEN_STALL], capture_output=True, text=True, timeout=8
    )
    assert done.stdout.strip() == "timed out", done.stderr


def test_a_refused_connection_raises_an_oserror() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    conn = KeepAliveConnection(f"http://127.0.0.1:{port}", SDK_LOG_PATH, FIXED, timeout=2)
    with pytest.raises(ConnectionRefusedError):
        conn.post(event())


@pytest.mark.parametrize("value", ["a\r\nInjected: 1", "a\nb", "nul\0", "snow\u2603"])
def test_a_header_value_that_would_corrupt_the_request_is_refused_before_sending(
    scripted: Callable[..., ScriptedServer], value: str
) -> None:
    server = scripted(always(CREATED))
    conn = KeepAliveConnection(server.url, SDK_LOG_PATH, FIXED, timeout=5)
    with pytest.raises(ValueError):
        conn.post(event(), [(SESSION_TOKEN_HEADER, value)])
    conn.close()
    assert server.requests == []


def test_a_bad_fixed_header_is_refused_when_the_connection_is_made() -> None:
    with pytest.raises(ValueError):
        KeepAliveConnection("http://127.0.0.1:1", SDK_LOG_PATH, {"X": "a\r\nb"}, timeout=1)
    with pytest.raises(ValueError):
        build_request_head("POST", "/", "h", [("Bad Name", "v")])


# -- the gaps a well-kept parser does not have (as h11 closes them) ------------------------


@pytest.mark.parametrize("digits", [21, 5000])
def test_a_content_length_of_more_than_twenty_digits_is_a_protocol_error(digits: int) -> None:
    head = b"HTTP/1.1 201 Created\r\nContent-Length: %s\r\n\r\n" % (b"9" * digits)
    with pytest.raises(ProtocolError):
        ResponseParser(max_body=10**30).feed(head)
    twenty = b"HTTP/1.1 201 Created\r\nContent-Length: %s\r\n\r\n" % (b"9" * 20)
    assert not ResponseParser(max_body=10**30).feed(twenty)  # a length: its body is awaited


@pytest.mark.parametrize("value", [b"a\x00b", b"a\rb", b"a\x0bb", b"a\x0cb", b"a\nb"])
def test_nul_cr_and_other_line_breaks_inside_a_header_value_are_refused(value: bytes) -> None:
    answer = b"HTTP/1.1 201 Created\r\nX-Note: " + value + b"\r\nContent-Length: 0\r\n\r\n"
    with pytest.raises(ProtocolError):
        ResponseParser().feed(answer)


def test_an_answer_with_both_transfer_encoding_and_content_length_closes_the_connection(
    scripted: Callable[..., ScriptedServer],
) -> None:
    answer = (
        b"HTTP/1.1 201 Created\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"2\r\n{}\r\n0\r\n\r\n"
    )
    server = scripted(always(answer))
    conn = KeepAliveConnection(server.url, SDK_LOG_PATH, FIXED, timeout=5)
    first, second = conn.post(event()), conn.post(event())
    conn.close()
    assert first.body == second.body == b"{}"  # read as chunked, as RFC 9112 says
    assert first.will_close
    assert server.connections == 2


def test_an_answer_in_150_000_one_byte_chunks_costs_linear_time(
    scripted: Callable[..., ScriptedServer],
) -> None:
    chunks = b"1\r\nx\r\n" * 150_000
    answer = b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"
    server = scripted(always(answer))
    conn = KeepAliveConnection(server.url, SDK_LOG_PATH, FIXED, timeout=5)
    cpu = time.thread_time()
    response = conn.post(event())
    cpu = time.thread_time() - cpu
    conn.close()
    assert response.body == b"x" * 150_000
    assert cpu < 2.0  # quadratic, it took 4.8 s


def test_a_parser_fed_one_byte_at_a_time_costs_linear_time() -> None:
    answer = b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 5000 + b"Content-Length: 100000\r\n\r\n"
    answer += b"z" * 100_000
    parser = ResponseParser()
    cpu = time.thread_time()
    done = [parser.feed(answer[i : i + 1]) for i in range(len(answer))]
    assert done[-1] and not any(done[:-1])
    assert time.thread_time() - cpu < 2.0
    assert parser.response is not None and len(parser.response.body) == 100_000


def test_a_reset_after_the_request_was_written_is_not_hidden_by_sending_it_again(
    scripted: Callable[..., ScriptedServer],
) -> None:
    # The server reads the second request whole, then resets: it may have acted on it.
    server = scripted(lambda request: [CREATED] if len(server.requests) == 1 else [RESET])
    conn = KeepAliveConnection(server.url, SDK_LOG_PATH, FIXED, timeout=5)
    assert conn.post(event()).status == 201
    with pytest.raises(OSError):
        conn.post(event())
    assert conn.sent  # so the caller counts it as possibly delivered
    conn.close()
    assert len(server.requests) == 2  # sent once, never silently again


def test_a_connection_the_server_closed_while_idle_is_replaced_before_sending(
    scripted: Callable[..., ScriptedServer],
) -> None:
    # The server answers, then closes the idle connection (its keep-alive timeout).
    server = scripted(always(CREATED, 0.05, CLOSE))
    conn = KeepAliveConnection(server.url, SDK_LOG_PATH, FIXED, timeout=5)
    assert conn.post(event()).status == 201
    time.sleep(0.2)
    assert conn.post(event()).status == 201
    conn.close()
    assert len(server.requests) == 2 and server.connections == 2


def test_an_idle_connection_the_server_spoke_on_is_not_used_for_the_next_call(
    scripted: Callable[..., ScriptedServer],
) -> None:
    # Some servers say 408 on an idle connection before closing it: that is no answer
    # to the next request, and the next request must not go out on that connection.
    timeout = b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    server = scripted(always(CREATED, 0.05, timeout, 0.5, CLOSE))
    conn = KeepAliveConnection(server.url, SDK_LOG_PATH, FIXED, timeout=5)
    assert conn.post(event()).status == 201
    time.sleep(0.2)
    assert conn.post(event()).status == 201
    conn.close()
    assert server.connections == 2


# -- the parser alone ---------------------------------------------------------------------


def test_bytes_past_the_answer_are_kept_and_the_connection_is_not_reused(
    scripted: Callable[..., ScriptedServer],
) -> None:
    parser = ResponseParser()
    assert parser.feed(CREATED + b"HTTP/1.1 200")
    assert parser.leftover == b"HTTP/1.1 200"
    server = scripted(always(CREATED + b"HTTP/1.1 200 OK\r\n"))
    conn = KeepAliveConnection(server.url, SDK_LOG_PATH, FIXED, timeout=5)
    assert [conn.post(event()).status for _ in range(2)] == [201, 201]
    conn.close()
    assert server.connections == 2


def test_the_parser_reads_no_body_for_204_or_head() -> None:
    parser = ResponseParser()
    assert parser.feed(b"HTTP/1.1 204 No Content\r\n\r\n")
    head = ResponseParser("HEAD")
    assert head.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n")
    assert head.response is not None and head.response.body == b""


def test_the_parser_refuses_an_oversized_body() -> None:
    with pytest.raises(ProtocolError):
        ResponseParser(max_body=10).feed(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n")


# -- HTTPS ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("needs the openssl command to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def test_https_works_and_checks_the_certificate(
    scripted: Callable[..., ScriptedServer], certificate: tuple[Path, Path]
) -> None:
    cert, key = certificate
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    server = scripted(always(CREATED), tls=server_context)

    trusting = ssl.create_default_context(cafile=str(cert))
    conn = KeepAliveConnection(server.url, SDK_LOG_PATH, FIXED, timeout=5, ssl_context=trusting)
    assert [conn.post(event()).status for _ in range(2)] == [201, 201]
    conn.close()
    assert server.connections == 1

    default = KeepAliveConnection(server.url, SDK_LOG_PATH, FIXED, timeout=5)
    with pytest.raises(ssl.SSLCertVerificationError):
        default.post(event())


def test_a_longer_wait_for_the_answer_leaves_sending_bound_by_the_timeout() -> None:
    listener = socket.create_server(("127.0.0.1", 0))  # accepts, never reads
    accepted: list[socket.socket] = []
    threading.Thread(target=lambda: accepted.append(listener.accept()[0]), daemon=True).start()
    conn = KeepAliveConnection(
        f"http://127.0.0.1:{listener.getsockname()[1]}", SDK_LOG_PATH, FIXED, timeout=0.5
    )
    started = time.monotonic()
    try:
        with pytest.raises(socket.timeout):
            conn.post(b"x" * (64 * 1024 * 1024), answer_timeout=30)
        assert time.monotonic() - started < 2.0
        assert not conn.sent
    finally:
        conn.close()
        for sock in accepted:
            sock.close()
        listener.close()


def test_a_longer_wait_for_the_answer_is_given_once_the_request_is_sent(
    scripted: Callable[..., ScriptedServer],
) -> None:
    server = scripted(always(1.0, CREATED))
    conn = KeepAliveConnection(server.url, SDK_LOG_PATH, FIXED, timeout=0.3)
    assert conn.post(event(), answer_timeout=5).status == 201
    with pytest.raises(socket.timeout):
        conn.post(event())
    conn.close()
