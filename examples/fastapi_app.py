"""A small FastAPI tools API instrumented with otas-capture, as an agent backend would be.

The same endpoints as ``examples/flask_app.py``, for the ASGI side: one line,
``app.add_middleware(OtasASGIMiddleware)``, and every request an AI agent makes (those
carrying ``X-OTAS-AGENT-SESSION-TOKEN``) is reported to OTAS, without blocking the event
loop. Nothing is configured in code; the settings come from the environment::

    export OTAS_SDK_KEY=otas_demo_localcollectorkey   # see: otas-capture collector
    export OTAS_BRAIN_URL=http://127.0.0.1:8002 OTAS_UASAM_URL=http://127.0.0.1:8002
    uvicorn examples.fastapi_app:app --port 5000       # or: python examples/fastapi_app.py

Endpoints: ``POST /api/items`` (JSON), ``GET /api/items?limit=``, ``GET
/api/items/{item_id}``, ``POST /api/login`` (form; needs ``python-multipart``, as every
FastAPI form does), ``GET /api/boom`` (always fails) and ``GET /api/export`` (streamed
NDJSON). Events carry the route template (``/api/items/{item_id}``) and the endpoint
name in ``metadata``.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Depends, FastAPI, Form, HTTPException, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from otas_capture import annotate
from otas_capture.asgi import OtasASGIMiddleware

# Demo credentials; a real app would check a password hash in its user store.
USERS = {"agent": "correct horse battery staple"}
MAX_LIMIT = 100


class NewItem(BaseModel):
    name: str = Field(min_length=1)
    price: float = Field(default=0, ge=0)
    tags: list[str] = []


class ItemStore:
    """Items in memory. One event loop runs every request, so no lock is needed."""

    def __init__(self) -> None:
        self._items: dict[int, dict[str, Any]] = {}
        self._next_id = 1

    def add(self, item: NewItem) -> dict[str, Any]:
        stored = {"id": self._next_id, **item.model_dump()}
        self._items[self._next_id] = stored
        self._next_id += 1
        return dict(stored)

    def get(self, item_id: int) -> dict[str, Any] | None:
        item = self._items.get(item_id)
        return dict(item) if item is not None else None

    def snapshot(self, limit: int | None = None) -> list[dict[str, Any]]:
        return [dict(item) for item in list(self._items.values())[:limit]]

    def __len__(self) -> int:
        return len(self._items)


async def tag_tenant(request: Request) -> None:
    # Lets OTAS group an agent's calls by customer; a no-op for requests not captured.
    # ASGI hands header values over as bytes: decode the UTF-8 an agent's client sends.
    raw = request.scope["headers"]
    tenant = next((value for name, value in raw if name == b"x-tenant"), b"public")
    annotate(tenant=tenant.decode("utf-8", "replace"))


# The tenant is tagged as a dependency of every route: it runs inside the middleware,
# where annotate() finds the request being captured.
app = FastAPI(title="Agent tools", dependencies=[Depends(tag_tenant)])
store = ItemStore()
# OTAS_SDK_KEY, OTAS_BRAIN_URL, ... are read when the app serves its first request (or
# its lifespan starts). Without OTAS_SDK_KEY the app still runs; the middleware logs a
# warning and passes every request through.
app.add_middleware(OtasASGIMiddleware)


@app.post("/api/items", status_code=201)
async def create_item(item: NewItem) -> dict[str, Any]:
    created = store.add(item)
    annotate(item_id=created["id"])
    return created


@app.get("/api/items")
async def list_items(limit: int = 20) -> dict[str, Any]:
    if not 1 <= limit <= MAX_LIMIT:
        raise HTTPException(400, f"'limit' must be a whole number from 1 to {MAX_LIMIT}")
    items = store.snapshot(limit)
    annotate(item_count=len(items))
    return {"items": items, "total": len(store)}


@app.get("/api/items/{item_id}")
async def get_item(item_id: int) -> dict[str, Any]:
    item = store.get(item_id)
    if item is None:
        raise HTTPException(404, f"no item {item_id}")
    return item


@app.post("/api/login")
async def login(username: str = Form(""), password: str = Form("")) -> dict[str, Any]:
    expected = USERS.get(username)
    # compare_digest: the time taken must not tell how much of the password was right.
    if expected is None or not secrets.compare_digest(password, expected):
        raise HTTPException(401, "wrong username or password")
    # The token appears in the response, but OTAS only ever sees it masked.
    return {"access_token": secrets.token_urlsafe(24), "token_type": "bearer", "expires_in": 3600}


@app.get("/api/boom")
async def boom() -> dict[str, Any]:
    # Deliberately broken, to show how a crash is reported: the server answers 500 and
    # the event's error field names the exception.
    average_price = sum(item["price"] for item in store.snapshot()) / 0
    return {"average_price": average_price}


@app.get("/api/export")
async def export_items() -> StreamingResponse:
    async def lines() -> AsyncIterator[str]:
        for item in store.snapshot():
            yield json.dumps(item) + "\n"

    # The event is completed after the last line is sent.
    return StreamingResponse(lines(), media_type="application/x-ndjson")


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("PORT", "5000")))
