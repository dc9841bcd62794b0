"""The Flask helper: one call wraps the app, and what only Flask knows reaches the event."""

from __future__ import annotations

import json

import pytest
from flask import Flask, Response, abort, jsonify, request, stream_with_context

from otas_capture import OtasMiddleware
from otas_capture.collector import DEMO_SDK_KEY
from otas_capture.flask import annotate, init_app

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
def otas(flask_app, collector_server):
    middleware = init_app(
        flask_app,
        sdk_key=DEMO_SDK_KEY,
        brain_url=collector_server.url,
        uasam_url=collector_server.url,
        flush_interval=0.01,
    )
    yield middleware
    middleware.close(timeout=2)


def test_init_app_wraps_wsgi_app_and_returns_the_middleware(flask_app, otas):
    assert isinstance(otas, OtasMiddleware)
    assert flask_app.wsgi_app is otas
    assert flask_app.extensions["otas_capture"] is otas


def test_init_app_twice_wraps_once(flask_app, otas):
    assert init_app(flask_app) is otas
    assert flask_app.wsgi_app is otas


def test_an_exception_flask_turns_into_a_500_still_reaches_the_error(
    flask_app, otas, collector, agent
):
    response = flask_app.test_client().get("/boom", headers=agent, buffered=True)
    assert response.status_code == 500
    settle(otas)
    event = collector.events()[0]
    assert event["status_code"] == 500
    assert event["error"] == "ZeroDivisionError: division by zero"


def test_the_matched_route_goes_into_metadata(flask_app, otas, collector, agent):
    client = flask_app.test_client()
    assert client.get("/items/1", headers=agent, buffered=True).status_code == 200
    assert client.get("/items/2", headers=agent, buffered=True).status_code == 404
    settle(otas, captured=2)
    found, missing = sorted(collector.events(), key=lambda e: e["path"])
    assert found["metadata"]["route"] == "/items/<int:item_id>"
    assert found["metadata"]["endpoint"] == "get_item"
    assert (missing["status_code"], missing["error"]) == (404, "404 NOT FOUND")


def test_annotate_inside_a_request_sets_custom_properties(flask_app, otas, collector, agent):
    response = flask_app.test_client().post(
        "/items", json={"name": "pen"}, headers=agent, buffered=True
    )
    assert response.status_code == 201
    settle(otas)
    assert collector.events()[0]["custom_properties"] == {"tenant": "acme"}


def test_annotate_outside_a_request_does_nothing():
    annotate(anything=1)


def test_a_streamed_flask_response_is_counted_in_full(flask_app, otas, collector, agent):
    response = flask_app.test_client().get("/export", headers=agent, buffered=True)
    assert response.data.count(b"\n") == 3
    settle(otas)
    event = collector.events()[0]
    assert event["response_size_bytes"] == len(response.data)
    assert event["response_body"] == response.data.decode()


def test_requests_without_a_token_are_untouched(flask_app, otas, collector):
    response = flask_app.test_client().get("/items/1")
    assert response.get_json() == {"id": 1}
    assert otas.flush(2) and collector.events() == []
