"""Reaching OTAS through a proxy and over TLS, as requests does, against real loopback servers.

The TLS Brain is the project's collector behind a TLS front with its own certificate
authority (trustme); the proxy is a small threaded one that opens CONNECT tunnels and
forwards absolute-form requests, and records what it was asked.
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import trustme

from otas_capture.collector import DEMO_PROJECT_ID, DEMO_SDK_KEY, Collector, CollectorServer
from otas_capture.config import Config, ConfigError
from otas_capture.contract import SDK_LOG_PATH
from otas_capture.delivery.outcomes import Retry, Sent
from otas_capture.delivery.stats import Stats
from otas_capture.otas.client import OtasClient, Prepared
from otas_capture.otas.route import ca_bundle, proxy_for, tls_context
from otas_capture.otas.wire import Proxy

EVENT = (
    b'{"project_id": "%s", "path": "/through", "method": "GET", "status_code": 200, '
    b'"latency_ms": 1.5}' % DEMO_PROJECT_ID.encode()
)


# -- reading the environment -------------------------------------------------------------


@pytest.mark.parametrize(
    "url, environ, expected",
    [
        ("https://brain.example", {}, None),
        ("https://brain.example", {"HTTPS_PROXY": "http://p:3128"}, Proxy("p", 3128)),
        ("https://brain.example", {"https_proxy": "p:8080"}, Proxy("p", 8080)),  # no scheme
        ("https://b", {"https_proxy": "http://low", "HTTPS_PROXY": "http://up"}, Proxy("low", 80)),
        ("https://brain.example", {"HTTP_PROXY": "http://p:1"}, None),  # the other scheme's
        ("http://brain.example", {"HTTP_PROXY": "http://p:1"}, Proxy("p", 1)),
        ("http://brain.example", {"ALL_PROXY": "http://p:2"}, Proxy("p", 2)),
        # A CGI process: HTTP_PROXY may be the client's "Proxy:" header (httpoxy).
        ("http://b.example", {"HTTP_PROXY": "http://evil:1", "REQUEST_METHOD": "GET"}, None),
        ("http://b.example", {"http_proxy": "http://p:1", "REQUEST_METHOD": "GET"}, Proxy("p", 1)),
    ],
)  # fmt: skip
def test_the_proxy_comes_from_the_environment_as_requests_reads_it(url, environ, expected):
    assert proxy_for(url, environ) == expected


@pytest.mark.parametrize(
    "no_proxy, url, bypassed",
    [
        ("*", "https://brain.example", True),
        ("brain.example", "https://brain.example", True),
        ("example", "https://brain.example", True),
        (".example", "https://brain.example", True),
        ("ample", "https://brain.example", False),  # a suffix of the name, not a domain
        ("other.example, brain.example", "https://brain.example", True),
        ("brain.example:443", "https://brain.example", True),
        ("brain.example:8443", "https://brain.example", False),
        ("10.0.0.0/8", "https://10.1.2.3:9000", True),
        ("10.0.0.0/8", "https://11.1.2.3", False),
        ("127.0.0.1", "http://127.0.0.1:8002", True),
        ("", "https://brain.example", False),
    ],
)
def test_no_proxy_names_the_hosts_reached_directly(no_proxy, url, bypassed):
    environ = {"HTTPS_PROXY": "http://p:3128", "HTTP_PROXY": "http://p:3128"}
    assert (proxy_for(url, {**environ, "NO_PROXY": no_proxy}) is None) == bypassed


def test_credentials_in_the_proxy_url_become_basic_authorization_and_stay_out_of_reprs():
    proxy = proxy_for("https://b.example", {"HTTPS_PROXY": "http://us%40er:s3cret@p:3128"})
    assert proxy is not None and proxy.authorization == "Basic dXNAZXI6czNjcmV0"
    assert "s3cret" not in repr(proxy) and "dXNAZXI" not in repr(proxy)


def test_a_proxy_url_that_cannot_be_used_is_refused():
    with pytest.raises(ValueError):
        proxy_for("https://b.example", {"HTTPS_PROXY": "socks5://p:1080"})


@pytest.mark.parametrize(
    "configured, environ, expected",
    [
        (None, {}, None),
        ("/mine.pem", {"REQUESTS_CA_BUNDLE": "/req.pem"}, "/mine.pem"),
        (None, {"REQUESTS_CA_BUNDLE": "/req.pem", "CURL_CA_BUNDLE": "/curl.pem"}, "/req.pem"),
        (None, {"CURL_CA_BUNDLE": "/curl.pem"}, "/curl.pem"),
        (None, {"SSL_CERT_FILE": "/ssl.pem"}, None),  # OpenSSL reads that one itself
    ],
)
def test_the_ca_bundle_is_the_setting_else_what_requests_reads(configured, environ, expected):
    assert ca_bundle(configured, environ) == expected


# -- a TLS Brain and a proxy on loopback --------------------------------------------------


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, sink):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _join(a: socket.socket, b: socket.socket) -> None:
    threading.Thread(target=_pipe, args=(a, b), daemon=True).start()
    threading.Thread(target=_pipe, args=(b, a), daemon=True).start()


class _Listener:
    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(conn,), daemon=True).start()

    def serve(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


class TlsFront(_Listener):
    """TLS on the outside, the collector behind: an https Brain with its own certificate."""

    def __init__(self, backend: str, context: ssl.SSLContext) -> None:
        self.backend = urlsplit(backend)
        self.context = context
        super().__init__()
        self.url = f"https://localhost:{self.port}"

    def serve(self, conn: socket.socket) -> None:
        try:
            secure = self.context.wrap_socket(conn, server_side=True)
        except OSError:
            conn.close()  # a client that does not trust us hangs up in the handshake
            return
        assert self.backend.hostname and self.backend.port
        _join(secure, socket.create_connection((self.backend.hostname, self.backend.port)))


class ForwardProxy(_Listener):
    """Opens CONNECT tunnels and forwards absolute-form requests; records each request
    line, and answers 407 without the ``Proxy-Authorization`` it wants (if any)."""

    def __init__(self, authorization: str | None = None) -> None:
        self.authorization = authorization
        self.asked: list[str] = []
        super().__init__()
        self.url = f"http://127.0.0.1:{self.port}"

    def serve(self, conn: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            data = conn.recv(65536)
            if not data:
                conn.close()
                return
            head += data
        lines = head.split(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
        self.asked.append(lines[0])
        method, target, _ = lines[0].split(" ")
        if self.authorization and f"Proxy-Authorization: {self.authorization}" not in lines:
            conn.sendall(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n")
            conn.close()
            return
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            upstream = socket.create_connection((host, int(port)))
            conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        else:
            parts = urlsplit(target)
            upstream = socket.create_connection((parts.hostname, parts.port or 80))
            upstream.sendall(head)  # absolute form: HTTP/1.1 servers take it as it is
        _join(conn, upstream)


@pytest.fixture(scope="module")
def authority() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def bundle(authority: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    authority.cert_pem.write_to_path(str(path))
    return path


@pytest.fixture
def tls_brain(collector_server: CollectorServer, authority: trustme.CA) -> Iterator[TlsFront]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    authority.issue_cert("localhost").configure_cert(context)
    front = TlsFront(collector_server.url, context)
    yield front
    front.close()


@pytest.fixture
def proxy() -> Iterator[ForwardProxy]:
    server = ForwardProxy()
    yield server
    server.close()


@pytest.fixture(autouse=True)
def no_proxy_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("https_proxy", "http_proxy", "all_proxy", "no_proxy"):
        for variable in (name, name.upper()):
            monkeypatch.delenv(variable, raising=False)
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR"):
        monkeypatch.delenv(name, raising=False)


def ship(brain_url: str, **options: object) -> object:
    settings = {"sdk_key": DEMO_SDK_KEY, "project_id": DEMO_PROJECT_ID, "brain_url": brain_url}
    client = OtasClient(Config.load({**settings, **options}, environ={}), Stats())
    try:
        return client.export(Prepared(EVENT, Collector().issue_token())).outcome
    finally:
        client.shutdown()


def test_an_https_brain_with_its_own_certificate_is_trusted_through_ca_bundle(
    tls_brain: TlsFront, bundle: Path, collector: Collector
) -> None:
    assert ship(tls_brain.url, ca_bundle=str(bundle)) == Sent()
    assert [e["path"] for e in collector.events()] == ["/through"]


def test_without_its_certificate_authority_the_https_brain_is_not_trusted(
    tls_brain: TlsFront, collector: Collector
) -> None:
    outcome = ship(tls_brain.url)
    assert isinstance(outcome, Retry) and outcome.reason == "connection_error"
    assert "SSLCertVerificationError" in outcome.detail
    assert collector.events() == []


@pytest.mark.parametrize("variable", ["REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"])
def test_the_ecosystems_ca_bundle_variables_are_honoured(
    tls_brain: TlsFront,
    bundle: Path,
    collector: Collector,
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
) -> None:
    monkeypatch.setenv(variable, str(bundle))
    assert ship(tls_brain.url) == Sent()


def test_an_https_brain_is_reached_through_a_connect_tunnel(
    tls_brain: TlsFront,
    proxy: ForwardProxy,
    bundle: Path,
    collector: Collector,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    assert ship(tls_brain.url, ca_bundle=str(bundle)) == Sent()
    assert proxy.asked == [f"CONNECT localhost:{tls_brain.port} HTTP/1.1"]
    assert [e["path"] for e in collector.events()] == ["/through"]


def test_a_plain_http_brain_is_reached_through_the_proxy_in_absolute_form(
    collector_server: CollectorServer,
    proxy: ForwardProxy,
    collector: Collector,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    assert ship(collector_server.url) == Sent()
    assert proxy.asked == [f"POST {collector_server.url}{SDK_LOG_PATH} HTTP/1.1"]
    assert [e["path"] for e in collector.events()] == ["/through"]


def test_a_host_in_no_proxy_is_reached_directly(
    collector_server: CollectorServer,
    proxy: ForwardProxy,
    collector: Collector,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
    assert ship(collector_server.url) == Sent()
    assert proxy.asked == []


def test_a_proxy_that_wants_credentials_gets_those_of_its_url(
    tls_brain: TlsFront, bundle: Path, collector: Collector, monkeypatch: pytest.MonkeyPatch
) -> None:
    guarded = ForwardProxy(authorization="Basic dTpw")  # u:p
    try:
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{guarded.port}")
        refused = ship(tls_brain.url, ca_bundle=str(bundle))
        monkeypatch.setenv("HTTPS_PROXY", f"http://u:p@127.0.0.1:{guarded.port}")
        sent = ship(tls_brain.url, ca_bundle=str(bundle))
    finally:
        guarded.close()
    assert isinstance(refused, Retry) and "407" in refused.detail
    assert not refused.maybe_delivered
    assert sent == Sent()


# -- the ca_bundle setting ----------------------------------------------------------------


def test_a_ca_bundle_that_does_not_exist_is_refused_in_code_and_logged_from_the_environment(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    missing = str(tmp_path / "missing.pem")
    with pytest.raises(ConfigError, match="ca_bundle"):
        Config.load({"ca_bundle": missing}, environ={})
    config = Config.load({}, environ={"OTAS_CA_BUNDLE": missing})
    assert config.ca_bundle is None and config.env_refused == ("OTAS_CA_BUNDLE",)
    assert "OTAS_CA_BUNDLE" in caplog.text


def test_a_ca_bundle_that_holds_no_certificate_is_logged_and_the_systems_trusted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    context = tls_context(str(junk))
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert "cannot load the CA bundle" in caplog.text
