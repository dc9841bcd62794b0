"""A small Flask JSON API instrumented with otas-capture, as a real backend would be.

It is a template for your own (``otas-capture demo`` runs these endpoints, but the crash,
packaged as ``otas_capture/cli/demo_app.py`` so it works without a checkout): one call,
``init_app(app)``, and every request an AI agent makes (those carrying
``X-OTAS-AGENT-SESSION-TOKEN``) is reported to OTAS. Nothing is configured in code; the
settings come from the environment, so the same app ships to the local collector or to
OTAS depending only on where it runs::

    export OTAS_SDK_KEY=otas_demo_localcollectorkey   # see: otas-capture collector
    export OTAS_BRAIN_URL=http://127.0.0.1:8002 OTAS_UASAM_URL=http://127.0.0.1:8002
    python examples/flask_app.py                       # listens on 127.0.0.1:5000 (PORT=...)

Endpoints: ``POST /api/items`` (JSON), ``GET /api/items?limit=``, ``GET
/api/items/<id>``, ``POST /api/login`` (form), ``GET /api/boom`` (always fails) and
``GET /api/export`` (streamed NDJSON).
"""

from __future__ import annotations

import json
import os
import secrets
import threading
from collections.abc import Iterator
from typing import Any

from flask import Flask, Response, abort, jsonify, request, stream_with_context
from werkzeug.exceptions import HTTPException

from otas_capture.flask import annotate, init_app

# Demo credentials; a real app would check a password hash in its user store.
USERS = {"agent": "correct horse battery staple"}
DEFAULT_LIMIT = 20
MAX_LIMIT = 100


class ItemStore:
    """Items in memory. Requests run on several server threads, hence the lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[int, dict[str, Any]] = {}
        self._next_id = 1

    def add(self, name: str, price: float, tags: list[str]) -> dict[str, Any]:
        with self._lock:
            item = {"id": self._next_id, "name": name, "price": price, "tags": tags}
            self._items[item["id"]] = item
            self._next_id += 1
            return dict(item)

    def get(self, item_id: int) -> dict[str, Any] | None:
        with self._lock:
            item = self._items.get(item_id)
            return dict(item) if item is not None else None

    def snapshot(self, limit: int | None = None) -> list[dict[str, Any]]:
        with self._lock:
            items = list(self._items.values())
        return [dict(item) for item in items[:limit]]

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


app = Flask(__name__)
store = ItemStore()
# OTAS_SDK_KEY, OTAS_BRAIN_URL, ... are read here. Without OTAS_SDK_KEY the app still
# runs; the middleware logs a warning and passes every request through.
otas = init_app(app)


def header_text(name: str, default: str) -> str:
    """A request header as the text the client sent.

    WSGI hands header values to the app as their bytes decoded as Latin-1 (PEP 3333),
    and ``request.headers`` passes them on as they are: a UTF-8 ``Café`` arrives as
    ``CafÃ©``. Decode the bytes as UTF-8 where they are UTF-8; keep anything else as the
    Latin-1 text it is.
    """
    value = request.headers.get(name)
    if value is None:
        return default
    try:
        return value.encode("latin-1").decode("utf-8")
    except UnicodeError:  # not UTF-8 (or not bytes a server decoded): keep it as is
        return value


@app.before_request
def tag_tenant() -> None:
    # Lets OTAS group an agent's calls by customer; a no-op for requests not captured.
    annotate(tenant=header_text("X-Tenant", "public"))


@app.errorhandler(HTTPException)
def json_error(error: HTTPException) -> Any:
    # A JSON API answers errors in JSON too, including the 500 of an unhandled exception.
    return jsonify(error=error.name, detail=error.description), error.code


@app.post("/api/items")
def create_item() -> Any:
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        abort(400, "expected a JSON object")
    name = data.get("name")
    price = data.get("price", 0)
    tags = data.get("tags", [])
    if not isinstance(name, str) or not name.strip():
        abort(400, "'name' must be a non-empty string")
    if isinstance(price, bool) or not isinstance(price, (int, float)) or price < 0:
        abort(400, "'price' must be a number of at least 0")
    if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
        abort(400, "'tags' must be a list of strings")
    item = store.add(name.strip(), price, tags)
    annotate(item_id=item["id"])
    return jsonify(item), 201, {"Location": f"/api/items/{item['id']}"}


@app.get("/api/items")
def list_items() -> Any:
    try:
        limit = int(request.args.get("limit", DEFAULT_LIMIT))
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_LIMIT:
        abort(400, f"'limit' must be a whole number from 1 to {MAX_LIMIT}")
    items = store.snapshot(limit)
    annotate(item_count=len(items))
    return jsonify(items=items, total=len(store))


@app.get("/api/items/<int:item_id>")
def get_item(item_id: int) -> Any:
    item = store.get(item_id)
    if item is None:
        abort(404, f"no item {item_id}")
    return jsonify(item)


@app.post("/api/login")
def login() -> Any:
    username = request.form.get("username", "")
    password = request.form.get("password", "")
    expected = USERS.get(username)
    # compare_digest: the time taken must not tell how much of the password was right.
    if expected is None or not secrets.compare_digest(password, expected):
        abort(401, "wrong username or password")
    # The token appears in the response, but OTAS only ever sees it masked.
    return jsonify(access_token=secrets.token_urlsafe(24), token_type="bearer", expires_in=3600)


@app.get("/api/boom")
def boom() -> Any:
    # Deliberately broken, to show how a crash is reported: Flask answers 500 and the
    # event's error field names the exception.
    average_price = sum(item["price"] for item in store.snapshot()) / 0
    return jsonify(average_price=average_price)


@app.get("/api/export")
def export_items() -> Response:
    def lines() -> Iterator[str]:
        for item in store.snapshot():
            yield json.dumps(item) + "\n"

    # stream_with_context keeps the request alive while the generator runs, so the
    # event is completed only after the last line is sent.
    return Response(stream_with_context(lines()), mimetype="application/x-ndjson")


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(os.environ.get("PORT", "5000")))
