"""What OTAS receives when an agent calls the example API, checked with the ``otas`` fixture."""

from __future__ import annotations

import json

from django.test import Client


def test_listing_items_is_captured(otas):
    response = Client().get("/api/items/", headers=otas.agent_headers())
    assert response.status_code == 200
    event = otas.events()[0]
    assert event["status_code"] == 200
    assert event["metadata"]["route"] == "api/items/"


def test_a_crash_is_reported_with_its_exception(otas):
    client = Client(raise_request_exception=False)
    assert client.get("/api/boom/", headers=otas.agent_headers()).status_code == 500
    assert otas.events()[0]["error"] == "ZeroDivisionError: division by zero"


def test_secrets_in_a_request_body_are_masked(otas):
    body = {"name": "ink", "price": 2, "password": "hunter2"}
    response = Client().post("/api/items/", body, "application/json", headers=otas.agent_headers())
    assert response.status_code == 201
    shipped = json.loads(otas.events()[0]["request_body"])
    assert shipped["password"] == "[REDACTED]" and shipped["name"] == "ink"


def test_requests_without_an_agent_token_are_not_captured(otas):
    assert Client().get("/api/items/").status_code == 200
    assert otas.events() == []
