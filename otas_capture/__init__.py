"""otas-capture: report every API call an AI agent makes to a WSGI backend to OTAS.

.. code-block:: python

    import otas_capture
    from otas_capture import OtasMiddleware

    app = OtasMiddleware(app)  # reads OTAS_SDK_KEY and friends from the environment

    otas_capture.annotate(tenant="acme")  # inside a request: adds to its event
    otas_capture.stats()  # what happened to captured requests, every middleware's
    otas_capture.flush(5.0)  # wait until what was captured is delivered
    otas_capture.close(2.0)  # flush, then stop (this also runs at exit)

See :class:`OtasMiddleware` for the options, :mod:`otas_capture.flask` for Flask and
:mod:`otas_capture.django` for Django.
"""

from __future__ import annotations

import sys
from typing import Any

from ._version import __version__
from .capture import registry
from .capture.annotate import annotate
from .capture.middleware import OtasMiddleware
from .capture.registry import close, flush, stats
from .config import ConfigError

__all__ = [
    "ConfigError",
    "OtasMiddleware",
    "__version__",
    "annotate",
    "close",
    "flush",
    "stats",
]


def _connect_flask(app: Any) -> None:
    """``app.wsgi_app = OtasMiddleware(app.wsgi_app)``: connect Flask's signals as
    ``init_app`` does, so the event still gets the route and the exception.

    Wired here, above the core, which never imports an integration; Flask is only looked
    at when the application already imported it.
    """
    flask = sys.modules.get("flask")
    if flask is None:
        return
    owner = getattr(app, "__self__", None)
    if isinstance(owner, flask.Flask) and getattr(app, "__name__", "") == "wsgi_app":
        from .flask import connect_signals

        connect_signals(owner)


registry.add_framework_hook(_connect_flask)
