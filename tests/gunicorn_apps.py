"""The differential test's apps for gunicorn, which runs them in a process of its own.

gunicorn is a pre-fork server: it cannot be started in the test process, so two
gunicorn processes import this module, one serving ``bare`` and the other ``wrapped``
(the same app under the middleware, shipping to the collector named in the
environment). Each request carries the app it must behave as (an ``AppSpec`` as JSON in
a header), and ``/__closes`` answers how many times the server closed the app's
iterables and what the middleware counted, so that the test can compare both sides.
"""

from __future__ import annotations

import json
from typing import Any

from otas_capture import OtasMiddleware

from .test_differential import SPEC_HEADER, Closes, build_app, decode_spec

_closes = Closes()


_middleware: OtasMiddleware | None = None


def _report(start_response: Any) -> list[bytes]:
    stats = _middleware.stats() if _middleware is not None else {}
    body = json.dumps({"closes": _closes.count, "stats": stats}).encode("utf-8")
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


def bare(environ: dict[str, Any], start_response: Any) -> Any:
    if environ["PATH_INFO"] == "/__closes":
        return _report(start_response)
    spec = decode_spec(environ["HTTP_" + SPEC_HEADER.upper().replace("-", "_")])
    return build_app(spec, _closes)(environ, start_response)


def wrapped(environ: dict[str, Any], start_response: Any) -> Any:
    global _middleware
    if environ["PATH_INFO"] == "/__closes":  # asked beside the middleware, not through it
        return _report(start_response)
    if _middleware is None:  # made in the worker (after the fork), configured by OTAS_*
        _middleware = OtasMiddleware(bare)
    return _middleware(environ, start_response)
