"""The demo shop on FastAPI, for ``otas-capture demo --app fastapi``: the ASGI middleware
under uvicorn, in a thread of the demo's process.

The endpoints and answers of :mod:`otas_capture.cli.demo_app` (the WSGI shop), written
with FastAPI and wrapped by :class:`~otas_capture.asgi.OtasASGIMiddleware`. FastAPI,
uvicorn and python-multipart come with the ``fastapi`` extra; they are imported only
when the demo is asked for this app.
"""

# No ``from __future__ import annotations``: FastAPI reads the endpoints' annotations
# at run time, and the framework's types are imported inside create_app().
import json
import secrets
import socket
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

from ..asgi import OtasASGIMiddleware
from ..capture.annotate import annotate
from .demo_app import MAX_LIMIT, USERS

MISSING = "the FastAPI demo needs FastAPI and uvicorn: pip install 'otas-capture[fastapi]'"


def create_app(**otas_options: Any) -> OtasASGIMiddleware:
    """A fresh FastAPI shop wrapped by ``OtasASGIMiddleware(app, **otas_options)``."""
    from fastapi import FastAPI, Form, HTTPException, Request
    from fastapi.responses import JSONResponse, StreamingResponse

    app = FastAPI(title="otas-capture demo shop")
    items: dict[int, dict[str, Any]] = {}

    @app.middleware("http")
    async def tag_tenant(request: Request, call_next: Any) -> Any:
        annotate(tenant=request.headers.get("x-tenant", "public"))
        return await call_next(request)

    @app.post("/api/items", status_code=201)
    async def create_item(request: Request) -> JSONResponse:
        try:
            data = await request.json()
        except ValueError:
            data = None
        if not isinstance(data, dict) or not isinstance(data.get("name"), str):
            raise HTTPException(400, "expected a JSON object with a 'name'")
        price = data.get("price", 0)
        if isinstance(price, bool) or not isinstance(price, (int, float)) or price < 0:
            raise HTTPException(400, "'price' must be a number of at least 0")
        item = {"id": len(items) + 1, "name": data["name"], "price": price}
        items[item["id"]] = item
        annotate(item_id=item["id"])
        return JSONResponse(item, 201, {"Location": f"/api/items/{item['id']}"})

    @app.get("/api/items")
    async def list_items(limit: int = 20) -> dict[str, Any]:
        if not 1 <= limit <= MAX_LIMIT:
            raise HTTPException(400, f"'limit' must be a whole number from 1 to {MAX_LIMIT}")
        return {"items": list(items.values())[:limit], "total": len(items)}

    @app.get("/api/items/{item_id}")
    async def get_item(item_id: int) -> dict[str, Any]:
        if item_id not in items:
            raise HTTPException(404, f"no item {item_id}")
        return items[item_id]

    @app.post("/api/login")
    async def login(username: str = Form(""), password: str = Form("")) -> dict[str, Any]:
        expected = USERS.get(username)
        if expected is None or not secrets.compare_digest(password, expected):
            raise HTTPException(401, "wrong username or password")
        # The token is in the response, but OTAS only ever sees it masked.
        token = secrets.token_urlsafe(24)
        return {"access_token": token, "token_type": "bearer", "expires_in": 3600}

    @app.get("/api/export")
    async def export_items() -> StreamingResponse:
        snapshot = list(items.values())

        async def lines() -> AsyncIterator[str]:
            for item in snapshot:
                yield json.dumps(item) + "\n"

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    return OtasASGIMiddleware(app, **otas_options)


class UvicornThread:
    """uvicorn serving ``app`` on a free loopback port, in a background thread."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        config = uvicorn.Config(app, log_level="warning", lifespan="on")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )

    def start(self) -> "UvicornThread":
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        if not self._server.started:
            raise OSError("uvicorn did not start")
        return self

    def stop(self) -> None:
        """Stop serving; the lifespan shutdown closes the middleware (flushing first)."""
        self._server.should_exit = True
        self._thread.join(10)
        self._socket.close()
