"""The pytest plugin: the README's examples pass as a user would run them, and it is inert
until a test asks for the ``otas`` fixture."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent
DJANGO_PROJECT = ROOT / "examples" / "django_project"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """For subprocesses: the package under test, whether or not it is installed in this
    interpreter, and no OTAS settings of the developer's shell leaking in."""
    for name in [n for n in os.environ if n.startswith("OTAS_")]:
        monkeypatch.delenv(name)
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    monkeypatch.setenv("PYTHONPATH", path)


FLASK_EXAMPLE = """
from flask import Flask, jsonify

from otas_capture.flask import OtasCapture

otas_capture = OtasCapture()


def create_app():
    app = Flask(__name__)
    otas_capture.init_app(app)

    @app.get("/items")
    def items():
        return jsonify(items=[], password="hunter2")

    return app


def test_listing_items_is_captured(otas):
    client = create_app().test_client()
    client.get("/items", headers=otas.agent_headers())
    event = otas.events()[0]
    assert event["status_code"] == 200
    assert event["metadata"]["route"] == "/items"
    assert "hunter2" not in event["response_body"]


app = create_app()  # built at import, before any fixture ran


def test_an_app_built_at_import_is_pointed_at_the_collector(otas):
    client = otas.configure(app).test_client()
    response = client.get("/items", headers=otas.agent_headers())
    assert response.get_json()["items"] == []
    assert [e["path"] for e in otas.events()] == ["/items"]


def test_each_test_starts_with_no_events(otas):
    create_app().test_client().get("/items")  # no agent token: not captured
    assert otas.events() == []
"""


def test_the_flask_example_passes(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_flask_example=FLASK_EXAMPLE)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)


def test_the_django_example_projects_tests_pass(pytester: pytest.Pytester, clean_env) -> None:
    pytest.importorskip("django")
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--rootdir", str(DJANGO_PROJECT), str(DJANGO_PROJECT / "tests")
    )
    result.assert_outcomes(passed=4)


def test_the_plugin_is_inert_unless_the_fixture_is_used(
    pytester: pytest.Pytester, clean_env
) -> None:
    pytester.makepyfile(
        """
        import os, sys, threading

        def test_nothing_started():
            assert "otas_capture.pytest_plugin" in sys.modules  # registered...
            assert "otas_capture.collector" not in sys.modules  # ...but nothing started
            assert not [n for n in os.environ if n.startswith("OTAS_")]
            assert not [t for t in threading.enumerate() if t.name.startswith("otas")]
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_the_fixture_hands_out_valid_tokens_and_restores_the_environment(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        """
        import os

        import jwt

        from otas_capture.contract import REQUIRED_TOKEN_CLAIMS, SESSION_TOKEN_HEADER

        def test_tokens(otas):
            (name, token), = otas.agent_headers().items()
            assert name == SESSION_TOKEN_HEADER
            assert otas.agent_headers() == {name: token}  # one session per test
            claims = jwt.decode(token, options={"verify_signature": False})
            assert set(REQUIRED_TOKEN_CLAIMS) <= set(claims)
            assert os.environ["OTAS_BRAIN_URL"] == otas.url
        """
    )
    before = os.environ.get("OTAS_BRAIN_URL")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert os.environ.get("OTAS_BRAIN_URL") == before


def test_middlewares_built_during_a_test_are_closed_after_it(
    pytester: pytest.Pytester, clean_env: None
) -> None:
    pytester.makepyfile(
        """
        import threading

        from flask import Flask

        from otas_capture.flask import OtasCapture

        built = []

        def sender_threads():  # the process's one watcher of dropped responses aside
            return [
                t for t in threading.enumerate()
                if t.name.startswith("otas-capture-") and t.name != "otas-capture-orphans"
            ]

        def make_app():
            app = Flask(__name__)
            built.append(OtasCapture(app).middleware(app))
            app.get("/")(lambda: "ok")
            return app

        def test_first(otas):
            make_app().test_client().get("/", headers=otas.agent_headers(), buffered=True)
            assert len(otas.events()) == 1 and sender_threads()

        def test_second(otas):
            assert built[0].stats()["captured"] == 1
            make_app().test_client().get("/", headers=otas.agent_headers(), buffered=True)
            assert len(otas.events()) == 1

        def test_after():
            assert sender_threads() == []
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")  # no other threads
    result.assert_outcomes(passed=3)


def test_configure_points_a_plain_wsgi_app_at_the_collector(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        from werkzeug.test import Client

        from otas_capture import OtasMiddleware

        def hello(environ, start_response):
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"hello"]

        production = OtasMiddleware(hello, sdk_key="otas_live_elsewhere")  # built at import

        def test_plain_app(otas):
            for app in (otas.configure(hello), otas.configure(production)):
                response = Client(app).get("/", headers=otas.agent_headers())
                assert response.get_data() == b"hello"
                response.close()
            assert [e["response_body"] for e in otas.events(count=2)] == ["hello", "hello"]
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


CRASHING_FLASK_APP = """
import pytest
from flask import Flask

from otas_capture.flask import OtasCapture


def create_app():
    app = Flask(__name__)
    OtasCapture(app)

    @app.get("/todos/<int:todo_id>")
    def todo(todo_id):
        if todo_id == 999:
            raise LookupError("no todo 999")
        return {"id": todo_id, "title": "write the tests"}

    return app
"""


def test_a_request_whose_view_raised_is_in_the_events(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        CRASHING_FLASK_APP
        + """
def test_the_crash_shows_up(otas):
    client = create_app().test_client()
    client.get("/todos/999", headers=otas.agent_headers())
    (event,) = otas.events()
    assert event["status_code"] == 500
    assert event["error"] == "LookupError: no todo 999"


def test_the_crash_shows_up_while_the_test_holds_the_response(otas):
    response = create_app().test_client().get("/todos/999", headers=otas.agent_headers())
    assert response.status_code == 500
    assert [e["error"] for e in otas.events(count=1)] == ["LookupError: no todo 999"]
"""
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_a_response_the_test_never_read_is_in_the_events(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        CRASHING_FLASK_APP
        + """
def test_unread(otas):
    response = create_app().test_client().get("/todos/1", headers=otas.agent_headers())
    assert response.status_code == 200
    (event,) = otas.events()
    assert (event["path"], event["status_code"]) == ("/todos/1", 200)
    assert event["metadata"]["response_unfinished"] is True
    assert response.get_json()["id"] == 1  # the test can still read it afterwards
"""
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_events_says_so_when_no_middleware_ships_to_the_collector(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        """
        import pytest
        from flask import Flask

        from otas_capture.flask import OtasCapture
        from otas_capture.pytest_plugin import NoMiddlewareError

        app = Flask(__name__)
        OtasCapture(app, sdk_key="otas_live_production", brain_url="https://brain.example")

        def test_an_app_built_before_the_test_and_not_configured(otas):
            with pytest.raises(NoMiddlewareError, match="otas.configure"):
                otas.events()
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_with_django_a_streamed_response_left_unread_is_in_the_events(
    pytester: pytest.Pytester, clean_env: None
) -> None:
    pytest.importorskip("django")
    pytester.makeconftest(
        f"""
        import os, sys

        import django

        sys.path.insert(0, {str(DJANGO_PROJECT)!r})
        os.environ["DJANGO_SETTINGS_MODULE"] = "shop.settings"
        django.setup()
        """
    )
    pytester.makepyfile(
        """
        import pytest
        from django.test import Client

        def test_unread_stream(otas):
            response = Client().get("/api/export/", headers=otas.agent_headers())
            assert response.status_code == 200
            assert [e["path"] for e in otas.events()] == ["/api/export/"]

        def test_a_crash(otas):
            with pytest.raises(ZeroDivisionError):
                Client().get("/api/boom/", headers=otas.agent_headers())
            assert [e["status_code"] for e in otas.events()] == [500]
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
