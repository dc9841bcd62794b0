"""OtasASGIMiddleware in process: every message passes unchanged, and the event is right.

The apps are called as an ASGI server calls them (a scope, ``receive`` and ``send``),
or through httpx's ``ASGITransport`` and Starlette's ``TestClient``; events ship over
real HTTP to the test collector. Real servers in real processes are in
test_asgi_servers.py and test_asgi_differential.py.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from collections.abc import Iterator
from typing import Any, Callable

import httpx
import pytest
from fastapi import BackgroundTasks, FastAPI, Request
from fastapi.responses import FileResponse, StreamingResponse
from starlette.testclient import TestClient

from otas_capture import OtasMiddleware
from otas_capture.asgi import OtasASGIMiddleware
from otas_capture.capture.annotate import CURRENT_EXCHANGE
from otas_capture.collector import DEMO_SDK_KEY
from otas_capture.contract import SESSION_TOKEN_HEADER

from .conftest import settle

TOKEN = SESSION_TOKEN_HEADER.lower().encode("latin-1")


@pytest.fixture
def asgi_settings(collector_server, collector) -> dict[str, Any]:
    """Settings that ship to the test collector quickly."""
    return dict(
        sdk_key=DEMO_SDK_KEY,
        brain_url=collector_server.url,
        uasam_url=collector_server.url,
        retry_backoff=0.01,
        timeout=2.0,
    )


@pytest.fixture
def make_asgi(asgi_settings) -> Iterator[Callable[..., OtasASGIMiddleware]]:
    made: list[OtasASGIMiddleware] = []

    def make(app: Any, **options: Any) -> OtasASGIMiddleware:
        middleware = OtasASGIMiddleware(app, **{**asgi_settings, **options})
        made.append(middleware)
        return middleware

    yield make
    for middleware in made:
        middleware.close(timeout=2.0)


def http_scope(token: str | None, path: str = "/p", **extra: Any) -> dict[str, Any]:
    headers = [(b"host", b"t"), (b"content-type", b"application/json")]
    if token is not None:
        headers.append((TOKEN, token.encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"a=1",
        "headers": headers,
        "extensions": {"http.response.pathsend": {}, "http.response.trailers": {}},
    }
    scope.update(extra)
    return scope


class Server:
    """Plays the server's side of one ASGI call: hands out ``incoming``, keeps what is sent."""

    def __init__(self, incoming: list[dict[str, Any]]) -> None:
        self.incoming = list(incoming)
        self.received: list[dict[str, Any]] = []
        self.sent: list[dict[str, Any]] = []

    async def receive(self) -> dict[str, Any]:
        message = self.incoming.pop(0) if self.incoming else {"type": "http.disconnect"}
        self.received.append(message)
        return message

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    def run(self, app: Any, scope: dict[str, Any]) -> None:
        asyncio.run(app(scope, self.receive, self.send))


def one_event(middleware: OtasASGIMiddleware, collector: Any) -> dict[str, Any]:
    settle(middleware)  # type: ignore[arg-type]
    events = collector.events()
    assert len(events) == 1, events
    return events[0]


def body_chunks(*chunks: bytes) -> list[dict[str, Any]]:
    return [
        {"type": "http.request", "body": chunk, "more_body": n < len(chunks) - 1}
        for n, chunk in enumerate(chunks)
    ]


async def echo(scope: Any, receive: Any, send: Any) -> None:
    """Reads the whole body, answers it back in two chunks with trailers."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    headers = [(b"content-type", b"application/json"), (b"x-a", b"1")]
    await send({"type": "http.response.start", "status": 201, "headers": headers, "trailers": True})
    await send({"type": "http.response.body", "body": body[:3], "more_body": True})
    await send({"type": "http.response.body", "body": body[3:]})
    await send({"type": "http.response.trailers", "headers": [(b"x-t", b"2")]})


# -- the app and the server see exactly the same messages ---------------------------------


def test_every_message_passes_unchanged_in_order_and_as_the_same_object(make_asgi, token):
    incoming = body_chunks(b'{"a": ', b"1}")
    bare, wrapped = Server(incoming), Server(incoming)
    bare.run(echo, http_scope(token))
    wrapped.run(make_asgi(echo), http_scope(token))
    assert wrapped.sent == bare.sent
    assert wrapped.received == bare.received
    assert all(a is b for a, b in zip(wrapped.received, incoming))


def test_the_body_is_never_read_ahead_of_the_app(make_asgi, collector, token):
    async def reads_one_chunk(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    server = Server(body_chunks(b"[1,", b"2,", b"3]"))
    middleware = make_asgi(reads_one_chunk)
    server.run(middleware, http_scope(token))
    assert len(server.received) == 1 and len(server.incoming) == 2
    event = one_event(middleware, collector)
    assert (event["request_body"], event["request_size_bytes"]) == ("[1,", 3)


def test_the_event_has_what_was_received_and_sent(make_asgi, collector, token):
    middleware = make_asgi(echo)
    Server(body_chunks(b'{"password": ', b'"hunter2"}')).run(middleware, http_scope(token))
    event = one_event(middleware, collector)
    assert (event["path"], event["method"], event["status_code"]) == ("/p", "POST", 201)
    assert json.loads(event["query_params"]) == {"a": ["1"]}
    assert json.loads(event["request_headers"])["Content-Type"] == "application/json"
    assert json.loads(event["response_headers"]) == {
        "content-type": "application/json",
        "x-a": "1",
    }
    assert event["request_size_bytes"] == event["response_size_bytes"] == 23
    assert "hunter2" not in json.dumps(event)
    assert event["request_body"] == event["response_body"]
    assert json.loads(event["request_body"]) == {"password": "[REDACTED]"}
    assert event["error"] == ""
    assert 0 < event["metadata"]["time_to_first_byte_ms"] <= event["latency_ms"]
    assert token not in json.dumps(event)


def test_sizes_are_exact_while_bodies_are_cut_and_binary_is_not_kept(make_asgi, collector, token):
    async def app(scope: Any, receive: Any, send: Any) -> None:
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(3):
            await send({"type": "http.response.body", "body": b"b" * 3000, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    middleware = make_asgi(app, max_body_bytes=100)
    Server(body_chunks(b"a" * 4000, b"a" * 1000)).run(middleware, http_scope(token))
    binary = http_scope(token, headers=[(TOKEN, token.encode()), (b"content-type", b"image/png")])
    Server(body_chunks(b"\x89PNG" * 10)).run(middleware, binary)
    settle(middleware, captured=2)  # type: ignore[arg-type]
    image, text = sorted(collector.events(), key=lambda event: event["request_size_bytes"])
    assert (text["request_size_bytes"], text["response_size_bytes"]) == (5000, 9000)
    assert (text["request_body"], text["response_body"]) == ("a" * 100, "b" * 100)
    assert text["metadata"]["request_body_truncated"] is True
    assert (image["request_size_bytes"], image["request_body"]) == (40, "")


def test_an_exception_propagates_as_the_same_object_and_becomes_the_error(
    make_asgi, collector, token
):
    raised = KeyError("missing")

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise raised

    middleware = make_asgi(app)
    with pytest.raises(KeyError) as caught:
        Server([]).run(middleware, http_scope(token))
    assert caught.value is raised
    event = one_event(middleware, collector)
    assert (event["status_code"], event["error"]) == (500, "KeyError: 'missing'")


def test_a_client_that_leaves_early_is_noted(make_asgi, collector, token):
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"part", "more_body": True})
        assert (await receive())["type"] == "http.disconnect"

    middleware = make_asgi(app)
    Server([]).run(middleware, http_scope(token))
    metadata = one_event(middleware, collector)["metadata"]
    assert metadata["client_disconnected"] is True
    assert metadata["response_complete"] is False


def test_a_file_sent_by_the_server_passes_through_and_is_counted(make_asgi, collector, token):
    async def app(scope: Any, receive: Any, send: Any) -> None:
        headers = [(b"content-type", b"text/plain"), (b"content-length", b"1234")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.pathsend", "path": "/nonexistent/file.txt"})

    bare, wrapped = Server([]), Server([])
    bare.run(app, http_scope(token, method="GET"))
    middleware = make_asgi(app)
    wrapped.run(middleware, http_scope(token, method="GET"))
    assert wrapped.sent == bare.sent
    event = one_event(middleware, collector)
    assert (event["response_size_bytes"], event["response_body"]) == (1234, "")
    assert event["metadata"]["response_body_omitted"] == "file sent by the server"


def test_requests_without_a_token_get_the_servers_own_callables(make_asgi, collector):
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append((receive, send))

    middleware = make_asgi(app)
    server = Server([])
    server.run(middleware, http_scope(None))
    assert seen == [(server.receive, server.send)]
    assert middleware.stats()["skipped"] == 1
    assert middleware.stats()["reasons"]["skipped"] == {"no_token": 1}


@pytest.mark.parametrize("kind", ["websocket", "lifespan"])
def test_websocket_and_lifespan_messages_pass_through_untouched(make_asgi, token, kind):
    async def app(scope: Any, receive: Any, send: Any) -> None:
        message = await receive()
        await send({"type": f"{kind}.answer", "got": message})

    incoming = [{"type": f"{kind}.connect"}]
    bare, wrapped = Server(incoming), Server(incoming)
    scope = {"type": kind, "headers": [(TOKEN, token.encode())], "path": "/ws"}
    bare.run(app, dict(scope))
    middleware = make_asgi(app)
    wrapped.run(middleware, dict(scope))
    assert wrapped.sent == bare.sent and wrapped.received == bare.received
    assert middleware.stats()["captured"] == 0


def test_skip_paths_and_sampling_apply_as_on_wsgi(make_asgi, collector, token):
    middleware = make_asgi(echo, skip_paths="/health")
    Server(body_chunks(b"{}")).run(middleware, http_scope(token, path="/health/live"))
    sampled = make_asgi(echo, sample_rate=0.0)
    Server(body_chunks(b"{}")).run(sampled, http_scope(token))
    assert middleware.stats()["reasons"]["skipped"] == {"skip_path": 1}
    assert sampled.stats()["reasons"]["skipped"] == {"sampled_out": 1}


def test_a_middleware_wrapped_twice_captures_each_request_once(make_asgi, collector, token):
    outer = make_asgi(make_asgi(echo))
    Server(body_chunks(b"{}")).run(outer, http_scope(token))
    settle(outer)  # type: ignore[arg-type]
    assert len(collector.events()) == 1


def test_the_path_is_the_whole_decoded_path_as_utf8(make_asgi, collector, token):
    middleware = make_asgi(echo)
    scope = http_scope(token, path="/api/caf\u00e9/items", root_path="/api")
    Server(body_chunks(b"{}")).run(middleware, scope)
    assert one_event(middleware, collector)["path"] == "/api/caf\u00e9/items"


def test_options_are_the_wsgi_middlewares_keyword_for_keyword():
    asgi = inspect.signature(OtasASGIMiddleware.__init__).parameters
    wsgi = inspect.signature(OtasMiddleware.__init__).parameters
    assert [(p.name, p.kind, p.default) for p in asgi.values()] == [
        (p.name, p.kind, p.default) for p in wsgi.values()
    ]


def test_without_an_sdk_key_everything_passes_through(monkeypatch, token, caplog):
    monkeypatch.delenv("OTAS_SDK_KEY", raising=False)
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append((receive, send))

    with caplog.at_level(logging.WARNING):
        middleware = OtasASGIMiddleware(app)
    server = Server([])
    server.run(middleware, http_scope(token))
    assert seen == [(server.receive, server.send)]
    assert "OTAS_SDK_KEY is not set" in caplog.text


# -- FastAPI and Starlette ----------------------------------------------------------------


def fastapi_app(notes: list[Any]) -> FastAPI:
    app = FastAPI()

    @app.get("/items/{item_id}")
    async def read_item(item_id: int, background: BackgroundTasks) -> dict[str, int]:
        notes.append(CURRENT_EXCHANGE.get())
        background.add_task(lambda: notes.append(CURRENT_EXCHANGE.get()))
        return {"id": item_id}

    @app.get("/sync")
    def sync_endpoint() -> str:  # run in a worker thread, with the request's context
        notes.append(CURRENT_EXCHANGE.get())
        return "ok"

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def lines() -> Any:
            for n in range(3):
                yield f"{n}\n".encode()

        return StreamingResponse(lines(), media_type="text/plain")

    @app.get("/file")
    async def file() -> FileResponse:
        return FileResponse(__file__, media_type="text/x-python")

    @app.post("/json")
    async def post_json(request: Request) -> Any:
        return await request.json()

    return app


def installed(app: Any) -> OtasASGIMiddleware:
    """The middleware add_middleware() built in the app's middleware stack."""
    layer = app.middleware_stack
    for _ in range(10):
        if isinstance(layer, OtasASGIMiddleware):
            return layer
        layer = layer.app
    raise AssertionError("no OtasASGIMiddleware in the stack")


def run_client(app: Any, calls: list[tuple[str, str]], headers: dict[str, str]) -> list[Any]:
    async def main() -> list[Any]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return [await client.request(m, url, headers=headers) for m, url in calls]

    return asyncio.run(main())


def test_fastapi_events_carry_the_route_template_and_the_endpoint(asgi_settings, collector, agent):
    notes: list[Any] = []
    app = fastapi_app(notes)
    app.add_middleware(OtasASGIMiddleware, **asgi_settings)
    bare = run_client(fastapi_app([]), [("GET", "/items/7")], agent)
    got = run_client(app, [("GET", "/items/7")], agent)
    assert got[0].content == bare[0].content
    events = collector.wait_for_events(1, 5)
    assert events[0]["metadata"]["route"] == "/items/{item_id}"
    assert events[0]["metadata"]["endpoint"] == "read_item"
    # annotate()'s exchange is there in the endpoint and in its background task.
    assert notes[0] is not None and notes[1] is notes[0]
    run_client(app, [("GET", "/sync")], agent)
    assert notes[2] is not None and notes[2] is not notes[0]
    installed(app).close(2.0)


def test_streamed_and_file_responses_are_sent_whole_and_counted(make_asgi, collector, agent):
    app = fastapi_app([])
    wrapped = make_asgi(app)
    calls = [("GET", "/stream"), ("GET", "/file")]
    bare, got = run_client(app, calls, agent), run_client(wrapped, calls, agent)
    assert [r.content for r in got] == [r.content for r in bare]
    settle(wrapped, captured=2)  # type: ignore[arg-type]
    stream, file = sorted(collector.events(), key=lambda event: event["response_size_bytes"])
    assert (stream["response_body"], stream["response_size_bytes"]) == ("0\n1\n2\n", 6)
    with open(__file__, "rb") as source:
        assert file["response_size_bytes"] == len(source.read())


def test_annotate_works_in_async_endpoints_and_their_tasks(make_asgi, collector, agent):
    from otas_capture import annotate

    app = FastAPI()

    @app.get("/a")
    async def endpoint(background: BackgroundTasks) -> str:
        annotate(tenant="acme")
        background.add_task(annotate, plan="pro")
        return "ok"

    run_client(make_asgi(app), [("GET", "/a")], agent)
    event = collector.wait_for_events(1, 5)[0]
    assert event["custom_properties"] == {"tenant": "acme", "plan": "pro"}


def test_starlette_test_client_runs_lifespan_and_requests_through_it(make_asgi, collector, agent):
    app = fastapi_app([])
    wrapped = make_asgi(app)
    for _ in range(2):  # a lifespan shutdown flushes, and capture goes on afterwards
        with TestClient(wrapped) as client:
            assert client.post("/json", json={"k": 1}, headers=agent).json() == {"k": 1}
    assert len(collector.wait_for_events(2, 5)) == 2


def test_the_lifespan_shutdown_delivers_every_event_before_the_server_hears_of_it(
    make_asgi, collector, agent
):
    collector.set_capacity(workers=1, service_time=0.1)  # a slow Brain: 0.1 s an event
    wrapped = make_asgi(fastapi_app([]))
    with TestClient(wrapped) as client:
        for number in range(4):
            client.post("/json", json={"n": number}, headers=agent)
    # The with block ends with lifespan.shutdown.complete reaching the server.
    assert len(collector.events()) == 4


# -- the otas pytest fixture ---------------------------------------------------------------


def test_the_otas_fixture_sees_a_fastapi_app_through_the_test_client(otas):
    app = fastapi_app([])
    app.add_middleware(OtasASGIMiddleware)  # settings from the environment the fixture set
    with TestClient(app) as client:
        client.get("/items/3", headers=otas.agent_headers())
    event = otas.events()[0]
    assert (event["status_code"], event["metadata"]["route"]) == (200, "/items/{item_id}")


def test_the_otas_fixture_sees_an_app_called_through_httpx(otas):
    app = fastapi_app([])
    app.add_middleware(OtasASGIMiddleware)
    run_client(app, [("POST", "/items/3")], otas.agent_headers())
    assert [e["status_code"] for e in otas.events()] == [405]


wrapped_at_import = OtasASGIMiddleware(fastapi_app([]))  # built before any fixture ran


def test_the_otas_fixture_points_a_middleware_built_at_import_at_the_collector(otas):
    app = otas.configure(wrapped_at_import)
    run_client(app, [("GET", "/items/4")], otas.agent_headers())
    assert [e["path"] for e in otas.events()] == ["/items/4"]


tools_at_import = fastapi_app([])
tools_at_import.add_middleware(OtasASGIMiddleware)


def test_the_otas_fixture_points_a_fastapi_app_that_already_served_at_the_collector(otas):
    run_client(tools_at_import, [("GET", "/items/5")], {})  # its stack is built now
    app = otas.configure(tools_at_import)
    run_client(app, [("GET", "/items/6")], otas.agent_headers())
    assert [e["path"] for e in otas.events()] == ["/items/6"]


def test_the_readme_fixture_example_for_fastapi(otas):
    client = TestClient(otas.configure(tools_at_import))
    client.get("/items/3", headers=otas.agent_headers())
    assert otas.events()[0]["metadata"]["route"] == "/items/{item_id}"


def test_wrapped_from_outside_the_500_page_of_an_unhandled_exception_is_in_the_event(
    make_asgi, collector, agent
):
    app = FastAPI()

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("the tool broke")

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=make_asgi(app), raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.get("/boom", headers=agent)

    assert asyncio.run(call()).status_code == 500
    event = collector.wait_for_events(1, 5)[0]
    assert (event["status_code"], event["error"]) == (500, "RuntimeError: the tool broke")
    assert event["response_body"] == "Internal Server Error"
