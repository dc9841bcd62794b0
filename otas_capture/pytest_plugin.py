"""pytest plugin: assert in your own tests what OTAS receives from your app.

Installed with the package (the ``pytest11`` entry point) and inert until a test asks for
the ``otas`` fixture: nothing is imported, started or configured before that.

The fixture starts the package's local collector (a stand-in for OTAS UASAM and Brain) on
a free loopback port, once per test session, and for each test that uses it:

- sets the ``OTAS_*`` environment variables (SDK key, URLs, project id, a short retry
  backoff) so that middlewares built during the test ship to the collector, and puts
  those settings over whatever code, ``app.config`` or Django settings say;
- hands out agent session tokens as UASAM would (:meth:`OtasFixture.agent_headers`);
- returns the events the collector received (:meth:`OtasFixture.events`): every agent
  request the test made whose application call returned, read to the end or not,
  crashed or not.

.. code-block:: python

    def test_listing_items_is_captured(client, otas):
        client.get("/api/items/", headers=otas.agent_headers())
        event = otas.events()[0]
        assert event["status_code"] == 200
        assert event["metadata"]["route"] == "api/items/"

An app built before the test (at import time, say) read its settings then: pass it to
:meth:`OtasFixture.configure`, which points it at the collector for the test.
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .capture.middleware import OtasMiddleware
    from .capture.registry import Capturing
    from .collector import Collector, CollectorServer

__all__ = ["NoMiddlewareError", "OtasFixture", "otas"]

# A short backoff so that a retry during a test takes milliseconds.
_RETRY_BACKOFF = 0.01


class NoMiddlewareError(AssertionError):
    """``otas.events()`` was asked for while no middleware ships to the test's collector."""


class OtasFixture:
    """What the ``otas`` fixture returns. See the module docstring for an example."""

    def __init__(self, server: CollectorServer, monkeypatch: pytest.MonkeyPatch) -> None:
        from .collector import DEMO_PROJECT_ID, DEMO_SDK_KEY
        from .contract import SESSION_TOKEN_HEADER

        self.server = server
        self._monkeypatch = monkeypatch
        self._header = SESSION_TOKEN_HEADER
        self._token: str | None = None
        self._restores: list[Any] = []
        self._before: weakref.WeakSet[Capturing] = weakref.WeakSet()
        self.options: dict[str, Any] = {
            "enabled": True,
            "sdk_key": DEMO_SDK_KEY,
            "project_id": DEMO_PROJECT_ID,
            "brain_url": server.url,
            "uasam_url": server.url,
            "retry_backoff": _RETRY_BACKOFF,
            "sample_rate": 1.0,  # every agent request, so that tests are deterministic
        }
        """The middleware settings that ship to this collector."""

    def __repr__(self) -> str:
        return f"<OtasFixture collector={self.url}>"

    @property
    def url(self) -> str:
        """Base URL of the collector (it answers as both Brain and UASAM)."""
        return self.server.url

    @property
    def collector(self) -> Collector:
        """The :class:`~otas_capture.collector.Collector`, for ``fail_next`` and the like."""
        return self.server.collector

    # -- agents ----------------------------------------------------------------------

    def token(self, **claims: Any) -> str:
        """A new agent session token (a JWT as UASAM issues); ``claims`` as in ``issue_token``."""
        return self.collector.issue_token(**claims)

    def agent_headers(self, **claims: Any) -> dict[str, str]:
        """The header an agent sends: the same session for the whole test, unless ``claims``."""
        if claims:
            return {self._header: self.token(**claims)}
        if self._token is None:
            self._token = self.token()
        return {self._header: self._token}

    # -- apps ------------------------------------------------------------------------

    def configure(self, app: Any) -> Any:
        """Point an app built before the test at the collector, for this test only.

        - a Flask app (instrumented or not): its ``wsgi_app`` is wrapped anew for the
          test and restored afterwards; returns the app.
        - an :class:`~otas_capture.OtasMiddleware`: returns a new middleware around the
          same application, shipping to the collector; use that one in the test.
        - an :class:`~otas_capture.asgi.OtasASGIMiddleware`: likewise, a new one.
        - a FastAPI or Starlette app: its middleware stack (``OtasASGIMiddleware``
          included) is built anew for the test, and again after it; returns the app.
        - any other WSGI application: returns it wrapped in a middleware.

        Django needs no call: its middleware reads the settings when the test's client
        handles its first request.
        """
        from .capture.middleware import OtasMiddleware

        if hasattr(app, "wsgi_app") and hasattr(app, "extensions"):  # Flask
            return self._configure_flask(app)
        if hasattr(app, "user_middleware") and hasattr(app, "middleware_stack"):
            # Starlette builds the stack at the app's first call: build it again now,
            # with the test's settings, and after the test with the app's own.
            app.middleware_stack = None
            self._restores.append(lambda: setattr(app, "middleware_stack", None))
            return app
        inner = app.app if isinstance(app, OtasMiddleware) else app
        asgi = sys.modules.get("otas_capture.asgi")
        if asgi is not None and isinstance(app, asgi.OtasASGIMiddleware):
            return self._track(asgi.OtasASGIMiddleware(app.app, **self.options))
        return self._track(OtasMiddleware(inner, **self.options))

    def _configure_flask(self, app: Any) -> Any:
        from .capture.middleware import OtasMiddleware
        from .flask import EXTENSION_KEY, connect_signals

        current = app.wsgi_app
        previous = app.extensions.get(EXTENSION_KEY)
        inner = current.app if isinstance(current, OtasMiddleware) else current
        middleware = self._track(OtasMiddleware(inner, **self.options))
        app.wsgi_app = middleware
        app.extensions[EXTENSION_KEY] = middleware
        connect_signals(app)

        def restore() -> None:
            app.wsgi_app = current
            if previous is None:
                app.extensions.pop(EXTENSION_KEY, None)
            else:
                app.extensions[EXTENSION_KEY] = previous

        self._restores.append(restore)
        return app

    def _track(self, middleware: OtasMiddleware) -> OtasMiddleware:
        self._restores.append(lambda: middleware.close(timeout=2.0))
        return middleware

    # -- what OTAS received ----------------------------------------------------------

    def middlewares(self) -> list[Capturing]:
        """Every live middleware that ships to this collector, whatever its framework."""
        from .capture.registry import live_middlewares

        return [m for m in live_middlewares() if _brain_url(m) == self.url]

    def flush(self, timeout: float = 5.0) -> bool:
        """Flush every middleware that ships to this collector; False on a timeout."""
        return all([m.flush(timeout) for m in self.middlewares()])

    def events(self, count: int | None = None, timeout: float = 5.0) -> list[dict[str, Any]]:
        """The events the collector accepted during this test, oldest first.

        Every agent request whose application call returned is in them: a response the
        test has not read to the end (or at all) is shipped first with what is known of
        it (``metadata["response_unfinished"]``). With ``count``, also waits (up to
        ``timeout``) until that many have arrived. Raises :class:`NoMiddlewareError` when
        no middleware ships here, rather than answer an empty list that proves nothing.
        """
        middlewares = self.middlewares()
        # One that captured and closed already (an ASGI app's lifespan shutdown at the
        # end of a test client's ``with`` block) has shipped what it had: it counts.
        if not any(
            getattr(m, "capturing", False) or getattr(m, "closed", False) for m in middlewares
        ):
            raise NoMiddlewareError(self._no_middleware())
        for middleware in middlewares:
            handoff = getattr(middleware, "handoff", None)
            if handoff is not None:
                handoff.abandon_unfinished()
        self.flush(timeout)
        if count is not None:
            return self.collector.wait_for_events(count, timeout)
        return self.collector.events()

    def _no_middleware(self) -> str:
        from .capture.registry import live_middlewares

        elsewhere = sorted(
            {str(_brain_url(m)) for m in live_middlewares() if getattr(m, "capturing", False)}
        )
        return (
            f"no OtasMiddleware ships to this test's collector ({self.url}), so no event "
            "can be here. Build the app during the test (an app factory), pass an app "
            "built earlier to otas.configure(app), or, with Django, make a request "
            "through the test Client first. "
            + (f"Middlewares ship elsewhere: {', '.join(elsewhere)}." if elsewhere else "")
        ).strip()

    def stats(self) -> dict[str, int]:
        """The middlewares' counters added up (``captured``, ``sent``, ``skipped``...)."""
        total: dict[str, int] = {}
        for middleware in self.middlewares():
            for name, value in middleware.stats().items():
                if isinstance(value, int):
                    total[name] = total.get(name, 0) + value
        return total

    # -- set up and tear down --------------------------------------------------------

    def _start(self) -> None:
        from .config import Config

        # Middlewares built during the test are closed after it (see _stop): an app
        # factory run by every test would otherwise leave sender threads behind.
        self._before = weakref.WeakSet(self.middlewares())
        self.collector.clear()
        for name, value in self.options.items():
            text = str(value).lower() if isinstance(value, bool) else str(value)
            self._monkeypatch.setenv("OTAS_" + name.upper(), text)
        # The fixture's settings win over everything, code included: every middleware,
        # whatever its framework, reads its settings through Config.load.
        overrides = dict(self.options)
        load = Config.load.__func__  # type: ignore[attr-defined]

        def load_with_overrides(cls: type[Config], options: Mapping[str, Any], *args: Any) -> Any:
            return load(cls, {**options, **overrides}, *args)

        self._monkeypatch.setattr(Config, "load", classmethod(load_with_overrides))

    def _stop(self) -> None:
        self.flush(2.0)
        for restore in reversed(self._restores):
            restore()
        self._restores.clear()
        shared = _django_cores()
        for middleware in self.middlewares():
            if middleware not in self._before and middleware not in shared:
                middleware.close(timeout=2.0)
        self.collector.clear()


def _brain_url(middleware: Capturing) -> str | None:
    return getattr(getattr(middleware, "config", None), "brain_url", None)


def _django_cores() -> list[OtasMiddleware]:
    """The Django integration's shared middlewares: they serve every test, so stay open."""
    django = sys.modules.get("otas_capture.django")
    return list(django._cores.values()) if django is not None else []


@pytest.fixture(scope="session")
def _otas_collector_server() -> Iterator[CollectorServer]:
    from .collector import CollectorServer

    with CollectorServer() as server:
        yield server


@pytest.fixture
def otas(
    _otas_collector_server: CollectorServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[OtasFixture]:
    """A local OTAS for this test: settings pointing at it, agent tokens, and its events."""
    fixture = OtasFixture(_otas_collector_server, monkeypatch)
    fixture._start()
    try:
        yield fixture
    finally:
        fixture._stop()
