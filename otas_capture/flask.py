"""Flask integration: an extension that wraps the app and connects what only Flask knows.

Flask turns an unhandled exception into a 500 response itself, so the WSGI layer never
sees the exception; the ``got_request_exception`` signal hands it over so the event's
``error`` still names it. The matched URL rule (``/items/<int:item_id>``) and endpoint go
into the event's metadata, which lets OTAS group calls by endpoint rather than by raw path.

Settings come from the app's config (``OTAS_SDK_KEY``, ``OTAS_SAMPLE_RATE``, ... the
same names as the environment variables) as well as from the environment, so the usual
``app.config.from_object(...)`` / ``from_prefixed_env`` patterns work. Options given in
code win over ``app.config``, which wins over the environment. A bad value in code raises
:class:`~otas_capture.ConfigError`; one in ``app.config`` is logged and replaced, as a
bad environment variable is.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import Any

from flask import Flask, current_app, got_request_exception, has_app_context, has_request_context
from flask import request as current_request

from .capture.exchange import Exchange
from .capture.middleware import EXCHANGE_ENVIRON_KEY, OtasMiddleware
from .capture.registry import log_misuse
from .config import OPTION_NAMES, Setting

__all__ = ["OtasCapture", "annotate", "config_options", "connect_signals", "init_app"]

EXTENSION_KEY = "otas_capture"
# Set once the app's signals are connected, so that no path connects them twice.
_SIGNALS_KEY = "otas_capture.signals"


def config_options(config: Mapping[str, Any]) -> dict[str, Any]:
    """The middleware options an app's config sets, as ``OTAS_<NAME>`` keys.

    Each comes as a :class:`~otas_capture.config.Setting`: a bad value is logged naming
    ``app.config["OTAS_<NAME>"]`` and replaced, as a bad environment variable is, so that
    a config file never stops the app from starting.
    """
    found: dict[str, Any] = {}
    for name in OPTION_NAMES:
        key = "OTAS_" + name.upper()
        value = config.get(key)
        if value is not None:
            found[name] = Setting(value, f'app.config["{key}"]')
    return found


class OtasCapture:
    """The Flask extension: ``OtasCapture(app)``, or ``otas = OtasCapture()`` then
    ``otas.init_app(app)`` in an application factory.

    :param app: the app to instrument now; leave it out for the factory pattern.
    :param options: middleware options (``sdk_key``, ``sample_rate``, ...) for every app
        this extension instruments. They win over ``OTAS_*`` keys of ``app.config``, which
        win over ``OTAS_*`` environment variables. A bad value here raises
        :class:`~otas_capture.ConfigError` in ``init_app``; a bad one in ``app.config`` is
        logged naming the key, and replaced.

    .. code-block:: python

        otas = OtasCapture()

        def create_app():
            app = Flask(__name__)
            app.config.from_object("settings")  # may set OTAS_SDK_KEY, OTAS_SKIP_PATHS...
            otas.init_app(app)
            return app
    """

    def __init__(self, app: Flask | None = None, **options: Any) -> None:
        self._options = options
        # Weak: an app (and its middleware) made per test must not live as long as a
        # module-level extension object.
        self._middlewares: weakref.WeakSet[OtasMiddleware] = weakref.WeakSet()
        if app is not None:
            self.init_app(app)

    def __repr__(self) -> str:
        return f"<OtasCapture apps={len(self._middlewares)}>"

    def init_app(self, app: Flask, **options: Any) -> OtasMiddleware:
        """Wrap ``app.wsgi_app`` and return the middleware; a second call returns the first."""
        existing = app.extensions.get(EXTENSION_KEY)
        if isinstance(existing, OtasMiddleware):
            # A second call (an app factory run twice, say) must not capture twice.
            self._middlewares.add(existing)
            return existing
        merged = {**config_options(app.config), **self._options, **options}
        middleware = OtasMiddleware(app.wsgi_app, **merged)
        app.wsgi_app = middleware  # type: ignore[method-assign]
        connect_signals(app)
        app.extensions[EXTENSION_KEY] = middleware
        self._middlewares.add(middleware)
        return middleware

    def middleware(self, app: Flask | None = None) -> OtasMiddleware | None:
        """The middleware of ``app``; by default the current app's, else the only one."""
        if app is None and has_app_context():
            app = current_app._get_current_object()  # type: ignore[attr-defined]
        if app is not None:
            found = app.extensions.get(EXTENSION_KEY)
            return found if isinstance(found, OtasMiddleware) else None
        middlewares = list(self._middlewares)
        return middlewares[0] if len(middlewares) == 1 else None

    def stats(self, app: Flask | None = None) -> dict[str, Any]:
        """``stats()`` of the app's middleware (see :meth:`middleware`); empty if none."""
        middleware = self.middleware(app)
        return middleware.stats() if middleware is not None else {}

    def flush(self, timeout: float = 5.0) -> bool:
        """Flush the middleware of every app this extension instruments."""
        return all([middleware.flush(timeout) for middleware in list(self._middlewares)])

    def close(self, timeout: float = 5.0) -> None:
        """Close the middleware of every app this extension instruments."""
        for middleware in list(self._middlewares):
            middleware.close(timeout)


def init_app(app: Flask, **options: Any) -> OtasMiddleware:
    """Wrap ``app.wsgi_app`` with :class:`~otas_capture.OtasMiddleware` and return it.

    The same as ``OtasCapture(**options).init_app(app)``: options are those of the
    middleware, each falling back to an ``OTAS_*`` key of ``app.config``, then to the
    environment variable. Calling it again for the same app returns the first middleware.

    .. code-block:: python

        from flask import Flask
        from otas_capture.flask import init_app

        app = Flask(__name__)
        otas = init_app(app)
    """
    return OtasCapture(**options).init_app(app)


def connect_signals(app: Flask) -> None:
    """Record the exception and the matched route of ``app``'s captured requests. Idempotent.

    ``init_app`` calls this; so does :class:`~otas_capture.OtasMiddleware` when it wraps
    ``app.wsgi_app`` directly (``app.wsgi_app = OtasMiddleware(app.wsgi_app)``).
    """
    if app.extensions.get(_SIGNALS_KEY):
        return
    app.extensions[_SIGNALS_KEY] = True
    got_request_exception.connect(_record_exception, app, weak=False)
    app.teardown_request(_record_route)


def annotate(req: Any = None, /, **props: Any) -> None:
    """Add ``props`` to the ``custom_properties`` of this request's event.

    Inside a Flask request call it with the properties only: ``annotate(tenant="acme")``;
    ``annotate(request, tenant="acme")`` works too. A no-op outside a request or for a
    request that is not captured. A wrong first argument is logged on the
    ``otas_capture`` logger and ignored: it never breaks the request.
    """
    if req is None:
        exchange = _current_exchange()
    elif isinstance(req, dict):  # a WSGI environ: harmless to accept
        exchange = req.get(EXCHANGE_ENVIRON_KEY)
    elif isinstance(getattr(req, "environ", None), dict):
        exchange = req.environ.get(EXCHANGE_ENVIRON_KEY)
    else:
        log_misuse(
            "flask.annotate",
            "otas-capture: otas_capture.flask.annotate() takes the request or nothing, "
            "then keywords, as in annotate(tenant='acme'); got a %s first, so these "
            "properties were not recorded",
            type(req).__name__,
        )
        return
    if exchange is not None:
        exchange.annotate(props)


def _current_exchange() -> Exchange | None:
    if not has_request_context():
        return None
    return current_request.environ.get(EXCHANGE_ENVIRON_KEY)


def _record_exception(sender: Flask, exception: BaseException, **extra: Any) -> None:
    exchange = _current_exchange()
    if exchange is not None:
        exchange.fail(exception)


def _record_route(exc: BaseException | None) -> None:
    # Runs on every request of the app: one proxy lookup, then plain attributes.
    current = current_request._get_current_object()  # type: ignore[attr-defined]
    exchange = current.environ.get(EXCHANGE_ENVIRON_KEY)
    rule = current.url_rule
    if exchange is not None and rule is not None:
        exchange.add_metadata(route=rule.rule, endpoint=rule.endpoint)
