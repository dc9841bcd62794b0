"""Masking and storable events end to end: a real app, loopback HTTP, the collector."""

from __future__ import annotations

import json
import uuid

import requests
from werkzeug.wrappers import Request, Response

from otas_capture import annotate
from otas_capture.collector import DEMO_SDK_KEY
from otas_capture.contract import PATH_LIMIT, SESSION_TOKEN_HEADER

from .conftest import settle

SECRETS = ("signup-pass-1", "refresh-tok-2", "client-sec-3", "bearer-abc-4", "url-tok-5")


@Request.application
def leaky_app(request: Request) -> Response:
    """An app that echoes what it received, as debugging endpoints and error pages do."""
    data = request.get_json(silent=True) or {}
    echo = {
        "headers": dict(request.headers),
        "you_sent": data,
        "config": {"OTAS_SDK_KEY": DEMO_SDK_KEY},
        "usage": {"max_tokens": 64, "prompt_tokens": 10, "token_type": "bearer"},
    }
    annotate(request.environ, debug=f"auth header was {request.headers.get('Authorization')}")
    response = Response(json.dumps(echo), mimetype="application/json", status=400)
    response.headers["Location"] = "https://app.example/cb#access_token=url-tok-5&state=s1"
    return response


def test_an_echoing_app_ships_no_secret_it_was_sent(serve_app, make_middleware, collector, agent):
    middleware = make_middleware(leaky_app)
    url = serve_app(middleware)
    body = {
        "user": {"email": "a@example.com", "newPassword": "signup-pass-1"},
        "oauth": {"refreshToken": "refresh-tok-2", "clientSecret": "client-sec-3"},
        "max_tokens": 64,
    }
    requests.post(
        url + "/signup",
        json=body,
        headers={**agent, "Authorization": "Bearer bearer-abc-4"},
        timeout=5,
    )
    settle(middleware)
    [event] = collector.events()
    stored = json.dumps(event)
    for secret in (*SECRETS, agent[SESSION_TOKEN_HEADER], DEMO_SDK_KEY):
        assert secret not in stored, secret
    # What is not a credential is kept.
    assert json.loads(event["request_body"])["max_tokens"] == 64
    usage = json.loads(event["response_body"])["usage"]
    assert usage == {"max_tokens": 64, "prompt_tokens": 10, "token_type": "bearer"}
    assert "state=s1" in json.loads(event["response_headers"])["Location"]
    assert uuid.UUID(event["metadata"]["event_id"]).version == 4


def test_a_path_longer_than_brain_can_index_is_stored_cut(
    serve_app, make_middleware, collector, agent
):
    middleware = make_middleware(Response("ok"))
    url = serve_app(middleware)
    path = "/items/" + "x" * 3004
    requests.get(url + path, headers=agent, timeout=5)
    stats = settle(middleware)
    assert stats["sent"] == 1
    [event] = collector.events()
    assert event["path"] == path[:PATH_LIMIT]
    assert event["metadata"]["path_bytes"] == len(path)


ATTACK_SECRETS = (
    "quoted-in-error-1",
    "annotated-key-2",
    "dsn-password-3",
    "multipart-pass-4",
    "form-json-pass-5",
    "env-var-secret-6",
    "cdata-secret-7",
)


@Request.application
def attacked_app(request: Request) -> Response:
    """Secrets where a name-only rule does not look: URLs, name/value pairs, an exception."""
    annotate(request.environ, tenant={"apiKey": "annotated-key-2"}, plan="pro")
    if request.path == "/raise":
        password = request.form["password"]
        raise ValueError(f"password {password!r} is too short")  # quotes the input
    echo = {
        "database_url": "postgres://app:dsn-password-3@db.internal:5432/app",
        "env": [{"name": "STRIPE_SECRET_KEY", "value": "env-var-secret-6"}],
        "xml": "<auth><password><![CDATA[cdata-secret-7]]></password></auth>",
        "form": request.form.to_dict(),
    }
    return Response(json.dumps(echo), mimetype="application/json")


def test_secrets_an_attacker_would_try_never_reach_the_collector(
    serve_app, make_middleware, collector, agent
):
    middleware = make_middleware(attacked_app)
    url = serve_app(middleware)
    multipart = (
        "--B\r\nContent-Disposition: form-data; name=password\r\n\r\nmultipart-pass-4\r\n"
        "--B\r\nContent-Disposition: form-data; name=payload\r\n\r\n"
        + json.dumps({"newPassword": "form-json-pass-5"})
        + "\r\n--B--\r\n"
    )
    requests.post(
        url + "/echo",
        data=multipart,
        headers={**agent, "Content-Type": "multipart/form-data; boundary=B"},
        timeout=5,
    )
    requests.post(
        url + "/raise",
        data={"password": "quoted-in-error-1", "user": "bob"},
        headers={**agent, "X-Upstream": "https://u:dsn-password-3@proxy.internal/"},
        timeout=5,
    )
    settle(middleware, captured=2)
    events = {event["path"]: event for event in collector.events()}
    stored = json.dumps(events)
    for secret in ATTACK_SECRETS:
        assert secret not in stored, secret
    # The exception is still reported, the annotation still useful.
    assert "ValueError" in events["/raise"]["error"]
    assert "too short" in events["/raise"]["error"]
    assert events["/echo"]["custom_properties"]["plan"] == "pro"
    assert json.loads(events["/raise"]["post_data"])["user"] == ["bob"]
