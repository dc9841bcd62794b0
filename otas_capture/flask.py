"""Flask integration: one call wraps the app and connects what only Flask knows.

Flask turns an unhandled exception into a 500 response itself, so the WSGI layer never
sees the exception; the ``got_request_exception`` signal hands it over so the event's
``error`` still names it. The matched URL rule (``/items/<int:item_id>``) goes into the
event's metadata, which lets OTAS group calls by endpoint rather than by raw path.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, got_request_exception, has_request_context, request

from .capture import Exchange
from .middleware import EXCHANGE_ENVIRON_KEY, OtasMiddleware


def init_app(app: Flask, **options: Any) -> OtasMiddleware:
    """Wrap ``app.wsgi_app`` with :class:`~otas_capture.OtasMiddleware` and return it.

    Options are those of the middleware; each falls back to its ``OTAS_*`` environment
    variable. Calling it again for the same app returns the first middleware.

    .. code-block:: python

        from flask import Flask
        from otas_capture.flask import init_app

        app = Flask(__name__)
        otas = init_app(app)
    """
    existing = app.extensions.get("otas_capture")
    if existing is not None:
        # A second call (an app factory run twice, say) must not capture twice.
        return existing  # type: ignore[no-any-return]
    middleware = OtasMiddleware(app.wsgi_app, **options)
    app.wsgi_app = middleware  # type: ignore[method-assign]
    got_request_exception.connect(_record_exception, app, weak=False)
    app.teardown_request(_record_route)
    app.extensions["otas_capture"] = middleware
    return middleware


def annotate(**props: Any) -> None:
    """Add ``props`` to the current request's event ``custom_properties``.

    A no-op outside a request or for a request that is not captured.
    """
    exchange = _current_exchange()
    if exchange is not None:
        exchange.annotate(props)


def _current_exchange() -> Exchange | None:
    if not has_request_context():
        return None
    return request.environ.get(EXCHANGE_ENVIRON_KEY)


def _record_exception(sender: Flask, exception: BaseException, **extra: Any) -> None:
    exchange = _current_exchange()
    if exchange is not None:
        exchange.fail(exception)


def _record_route(exc: BaseException | None) -> None:
    # Runs on every request of the app: one proxy lookup, then plain attributes.
    current = request._get_current_object()  # type: ignore[attr-defined]
    exchange = current.environ.get(EXCHANGE_ENVIRON_KEY)
    rule = current.url_rule
    if exchange is not None and rule is not None:
        exchange.add_metadata(route=rule.rule, endpoint=rule.endpoint)
