"""The OTAS client's rules, table by table, and what it makes of calls that got no answer."""

from __future__ import annotations

import socket
import struct
import threading
import time
from email.utils import formatdate

import jwt
import pytest
from werkzeug.test import Client

from otas_capture.capture.exchange import BodyBuffer, Exchange
from otas_capture.collector import DEMO_PROJECT_ID, DEMO_SDK_KEY
from otas_capture.config import Config
from otas_capture.contract import (
    EVENT_CAPTURE_FAILED,
    EVENT_CAPTURED,
    INVALID_JSON,
    INVALID_SDK_KEY,
    INVALID_SESSION_TOKEN,
    MISSING_REQUIRED_FIELDS,
    MISSING_SDK_KEY,
    MISSING_SESSION_TOKEN,
)
from otas_capture.contract import (
    SESSION_TOKEN_HEADER as SESSION_TOKEN,
)
from otas_capture.delivery.outcomes import Failed, PauseForKey, Retry, Sent
from otas_capture.delivery.stats import Stats
from otas_capture.event.build import EventRefused
from otas_capture.otas.answers import (
    MAX_RETRY_AFTER,
    interpret,
    parse_answer,
    parse_retry_after,
)
from otas_capture.otas.client import OtasClient, Prepared

EVENT = (
    b'{"project_id": "%s", "path": "/slow", "method": "GET", "status_code": 200, '
    b'"latency_ms": 1.5}' % DEMO_PROJECT_ID.encode()
)


def answer(description: str, **extra) -> dict:
    return {"status": 0, "status_description": description, **extra}


@pytest.mark.parametrize(
    "status, body, retry_after, outcome",
    [
        (201, {"status": 1, "status_description": EVENT_CAPTURED}, None, Sent()),
        (401, answer(INVALID_SDK_KEY), None, PauseForKey(INVALID_SDK_KEY)),
        (401, answer(MISSING_SDK_KEY), None, PauseForKey(MISSING_SDK_KEY)),
        (401, answer(INVALID_SESSION_TOKEN), None, Failed(INVALID_SESSION_TOKEN)),
        (401, answer(MISSING_SESSION_TOKEN), None, Failed(MISSING_SESSION_TOKEN)),
        (400, answer(INVALID_JSON), None, Failed(INVALID_JSON)),
        (
            400,
            answer(MISSING_REQUIRED_FIELDS, missing_fields=["path"]),
            None,
            Failed(MISSING_REQUIRED_FIELDS, "missing_fields=['path']"),
        ),
        (400, {}, None, Failed("http_400")),  # Brain's HTML 400 for a body too large
        (500, answer(EVENT_CAPTURE_FAILED), None, Retry(EVENT_CAPTURE_FAILED, server_wide=False)),
        (500, {}, None, Retry("http_500", server_wide=False)),  # an HTML 500 page
        (503, {}, 2.0, Retry("http_503", server_wide=True, retry_after=2.0)),
        (429, {}, 0.0, Retry("http_429", server_wide=True, retry_after=0.0)),
        (502, {}, None, Retry("http_502", server_wide=True)),
        (504, {}, None, Retry("http_504", server_wide=True)),
        (404, {}, None, Failed("http_404", "Brain answered HTTP 404 (is OTAS_BRAIN_URL right?)")),
        (405, {}, None, Failed("http_405", "Brain answered HTTP 405 (is OTAS_BRAIN_URL right?)")),
        (302, {}, None, Failed("http_302", "Brain answered HTTP 302")),
    ],
)
def test_each_answer_of_brain_has_one_outcome(status, body, retry_after, outcome):
    assert interpret(status, body, retry_after) == outcome


NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    "value, seconds",
    [
        (None, None),
        ("", None),
        ("0", 0.0),
        ("  7 ", 7.0),
        ("0.25", 0.25),
        ("-3", 0.0),
        ("1e9", MAX_RETRY_AFTER),
        ("nan", None),
        ("inf", None),
        ("soon", None),
        (formatdate(NOW + 30, usegmt=True), 30.0),
        (formatdate(NOW - 30, usegmt=True), 0.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),
        ("Wed, 21 Oct 99999 07:28:00 GMT", None),
        ("Mon, 99 Foo 2030 99:99:99 GMT", None),
    ],
)
def test_retry_after_is_read_in_seconds_or_as_an_http_date(value, seconds):
    assert parse_retry_after(value, now=NOW) == seconds


@pytest.mark.parametrize(
    "data, parsed",
    [
        (b'{"status": 1}', {"status": 1}),
        (b"<html>Server Error</html>", {}),
        (b"[1, 2]", {}),
        (b"", {}),
        (b"[" * 100_000, {}),
    ],
)
def test_only_a_json_object_counts_as_an_answer(data, parsed):
    assert parse_answer(data) == parsed


def test_an_event_the_builder_refuses_is_settled_with_its_kind_and_reason(monkeypatch):
    config = Config.load({"sdk_key": DEMO_SDK_KEY, "project_id": DEMO_PROJECT_ID}, environ={})
    client = OtasClient(config, Stats())

    def refuse(exchange, project_id):
        raise EventRefused("skipped", "before_send")

    monkeypatch.setattr(client._builder, "build", refuse)
    token = jwt.encode({"agent_session_id": "s", "agent_id": "a"}, "k" * 32)
    exchange = Exchange(token, time.time(), time.perf_counter(), {}, BodyBuffer(0))
    outcome = client.export(exchange).outcome
    assert outcome == Failed("before_send", kind="skipped", called=False)


# -- the transport, over loopback -------------------------------------------------------


class TricklingServer:
    """Answers each request with a 201 sent one byte every ``pause`` seconds."""

    ANSWER = b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}"

    def __init__(self, pause: float) -> None:
        self.pause = pause
        self.requests = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                self.requests += 1
                try:
                    for byte in self.ANSWER:
                        conn.sendall(bytes([byte]))
                        if self.stop.wait(self.pause):
                            return
                except OSError:
                    pass

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


class CannedServer:
    """Answers each request with the next of ``answers``, then closes the connection."""

    def __init__(self, answers: list[bytes]) -> None:
        self.answers = list(answers)
        self.requests: list[bytes] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while self.answers:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                request = b""
                while b"\r\n\r\n" not in request:
                    request += conn.recv(65536)
                head, _, body = request.partition(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                while len(body) < length:
                    body += conn.recv(65536)
                self.requests.append(request[: len(head) + 4] + body)
                conn.sendall(self.answers.pop(0))

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize(
    "status, body, retry_after",
    [
        (201, b'{"status": 1, "status_description": "event_captured", "response": {}}', None),
        (201, b"<html>Created</html>", "soon"),
        (201, b"", "5"),
        (401, b'{"status": 0, "status_description": "invalid_sdk_key"}', None),
        (400, b'{"status_description": "invalid_json", "missing_fields": ["path"]}', None),
        (503, b"busy", "7"),
        (500, b"[1]", None),
        (404, b"", None),
    ],
)
def test_export_means_what_the_rules_say_of_the_answer(status, body, retry_after):
    extra = f"Retry-After: {retry_after}\r\n".encode() if retry_after else b""
    answer = (
        f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n".encode() + extra + b"\r\n" + body
    )
    server = CannedServer([answer])
    try:
        config = Config.load(
            {"sdk_key": DEMO_SDK_KEY, "project_id": DEMO_PROJECT_ID, "brain_url": server.url},
            environ={},
        )
        client = OtasClient(config, Stats())
        outcome = client.export(Prepared(b"{}", "a.b.c")).outcome
        client.shutdown()
    finally:
        server.close()
    assert outcome == interpret(status, parse_answer(body), parse_retry_after(retry_after))


def client_for(url: str, timeout: float = 5.0) -> OtasClient:
    options = {"sdk_key": DEMO_SDK_KEY, "project_id": DEMO_PROJECT_ID, "brain_url": url}
    return OtasClient(Config.load({**options, "timeout": timeout}, environ={}), Stats())


def test_each_call_carries_its_token_and_the_fixed_headers():
    server = CannedServer(
        [b"HTTP/1.1 201 Created\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"] * 2
    )
    try:
        client = client_for(server.url)
        outcomes = [client.export(Prepared(b"{}", token)).outcome for token in ("one", "two")]
        client.shutdown()
    finally:
        server.close()
    assert outcomes == [Sent(), Sent()]
    heads = [request.split(b"\r\n\r\n")[0].split(b"\r\n") for request in server.requests]
    token = SESSION_TOKEN.encode() + b": "
    assert [[line for line in head if line.startswith(token)] for head in heads] == [
        [token + b"one"],
        [token + b"two"],
    ]
    for head in heads:
        assert b"Content-Type: application/json" in head
        assert f"X-OTAS-SDK-KEY: {DEMO_SDK_KEY}".encode() in head


def test_the_timeout_is_a_deadline_for_the_whole_call_not_each_read():
    server = TricklingServer(pause=0.05)  # each byte well within the timeout, the whole not
    try:
        client = client_for(server.url, timeout=0.5)
        outcome = client.export(Prepared(b"{}", "a.b.c")).outcome
    finally:
        server.close()
    assert outcome == Retry("timeout", server_wide=True, maybe_delivered=True)


def test_a_trickled_answer_within_the_deadline_is_read_whole():
    server = TricklingServer(pause=0.001)
    try:
        outcome = client_for(server.url, timeout=10.0).export(Prepared(b"{}", "t")).outcome
    finally:
        server.close()
    assert outcome == Sent()


def test_a_refused_connection_is_a_retry_that_was_not_delivered():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    outcome = client_for(f"http://127.0.0.1:{port}").export(Prepared(b"{}", "t")).outcome
    assert outcome == Retry("connection_error", server_wide=True, detail="ConnectionRefusedError")


def test_a_malformed_answer_is_a_protocol_error_that_may_have_been_delivered():
    # A Content-Length of 5,000 digits once made int() raise ValueError, which was
    # filed as an unsendable token: the event lost, with the wrong reason.
    answer = b"HTTP/1.1 201 Created\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n"
    server = CannedServer([answer])
    try:
        outcome = client_for(server.url).export(Prepared(b"{}", "t")).outcome
    finally:
        server.close()
    assert isinstance(outcome, Retry)
    assert (outcome.reason, outcome.server_wide, outcome.maybe_delivered) == (
        "protocol_error",
        True,
        True,
    )
    assert "Content-Length" in outcome.detail


def test_a_token_that_cannot_be_a_header_fails_without_a_call():
    server = CannedServer([b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"])
    try:
        outcome = client_for(server.url).export(Prepared(b"{}", "a\nb")).outcome
    finally:
        server.close()
    assert outcome == Failed("unsendable_token", called=False)
    assert server.requests == []


@pytest.mark.parametrize(
    "payload, token",
    [(b'{"path": "/a"}', "a.b.c"), (b"", "t"), (b"\n\n{}", "x" * 5000), (b"{}", "caf\xe9")],
)
def test_a_prepared_event_survives_the_spool_byte_for_byte(payload, token):
    data = Prepared(payload, token).to_bytes()
    assert data is not None
    again = Prepared.from_bytes(data)
    assert again is not None and (again.payload, again.token) == (payload, token)


@pytest.mark.parametrize("data", [b"", b"garbage", b"otas-event-1\nno newline after token"])
def test_anything_else_in_the_spool_is_not_an_event(data):
    assert Prepared.from_bytes(data) is None


def test_a_token_that_cannot_be_a_header_is_not_spooled():
    assert Prepared(b"{}", "a\nb").to_bytes() is None
    assert Prepared(b"{}", "\u20ac").to_bytes() is None


# -- a separate, longer wait for the answer of a call sent whole (issue 18) ----------------


def wait_until_answered(collector, timeout=10.0):
    """Let calls a test left waiting finish, so that they land in no later test."""
    deadline = time.monotonic() + timeout
    while collector.in_flight and time.monotonic() < deadline:
        time.sleep(0.01)


def test_a_call_sent_whole_waits_for_a_slow_answer_beyond_the_timeout(collector_server, collector):
    collector.set_latency(1.0)  # the emulated Brain stores the event, then answers late
    token = collector.issue_token()
    waiting = OtasClient(
        Config.load(
            {"sdk_key": DEMO_SDK_KEY, "project_id": DEMO_PROJECT_ID,
             "brain_url": collector_server.url, "timeout": 0.4, "answer_timeout": 10},
            environ={},
        ),
        Stats(),
    )  # fmt: skip
    impatient = client_for(collector_server.url, timeout=0.4)
    try:
        waited = waiting.export(Prepared(EVENT, token)).outcome
        gave_up = impatient.export(Prepared(EVENT, token)).outcome
    finally:
        waiting.shutdown()
        impatient.shutdown()
    assert waited == Sent()
    assert gave_up == Retry("timeout", server_wide=True, maybe_delivered=True)
    assert len(collector.wait_for_events(2, timeout=5)) == 2  # the one given up on too
    wait_until_answered(collector)


def test_shutdown_ends_a_long_wait_for_an_answer(collector_server, collector):
    collector.set_latency(2.0)
    config = Config.load(
        {"sdk_key": DEMO_SDK_KEY, "project_id": DEMO_PROJECT_ID,
         "brain_url": collector_server.url, "timeout": 1, "answer_timeout": 60},
        environ={},
    )  # fmt: skip
    client = OtasClient(config, Stats())
    outcomes = []
    caller = threading.Thread(
        target=lambda: outcomes.append(
            client.export(Prepared(EVENT, collector.issue_token())).outcome
        )
    )
    caller.start()
    collector.wait_for_events(1, timeout=5)  # stored: the call is waiting for its answer
    began = time.monotonic()
    client.shutdown()  # what the worker does once OTAS_SHUTDOWN_TIMEOUT is spent
    caller.join(timeout=5)
    assert time.monotonic() - began < 1.0
    wait_until_answered(collector)
    assert len(outcomes) == 1 and isinstance(outcomes[0], Retry)
    assert outcomes[0].maybe_delivered


# -- never resent unseen: a reset after the request was written whole ----------------------


class ResetOnceServer(CannedServer):
    """Reads each request whole; resets the first connection, answers 201 on the others."""

    def __init__(self) -> None:
        created = b"HTTP/1.1 201 Created\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}"
        super().__init__([b"reset", created, created])

    def _serve(self) -> None:
        while self.answers:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            request = b""
            while b"\r\n\r\n" not in request:
                request += conn.recv(65536)
            head, _, body = request.partition(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            while len(body) < length:
                body += conn.recv(65536)
            self.requests.append(head + b"\r\n\r\n" + body)
            answer = self.answers.pop(0)
            if answer == b"reset":
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            else:
                conn.sendall(answer)
            conn.close()


def plain_app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


def test_a_reset_after_the_event_was_sent_whole_is_counted_as_a_possible_duplicate(
    make_middleware, agent
):
    server = ResetOnceServer()
    try:
        middleware = make_middleware(
            plain_app,
            brain_url=server.url,
            project_id=DEMO_PROJECT_ID,
        )
        Client(middleware).get("/api/things", headers=agent, buffered=True)
        assert middleware.flush(10)
        stats = middleware.stats()
    finally:
        server.close()
    assert (stats["sent"], stats["possible_duplicate"]) == (1, 1)
    assert len(server.requests) == 2  # the retry the count warns about, and no other
