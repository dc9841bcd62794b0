"""A local stand-in for the OTAS servers, so the SDK can be tried without an account.

``Collector`` is a small WSGI application that answers the UASAM and Brain endpoints
the SDK uses (SDK-key authentication, agent-session creation, event ingestion) the way
the public servers do, as written down in the OTAS contract, including their oddities:
the order of the checks, HTML error pages where Django would send them, ``str()`` of
non-string text fields, and values the production database refuses. It keeps the
accepted events in memory so tests and the README demo can look at them, and it can be
told to fail (``fail_next``, ``uasam_up``) to exercise the SDK's retry paths.

``CollectorServer`` runs it on loopback in a background thread; ``python -m
otas_capture.collector`` runs it in the foreground for humans.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import socket
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import unquote_to_bytes

import jwt
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.serving import DechunkedInput
from werkzeug.wrappers import Request, Response
from werkzeug.wsgi import LimitedStream

from .contract import (
    AGENT_KEY_HEADER,
    AUTHENTICATE_PATH,
    CONTENT_TYPE_LIMIT,
    JSON_OBJECT_FIELDS,
    MAX_INTEGER,
    MAX_REQUEST_BYTES,
    METHOD_LIMIT,
    REQUIRED_FIELDS,
    REQUIRED_TOKEN_CLAIMS,
    SDK_KEY_HEADER,
    SDK_LOG_PATH,
    SESSION_CREATE_PATH,
    SESSION_TOKEN_HEADER,
    SIZE_FIELDS,
    TEXT_FIELDS,
    is_sdk_key,
)

__all__ = [
    "AUTHENTICATE_PATH",
    "DEMO_AGENT_ID",
    "DEMO_AGENT_KEY",
    "DEMO_PROJECT_ID",
    "DEMO_SDK_KEY",
    "DEMO_SECRET",
    "MAX_REQUEST_BYTES",
    "REQUIRED_FIELDS",
    "SDK_LOG_PATH",
    "SESSION_CREATE_PATH",
    "Collector",
    "CollectorServer",
    "main",
    "serve",
]

EVENTS_PATH = "/collector/events"

DEMO_SECRET = "otas-local-collector-demo-signing-secret"
DEMO_SDK_KEY = "otas_demo_localcollectorkey"
DEMO_PROJECT_ID = "00000000-0000-4000-8000-000000000001"
DEMO_AGENT_KEY = "otas_agent_localcollectoragentkey"
DEMO_AGENT_ID = "00000000-0000-4000-8000-000000000002"

TOKEN_LIFETIME = 30 * 24 * 3600.0  # what the public UASAM issues

_SIZE_FIELDS = SIZE_FIELDS
_CONTENT_TYPE_FIELDS = ("request_content_type", "response_content_type")
_JSON_OBJECT_FIELDS = JSON_OBJECT_FIELDS
_MAX_METHOD_CHARS = METHOD_LIMIT
_MAX_CONTENT_TYPE_CHARS = CONTENT_TYPE_LIMIT
_MAX_INTEGER = MAX_INTEGER
_READ_CHUNK = 64 * 1024

# fail_next() statuses whose natural description is not just the HTTP phrase.
_FAULT_DESCRIPTIONS = {400: "invalid_json", 401: "invalid_sdk_key", 500: "event_capture_failed"}


def _json_response(status: int, payload: Any, headers: Mapping[str, str] | None = None) -> Response:
    return Response(
        json.dumps(payload), status=status, mimetype="application/json", headers=dict(headers or {})
    )


def _failure(status: int, description: str, **extra: Any) -> Response:
    return _json_response(status, {"status": 0, "status_description": description, **extra})


def _html_error(status: int) -> Response:
    # Django's production error page: SDKs must cope with a body that is not JSON.
    title = f"{HTTP_STATUS_CODES.get(status, 'Error')} ({status})"
    page = (
        f'<!doctype html>\n<html lang="en">\n<head>\n  <title>{title}</title>\n</head>\n'
        f"<body>\n  <h1>{title}</h1><p></p>\n</body>\n</html>\n"
    )
    return Response(page, status=status, mimetype="text/html")


def _read_body(request: Request) -> bytes | None:
    """Return the request body, or None if it is over MAX_REQUEST_BYTES.

    Never holds more than MAX_REQUEST_BYTES + 1 bytes: a declared length is refused
    unread, and a chunked body is read only until it proves too big.
    """
    if request.content_length is not None and request.content_length > MAX_REQUEST_BYTES:
        return None
    chunks: list[bytes] = []
    total = 0
    while total <= MAX_REQUEST_BYTES:
        # Stream reads may come back short, so loop rather than trust one read().
        chunk = request.stream.read(min(_READ_CHUNK, MAX_REQUEST_BYTES + 1 - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return None if total > MAX_REQUEST_BYTES else b"".join(chunks)


def _scalars(value: Any) -> Iterator[Any]:
    """Yield every scalar and object key in parsed JSON, iteratively so that a deeply
    nested body cannot exhaust the handler thread's stack."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        else:
            yield item


def _unstorable_string(text: str) -> bool:
    # PostgreSQL text cannot hold NUL, and a lone surrogate cannot be encoded as UTF-8.
    if "\x00" in text:
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_finite_number(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too big for a double column
        return False


def _stored_form(body: dict[str, Any]) -> dict[str, Any]:
    stored = dict(body)
    for field in TEXT_FIELDS:
        value = stored.get(field)
        if value is not None and not isinstance(value, str):
            stored[field] = str(value)
    return stored


def _database_refuses(body: dict[str, Any], stored: dict[str, Any]) -> bool:
    """True for the values the production insert fails on (Brain answers 500)."""
    if any(isinstance(v, str) and _unstorable_string(v) for v in _scalars(body)):
        return True
    if body["path"] is None or body["method"] is None:  # NOT NULL columns
        return True
    if len(stored["method"]) > _MAX_METHOD_CHARS:
        return True
    status = body["status_code"]
    if not _is_int(status) or not 0 <= status <= _MAX_INTEGER:
        return True
    if not _is_finite_number(body["latency_ms"]):
        return True
    for field in _SIZE_FIELDS:
        size = body.get(field)
        if size is not None and (not _is_int(size) or not 0 <= size <= _MAX_INTEGER):
            return True
    for field in _CONTENT_TYPE_FIELDS:
        if stored.get(field) is not None and len(stored[field]) > _MAX_CONTENT_TYPE_CHARS:
            return True
    for field in _JSON_OBJECT_FIELDS:
        value = body.get(field)
        if value is None:
            continue
        # PostgreSQL jsonb has no NaN or Infinity.
        if not isinstance(value, dict) or any(
            isinstance(v, float) and not math.isfinite(v) for v in _scalars(value)
        ):
            return True
    return False


@dataclass
class _Fault:
    status: int | None
    body: dict[str, Any] | None
    retry_after: str | None
    delay: float


class Collector:
    """WSGI app that answers like OTAS UASAM and Brain and remembers accepted events.

    Thread-safe: the server runs each request in its own thread.

    Parameters:
        secret: HS256 secret that signs and verifies agent-session JWTs.
        sdk_keys: SDK key -> project id. Default ``{DEMO_SDK_KEY: DEMO_PROJECT_ID}``.
        agent_keys: agent key -> agent id. Default ``{DEMO_AGENT_KEY: DEMO_AGENT_ID}``.

    Attributes:
        uasam_up: while False, every SDK key is refused with ``401 invalid_sdk_key`` by
            the log endpoint (as Brain does while UASAM is down) and UASAM answers 503.

    Example::

        collector = Collector()
        with CollectorServer(collector) as server:
            token = collector.issue_token()
            ...  # point the SDK at server.url with DEMO_SDK_KEY, send `token`
            events = collector.wait_for_events(1)
    """

    def __init__(
        self,
        *,
        secret: str = DEMO_SECRET,
        sdk_keys: Mapping[str, str] | None = None,
        agent_keys: Mapping[str, str] | None = None,
    ) -> None:
        self._secret = secret
        self._sdk_keys = dict(sdk_keys) if sdk_keys is not None else {DEMO_SDK_KEY: DEMO_PROJECT_ID}
        self._agent_keys = (
            dict(agent_keys) if agent_keys is not None else {DEMO_AGENT_KEY: DEMO_AGENT_ID}
        )
        self.uasam_up = True
        self._cond = threading.Condition()
        self._events: list[dict[str, Any]] = []
        self._calls: list[tuple[int, str]] = []
        self._faults: list[_Fault] = []
        self._routes: dict[str, dict[str, Callable[[Request], Response]]] = {
            SDK_LOG_PATH: {"POST": self._log_event},
            SDK_LOG_PATH.rstrip("/"): {"POST": self._log_without_slash},
            AUTHENTICATE_PATH: {"POST": self._authenticate},
            SESSION_CREATE_PATH: {"POST": self._create_session},
            EVENTS_PATH: {"GET": self._list_events, "DELETE": self._clear_events},
        }

    # -- control surface for tests and demos -------------------------------------------

    def add_sdk_key(self, key: str, project_id: str) -> None:
        with self._cond:
            self._sdk_keys[key] = project_id

    def remove_sdk_key(self, key: str) -> None:
        with self._cond:
            self._sdk_keys.pop(key, None)

    def issue_token(
        self,
        *,
        agent_id: str = DEMO_AGENT_ID,
        agent_session_id: str | None = None,
        expires_in: float = TOKEN_LIFETIME,
        **extra_claims: Any,
    ) -> str:
        """Mint a session JWT as UASAM would; a negative ``expires_in`` gives an expired one."""
        now = time.time()
        claims: dict[str, Any] = {
            "agent_session_id": str(uuid.uuid4()) if agent_session_id is None else agent_session_id,
            "agent_id": agent_id,
            "iat": int(now),
            "exp": int(now + expires_in),
        }
        claims.update(extra_claims)
        return jwt.encode(claims, self._secret, algorithm="HS256")

    def fail_next(
        self,
        count: int = 1,
        *,
        status: int | None = 500,
        body: dict[str, Any] | None = None,
        retry_after: str | None = None,
        delay: float = 0.0,
    ) -> None:
        """Make the next ``count`` log calls sleep ``delay`` s, then answer ``status``.

        Faults are answered before any other check and queue up first in, first out.
        ``status=None`` only delays the call, which is then processed normally.
        """
        if count < 0 or delay < 0:
            raise ValueError("count and delay must not be negative")
        if status is not None and body is None:
            phrase = HTTP_STATUS_CODES.get(status, "error").lower().replace(" ", "_")
            body = {"status": 0, "status_description": _FAULT_DESCRIPTIONS.get(status, phrase)}
        with self._cond:
            self._faults.extend(_Fault(status, body, retry_after, delay) for _ in range(count))

    def events(self) -> list[dict[str, Any]]:
        """Copies of the accepted events, oldest first."""
        with self._cond:
            return copy.deepcopy(self._events)

    @property
    def calls(self) -> list[tuple[int, str]]:
        """(HTTP status, status_description or "html") of every log call answered."""
        with self._cond:
            return list(self._calls)

    def clear(self) -> None:
        """Forget events, calls and pending faults (keys and ``uasam_up`` stay)."""
        with self._cond:
            self._events.clear()
            self._calls.clear()
            self._faults.clear()

    def wait_for_events(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Block until ``count`` events are accepted or ``timeout`` passes; return events()."""
        with self._cond:
            self._cond.wait_for(lambda: len(self._events) >= count, timeout)
        return self.events()

    # -- WSGI ----------------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        request = Request(environ)
        try:
            handlers = self._routes.get(request.path)
            if handlers is None:
                raise NotFound()
            handler = handlers.get(request.method)
            if handler is None:
                raise MethodNotAllowed(valid_methods=list(handlers))
            response: Any = handler(request)
        except HTTPException as exc:  # 404, 405, or a client that hung up mid-body
            response = exc
        return response(environ, start_response)

    def _record_call(self, response: Response) -> Response:
        description = "html"
        if response.mimetype == "application/json":
            payload = json.loads(response.get_data())
            description = payload.get("status_description", "") if isinstance(payload, dict) else ""
        with self._cond:
            self._calls.append((response.status_code, description))
        return response

    def _log_event(self, request: Request) -> Response:
        with self._cond:
            fault = self._faults.pop(0) if self._faults else None
        if fault is not None:
            # Sleep outside the lock so other requests and the test thread carry on.
            time.sleep(fault.delay)
            if fault.status is not None:
                headers = {"Retry-After": fault.retry_after} if fault.retry_after else None
                return self._record_call(_json_response(fault.status, fault.body, headers))
        return self._record_call(self._ingest(request))

    def _log_without_slash(self, request: Request) -> Response:
        # Django's APPEND_SLASH cannot redirect a POST and fails with a 500 page.
        return self._record_call(_html_error(500))

    def _ingest(self, request: Request) -> Response:
        """The checks of the public Brain, in its order."""
        sdk_key = request.headers.get(SDK_KEY_HEADER)
        if not sdk_key:
            return _failure(401, "missing_sdk_key")
        with self._cond:
            project_id = self._sdk_keys.get(sdk_key)
        if project_id is None or not self.uasam_up:
            return _failure(401, "invalid_sdk_key")
        token = request.headers.get(SESSION_TOKEN_HEADER)
        if not token:
            return _failure(401, "missing_agent_session_token")
        claims = self._verify_token(token.strip())
        if claims is None:
            return _failure(401, "invalid_or_expired_token")

        raw = _read_body(request)
        if raw is None:
            return _html_error(400)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return _html_error(500)
        try:
            body = json.loads(text)
        except ValueError:
            return _failure(400, "invalid_json")
        except RecursionError:
            return _html_error(500)
        if not isinstance(body, (dict, list)):
            return _html_error(500)
        missing = [f for f in REQUIRED_FIELDS if not isinstance(body, dict) or f not in body]
        if missing or not isinstance(body, dict):
            return _failure(400, "missing_required_fields", missing_fields=missing)

        try:
            stored = _stored_form(body)
            if _database_refuses(body, stored):
                return _failure(500, "event_capture_failed")
        except RecursionError:  # str() of absurdly nested values
            return _failure(500, "event_capture_failed")
        stored.update(
            {
                "_project_id": project_id,  # the key's project, not the body's
                "_agent_session_id": claims["agent_session_id"],
                "_agent_id": claims["agent_id"],
                "_received_at": datetime.now(timezone.utc).isoformat(),
                # Which client connection carried it: shows whether keep-alive is used.
                "_connection": f"{request.remote_addr}:{request.environ.get('REMOTE_PORT', '')}",
            }
        )
        with self._cond:
            self._events.append(stored)
            self._cond.notify_all()
        return _json_response(
            201, {"status": 1, "status_description": "event_captured", "response": {}}
        )

    def _verify_token(self, token: str) -> dict[str, Any] | None:
        try:
            return jwt.decode(
                token,
                self._secret,
                algorithms=["HS256"],
                options={"require": list(REQUIRED_TOKEN_CLAIMS)},
            )
        except (jwt.PyJWTError, ValueError):
            return None

    def _authenticate(self, request: Request) -> Response:
        if not self.uasam_up:
            return _failure(503, "service_unavailable")
        key = request.headers.get(SDK_KEY_HEADER)
        if not key:
            return _json_response(401, {"error": "SDK Key missing"})
        if not is_sdk_key(key):
            return _json_response(403, {"error": "Invalid Key Format"})
        with self._cond:
            project_id = self._sdk_keys.get(key)
        if project_id is None:
            return _json_response(403, {"error": "Invalid SDK Key"})
        project = {
            "id": project_id,
            "name": "Local collector project",
            "description": "Served by otas_capture.collector for local testing.",
        }
        return _json_response(
            200,
            {"status": 1, "status_description": "authenticated", "response": {"project": project}},
        )

    def _create_session(self, request: Request) -> Response:
        if not self.uasam_up:
            return _failure(503, "service_unavailable")
        agent_key = request.headers.get(AGENT_KEY_HEADER)
        if not agent_key:
            return _failure(401, "missing_agent_key")
        with self._cond:
            agent_id = self._agent_keys.get(agent_key)
        if agent_id is None:
            return _failure(401, "invalid_agent_key")
        raw = _read_body(request)
        if raw is None:
            return _html_error(400)
        try:
            json.loads(raw.decode("utf-8"))
        except (ValueError, RecursionError):
            return _failure(400, "invalid_json")
        token = self.issue_token(agent_id=agent_id)
        return _json_response(
            200,
            {
                "status": 1,
                "status_description": "agent_session_created",
                "response": {"Header_value": SESSION_TOKEN_HEADER, "jwt_token": token},
            },
        )

    def _list_events(self, request: Request) -> Response:
        return _json_response(200, self.events())

    def _clear_events(self, request: Request) -> Response:
        self.clear()
        return Response(status=204)


class _Http11Handler(BaseHTTPRequestHandler):
    """Serves one WSGI app over HTTP/1.1 keep-alive connections, as production servers do.

    werkzeug's development server closes every connection (it cannot tell whether the
    app left part of a body unread), so the SDK's keep-alive connections could be neither
    exercised nor measured against it. This handler reads what the app left of each
    request body and keeps the connection only when that rest is small; a request the
    collector refused unread (an oversized body) closes it.
    """

    protocol_version = "HTTP/1.1"
    timeout = 30  # seconds an idle connection may hold its thread
    # Headers and body go out in two writes; with Nagle's algorithm the second waits
    # for the client's delayed ACK, adding ~40 ms to every call on a kept-alive connection.
    disable_nagle_algorithm = True
    server: _Http11Server

    def _serve(self) -> None:
        environ, body = self._environ()
        status_line = "500 Internal Server Error"
        response_headers: list[tuple[str, str]] = []

        def start_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Callable[[bytes], None]:
            nonlocal status_line, response_headers
            status_line, response_headers = status, headers
            return chunks.append

        chunks: list[bytes] = []
        result = self.server.app(environ, start_response)
        try:
            chunks.extend(result)
        finally:
            if hasattr(result, "close"):
                result.close()
        keep = self.close_connection is False and _drain(body)
        code, _, reason = status_line.partition(" ")
        self.send_response(int(code), reason)
        for name, value in response_headers:
            if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                self.send_header(name, value)
        content = b"".join(chunks)
        self.send_header("Content-Length", str(len(content)))
        if not keep:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(b"" if self.command == "HEAD" else content)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _serve

    def _environ(self) -> tuple[dict[str, Any], Any]:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            body: Any = DechunkedInput(self.rfile)  # type: ignore[arg-type]
        else:
            try:
                length = max(0, int(self.headers.get("Content-Length") or 0))
            except ValueError:
                length = 0
                self.close_connection = True  # we cannot know where the next request starts
            body = LimitedStream(self.rfile, length)  # type: ignore[arg-type]
        path, _, query = self.path.partition("?")
        host, port = self.server.server_address[:2]
        environ: dict[str, Any] = {
            "REQUEST_METHOD": self.command,
            "SCRIPT_NAME": "",
            "PATH_INFO": unquote_to_bytes(path).decode("latin-1"),
            "QUERY_STRING": query,
            "SERVER_NAME": str(host),
            "SERVER_PORT": str(port),
            "SERVER_PROTOCOL": self.request_version,
            "REMOTE_ADDR": self.client_address[0],
            "REMOTE_PORT": str(self.client_address[1]),
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": body,
            "wsgi.input_terminated": isinstance(body, DechunkedInput),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        for name, value in self.headers.items():
            key = name.upper().replace("-", "_")
            if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                key = "HTTP_" + key
            environ[key] = f"{environ[key]},{value}" if key in environ else value
        return environ, body

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.log_requests:
            super().log_message(format, *args)


def _drain(body: Any) -> bool:
    """Read what the app left of a request body; False when too much is left to bother."""
    left = MAX_REQUEST_BYTES + _READ_CHUNK
    try:
        while left > 0:
            chunk = body.read(min(_READ_CHUNK, left))
            if not chunk:
                return True
            left -= len(chunk)
    except (OSError, ValueError):
        return False
    return False


class _Http11Server(ThreadingHTTPServer):
    daemon_threads = True  # handler threads may sleep in a fail_next delay
    block_on_close = False

    def __init__(self, address: tuple[str, int], app: Any, log_requests: bool) -> None:
        self.app = app
        self.log_requests = log_requests
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.address_family = family
        super().__init__(address, _Http11Handler)


class CollectorServer:
    """Runs a Collector on a local port in a background thread; a context manager.

    Parameters:
        collector: the app to serve; a new ``Collector()`` if None.
        host: interface to listen on.
        port: port to listen on; 0 picks a free one (read ``url`` after ``start()``).
        log_requests: write an access line per request to standard error.

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
    ) -> None:
        self.collector = collector if collector is not None else Collector()
        self.host = host
        self.port = port
        self.url = ""
        self._log_requests = log_requests
        self._server: _Http11Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> CollectorServer:
        if self._server is not None:
            raise RuntimeError("CollectorServer is already running")
        server = _Http11Server((self.host, self.port), self.collector, self._log_requests)
        self._server = server
        self.port = server.server_address[1]
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.url = f"http://{host}:{self.port}"
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"otas-collector-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
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


def _sdk_key_arg(value: str) -> str:
    if not is_sdk_key(value):
        raise argparse.ArgumentTypeError("must look like otas_<prefix>_<secret>")
    return value


def _project_id_arg(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise argparse.ArgumentTypeError("must be a UUID") from None


def main(argv: list[str] | None = None) -> int:
    """Serve UASAM and Brain on one port until Ctrl-C, after printing what to configure."""
    parser = argparse.ArgumentParser(
        prog="python -m otas_capture.collector",
        description="Local stand-in for the OTAS UASAM and Brain servers.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8002, help="port, 0 for any (default 8002)")
    parser.add_argument("--secret", default=DEMO_SECRET, help="HS256 secret for session tokens")
    parser.add_argument(
        "--sdk-key",
        type=_sdk_key_arg,
        default=DEMO_SDK_KEY,
        help="backend SDK key to accept (otas_<prefix>_<secret>)",
    )
    parser.add_argument(
        "--project-id",
        type=_project_id_arg,
        default=DEMO_PROJECT_ID,
        help="project id (UUID) the SDK key belongs to",
    )
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error("argument --port: must be from 0 to 65535")
    if not args.secret:
        parser.error("argument --secret: must not be empty")
    if args.secret == DEMO_SECRET:
        # PyJWT >= 2.10 warns that the fixed demo secret is under 32 bytes; it is public
        # anyway, so the warning would only clutter the banner.
        warnings.filterwarnings("ignore", message="The HMAC key is", category=UserWarning)

    collector = Collector(secret=args.secret, sdk_keys={args.sdk_key: args.project_id})
    try:
        server = CollectorServer(collector, args.host, args.port, log_requests=True).start()
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    print(
        f"OTAS local collector (UASAM and Brain) on {server.url}\n"
        f"  SDK key:       {args.sdk_key}\n"
        f"  project id:    {args.project_id}\n"
        f"  agent key:     {DEMO_AGENT_KEY}\n"
        f"  session token: {collector.issue_token()}\n"
        f"                 (send it as {SESSION_TOKEN_HEADER}; valid 30 days)\n\n"
        f"Set in your backend's environment:\n"
        f"  export OTAS_SDK_KEY={args.sdk_key}\n"
        f"  export OTAS_BRAIN_URL={server.url}\n"
        f"  export OTAS_UASAM_URL={server.url}\n\n"
        f"Accepted events: GET {server.url}{EVENTS_PATH} (DELETE clears them)\n"
        f"Press Ctrl-C to stop.",
        flush=True,
    )
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
