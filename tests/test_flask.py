"""The Flask helper: one call wraps the app, and what only Flask knows reaches the event."""

from __future__ import annotations

import json
import logging

import pytest
from flask import Flask, Response, abort, jsonify, request, stream_with_context

from otas_capture import ConfigError, OtasMiddleware
from otas_capture.collector import DEMO_SDK_KEY
from otas_capture.contract import LOGGER_NAME
from otas_capture.flask import OtasCapture, annotate, init_app

from .conftest import settle


@pytest.fixture
def flask_app(collector_server, collector):
    app = Flask("flask_test_app")

    @app.post("/items")
    def create_item():
        annotate(tenant="acme")
        return jsonify(id=1, name=request.get_json()["name"]), 201

    @app.get("/items/<int:item_id>")
    def get_item(item_id):
        if item_id != 1:
            abort(404)
        return jsonify(id=1)

    @app.get("/boom")
    def boom():
        return 1 / 0

    @app.get("/export")
    def export():
        def rows():
            for i in range(3):
                yield json.dumps({"row": i}) + "\n"

        return Response(stream_with_context(rows()), mimetype="application/x-ndjson")

    yield app


@pytest.fixture
def middleware(flask_app, collector_server):
    otas = init_app(
        flask_app,
        sdk_key=DEMO_SDK_KEY,
        brain_url=collector_server.url,
        uasam_url=collector_server.url,
    )
    yield otas
    otas.close(timeout=2)


def test_init_app_wraps_wsgi_app_and_returns_the_middleware(flask_app, middleware):
    assert isinstance(middleware, OtasMiddleware)
    assert flask_app.wsgi_app is middleware
    assert flask_app.extensions["otas_capture"] is middleware


def test_init_app_twice_wraps_once(flask_app, middleware):
    assert init_app(flask_app) is middleware
    assert flask_app.wsgi_app is middleware


def test_an_exception_flask_turns_into_a_500_still_reaches_the_error(
    flask_app, middleware, collector, agent
):
    response = flask_app.test_client().get("/boom", headers=agent, buffered=True)
    assert response.status_code == 500
    settle(middleware)
    event = collector.events()[0]
    assert event["status_code"] == 500
    assert event["error"] == "ZeroDivisionError: division by zero"


def test_the_matched_route_goes_into_metadata(flask_app, middleware, collector, agent):
    client = flask_app.test_client()
    assert client.get("/items/1", headers=agent, buffered=True).status_code == 200
    assert client.get("/items/2", headers=agent, buffered=True).status_code == 404
    settle(middleware, captured=2)
    found, missing = sorted(collector.events(), key=lambda e: e["path"])
    assert found["metadata"]["route"] == "/items/<int:item_id>"
    assert found["metadata"]["endpoint"] == "get_item"
    assert (missing["status_code"], missing["error"]) == (404, "404 NOT FOUND")


def test_annotate_inside_a_request_sets_custom_properties(flask_app, middleware, collector, agent):
    response = flask_app.test_client().post(
        "/items", json={"name": "pen"}, headers=agent, buffered=True
    )
    assert response.status_code == 201
    settle(middleware)
    assert collector.events()[0]["custom_properties"] == {"tenant": "acme"}


def test_a_streamed_flask_response_is_counted_in_full(flask_app, middleware, collector, agent):
    response = flask_app.test_client().get("/export", headers=agent, buffered=True)
    assert response.data.count(b"\n") == 3
    settle(middleware)
    event = collector.events()[0]
    assert event["response_size_bytes"] == len(response.data)
    assert event["response_body"] == response.data.decode()


def test_requests_without_a_token_are_untouched(flask_app, middleware, collector):
    response = flask_app.test_client().get("/items/1")
    assert response.get_json() == {"id": 1}
    assert middleware.flush(2) and collector.events() == []


# -- the extension, app.config, wrapping by hand ----------------------------------------


def make_app(name="factory_app"):
    app = Flask(name)

    @app.get("/items/<int:item_id>")
    def get_item(item_id):
        annotate(request, seen=item_id)
        return jsonify(id=item_id)

    @app.get("/boom")
    def boom():
        return 1 / 0

    @app.get("/health")
    def health():
        return "ok"

    return app


def collector_config(otas):
    return {"OTAS_" + name.upper(): value for name, value in otas.options.items()}


def test_the_extension_reads_otas_keys_from_app_config_in_a_factory(otas, monkeypatch):
    extension = OtasCapture()
    app = make_app()
    app.config.update(collector_config(otas), OTAS_SKIP_PATHS="/health")
    middleware = extension.init_app(app)
    assert app.wsgi_app is middleware and extension.middleware(app) is middleware
    client = app.test_client()
    client.get("/health", headers=otas.agent_headers(), buffered=True)
    client.get("/items/3", headers=otas.agent_headers(), buffered=True)
    (event,) = otas.events()
    assert event["metadata"]["route"] == "/items/<int:item_id>"
    assert event["custom_properties"] == {"seen": 3}
    assert extension.stats()["reasons"]["skipped"] == {"skip_path": 1}


def test_code_options_win_over_app_config_which_wins_over_the_environment(monkeypatch):
    monkeypatch.setenv("OTAS_SAMPLE_RATE", "0.1")
    monkeypatch.setenv("OTAS_QUEUE_SIZE", "11")
    app = make_app()
    app.config.update(OTAS_SAMPLE_RATE=0.2, OTAS_BATCH_SIZE=7, OTAS_QUEUE_SIZE=None)
    config = OtasCapture(app, sample_rate=0.3).middleware(app).config
    assert (config.sample_rate, config.batch_size, config.queue_size) == (0.3, 7, 11)


def test_a_bad_app_config_value_is_logged_naming_the_key_and_replaced(monkeypatch, caplog):
    monkeypatch.delenv("OTAS_SAMPLE_RATE", raising=False)
    app = make_app()
    app.config.update(OTAS_SAMPLE_RATE="abc", OTAS_QUEUE_SIZE=5)
    with caplog.at_level(logging.ERROR, logger=LOGGER_NAME):
        config = OtasCapture(app).middleware(app).config
    (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    message = record.getMessage()
    assert message.startswith('otas-capture: app.config["OTAS_SAMPLE_RATE"] must be a number')
    assert "'abc'" in message and "using the default (1.0)" in message
    assert (config.sample_rate, config.queue_size) == (1.0, 5)


def test_a_bad_app_config_url_ships_nothing_and_the_app_still_serves(caplog):
    app = make_app()
    app.config.update(OTAS_SDK_KEY=DEMO_SDK_KEY, OTAS_BRAIN_URL="htp://brain")
    with caplog.at_level(logging.ERROR, logger=LOGGER_NAME):
        middleware = init_app(app)
    assert not middleware.config.shipping
    assert 'app.config["OTAS_BRAIN_URL"]' in caplog.text and "OTAS_ENABLED" not in caplog.text
    assert app.test_client().get("/items/1").json == {"id": 1}


def test_a_bad_value_given_in_code_still_raises_config_error():
    app = make_app()
    app.config.update(OTAS_SAMPLE_RATE=0.5)
    with pytest.raises(ConfigError, match="sample_rate"):
        OtasCapture(app, sample_rate="abc")


def test_the_extension_given_the_app_instruments_it_at_once(otas):
    app = make_app()
    OtasCapture(app, **otas.options)
    app.test_client().get("/boom", headers=otas.agent_headers(), buffered=True)
    assert otas.events()[0]["error"] == "ZeroDivisionError: division by zero"


def test_wrapping_wsgi_app_by_hand_keeps_the_route_and_the_exception(otas):
    app = make_app()
    app.wsgi_app = OtasMiddleware(app.wsgi_app, **otas.options)
    client = app.test_client()
    client.get("/boom", headers=otas.agent_headers(), buffered=True)
    client.get("/items/5", headers=otas.agent_headers(), buffered=True)
    boom, item = sorted(otas.events(), key=lambda e: e["path"])
    assert boom["error"] == "ZeroDivisionError: division by zero"
    assert boom["metadata"]["route"] == "/boom"
    assert item["metadata"]["endpoint"] == "get_item"


def test_a_wrong_annotate_call_is_logged_and_the_request_still_succeeds(otas, caplog):
    app = make_app()
    OtasCapture(app, **otas.options)

    @app.get("/wrong")
    def wrong():
        annotate("acme", tenant="acme")
        return "fine"

    with caplog.at_level(logging.ERROR, logger=LOGGER_NAME):
        response = app.test_client().get("/wrong", headers=otas.agent_headers(), buffered=True)
    assert response.status_code == 200 and response.data == b"fine"
    assert "takes the request or nothing" in caplog.text
    assert otas.events()[0]["custom_properties"] == {}


def test_annotate_outside_a_request_is_a_no_op(caplog):
    with caplog.at_level(logging.ERROR, logger=LOGGER_NAME):
        annotate(anything=1)
    assert caplog.text == ""
