"""When an exchange is complete, and that each request is shipped once, however it is served.

Test clients are used the way users use them: without closing responses. Events ship over
real loopback HTTP to the test collector.
"""

from __future__ import annotations

import gc
import logging

import pytest
from flask import Flask, jsonify
from werkzeug.test import Client

from otas_capture import OtasMiddleware, annotate
from otas_capture.capture import registry
from otas_capture.capture.middleware import EXCHANGE_ENVIRON_KEY
from otas_capture.capture.tee import InputTee
from otas_capture.contract import LOGGER_NAME, SESSION_TOKEN_ENVIRON
from otas_capture.flask import init_app

from .conftest import settle


def flask_app() -> Flask:
    app = Flask("lifecycle")

    @app.get("/items")
    def items():
        return jsonify(items=[1, 2])

    @app.post("/upload")
    def upload():
        return jsonify(ok=True)  # never reads the body

    return app


def plain_app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


# -- test clients, used as users do --------------------------------------------------------


def test_a_flask_test_client_response_that_is_read_ships_without_being_closed(
    make_middleware, collector, agent
):
    app = flask_app()
    app.wsgi_app = make_middleware(app.wsgi_app)
    client = app.test_client()
    response = client.get("/items", headers=agent)
    assert response.get_json() == {"items": [1, 2]}
    # Read to the end: captured at once, with nothing closed.
    assert app.wsgi_app.stats()["captured"] == 1
    assert app.wsgi_app.flush(5)
    (event,) = collector.events()
    assert (event["path"], event["status_code"]) == ("/items", 200)
    assert event["response_body"] == response.get_data(as_text=True)


def test_a_flask_test_client_response_never_read_ships_when_dropped(
    make_middleware, collector, agent
):
    app = flask_app()
    middleware = make_middleware(app.wsgi_app)
    app.wsgi_app = middleware
    assert app.test_client().get("/items", headers=agent).status_code == 200
    gc.collect()
    stats = settle(middleware)
    assert stats["captured"] == 1 and stats["unclosed"] == 1
    (event,) = collector.events()
    assert (event["path"], event["status_code"]) == ("/items", 200)
    assert event["metadata"]["response_unfinished"] is True


def test_werkzeug_test_client_responses_ship_without_being_closed(
    make_middleware, collector, agent
):
    middleware = make_middleware(plain_app)
    client = Client(middleware)
    assert client.get("/read", headers=agent).get_data() == b"hello"
    client.get("/unread", headers=agent)
    gc.collect()
    stats = settle(middleware, captured=2)
    assert stats["sent"] == 2
    assert sorted(e["path"] for e in collector.events()) == ["/read", "/unread"]


def test_an_exhausted_then_closed_response_ships_once_and_closes_the_app_iterable_once(
    make_middleware, collector, agent
):
    closes = []

    class Body:
        def __iter__(self):
            yield b"a"
            yield b"b"

        def close(self):
            closes.append(1)

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Body()

    middleware = make_middleware(app)
    response = Client(middleware).get("/", headers=agent)
    assert response.get_data() == b"ab"
    response.close()
    response.close()
    settle(middleware)
    assert closes == [1]
    assert len(collector.events()) == 1
    assert middleware.stats()["captured"] == 1


def test_a_response_closed_before_the_end_ships_what_was_sent(make_middleware, collector, agent):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"first"
        yield b"second"

    middleware = make_middleware(app)
    iterable = middleware(
        {
            "REQUEST_METHOD": "GET",
            "PATH_INFO": "/s",
            SESSION_TOKEN_ENVIRON: agent_token(agent),
        },
        lambda status, headers, exc_info=None: None,
    )
    assert next(iter(iterable)) == b"first"
    iterable.close()
    settle(middleware)
    (event,) = collector.events()
    assert event["response_size_bytes"] == len(b"first")


def agent_token(agent: dict) -> str:
    return next(iter(agent.values()))


# -- wrapped twice -------------------------------------------------------------------------


def test_a_middleware_around_a_middleware_ships_each_request_once(
    make_middleware, collector, agent
):
    inner = make_middleware(plain_app)
    outer = make_middleware(inner)
    for _ in range(3):
        assert Client(outer).get("/twice", headers=agent).get_data() == b"hello"
    settle(outer, captured=3)
    assert inner.flush(5)
    assert len(collector.events()) == 3
    assert inner.stats()["captured"] == 0


def test_init_app_on_an_already_wrapped_flask_app_ships_each_request_once(
    collector_server, collector, agent, monkeypatch
):
    monkeypatch.setenv("OTAS_BRAIN_URL", collector_server.url)
    monkeypatch.setenv("OTAS_UASAM_URL", collector_server.url)
    from otas_capture.collector import DEMO_SDK_KEY

    monkeypatch.setenv("OTAS_SDK_KEY", DEMO_SDK_KEY)
    app = flask_app()
    first = OtasMiddleware(app.wsgi_app)
    app.wsgi_app = first
    second = init_app(app)
    try:
        app.test_client().get("/items", headers=agent).get_data()
        assert first.flush(5) and second.flush(5)
        assert len(collector.events()) == 1
        assert first.stats()["captured"] + second.stats()["captured"] == 1
    finally:
        first.close(2)
        second.close(2)


# -- after close() -------------------------------------------------------------------------


def test_requests_after_close_pass_through_untouched_and_uncounted(
    make_middleware, collector, agent
):
    seen = []

    def app(environ, start_response):
        seen.append(dict(environ))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [environ["wsgi.input"].read()]

    middleware = make_middleware(app)
    middleware.close(2)
    before = middleware.stats()
    response = Client(middleware).post("/late", data=b"body", headers=agent)
    assert response.get_data() == b"body"
    assert EXCHANGE_ENVIRON_KEY not in seen[0]
    assert not isinstance(seen[0]["wsgi.input"], InputTee)
    assert middleware.stats() == before
    assert collector.calls == []


# -- annotate never raises -----------------------------------------------------------------


def test_annotate_outside_a_captured_request_does_nothing_and_logs_nothing(caplog):
    caplog.set_level(logging.ERROR, logger=LOGGER_NAME)
    annotate(tenant="x")
    annotate(None, tenant="z")
    assert [r for r in caplog.records if r.name == LOGGER_NAME] == []


def test_annotate_with_something_else_than_an_environ_logs_one_error_and_returns(
    caplog, monkeypatch
):
    monkeypatch.setattr(registry, "_misuse_logged", {})  # earlier tests may have logged it
    caplog.set_level(logging.ERROR, logger=LOGGER_NAME)
    annotate("not an environ", tenant="x")
    annotate("not an environ", tenant="y")
    errors = [r for r in caplog.records if r.name == LOGGER_NAME]
    assert len(errors) == 1
    assert "annotate(tenant=" in errors[0].getMessage()


@pytest.mark.parametrize(
    "call",
    [
        lambda environ: annotate(environ, {"tenant": "x"}),
        lambda environ: annotate("not an environ", tenant="x"),
        lambda environ: annotate(42),
    ],
    ids=["positional_props", "string", "number"],
)
def test_annotate_called_wrongly_never_raises_into_the_app(call, make_middleware, collector, agent):
    def app(environ, start_response):
        call(environ)
        start_response("200 OK", [])
        return [b"fine"]

    middleware = make_middleware(app)
    assert Client(middleware).get("/", headers=agent).get_data() == b"fine"


def test_annotate_accepts_a_property_named_environ(make_middleware, collector, agent):
    def app(environ, start_response):
        annotate(environ, environ="production")
        start_response("200 OK", [])
        return [b""]

    middleware = make_middleware(app)
    Client(middleware).get("/", headers=agent).get_data()
    settle(middleware)
    assert collector.events()[0]["custom_properties"] == {"environ": "production"}


def test_annotations_with_cycles_and_shared_references_ship_and_leave_the_sender_idle(
    make_middleware, collector, agent
):
    shared = {"k": "v"}
    loop: dict = {"name": "loop"}
    loop["self"] = loop
    tree: list = [shared, shared]
    for _ in range(30):  # 2**30 paths through a few dozen objects
        tree = [tree, tree]

    def app(environ, start_response):
        # The tree comes last: it uses up the size bound, and what follows it is cut.
        annotate(environ, twice=[shared, shared], loop=loop, tree=tree)
        return plain_app(environ, start_response)

    middleware = make_middleware(app)
    Client(middleware).get("/annotated", headers=agent)
    assert middleware.flush(10) is True
    (event,) = collector.events()
    properties = event["custom_properties"]
    assert properties["loop"]["name"] == "loop"
    assert properties["twice"] == [{"k": "v"}, {"k": "v"}]
    assert event["metadata"]["custom_properties_truncated"] is True
    # A second request still ships: no sender thread is stuck on the first.
    Client(middleware).get("/after", headers=agent)
    assert middleware.flush(10) is True
    assert middleware.stats()["sent"] == 2
