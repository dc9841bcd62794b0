"""The collector's WSGI application: answers like OTAS UASAM and Brain.

``Collector`` answers the UASAM and Brain endpoints the SDK uses (SDK-key
authentication, agent-session creation, event ingestion) the way the public servers
do, as written down in the OTAS contract, including their oddities: the order of the
checks, HTML error pages where Django would send them, ``str()`` of non-string text
fields, and values the production database refuses. It keeps accepted events in an
:class:`~otas_capture.collector.store.EventStore` so tests and demos can look at them,
and it can be told to fail (``fail_next``, ``uasam_up``) to exercise the SDK's retry
paths.

Routes live in a table (``Collector.routes``), so tools built on the collector (a
viewer, JSON endpoints) add theirs with :meth:`Collector.add_route`, or hand a whole
path prefix to another WSGI app with :meth:`Collector.mount`.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, Callable

import jwt

from ..contract import (
    AGENT_KEY_HEADER,
    AUTHENTICATE_PATH,
    EVENT_CAPTURE_FAILED,
    EVENT_CAPTURED,
    INVALID_JSON,
    INVALID_SDK_KEY,
    INVALID_SESSION_TOKEN,
    MAX_REQUEST_BYTES,
    MISSING_REQUIRED_FIELDS,
    MISSING_SDK_KEY,
    MISSING_SESSION_TOKEN,
    REQUIRED_FIELDS,
    REQUIRED_TOKEN_CLAIMS,
    SDK_KEY_HEADER,
    SDK_LOG_PATH,
    SESSION_CREATE_PATH,
    SESSION_TOKEN_HEADER,
    is_sdk_key,
)
from .emulation import Answer, BrainConditions, Fault
from .rules import database_refuses, stored_form
from .store import EventStore
from .web import HTTPError, MethodNotAllowed, NotFound, Request, Response, status_phrase

EVENTS_PATH = "/collector/events"

DEMO_SECRET = "otas-local-collector-demo-signing-secret"
DEMO_SDK_KEY = "otas_demo_localcollectorkey"
DEMO_PROJECT_ID = "00000000-0000-4000-8000-000000000001"
DEMO_AGENT_KEY = "otas_agent_localcollectoragentkey"
DEMO_AGENT_ID = "00000000-0000-4000-8000-000000000002"

# What an overloaded OTAS service answers (emulated when a service is down).
SERVICE_UNAVAILABLE = "service_unavailable"

TOKEN_LIFETIME = 30 * 24 * 3600.0  # what the public UASAM issues

Handler = Callable[[Request], Response]
"""A route's handler: takes the request, returns the response."""

# fail_next() statuses whose natural description is not just the HTTP phrase.
_FAULT_DESCRIPTIONS = {400: INVALID_JSON, 401: INVALID_SDK_KEY, 500: EVENT_CAPTURE_FAILED}


def json_response(status: int, payload: Any, headers: Mapping[str, str] | None = None) -> Response:
    """A JSON response, as both OTAS services send them."""
    return Response(json.dumps(payload), status, mimetype="application/json", headers=headers)


def _failure(status: int, description: str, **extra: Any) -> Response:
    return json_response(status, {"status": 0, "status_description": description, **extra})


def _html_error(status: int) -> Response:
    # Django's production error page: SDKs must cope with a body that is not JSON.
    title = f"{status_phrase(status, 'Error')} ({status})"
    page = (
        f'<!doctype html>\n<html lang="en">\n<head>\n  <title>{title}</title>\n</head>\n'
        f"<body>\n  <h1>{title}</h1><p></p>\n</body>\n</html>\n"
    )
    return Response(page, status, mimetype="text/html")


def _answer(status: int, body: dict[str, Any] | None, retry_after: str | None) -> Answer:
    if body is None:
        phrase = status_phrase(status, "error").lower().replace(" ", "_")
        body = {"status": 0, "status_description": _FAULT_DESCRIPTIONS.get(status, phrase)}
    return Answer(status, body, retry_after)


def _answer_response(answer: Answer) -> Response:
    headers = {"Retry-After": answer.retry_after} if answer.retry_after else None
    return json_response(answer.status, answer.body, headers)


def _read_body(request: Request) -> bytes | None:
    """Return the request body, or None if it is over MAX_REQUEST_BYTES.

    Never holds more than MAX_REQUEST_BYTES + 1 bytes: a declared length is refused
    unread, and a chunked body is read only until it proves too big.
    """
    return request.get_data(MAX_REQUEST_BYTES)


class Collector:
    """WSGI app that answers like OTAS UASAM and Brain and remembers accepted events.

    Thread-safe: the server runs each request in its own thread.

    Parameters:
        secret: HS256 secret that signs and verifies agent-session JWTs.
        sdk_keys: SDK key -> project id. Default ``{DEMO_SDK_KEY: DEMO_PROJECT_ID}``.
        agent_keys: agent key -> agent id. Default ``{DEMO_AGENT_KEY: DEMO_AGENT_ID}``.
        store: where accepted events go; a new in-memory ``EventStore()`` if None,
            ``EventStore(path)`` to keep them in a SQLite file across restarts.

    Attributes:
        uasam_up: while False, every SDK key is refused with ``401 invalid_sdk_key`` by
            the log endpoint (as Brain does while UASAM is down) and UASAM answers 503.
        brain_up: while False, every log call is answered ``500 event_capture_failed``
            (or what :meth:`brain_down` said), as while Brain's database is down.
        brain_hangs: while True, log calls get no answer; they go on when it is False.
        uasam_hangs: while True, UASAM's endpoints and (as Brain asks UASAM about the
            key) log calls get no answer; they go on when it is False.
        conditions: the :class:`BrainConditions` behind these switches.
        store: the :class:`EventStore` holding the accepted events.
        routes: path -> HTTP method -> handler; see :meth:`add_route`.

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
        store: EventStore | None = None,
    ) -> None:
        self._secret = secret
        self._sdk_keys = dict(sdk_keys) if sdk_keys is not None else {DEMO_SDK_KEY: DEMO_PROJECT_ID}
        self._agent_keys = (
            dict(agent_keys) if agent_keys is not None else {DEMO_AGENT_KEY: DEMO_AGENT_ID}
        )
        self.store = store if store is not None else EventStore()
        self._initial_sdk_keys = dict(self._sdk_keys)
        self.uasam_up = True
        self.conditions = BrainConditions()
        self._lock = threading.Lock()
        self.routes: dict[str, dict[str, Handler]] = {}
        self._mounts: list[tuple[str, Callable[..., Any]]] = []
        self.add_route(SDK_LOG_PATH, "POST", self._log_event)
        self.add_route(SDK_LOG_PATH.rstrip("/"), "POST", self._log_without_slash)
        self.add_route(AUTHENTICATE_PATH, "POST", self._authenticate)
        self.add_route(SESSION_CREATE_PATH, "POST", self._create_session)
        self.add_route(EVENTS_PATH, "GET", self._list_events)
        self.add_route(EVENTS_PATH, "DELETE", self._clear_events)

    def add_route(self, path: str, method: str, handler: Handler) -> None:
        """Answer ``method`` requests for exactly ``path`` with ``handler``.

        Replaces a handler already there. Unknown paths get 404 and known paths with
        another method 405, as Django would answer.
        """
        self.routes.setdefault(path, {})[method.upper()] = handler

    def mount(self, prefix: str, app: Callable[..., Any]) -> None:
        """Hand requests under ``prefix`` that no route answers to another WSGI app.

        The longest matching prefix wins; ``"/"`` catches everything else (a viewer
        served at the root). As with any WSGI mount, the prefix moves from
        ``PATH_INFO`` to ``SCRIPT_NAME``.
        """
        self._mounts.append((prefix.rstrip("/"), app))
        self._mounts.sort(key=lambda mount: len(mount[0]), reverse=True)

    # -- control surface for tests and demos -------------------------------------------

    def add_sdk_key(self, key: str, project_id: str) -> None:
        with self._lock:
            self._sdk_keys[key] = project_id

    def remove_sdk_key(self, key: str) -> None:
        with self._lock:
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
        answer = None if status is None else _answer(status, body, retry_after)
        self.conditions.add_faults([Fault(answer, delay) for _ in range(count)])

    @property
    def brain_up(self) -> bool:
        return self.conditions.outage is None

    @brain_up.setter
    def brain_up(self, up: bool) -> None:
        self.conditions.outage = None if up else _answer(500, None, None)

    def brain_down(
        self,
        status: int = 500,
        *,
        body: dict[str, Any] | None = None,
        retry_after: str | None = None,
    ) -> None:
        """Answer every log call ``status`` (after any ``fail_next`` faults) until
        ``brain_up`` is set True again. Bodies as for :meth:`fail_next`."""
        self.conditions.outage = _answer(status, body, retry_after)

    @property
    def brain_hangs(self) -> bool:
        return self.conditions.brain_hang.on

    @brain_hangs.setter
    def brain_hangs(self, hangs: bool) -> None:
        self.conditions.brain_hang.on = hangs

    @property
    def uasam_hangs(self) -> bool:
        return self.conditions.uasam_hang.on

    @uasam_hangs.setter
    def uasam_hangs(self, hangs: bool) -> None:
        self.conditions.uasam_hang.on = hangs

    def set_capacity(self, workers: int | None, service_time: float = 0.0) -> None:
        """Serve log calls with ``workers`` slots (None: one per call), each call holding
        its slot ``service_time`` seconds; calls beyond the slots queue, first come
        first served. Models the public Brain, whose throughput is bound by a key check
        per call whatever the number of calls in flight."""
        if workers is not None and workers < 1:
            raise ValueError("workers must be at least 1, or None for unbounded")
        if service_time < 0:
            raise ValueError("service_time must not be negative")
        self.conditions.capacity = (workers, service_time)

    def set_latency(self, seconds: float) -> None:
        """Hold back every log call's answer ``seconds`` after it is decided (and its
        event stored): a client timing out meanwhile has had its event stored anyway,
        as with the public Brain, and a retry stores a duplicate."""
        if seconds < 0:
            raise ValueError("latency must not be negative")
        self.conditions.latency = seconds

    @property
    def in_flight(self) -> int:
        """Log calls received and not yet answered."""
        return self.conditions.in_flight

    @property
    def peak_in_flight(self) -> int:
        """The most log calls in flight at once since the last clear() or reset()."""
        return self.conditions.peak_in_flight

    def events(self) -> list[dict[str, Any]]:
        """Copies of the accepted events, oldest first.

        Each is the body as Brain stores it plus ``_id`` (the store's id),
        ``_project_id`` (the SDK key's project), ``_agent_session_id`` and ``_agent_id``
        (from the session token), ``_received_at`` (ISO 8601, UTC) and ``_connection``
        (the client's address and port: shows whether connections are reused).
        The store (``self.store``) has the queries: filters, sessions, one event."""
        return self.store.events()

    @property
    def calls(self) -> list[tuple[int, str]]:
        """(HTTP status, status_description or "html") of every log call answered."""
        return self.store.calls()

    def clear(self) -> None:
        """Forget events, calls, pending faults and the in-flight peak (keys and the
        switches stay)."""
        self.conditions.clear_faults()
        self.conditions.reset_peak()
        self.store.clear()

    def reset(self) -> None:
        """Back to as constructed: the initial keys, every switch healthy (UASAM and
        Brain up, no hang, unbounded capacity, no latency), no events, calls or faults.
        Releases any call held by a hang."""
        with self._lock:
            self._sdk_keys = dict(self._initial_sdk_keys)
        self.uasam_up = True
        self.brain_up = True
        self.brain_hangs = False
        self.uasam_hangs = False
        self.set_capacity(None, 0.0)
        self.set_latency(0.0)
        self.clear()

    def wait_for_events(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Block until ``count`` events are accepted or ``timeout`` passes; return events()."""
        return self.store.wait_for_events(count, timeout)

    # -- WSGI ----------------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        request = Request(environ)
        try:
            handlers = self.routes.get(request.path)
            if handlers is None:
                mounted = self._mounted(environ)
                if mounted is not None:
                    return mounted(environ, start_response)
                raise NotFound()
            handler = handlers.get(request.method)
            if handler is None:
                raise MethodNotAllowed(list(handlers))
            # Any WSGI callable will do as the answer; Response is the usual one.
            response: Any = handler(request)
        except HTTPError as exc:  # 404, 405, or a client that hung up mid-body
            response = exc
        return response(environ, start_response)

    def _mounted(self, environ: dict[str, Any]) -> Callable[..., Any] | None:
        path = environ.get("PATH_INFO", "")
        for prefix, app in self._mounts:
            if path == prefix or path.startswith(prefix + "/"):
                environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + prefix
                environ["PATH_INFO"] = path[len(prefix) :]
                return app
        return None

    def _record_call(self, response: Response) -> Response:
        description = "html"
        if response.mimetype == "application/json":
            payload = json.loads(response.get_data())
            description = payload.get("status_description", "") if isinstance(payload, dict) else ""
        self.store.record_call(response.status_code, description)
        return response

    def _log_event(self, request: Request) -> Response:
        conditions = self.conditions
        with conditions.call():
            fault = conditions.next_fault()
            if fault is not None:
                # Sleep outside any lock so other requests and the test thread carry on.
                time.sleep(fault.delay)
                if fault.answer is not None:
                    return self._record_call(_answer_response(fault.answer))
            conditions.brain_hang.wait()
            outage = conditions.outage
            if outage is not None:
                response = self._record_call(_answer_response(outage))
            else:
                with conditions.worker():
                    conditions.uasam_hang.wait()  # Brain's key check asks UASAM
                    response = self._record_call(self._ingest(request))
            latency = conditions.latency
            if latency > 0:
                time.sleep(latency)
            return response

    def _log_without_slash(self, request: Request) -> Response:
        # Django's APPEND_SLASH cannot redirect a POST and fails with a 500 page.
        return self._record_call(_html_error(500))

    def _ingest(self, request: Request) -> Response:
        """The checks of the public Brain, in its order."""
        sdk_key = request.headers.get(SDK_KEY_HEADER)
        if not sdk_key:
            return _failure(401, MISSING_SDK_KEY)
        with self._lock:
            project_id = self._sdk_keys.get(sdk_key)
        if project_id is None or not self.uasam_up:
            return _failure(401, INVALID_SDK_KEY)
        token = request.headers.get(SESSION_TOKEN_HEADER)
        if not token:
            return _failure(401, MISSING_SESSION_TOKEN)
        claims = self._verify_token(token.strip())
        if claims is None:
            return _failure(401, INVALID_SESSION_TOKEN)

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
            return _failure(400, INVALID_JSON)
        except RecursionError:
            return _html_error(500)
        if not isinstance(body, (dict, list)):
            return _html_error(500)
        missing = [f for f in REQUIRED_FIELDS if not isinstance(body, dict) or f not in body]
        if missing or not isinstance(body, dict):
            return _failure(400, MISSING_REQUIRED_FIELDS, missing_fields=missing)

        try:
            stored = stored_form(body)
            if database_refuses(body, stored):
                return _failure(500, EVENT_CAPTURE_FAILED)
        except RecursionError:  # str() of absurdly nested values
            return _failure(500, EVENT_CAPTURE_FAILED)
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
        self.store.add_event(stored)
        return json_response(
            201, {"status": 1, "status_description": EVENT_CAPTURED, "response": {}}
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
        self.conditions.uasam_hang.wait()
        if not self.uasam_up:
            return _failure(503, SERVICE_UNAVAILABLE)
        key = request.headers.get(SDK_KEY_HEADER)
        if not key:
            return json_response(401, {"error": "SDK Key missing"})
        if not is_sdk_key(key):
            return json_response(403, {"error": "Invalid Key Format"})
        with self._lock:
            project_id = self._sdk_keys.get(key)
        if project_id is None:
            return json_response(403, {"error": "Invalid SDK Key"})
        project = {
            "id": project_id,
            "name": "Local collector project",
            "description": "Served by otas_capture.collector for local testing.",
        }
        return json_response(
            200,
            {"status": 1, "status_description": "authenticated", "response": {"project": project}},
        )

    def _create_session(self, request: Request) -> Response:
        self.conditions.uasam_hang.wait()
        if not self.uasam_up:
            return _failure(503, SERVICE_UNAVAILABLE)
        agent_key = request.headers.get(AGENT_KEY_HEADER)
        if not agent_key:
            return _failure(401, "missing_agent_key")
        with self._lock:
            agent_id = self._agent_keys.get(agent_key)
        if agent_id is None:
            return _failure(401, "invalid_agent_key")
        raw = _read_body(request)
        if raw is None:
            return _html_error(400)
        try:
            json.loads(raw.decode("utf-8"))
        except (ValueError, RecursionError):
            return _failure(400, INVALID_JSON)
        token = self.issue_token(agent_id=agent_id)
        return json_response(
            200,
            {
                "status": 1,
                "status_description": "agent_session_created",
                "response": {"Header_value": SESSION_TOKEN_HEADER, "jwt_token": token},
            },
        )

    def _list_events(self, request: Request) -> Response:
        return json_response(200, self.events())

    def _clear_events(self, request: Request) -> Response:
        self.clear()
        return Response(status=204, mimetype=None)
