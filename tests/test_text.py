"""Text as the app sees it: paths and header values across Latin-1, BMP and astral text.

The same requests go over real loopback HTTP to a plain WSGI app, a Flask app and a Django
project, each on waitress (which hands the app the path's bytes as they came, where
werkzeug's development server already replaces those that are not UTF-8). Each app answers
with the path and the ``X-Tenant`` header as it read them, and the event the collector
stored must say the same:

- a path is stored as the app received it, whatever the characters (Django hands the app
  decoded text, and re-escapes bytes that are not UTF-8; WSGI and Flask decode UTF-8 and
  replace what is not);
- a header value is UTF-8 text when its bytes are UTF-8, and otherwise the Latin-1 text
  PEP 3333 makes of them, which is what the app reads.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, jsonify, request

django = pytest.importorskip("django")

PROJECT = Path(__file__).resolve().parent.parent / "examples" / "django_project"
sys.path.insert(0, str(PROJECT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop.settings")
django.setup()

from django.core.handlers.wsgi import WSGIHandler  # noqa: E402
from django.http import JsonResponse  # noqa: E402
from django.test import override_settings  # noqa: E402
from django.urls import re_path  # noqa: E402

from otas_capture.flask import init_app  # noqa: E402

from .servers import WaitressServer  # noqa: E402


def _django_echo(request: Any) -> JsonResponse:
    return JsonResponse({"path": request.path, "tenant": request.headers.get("X-Tenant")})


# This module is the Django project's URLconf while these tests run.
urlpatterns = [re_path(r"^", _django_echo)]


def _wsgi_echo(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    # A plain WSGI app reads the path as PEP 3333 carries it: UTF-8 bytes as Latin-1.
    path = environ["PATH_INFO"].encode("latin-1").decode("utf-8", "replace")
    seen = {"path": path, "tenant": environ.get("HTTP_X_TENANT")}
    body = json.dumps(seen).encode()
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]


def _flask_app() -> Flask:
    app = Flask("text_test_app")

    @app.get("/<path:rest>")
    def echo(rest: str) -> Any:
        return jsonify(path=request.path, tenant=request.headers.get("X-Tenant"))

    return app


@pytest.fixture(params=["wsgi", "flask", "django", "django-wrapped-in-wsgi-py"])
def app_url(request, otas) -> Any:
    """The base URL of an echoing app of each kind, capturing to the ``otas`` collector."""
    if request.param == "wsgi":
        app: Any = otas.configure(_wsgi_echo)
    elif request.param == "flask":
        app = _flask_app()
        init_app(app)  # the otas fixture's settings apply to it
    elif request.param == "django":
        app = WSGIHandler()
    else:  # wsgi.py wraps Django in OtasMiddleware too: that one captures
        app = otas.configure(WSGIHandler())
    server = WaitressServer(app)
    try:
        with override_settings(ROOT_URLCONF=__name__):
            yield server.url
    finally:
        server.stop()


def send(url: str, target: str, headers: dict[str, bytes]) -> dict[str, Any]:
    """GET ``target`` with ``headers`` exactly as given in bytes; what the app says it saw."""
    host, port = url.rsplit("/", 1)[-1].split(":")
    lines = [f"GET {target} HTTP/1.1".encode(), f"Host: {host}:{port}".encode()]
    lines += [name.encode() + b": " + value for name, value in headers.items()]
    lines += [b"Connection: close", b"", b""]
    received = bytearray()
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"\r\n".join(lines))
        while len(received) < 1_000_000:
            data = sock.recv(65536)
            if not data:
                break
            received += data
    head, _, body = bytes(received).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    seen: dict[str, Any] = json.loads(body)
    return seen


def agent(otas: Any) -> dict[str, bytes]:
    return {name: value.encode() for name, value in otas.agent_headers().items()}


@pytest.mark.parametrize(
    "target, text",
    [
        pytest.param("/t/caf%C3%A9/", "/t/café/", id="latin-1-range"),
        pytest.param("/t/%C3%BF%C3%80/", "/t/ÿÀ/", id="latin-1-top"),
        pytest.param("/t/%E2%82%AC/", "/t/€/", id="bmp-euro"),
        pytest.param("/t/%E6%97%A5%E6%9C%AC/", "/t/日本/", id="bmp-cjk"),
        pytest.param("/t/%F0%9F%98%80/", "/t/😀/", id="astral"),
        pytest.param("/t/a%C3%A9%E2%82%AC%F0%9F%98%80z/", "/t/aé€😀z/", id="all-three"),
    ],
)
def test_a_path_is_stored_as_the_text_it_spells(app_url, otas, target, text):
    seen = send(app_url, target, agent(otas))
    assert seen["path"] == text
    (event,) = otas.events(count=1)
    assert event["path"] == text


def test_a_path_that_is_not_utf8_is_stored_as_the_app_received_it(app_url, otas):
    seen = send(app_url, "/t/caf%E9/", agent(otas))
    # Django re-escapes the byte (/t/caf%E9/); WSGI and Flask replace it (U+FFFD).
    assert seen["path"] in ("/t/caf%E9/", "/t/caf\ufffd/")
    (event,) = otas.events(count=1)
    assert event["path"] == seen["path"]


@pytest.mark.parametrize(
    "raw, text",
    [
        pytest.param(b"acm\xe9", "acmé", id="latin-1-not-utf8"),
        pytest.param(b"\xff\xfe\xa0x", "ÿþ\xa0x", id="latin-1-high"),
        pytest.param("café".encode(), "café", id="latin-1-range-as-utf8"),
        pytest.param("€ 日本".encode(), "€ 日本", id="bmp-as-utf8"),
        pytest.param("😀".encode(), "😀", id="astral-as-utf8"),
    ],
)
def test_a_header_is_utf8_text_when_it_is_utf8_and_latin1_otherwise(app_url, otas, raw, text):
    seen = send(app_url, "/t/h/", {**agent(otas), "X-Tenant": raw})
    assert seen["tenant"] == raw.decode("latin-1")  # what PEP 3333 hands every app
    (event,) = otas.events(count=1)
    assert json.loads(event["request_headers"])["X-Tenant"] == text
