"""The README's demo and example app keep working: they are what a new user runs first."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from otas_capture.collector import DEMO_SDK_KEY
from otas_capture.contract import SESSION_TOKEN_HEADER

from .conftest import settle

ROOT = Path(__file__).resolve().parent.parent


def test_the_demo_ships_every_agent_call_to_the_local_collector():
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTAS_")}
    # The package under test, whether or not it is installed in this interpreter.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "demo.py"), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK: 7 agent calls, 7 events" in result.stdout
    # The table says what was masked on the login: the password and the token it returned.
    assert "form password" in result.stdout
    assert "response body access_token" in result.stdout
    assert "correct horse battery staple" not in result.stdout + result.stderr


@pytest.fixture
def example_app(monkeypatch, collector_server):
    """examples/flask_app.py, configured only by the environment as the README shows."""
    for name in list(os.environ):
        if name.startswith("OTAS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("OTAS_SDK_KEY", DEMO_SDK_KEY)
    monkeypatch.setenv("OTAS_BRAIN_URL", collector_server.url)
    monkeypatch.setenv("OTAS_UASAM_URL", collector_server.url)
    spec = importlib.util.spec_from_file_location(
        "otas_example_flask_app", ROOT / "examples" / "flask_app.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    module.otas.close(timeout=2.0)


@pytest.mark.parametrize(
    "tenant", ["Caf\u00e9 Z\u00fcrich", "\u6771\u4eac-\u682a\u5f0f\u4f1a\u793e", "acme"]
)
def test_the_example_annotates_a_non_ascii_tenant_intact(
    example_app, serve_app, collector, token, tenant
):
    url = serve_app(example_app.app)
    # Sent as the UTF-8 bytes an agent's HTTP client puts on the wire.
    headers = {SESSION_TOKEN_HEADER: token, "X-Tenant": tenant.encode("utf-8")}
    response = requests.get(url + "/api/items?limit=5", headers=headers)
    assert response.status_code == 200
    assert settle(example_app.otas)["sent"] == 1
    [event] = collector.events()
    assert event["custom_properties"]["tenant"] == tenant


def test_the_example_keeps_a_latin1_tenant_as_the_text_it_is(
    example_app, serve_app, collector, token
):
    url = serve_app(example_app.app)
    headers = {SESSION_TOKEN_HEADER: token, "X-Tenant": "Caf\u00e9".encode("latin-1")}
    assert requests.get(url + "/api/items?limit=5", headers=headers).status_code == 200
    assert settle(example_app.otas)["sent"] == 1
    [event] = collector.events()
    assert event["custom_properties"]["tenant"] == "Caf\u00e9"
