"""The small shop API ``otas-capture demo`` runs: a Flask app wrapped by the middleware.

The same endpoints as ``examples/flask_app.py`` (the template to copy), built by a
factory so the demo can point it at its own collector in code instead of through the
process environment. It lives in the package so that ``otas-capture demo`` works from
an installed wheel, not only from a checkout.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Iterator
from typing import Any

from flask import Flask, Response, abort, jsonify, request, stream_with_context
from werkzeug.exceptions import HTTPException

from ..flask import annotate, init_app
from ..middleware import OtasMiddleware

USERS = {"agent": "correct horse battery staple"}  # demo credentials
MAX_LIMIT = 100


def create_app(**otas_options: Any) -> tuple[Flask, OtasMiddleware]:
    """A fresh shop app, and the middleware ``init_app(app, **otas_options)`` installed."""
    app = Flask("otas_capture_demo_shop")
    lock = threading.Lock()
    items: dict[int, dict[str, Any]] = {}

    @app.before_request
    def tag_tenant() -> None:
        # Lets OTAS group an agent's calls by customer; a no-op for requests not captured.
        annotate(tenant=request.headers.get("X-Tenant", "public"))

    @app.errorhandler(HTTPException)
    def json_error(error: HTTPException) -> Any:
        return jsonify(error=error.name, detail=error.description), error.code

    @app.post("/api/items")
    def create_item() -> Any:
        data = request.get_json(silent=True)
        if not isinstance(data, dict) or not isinstance(data.get("name"), str):
            abort(400, "expected a JSON object with a 'name'")
        price = data.get("price", 0)
        if isinstance(price, bool) or not isinstance(price, (int, float)) or price < 0:
            abort(400, "'price' must be a number of at least 0")
        with lock:
            item = {"id": len(items) + 1, "name": data["name"], "price": price}
            items[item["id"]] = item
        annotate(item_id=item["id"])
        return jsonify(item), 201, {"Location": f"/api/items/{item['id']}"}

    @app.get("/api/items")
    def list_items() -> Any:
        limit = request.args.get("limit", "20")
        if not limit.isdigit() or not 1 <= int(limit) <= MAX_LIMIT:
            abort(400, f"'limit' must be a whole number from 1 to {MAX_LIMIT}")
        with lock:
            listed = list(items.values())[: int(limit)]
        return jsonify(items=listed, total=len(items))

    @app.get("/api/items/<int:item_id>")
    def get_item(item_id: int) -> Any:
        with lock:
            item = items.get(item_id)
        if item is None:
            abort(404, f"no item {item_id}")
        return jsonify(item)

    @app.post("/api/login")
    def login() -> Any:
        username = request.form.get("username", "")
        expected = USERS.get(username)
        if expected is None or not secrets.compare_digest(
            request.form.get("password", ""), expected
        ):
            abort(401, "wrong username or password")
        # The token is in the response, but OTAS only ever sees it masked.
        return jsonify(access_token=secrets.token_urlsafe(24), token_type="bearer", expires_in=3600)

    @app.get("/api/export")
    def export_items() -> Response:
        def lines() -> Iterator[str]:
            with lock:
                snapshot = list(items.values())
            for item in snapshot:
                yield json.dumps(item) + "\n"

        return Response(stream_with_context(lines()), mimetype="application/x-ndjson")

    return app, init_app(app, **otas_options)
