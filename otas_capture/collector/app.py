"""The collector's WSGI application: answers like OTAS UASAM and Brain.

``Collector`` puts together the emulated services, each in a module of its own:
:mod:`.uasam` (SDK-key authentication, agent sessions), :mod:`.brain` (the log
endpoint: emulated conditions, Brain's checks, the store), :mod:`.keys` (the keys and
token secret both read), :mod:`.events_api` (the stored events, for scripts) and
:mod:`.control` (the emulated Brain's performance, set over HTTP). It
answers only requests naming a loopback host or an allowed one (:mod:`.hosts`), and it
can be told to fail (``fail_next``, ``uasam_up``...) to exercise the SDK's retry paths.

Routes live in a table (``Collector.routes``), so tools built on the collector (a
viewer, JSON endpoints) add theirs with :meth:`Collector.add_route`, or hand a whole
path prefix to another WSGI app with :meth:`Collector.mount`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Callable

from ..contract import AUTHENTICATE_PATH, SDK_LOG_PATH, SESSION_CREATE_PATH
from .answers import SERVICE_UNAVAILABLE, canned, json_response
from .brain import Brain
from .control import CONDITIONS_PATH, conditions_handlers
from .emulation import BrainConditions, Fault, checked_capacity, checked_latency
from .events_api import EVENTS_PATH, clear_events, list_events
from .hosts import HostGuard
from .keys import (
    DEMO_AGENT_ID,
    DEMO_AGENT_KEY,
    DEMO_PROJECT_ID,
    DEMO_SDK_KEY,
    DEMO_SECRET,
    TOKEN_LIFETIME,
    Keys,
)
from .load import LoadShape, shape_named
from .store import EventStore
from .uasam import Uasam
from .web import HTTPError, MethodNotAllowed, NotFound, Request, Response

__all__ = [
    "DEMO_AGENT_ID",
    "DEMO_AGENT_KEY",
    "DEMO_PROJECT_ID",
    "DEMO_SDK_KEY",
    "DEMO_SECRET",
    "EVENTS_PATH",
    "SERVICE_UNAVAILABLE",
    "TOKEN_LIFETIME",
    "Collector",
    "Handler",
    "json_response",
]

Handler = Callable[[Request], Response]
"""A route's handler: takes the request, returns the response."""


class Collector:
    """WSGI app that answers like OTAS UASAM and Brain and remembers accepted events.

    Thread-safe: the server runs each request in its own thread.

    Parameters:
        secret: HS256 secret that signs and verifies agent-session JWTs.
        sdk_keys: SDK key -> project id. Default ``{DEMO_SDK_KEY: DEMO_PROJECT_ID}``.
        agent_keys: agent key -> agent id. Default ``{DEMO_AGENT_KEY: DEMO_AGENT_ID}``.
        store: where accepted events go; a new in-memory ``EventStore()`` if None,
            ``EventStore(path)`` to keep them in a SQLite file across restarts.
        allowed_hosts: ``Host`` names answered besides the loopback ones; any other
            gets 403 (see :mod:`.hosts`).

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
        allowed_hosts: Iterable[str] = (),
    ) -> None:
        self.keys = Keys(secret, sdk_keys, agent_keys)
        self.store = store if store is not None else EventStore()
        self.conditions = BrainConditions()
        self.hosts = HostGuard(allowed_hosts)
        self.routes: dict[str, dict[str, Handler]] = {}
        self._mounts: list[tuple[str, Callable[..., Any]]] = []
        brain = Brain(self.keys, self.conditions, self.store)
        uasam = Uasam(self.keys, self.conditions)
        self.add_route(SDK_LOG_PATH, "POST", brain.log_event)
        self.add_route(SDK_LOG_PATH.rstrip("/"), "POST", brain.log_without_slash)
        self.add_route(AUTHENTICATE_PATH, "POST", uasam.authenticate)
        self.add_route(SESSION_CREATE_PATH, "POST", uasam.create_session)
        self.add_route(EVENTS_PATH, "GET", list_events(self.store))
        self.add_route(EVENTS_PATH, "DELETE", clear_events(self.clear))
        read_conditions, change_conditions = conditions_handlers(self.conditions)
        self.add_route(CONDITIONS_PATH, "GET", read_conditions)
        self.add_route(CONDITIONS_PATH, "PUT", change_conditions)

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
        self.keys.add_sdk_key(key, project_id)

    def remove_sdk_key(self, key: str) -> None:
        self.keys.remove_sdk_key(key)

    def issue_token(
        self,
        *,
        agent_id: str = DEMO_AGENT_ID,
        agent_session_id: str | None = None,
        expires_in: float = TOKEN_LIFETIME,
        **extra_claims: Any,
    ) -> str:
        """Mint a session JWT as UASAM would; a negative ``expires_in`` gives an expired one."""
        return self.keys.issue_token(
            agent_id=agent_id,
            agent_session_id=agent_session_id,
            expires_in=expires_in,
            **extra_claims,
        )

    @property
    def uasam_up(self) -> bool:
        return self.keys.uasam_up

    @uasam_up.setter
    def uasam_up(self, up: bool) -> None:
        self.keys.uasam_up = up

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
        answer = None if status is None else canned(status, body, retry_after)
        self.conditions.add_faults([Fault(answer, delay) for _ in range(count)])

    @property
    def brain_up(self) -> bool:
        return self.conditions.outage is None

    @brain_up.setter
    def brain_up(self, up: bool) -> None:
        self.conditions.outage = None if up else canned(500, None, None)

    def brain_down(
        self,
        status: int = 500,
        *,
        body: dict[str, Any] | None = None,
        retry_after: str | None = None,
    ) -> None:
        """Answer every log call ``status`` (after any ``fail_next`` faults) until
        ``brain_up`` is set True again. Bodies as for :meth:`fail_next`."""
        self.conditions.outage = canned(status, body, retry_after)

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
        first served. Models a Brain whose throughput is bound by a fixed number of
        workers whatever the number of calls in flight."""
        self.conditions.capacity = checked_capacity(workers, service_time)

    def set_load(self, shape: LoadShape | str | None) -> None:
        """Make log calls take the time a Brain of this :class:`~.load.LoadShape` takes
        with as many calls in flight as there are: calls slow down as they pile up, as
        with the real Brain. A name from :data:`~.load.SHAPES` (``"real-brain"``:
        0.45 s alone, best at 6 in flight, 11.2 s at 32; ``"saturated"``: one call
        already uses it all); None for none. Applies after ``set_capacity``'s slots."""
        self.conditions.load.shape = shape_named(shape)

    def set_latency(self, seconds: float) -> None:
        """Hold back every log call's answer ``seconds`` after it is decided (and its
        event stored): a client timing out meanwhile has had its event stored anyway,
        as with the public Brain, and a retry stores a duplicate."""
        self.conditions.latency = checked_latency(seconds)

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
        Brain up, no hang, unbounded capacity, no load shape, no latency), no events,
        calls or faults.
        Releases any call held by a hang."""
        self.keys.reset()
        self.uasam_up = True
        self.brain_up = True
        self.brain_hangs = False
        self.uasam_hangs = False
        self.set_capacity(None, 0.0)
        self.set_load(None)
        self.set_latency(0.0)
        self.clear()

    def wait_for_events(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Block until ``count`` events are accepted or ``timeout`` passes; return events()."""
        return self.store.wait_for_events(count, timeout)

    # -- WSGI ----------------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        refusal = self.hosts.refusal(environ)
        if refusal is not None:
            return refusal(environ, start_response)
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
