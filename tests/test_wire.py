"""The lean HTTP/1.1 client (otas_capture.otas.wire) against real loopback servers.

The ordinary answers come from the project's collector, as Brain's would. Answers the
collector never gives (chunked bodies, bodies ended by closing, HTTP/1.0, malformed
heads, a server that closes idle connections or stalls) come from a small scripted
server on a real loopback socket that writes the exact bytes under test.
"""

from __future__ import annotations

import random
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
from hypothesis import given, settings
from hypothesis import strategies as st

from otas_capture.collector import DEMO_SDK_KEY, Collector, CollectorServer
from otas_capture.contract import (
    EVENT_CAPTURED,
    SDK_KEY_HEADER,
    SDK_LOG_PATH,
    SESSION_TOKEN_HEADER,
)
from otas_capture.otas import wire
from otas_capture.otas.wire import (
    KeepAliveConnection,
    Multiplexer,
    ProtocolError,
    Response,
    ResponseParser,
    build_request_head,
    multiplexable,
)

FIXED = {"Content-Type": "application/json", SDK_KEY_HEADER: DEMO_SDK_KEY}


def event(path: str = "/api/items") -> bytes:
    return (
        b'{"project_id": "p", "path": "%s", "method": "GET", "status_code": 200, '
        b'"latency_ms": 1.5}' % path.encode()
    )


# -- a scripted server: reads one request at a time, writes the bytes it is given --------

CLOSE = "close"
# What to do for one request: bytes to write, seconds to wait, or CLOSE, in order. A
# script that returns no CLOSE keeps the connection open for the next request.
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
                    if action == CLOSE:
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


@pytest.fixture(
    params=[
        pytest.param(True, id="kernel-timeouts", marks=pytest.mark.skipif(
            not wire._KERNEL_TIMEOUTS, reason="the kernel bounds sends only on 64-bit Linux"
        )),
        pytest.param(False, id="python-timeouts"),
    ]
)  # fmt: skip
def either_timeouts(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs a test with each way KeepAliveConnection bounds its sends and receives."""
    monkeypatch.setattr(wire, "_KERNEL_TIMEOUTS", request.param)


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


@pytest.mark.usefixtures("either_timeouts")
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


def test_the_multiplexer_delivers_every_call_with_several_in_flight(
    collector_server: CollectorServer, collector: Collector, token: str
) -> None:
    mux = Multiplexer(collector_server.url, SDK_LOG_PATH, FIXED, timeout=5, connections=3)
    outcomes: dict[int, object] = {}
    started = 0
    deadline = time.monotonic() + 10
    try:
        while len(outcomes) < 10 and time.monotonic() < deadline:
            while mux.free and started < 10:
                mux.submit(started, event(f"/m/{started}"), [(SESSION_TOKEN_HEADER, token)])
                started += 1
            for tag, outcome in mux.poll(1.0):
                outcomes[tag] = outcome
    finally:
        mux.close()
    assert sorted(outcomes) == list(range(10))
    assert all(isinstance(o, Response) and o.status == 201 for o in outcomes.values())
    assert sorted(e["path"] for e in collector.events()) == sorted(f"/m/{i}" for i in range(10))


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


@pytest.mark.usefixtures("either_timeouts")
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


@pytest.mark.usefixtures("either_timeouts")
def test_a_connection_the_server_closed_while_idle_is_replaced_once(
    scripted: Callable[..., ScriptedServer],
) -> None:
    # The server answers, then closes the idle connection (its keep-alive timeout).
    server = scripted(always(CREATED, 0.05, CLOSE))
    conn = KeepAliveConnection(server.url, SDK_LOG_PATH, FIXED, timeout=5)
    assert conn.post(event()).status == 201
    time.sleep(0.2)
    assert conn.post(event()).status == 201
    conn.close()
    assert len(server.requests) == 2  # the retried request was sent once, not twice


@pytest.mark.usefixtures("either_timeouts")
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


@pytest.mark.skipif(not wire._KERNEL_TIMEOUTS, reason="64-bit Linux only")
def test_on_linux_the_socket_blocks_and_the_kernel_bounds_each_send_and_receive(
    scripted: Callable[..., ScriptedServer],
) -> None:
    server = scripted(always(CREATED))
    conn = KeepAliveConnection(server.url, SDK_LOG_PATH, FIXED, timeout=7)
    assert conn.post(event()).status == 201
    sock = conn._sock
    assert sock is not None and sock.gettimeout() is None  # no poll() before each call
    for option in (socket.SO_RCVTIMEO, socket.SO_SNDTIMEO):
        seconds, micros = struct.unpack("@ll", sock.getsockopt(socket.SOL_SOCKET, option, 16))
        assert 6.9 < seconds + micros / 1e6 <= 7.0
    conn.close()


@pytest.mark.usefixtures("either_timeouts")
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


@pytest.mark.usefixtures("either_timeouts")
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


@pytest.mark.usefixtures("either_timeouts")
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
    # gevent's sockets wait in its loop, deaf to the kernel's bounds: they keep Python's.
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


# -- the multiplexer's failures ---------------------------------------------------------------


def run_mux(mux: Multiplexer, calls: int, timeout: float = 10) -> dict[int, object]:
    outcomes: dict[int, object] = {}
    started = 0
    deadline = time.monotonic() + timeout
    while len(outcomes) < calls and time.monotonic() < deadline:
        while mux.free and started < calls:
            mux.submit(started, event())
            started += 1
        for tag, outcome in mux.poll(0.5):
            outcomes[tag] = outcome
    return outcomes


def test_the_multiplexer_reports_a_refused_connection_per_call() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mux = Multiplexer(f"http://127.0.0.1:{port}", SDK_LOG_PATH, FIXED, timeout=2, connections=2)
    outcomes = run_mux(mux, 3)
    mux.close()
    assert sorted(outcomes) == [0, 1, 2]
    assert all(isinstance(o, ConnectionRefusedError) for o in outcomes.values())


def test_the_multiplexer_times_out_a_stalled_call_and_keeps_the_others_going(
    scripted: Callable[..., ScriptedServer],
) -> None:
    stall = threading.Event()

    def script(request: bytes) -> list[bytes | float | str]:
        if b"/stall" in request:
            stall.wait(5)
            return [CLOSE]
        return [CREATED]

    server = scripted(script)
    mux = Multiplexer(server.url, SDK_LOG_PATH, FIXED, timeout=0.5, connections=2)
    mux.submit("stall", event("/stall"))
    outcomes: dict[str, object] = {}
    sent = 0
    deadline = time.monotonic() + 5
    while len(outcomes) < 4 and time.monotonic() < deadline:
        if mux.free and sent < 3:
            mux.submit(f"ok{sent}", event())
            sent += 1
        for tag, outcome in mux.poll(0.1):
            outcomes[tag] = outcome
    stall.set()
    mux.close()
    assert isinstance(outcomes["stall"], socket.timeout)
    assert all(isinstance(outcomes[f"ok{i}"], Response) for i in range(3))


def test_the_multiplexer_replaces_a_connection_the_server_closed_while_idle(
    scripted: Callable[..., ScriptedServer],
) -> None:
    server = scripted(always(CREATED, 0.05, CLOSE))
    mux = Multiplexer(server.url, SDK_LOG_PATH, FIXED, timeout=5, connections=1)
    first = run_mux(mux, 1)
    time.sleep(0.2)
    mux.poll(0.0)  # notices the close
    second = run_mux(mux, 1)
    mux.close()
    assert isinstance(first[0], Response) and isinstance(second[0], Response)
    assert len(server.requests) == 2


def test_wake_ends_a_waiting_poll_early() -> None:
    mux = Multiplexer("http://127.0.0.1:1", SDK_LOG_PATH, FIXED, timeout=1, connections=1)
    threading.Timer(0.1, mux.wake).start()
    started = time.monotonic()
    assert mux.poll(5.0) == []
    assert time.monotonic() - started < 4
    mux.close()


def test_the_multiplexer_is_for_plain_http_only() -> None:
    assert multiplexable("http://brain:8002")
    assert not multiplexable("https://brain")
    with pytest.raises(ValueError):
        Multiplexer("https://brain", SDK_LOG_PATH, FIXED, timeout=1, connections=1)


# -- the parser alone ---------------------------------------------------------------------


def test_the_parser_keeps_bytes_past_the_answer_and_marks_the_connection_unusable() -> None:
    parser = ResponseParser()
    assert parser.feed(CREATED + b"HTTP/1.1 200")
    assert parser.response is not None and parser.response.will_close
    assert parser.leftover == b"HTTP/1.1 200"


def test_the_parser_reads_no_body_for_204_or_head() -> None:
    parser = ResponseParser()
    assert parser.feed(b"HTTP/1.1 204 No Content\r\n\r\n")
    head = ResponseParser(head_request=True)
    assert head.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n")
    assert head.response is not None and head.response.body == b""


def test_the_parser_refuses_an_oversized_body() -> None:
    with pytest.raises(ProtocolError):
        ResponseParser(max_body=10).feed(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n")


def _reference_head(head: bytes) -> object:
    """What the parser made of a head before it decoded heads as text: bytes throughout.

    Kept as an oracle: the text-based parser must accept and refuse exactly the same.
    Returns "error", "interim", or (status, reason, headers, will_close, framing).
    """
    lines = head.split(b"\r\n")
    if b"\n" in head.replace(b"\r\n", b""):
        return "error"
    version, _, rest = lines[0].partition(b" ")
    if version not in (b"HTTP/1.1", b"HTTP/1.0"):
        return "error"
    code, _, reason = rest.partition(b" ")
    if len(code) != 3 or not code.isdigit() or int(code) < 100:
        return "error"
    status = int(code)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip(b" \t") or line[:1] in b" \t":
            return "error"
        key = name.decode("latin-1").lower()
        text = value.strip(b" \t").decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    if status < 200:
        return "error" if status == 101 else "interim"
    tokens = {t.strip() for t in headers.get("connection", "").lower().split(",")}
    will_close = "close" in tokens or (version == b"HTTP/1.0" and "keep-alive" not in tokens)
    framing: object = "none"
    if status not in (204, 304):
        if "transfer-encoding" in headers:
            codings = [c.strip().lower() for c in headers["transfer-encoding"].split(",")]
            framing = "chunk_size" if codings[-1] == "chunked" else "close"
        elif "content-length" in headers:
            values = {v.strip() for v in headers["content-length"].split(",")}
            if len(values) != 1:
                return "error"
            text = values.pop()
            if not text.isdigit() or not text.isascii():
                return "error"
            framing = ("length", int(text))
        else:
            framing = "close"
        will_close = will_close or framing == "close"
    return status, reason.decode("latin-1"), headers, will_close, framing


def _parsed_head(head: bytes) -> object:
    parser = ResponseParser(max_body=1 << 62)
    try:
        if parser._parse_head(head):
            return "interim"
    except ProtocolError:
        return "error"
    state = parser._state
    framing = ("length", parser._remaining) if state == "length" else state
    framing = "none" if framing == "done" else framing
    return parser._status, parser._reason, parser._headers, parser._will_close, framing


def test_the_parser_accepts_and_refuses_heads_exactly_as_the_bytewise_reference() -> None:
    # Mutations of ordinary heads with the characters the checks are about: line ends,
    # blanks, colons, commas, digits, and latin-1 bytes that str methods treat specially
    # (superscript two is a digit to str.isdigit, NEL and NBSP are whitespace to strip).
    seeds = [
        b"HTTP/1.1 201 Created\r\nContent-Length: 69\r\nContent-Type: application/json",
        b"HTTP/1.0 503 Busy\r\nRetry-After: 5\r\nConnection: keep-alive",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nConnection: close",
        b"HTTP/1.1 100 Continue",
        b"HTTP/1.1 204 No Content\r\nContent-Length: 2, 2\r\nX: a\r\nx: b",
    ]
    alphabet = [b" ", b"\t", b"\r", b"\n", b"\r\n", b":", b",", b"1", b"0", b"\xb2", b"\x85",
                b"\xa0", b"a", b"\r\n folded"]  # fmt: skip
    rng = random.Random(20261126)
    cases = list(seeds)
    for _ in range(4000):
        head = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 3)):
            at = rng.randint(0, len(head))
            if rng.random() < 0.3:
                del head[at : at + rng.randint(1, 3)]
            else:
                head[at:at] = rng.choice(alphabet)
        cases.append(bytes(head))
    for head in cases:
        assert _parsed_head(head) == _reference_head(head), head
    outcomes = {_reference_head(head) == "error" for head in cases}
    assert outcomes == {True, False}  # the mutations reach both sides


# Header lines, good and bad, that the heads below are made of: repeated across examples,
# so that most heads meet lines the parser has already seen (and remembered).
_LINES = [
    "HTTP/1.1 201 Created", "HTTP/1.0 200 OK", "HTTP/1.1 100 Continue", "HTTP/1.1 204 No",
    "HTTP/1.1 101 Switch", "HTTP/1.1 304 Not Modified", "HTTP/2 200 OK", "HTTP/1.1 20 x",
    "HTTP/1.1 2\xb201 x", "HTTP/1.1 201", "Content-Length: 2", "content-length: 2",
    "Content-Length: 3", "Content-Length: 2, 2", "Content-Length: \xa02", "Content-Length: -1",
    "Content-Length:", "Transfer-Encoding: chunked", "Transfer-Encoding: gzip",
    "Connection: close", "Connection: keep-alive", "Connection: Keep-Alive, x",
    "Retry-After: 5", "Date: Thu, 26 Nov 2026 17:32:01 GMT", "X: a", "x: b", "X:", ":x",
    " folded: x", "Bad header", "Name : x", "\tName: x", "N\r: x", "N: a\rb", "N: a\nb",
    "N\n: x", "", "Server: gunicorn", "Date: x", "Date:", "DATE: y", "date: z", "Date: a\nb",
    "Date:\t x \t", "Date: x\r", "XDate: x",
]  # fmt: skip


@settings(max_examples=400, deadline=None, database=None)
@given(
    st.lists(
        st.sampled_from(_LINES) | st.text(st.sampled_from(" \t\r\n:,0129aAX\xb2\x85\xa0")),
        min_size=1,
        max_size=6,
    )
)
def test_a_head_of_lines_seen_before_parses_as_the_bytewise_reference_says(
    lines: list[str],
) -> None:
    # Each head twice: the second time every line that passed is remembered. A head
    # made only of remembered lines skips the checks, so it must be exactly a head
    # that would pass them (no line holding a LF, no repeated names left unjoined).
    head = "\r\n".join(lines).encode("latin-1")
    if b"\r\n\r\n" in head or head.endswith(b"\r\n"):
        return  # not a head: the blank line would end it sooner
    expected = _reference_head(head)
    assert _parsed_head(head) == expected
    assert _parsed_head(head) == expected


@settings(max_examples=500, deadline=None, database=None)
@given(
    st.sampled_from([line for line in _LINES if line.startswith("HTTP/")]),
    st.lists(st.sampled_from([line for line in _LINES if not line.startswith("HTTP/")])),
    st.integers(0, 5),
    st.lists(st.text(st.sampled_from(" \t\r\n:,aZ\xa0"), max_size=5), min_size=2, max_size=3),
)
def test_a_head_seen_before_but_for_its_date_parses_as_the_bytewise_reference_says(
    status: str, lines: list[str], at: int, dates: list[str]
) -> None:
    # The same head with one Date line after another, as a server sends it second
    # after second (and dates no server sends: a bare LF, CRs, blanks, nothing).
    for date in dates:
        with_date = [status, *lines[:at], f"Date:{date}", *lines[at:]]
        head = "\r\n".join(with_date).encode("latin-1")
        if b"\r\n\r\n" in head or head.endswith(b"\r\n"):
            continue  # not a head: the blank line would end it sooner
        expected = _reference_head(head)
        parsed = _parsed_head(head)
        assert parsed == expected
        if isinstance(parsed, tuple):
            # The headers in the order of their lines, and each answer's its own.
            assert isinstance(expected, tuple)
            assert list(parsed[2].items()) == list(expected[2].items())
            parsed[2]["added-by-the-caller"] = "x"


class _Chunks:
    """A socket whose receives return the given chunks, then the end of the stream."""

    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = list(chunks)

    def recv(self, size: int) -> bytes:
        return self._chunks.pop(0) if self._chunks else b""

    def settimeout(self, seconds: float | None) -> None:
        pass


def _general(chunks: list[bytes]) -> object:
    parser = ResponseParser()
    try:
        for chunk in chunks:
            if parser.feed(chunk):
                break
        else:
            parser.eof()
    except ProtocolError as exc:
        return type(exc)
    response = parser.response
    assert response is not None
    return response.status, response.reason, response.headers, response.body, response.will_close


def _connection_reads(chunks: list[bytes]) -> object:
    conn = KeepAliveConnection("http://127.0.0.1:1", SDK_LOG_PATH, FIXED, timeout=5)
    try:
        response = conn._read(_Chunks(chunks), time.perf_counter() + 60)  # type: ignore[arg-type]
    except ProtocolError as exc:
        return type(exc)
    return response.status, response.reason, response.headers, response.body, response.will_close


_STATUS_LINES = [
    b"HTTP/1.1 201 Created", b"HTTP/1.0 200 OK", b"HTTP/1.1 204 No Content",
    b"HTTP/1.1 304 Not Modified", b"HTTP/1.1 101 Up", b"HTTP/1.1 200", b"HTTP/2 200 OK",
]  # fmt: skip
_HEADER_LINES = [
    b"Content-Length: 2", b"Content-Length: 0", b"content-length: 2", b"Content-Length: 2, 3",
    b"Content-Length: x", b"Content-Length: 2000000", b"Transfer-Encoding: chunked",
    b"Transfer-Encoding: gzip", b"Connection: close", b"Connection: keep-alive",
    b"Retry-After: 3", b"Bad header", b"X: a\nb", b"x: 1", b"X: 2", b" folded: x",
]  # fmt: skip
_BODIES = [b"", b"{}", b"{", b"2\r\n{}\r\n0\r\n\r\n", b"{}HTTP/1.1 200 OK\r\n"]
_answers = st.builds(
    lambda interim, status, lines, body: (
        interim + b"\r\n".join([status, *lines]) + b"\r\n\r\n" + body
    ),
    st.sampled_from([b"", b"", b"", b"HTTP/1.1 100 Continue\r\n\r\n"]),
    st.sampled_from(_STATUS_LINES),
    st.lists(st.sampled_from(_HEADER_LINES), max_size=4),
    st.sampled_from(_BODIES) | st.binary(max_size=6),
)


@settings(max_examples=800, deadline=None, database=None)
@given(_answers | st.binary(max_size=40), st.data())
def test_reading_a_whole_answer_at_once_gives_what_the_general_parser_gives(
    answer: bytes, data: st.DataObject
) -> None:
    # Whatever the bytes and however they arrive: the one-pass reading of an answer
    # that came whole (with the general parser for any other) gives the same answer,
    # or fails the same way, as the general parser alone.
    cuts = sorted(data.draw(st.lists(st.integers(0, len(answer)), max_size=3)))
    chunks = [answer[a:b] for a, b in zip([0, *cuts], [*cuts, len(answer)])]
    chunks = [chunk for chunk in chunks if chunk]  # an empty receive is the end
    assert _connection_reads(chunks) == _general(chunks)


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


# -- the sender's interface -------------------------------------------------------------------


def test_brain_connection_answers_as_the_senders_own_does(
    collector_server: CollectorServer, collector: Collector, token: str
) -> None:
    from otas_capture.otas.wire import BrainConnection

    conn = BrainConnection(collector_server.url, timeout=5)
    headers = {**FIXED, "User-Agent": "test", SESSION_TOKEN_HEADER: token}
    status, body, retry_after = conn.post(event("/one"), headers)
    collector.fail_next(1, status=503, retry_after="3")
    failed = conn.post(event("/two"), {**headers, SESSION_TOKEN_HEADER: "other"})
    conn.close()
    assert (status, retry_after) == (201, None)
    assert EVENT_CAPTURED.encode() in body
    assert (failed[0], failed[2]) == (503, "3")
    assert conn.path == SDK_LOG_PATH
    assert [e["path"] for e in collector.events()] == ["/one"]


def test_submitting_beyond_the_free_connections_is_refused() -> None:
    # A server that never answers: the first call stays in flight.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        mux = Multiplexer(url, SDK_LOG_PATH, FIXED, timeout=5, connections=1)
        mux.submit("first", event())
        with pytest.raises(RuntimeError):
            mux.submit("second", event())
        mux.close()
