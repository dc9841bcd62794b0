"""ASGI apps for the ASGI tests, importable by the uvicorn, hypercorn and gunicorn
processes they start (``tests.asgi_apps:wrapped`` and the like).

``tools`` is a small FastAPI API with the kinds of requests the server tests make
(JSON, form, multipart, a streamed answer, a failure, a slow stream, a file); ``wrapped``
is it behind :class:`~otas_capture.asgi.OtasASGIMiddleware`, configured from the
``OTAS_*`` environment. ``spec_bare`` and ``spec_wrapped`` answer as the request's
``X-Differential-Spec`` header says (see tests/test_asgi_differential.py).
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Form, Request, UploadFile
from fastapi.responses import FileResponse, StreamingResponse

from otas_capture.asgi import OtasASGIMiddleware
from otas_capture.capture.registry import live_middlewares

SPEC_HEADER = b"x-differential-spec"


def make_tools() -> FastAPI:
    app = FastAPI()

    @app.post("/items/{item_id}")
    async def update_item(item_id: int, request: Request) -> dict[str, Any]:
        data = await request.json()
        return {"id": item_id, "api_key": "sk-returned", **data}

    @app.post("/login")
    async def login(username: str = Form(), password: str = Form()) -> dict[str, Any]:
        return {"user": username, "ok": bool(password)}

    @app.post("/upload")
    async def upload(file: UploadFile, note: str = Form()) -> dict[str, Any]:
        return {"name": file.filename, "bytes": len(await file.read()), "note": note}

    @app.get("/export")
    async def export() -> StreamingResponse:
        async def lines() -> AsyncIterator[bytes]:
            for number in range(3):
                yield json.dumps({"n": number}).encode() + b"\n"

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    @app.get("/slow")
    async def slow() -> StreamingResponse:
        async def ticks() -> AsyncIterator[bytes]:
            for number in range(100):
                yield f"tick {number}\n".encode()
                await asyncio.sleep(0.02)

        return StreamingResponse(ticks(), media_type="text/plain")

    @app.get("/file")
    async def file() -> FileResponse:
        return FileResponse(__file__, media_type="text/x-python")

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("the tool broke")

    @app.get("/__stats")
    async def stats() -> dict[str, Any]:
        # The process's capture counters, for tests that look from outside.
        return {"middlewares": [m.stats() for m in live_middlewares()]}

    return app


tools = make_tools()
wrapped = make_tools()
wrapped.add_middleware(OtasASGIMiddleware)


async def hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A plain ASGI app with lifespan support, and no framework."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    await send({"type": "http.response.start", "status": 405, "headers": []})
    await send({"type": "http.response.body", "body": b"hello"})


# Built at import, before the server installs its signal handlers.
hello_wrapped = OtasASGIMiddleware(hello)


async def with_trailers(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A streamed answer followed by trailers (HTTP/2 servers send them)."""
    if scope["type"] != "http":
        return await hello(scope, receive, send)
    headers = [(b"content-type", b"text/plain")]
    await send({"type": "http.response.start", "status": 200, "headers": headers, "trailers": True})
    await send({"type": "http.response.body", "body": b"part one, ", "more_body": True})
    await send({"type": "http.response.body", "body": b"part two"})
    await send({"type": "http.response.trailers", "headers": [(b"x-checksum", b"abc123")]})


with_trailers_wrapped = OtasASGIMiddleware(with_trailers)


# -- the differential apps ---------------------------------------------------------------


def decode_spec(text: bytes) -> dict[str, Any]:
    spec: dict[str, Any] = json.loads(base64.b64decode(text))
    spec["chunks"] = [base64.b64decode(chunk) for chunk in spec["chunks"]]
    return spec


async def spec_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answer as the spec in the request's header says: read the body (all, one message
    or none), then start, send the chunks (or raise before or midway), maybe trailers."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    headers = dict(scope["headers"])
    if scope["path"] == "/__stats":  # spec_wrapped's counters, for the tests
        body = json.dumps(spec_wrapped.stats()).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})
        return
    spec = decode_spec(headers[SPEC_HEADER])
    if spec["read"] != "none":
        while True:
            message = await receive()
            if spec["read"] == "one" or not message.get("more_body"):
                break
    if spec["style"] == "raise_before":
        raise ValueError("failed before the response")
    response_headers = [(k.encode(), v.encode()) for k, v in spec["headers"]]
    if spec["content_length"] and spec["style"] != "raise_midway":
        total = sum(len(chunk) for chunk in spec["chunks"])
        response_headers.append((b"content-length", str(total).encode()))
    trailers = spec["style"] == "trailers"
    start = {"type": "http.response.start", "status": spec["status"], "headers": response_headers}
    if trailers:
        start["trailers"] = True
    await send(start)
    chunks = spec["chunks"]
    for number, chunk in enumerate(chunks):
        if spec["style"] == "raise_midway" and number == len(chunks) // 2:
            raise RuntimeError("failed while streaming")
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    if spec["style"] == "raise_midway":
        raise RuntimeError("failed at the end")
    await send({"type": "http.response.body", "body": b"", "more_body": False})
    if trailers:
        await send({"type": "http.response.trailers", "headers": [(b"x-checksum", b"abc")]})


spec_bare = spec_app
spec_wrapped = OtasASGIMiddleware(spec_app)
