"""The small shop API ``otas-capture demo`` runs: a plain WSGI app wrapped by the middleware.

The same endpoints as ``examples/flask_app.py`` (the Flask template to copy), written
against WSGI directly so the demo runs after a plain ``pip install``, with no web
framework. Built by a factory so the demo can point the middleware at its own collector
in code instead of through the process environment. It lives in the package so that
``otas-capture demo`` works from an installed wheel, not only from a checkout.

=======================  ==============================================================
``POST /api/items``      create an item from a JSON ``{"name": ..., "price": ...}``: 201
``GET /api/items``       list them (``?limit=1..100``)
``GET /api/items/<id>``  one item, or 404
``POST /api/login``      a form login; answers a bearer token (masked before it ships)
``GET /api/export``      every item as streamed NDJSON
=======================  ==============================================================
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Iterable, Iterator
from typing import Any, Callable

from ..capture.annotate import annotate
from ..capture.middleware import OtasMiddleware
from ..collector.web import (
    HTTPError,
    MethodNotAllowed,
    NotFound,
    Request,
    Response,
    status_phrase,
)

USERS = {"agent": "correct horse battery staple"}  # demo credentials
MAX_LIMIT = 100
MAX_BODY = 64 * 1024  # the shop's own request size limit

Handler = Callable[[Request], Response]


class BadRequest(HTTPError):
    code = 400


class Unauthorized(HTTPError):
    code = 401


def _json(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(payload), status, mimetype="application/json", headers=headers)


def _json_error(error: HTTPError) -> Response:
    body = {"error": status_phrase(error.code), "detail": error.description}
    return _json(body, error.code, error.headers)


class ShopApp:
    """The shop's WSGI app: routes by method and path, answers errors as JSON."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[int, dict[str, Any]] = {}

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        request = Request(environ)
        # Lets OTAS group an agent's calls by customer; a no-op for requests not captured.
        annotate(environ, tenant=request.header_text("X-Tenant", "public"))
        try:
            response = self._route(request)
        except HTTPError as error:
            response = _json_error(error)
        return response(environ, start_response)

    def _route(self, request: Request) -> Response:
        path, method = request.path, request.method
        routes: dict[str, Handler]
        if path == "/api/items":
            routes = {"POST": self.create_item, "GET": self.list_items}
        elif path == "/api/login":
            routes = {"POST": self.login}
        elif path == "/api/export":
            routes = {"GET": self.export_items}
        elif path.startswith("/api/items/") and path[len("/api/items/") :].isdigit():
            routes = {"GET": self.get_item}
        else:
            raise NotFound("The requested URL was not found on the server.")
        handler = routes.get(method)
        if handler is None:
            raise MethodNotAllowed(list(routes))
        return handler(request)

    def create_item(self, request: Request) -> Response:
        raw = request.get_data(MAX_BODY)
        try:
            data = json.loads(raw) if raw else None
        except ValueError:
            data = None
        if not isinstance(data, dict) or not isinstance(data.get("name"), str):
            raise BadRequest("expected a JSON object with a 'name'")
        price = data.get("price", 0)
        if isinstance(price, bool) or not isinstance(price, (int, float)) or price < 0:
            raise BadRequest("'price' must be a number of at least 0")
        with self._lock:
            item = {"id": len(self._items) + 1, "name": data["name"], "price": price}
            self._items[item["id"]] = item
        annotate(request.environ, item_id=item["id"])
        return _json(item, 201, {"Location": f"/api/items/{item['id']}"})

    def list_items(self, request: Request) -> Response:
        limit = request.args.get("limit", "20")
        if not limit.isdigit() or not 1 <= int(limit) <= MAX_LIMIT:
            raise BadRequest(f"'limit' must be a whole number from 1 to {MAX_LIMIT}")
        with self._lock:
            listed = list(self._items.values())[: int(limit)]
            total = len(self._items)
        return _json({"items": listed, "total": total})

    def get_item(self, request: Request) -> Response:
        item_id = int(request.path.rsplit("/", 1)[1])
        with self._lock:
            item = self._items.get(item_id)
        if item is None:
            raise NotFound(f"no item {item_id}")
        return _json(item)

    def login(self, request: Request) -> Response:
        form = request.form(MAX_BODY)
        expected = USERS.get(form.get("username", ""))
        if expected is None or not secrets.compare_digest(form.get("password", ""), expected):
            raise Unauthorized("wrong username or password")
        # The token is in the response, but OTAS only ever sees it masked.
        token = secrets.token_urlsafe(24)
        return _json({"access_token": token, "token_type": "bearer", "expires_in": 3600})

    def export_items(self, request: Request) -> Response:
        with self._lock:
            snapshot = list(self._items.values())

        def lines() -> Iterator[str]:
            for item in snapshot:
                yield json.dumps(item) + "\n"

        return Response(lines(), mimetype="application/x-ndjson")


def create_app(**otas_options: Any) -> tuple[OtasMiddleware, OtasMiddleware]:
    """A fresh shop app wrapped by ``OtasMiddleware(app, **otas_options)``.

    Returns the WSGI app to serve and the middleware (to flush, read stats, close), as
    the Flask version did; here they are the same object, the middleware being the
    outermost app.
    """
    otas = OtasMiddleware(ShopApp(), **otas_options)
    return otas, otas
