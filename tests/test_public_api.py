"""The package's public face: ``otas_capture.flush/close/stats`` act on every middleware,
``annotate(**props)`` finds the current request itself, the deprecated settings say so,
and every public module says what it exports."""

from __future__ import annotations

import ast
import gc
import importlib
import subprocess
import sys
from pathlib import Path

import pytest
from flask import Flask
from werkzeug.test import Client

import otas_capture
from otas_capture import OtasMiddleware, annotate
from otas_capture.collector import DEMO_SDK_KEY
from otas_capture.flask import OtasCapture

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "otas_capture"


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


def flask_app(**options) -> Flask:
    app = Flask(__name__)
    OtasCapture(app, **options)

    @app.get("/items")
    def items():
        annotate(tenant="acme")  # no request handed over: it finds the current one
        return {"items": []}

    return app


# -- flush and stats of every middleware, whatever the framework -------------------------


def test_flush_and_stats_act_on_every_live_middleware(make_middleware, collector, agent):
    gc.collect()  # only middlewares still referenced stay in the count meanwhile
    before = otas_capture.stats()
    plain = make_middleware(hello)
    app = flask_app(
        sdk_key=DEMO_SDK_KEY, brain_url=plain.config.brain_url, uasam_url=plain.config.uasam_url
    )
    Client(plain).get("/plain", headers=agent).close()
    Client(app).get("/items", headers=agent).close()
    Client(app).get("/items").close()  # no token: skipped
    assert otas_capture.flush(timeout=5)
    after = otas_capture.stats()
    assert after["captured"] - before["captured"] == 2
    assert after["sent"] - before["sent"] == 2
    skipped = after["reasons"]["skipped"].get("no_token", 0)
    assert skipped - before["reasons"]["skipped"].get("no_token", 0) == 1
    assert sorted(e["path"] for e in collector.events()) == ["/items", "/plain"]
    app.extensions["otas_capture"].close(2)


def test_stats_with_no_middleware_at_all_counts_zero():
    code = "import otas_capture; s = otas_capture.stats(); print(s['captured'], s['sent'])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["0", "0"]


CLOSES_EVERY_MIDDLEWARE = """
import sys

from flask import Flask
from werkzeug.test import Client

import otas_capture
from otas_capture import OtasMiddleware
from otas_capture.flask import OtasCapture

url, token, key = sys.argv[1:]
settings = dict(sdk_key=key, brain_url=url, uasam_url=url)
plain = OtasMiddleware(lambda environ, start: (start("200 OK", []), [b"ok"])[1], **settings)
app = Flask(__name__)
app.get("/flask")(lambda: "ok")
OtasCapture(app, **settings)
headers = {"X-OTAS-AGENT-SESSION-TOKEN": token}
Client(plain).get("/plain", headers=headers).close()
Client(app).get("/flask", headers=headers).close()
otas_capture.close(5.0)
closed = not plain.capturing and not app.wsgi_app.capturing
Client(plain).get("/after", headers=headers).close()  # passes through, uncounted
stats = otas_capture.stats()
print(closed, stats["captured"], stats["sent"])
"""


def test_close_delivers_then_stops_every_middleware_of_the_process(collector_server, collector):
    token = collector.issue_token()
    out = subprocess.run(
        [sys.executable, "-c", CLOSES_EVERY_MIDDLEWARE, collector_server.url, token, DEMO_SDK_KEY],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "2", "2"]
    assert sorted(e["path"] for e in collector.events()) == ["/flask", "/plain"]


# -- annotate(**props) ---------------------------------------------------------------------


def test_annotate_finds_the_request_of_a_plain_wsgi_app(make_middleware, collector, agent):
    def app(environ, start_response):
        annotate(tenant="acme", plan="pro")
        start_response("200 OK", [])
        return [b"ok"]

    middleware = make_middleware(app)
    Client(middleware).get("/", headers=agent).close()
    assert middleware.flush(5)
    assert collector.events()[0]["custom_properties"] == {"tenant": "acme", "plan": "pro"}


def test_annotate_finds_the_request_while_a_streamed_response_is_sent(
    make_middleware, collector, agent
):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        sent = 0
        for chunk in (b"one ", b"two"):
            sent += 1
            yield chunk
        annotate(chunks=sent)  # known only once the stream is done

    middleware = make_middleware(app)
    assert Client(middleware).get("/", headers=agent).get_data() == b"one two"
    assert middleware.flush(5)
    assert collector.events()[0]["custom_properties"] == {"chunks": 2}


def test_annotate_finds_the_request_of_a_flask_view(make_middleware, collector, agent):
    url = make_middleware(hello).config.brain_url
    app = flask_app(sdk_key=DEMO_SDK_KEY, brain_url=url, uasam_url=url)
    Client(app).get("/items", headers=agent).close()
    assert otas_capture.flush(5)
    assert collector.events()[0]["custom_properties"] == {"tenant": "acme"}
    app.extensions["otas_capture"].close(2)


def test_annotate_after_the_request_touches_no_other_request(make_middleware, collector, agent):
    middleware = make_middleware(hello)
    Client(middleware).get("/", headers=agent).close()
    annotate(leaked=True)  # outside any request: nothing to add to
    Client(middleware).get("/", headers=agent).close()
    assert middleware.flush(5)
    assert [e.get("custom_properties") for e in collector.events()] == [{}, {}]


# -- deprecated settings -------------------------------------------------------------------


@pytest.mark.parametrize("name, value", [("batch_size", 50), ("flush_interval", 0.5)])
def test_a_deprecated_option_warns_and_changes_nothing(name, value):
    with pytest.warns(DeprecationWarning, match=f"{name} .*deprecated and has no effect"):
        OtasMiddleware(hello, **{name: value})


def test_a_deprecated_variable_warns(monkeypatch):
    monkeypatch.setenv("OTAS_FLUSH_INTERVAL", "0.5")
    with pytest.warns(DeprecationWarning, match="OTAS_FLUSH_INTERVAL"):
        OtasMiddleware(hello)


# -- structure -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "module",
    ["otas_capture", "otas_capture.flask", "otas_capture.django", "otas_capture.pytest_plugin"],
)
def test_every_public_module_lists_what_it_exports(module):
    if module.endswith("django"):
        pytest.importorskip("django")
    imported = importlib.import_module(module)
    assert imported.__all__, module
    assert [name for name in imported.__all__ if not hasattr(imported, name)] == []


def test_the_package_exports_flush_close_stats_and_annotate():
    assert {"flush", "close", "stats", "annotate", "OtasMiddleware"} <= set(otas_capture.__all__)


INTEGRATIONS = {"otas_capture.flask", "otas_capture.django", "otas_capture.pytest_plugin"}


def imports_of(path: Path) -> set[str]:
    """Every module a file imports, at any level, TYPE_CHECKING blocks included."""
    found = set()
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            stem = ".".join(filter(None, [base, node.module or ""]))
            found.add(stem)
            found.update(f"{stem}.{alias.name}" for alias in node.names)
    return found


@pytest.mark.parametrize("layer", ["capture", "event", "delivery", "otas"])
def test_the_core_never_imports_an_integration(layer):
    for path in sorted((PACKAGE / layer).glob("*.py")):
        assert imports_of(path) & INTEGRATIONS == set(), path
