"""The Django integration, through Django's own test Client and the example project.

The app under test is ``examples/django_project`` (its settings put
``otas_capture.django.OtasCaptureMiddleware`` first in MIDDLEWARE). Events cross real
loopback HTTP to the collector the ``otas`` fixture of the package's pytest plugin starts.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlencode

import pytest

django = pytest.importorskip("django")

PROJECT = Path(__file__).resolve().parent.parent / "examples" / "django_project"
sys.path.insert(0, str(PROJECT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop.settings")
django.setup()

from django.core.handlers.wsgi import WSGIHandler  # noqa: E402
from django.http import HttpResponse  # noqa: E402
from django.test import Client, override_settings  # noqa: E402
from werkzeug.test import Client as WerkzeugClient  # noqa: E402

import otas_capture  # noqa: E402
from otas_capture import OtasMiddleware  # noqa: E402
from otas_capture import django as otas_django  # noqa: E402
from otas_capture.contract import LOGGER_NAME  # noqa: E402

ALICE = {"Authorization": "Bearer demo-token-alice"}


@pytest.fixture
def client():
    return Client(raise_request_exception=False)


def only_event(otas):
    events = otas.events()
    assert len(events) == 1, events
    return events[0]


def test_a_test_client_request_is_captured_with_route_and_view(client, otas):
    response = client.get("/api/items/1/", headers=otas.agent_headers())
    assert response.status_code == 200
    event = only_event(otas)
    assert (event["path"], event["method"], event["status_code"]) == ("/api/items/1/", "GET", 200)
    assert event["metadata"]["route"] == "api/items/<int:pk>/"
    assert event["metadata"]["endpoint"] == "item-detail"
    assert event["metadata"]["view"] == "shop.views.item_detail"
    assert event["response_body"] == response.content.decode()
    assert event["response_size_bytes"] == len(response.content)


def test_an_unmatched_url_is_a_404_without_a_route(client, otas):
    assert client.get("/nowhere/", headers=otas.agent_headers()).status_code == 404
    event = only_event(otas)
    assert (event["status_code"], event["error"]) == (404, "404 Not Found")
    assert "route" not in event["metadata"]


def test_a_class_based_view_is_named_by_its_class(client, otas):
    assert client.get("/contact/", headers=otas.agent_headers()).status_code == 200
    assert only_event(otas)["metadata"]["view"] == "shop.views.ContactView"


def test_a_view_exception_gives_its_type_message_and_traceback(client, otas):
    response = client.get("/api/boom/", headers=otas.agent_headers())
    assert response.status_code == 500
    event = only_event(otas)
    assert event["error"] == "ZeroDivisionError: division by zero"
    assert event["metadata"]["exception_type"] == "builtins.ZeroDivisionError"
    assert event["metadata"]["traceback"][-1].endswith("in boom")
    assert "views.py:" in event["metadata"]["traceback"][-1]


def test_the_debug_page_is_counted_but_not_shipped(client, otas):
    with override_settings(DEBUG=True):
        response = client.get("/api/boom/", headers=otas.agent_headers())
    assert response.status_code == 500 and len(response.content) > 10_000
    event = only_event(otas)
    assert event["response_body"] == ""
    assert event["response_size_bytes"] == len(response.content)
    assert event["metadata"]["response_body_omitted"] == otas_django.DEBUG_PAGE_NOTE
    assert event["error"] == "ZeroDivisionError: division by zero"


def test_the_production_500_page_is_shipped(client, otas):
    response = client.get("/api/boom/", headers=otas.agent_headers())
    assert only_event(otas)["response_body"] == response.content.decode()


def test_a_csrf_failure_says_why(otas):
    client = Client(enforce_csrf_checks=True)
    form = {"email": "a@example.com", "message": "hi"}
    response = client.post("/contact/", form, headers=otas.agent_headers())
    assert response.status_code == 403
    event = only_event(otas)
    assert event["error"] == "CSRF verification failed: CSRF cookie not set."
    assert event["metadata"]["csrf_failure_reason"] == "CSRF cookie not set."


def test_the_csrf_failure_view_records_the_reason_when_the_logger_is_silenced(otas):
    client = Client(enforce_csrf_checks=True)
    csrf_logger = logging.getLogger("django.security.csrf")
    csrf_logger.disabled = True
    try:
        with override_settings(CSRF_FAILURE_VIEW="otas_capture.django.csrf_failure"):
            response = client.post("/contact/", {"email": "a@b.c"}, headers=otas.agent_headers())
    finally:
        csrf_logger.disabled = False
    assert response.status_code == 403
    assert only_event(otas)["metadata"]["csrf_failure_reason"] == "CSRF cookie not set."


def test_a_form_post_with_its_csrf_token_is_captured_as_form_data(otas):
    client = Client(enforce_csrf_checks=True)
    client.get("/contact/")
    token = client.cookies["csrftoken"].value
    form = urlencode({"email": "a@example.com", "message": "hi", "csrfmiddlewaretoken": token})
    response = client.post(
        "/contact/", form, "application/x-www-form-urlencoded", headers=otas.agent_headers()
    )
    assert response.status_code == 200
    event = only_event(otas)
    assert event["status_code"] == 200 and event["error"] == ""
    assert json.loads(event["post_data"])["email"] == ["a@example.com"]
    assert event["request_size_bytes"] == len(form)


def test_the_authenticated_user_id_is_recorded_when_the_view_looked_it_up(client, otas):
    headers = {**otas.agent_headers(), **ALICE}
    assert client.get("/api/me/", headers=headers).json()["id"] == 42
    assert only_event(otas)["metadata"]["user_id"] == "42"


def test_the_user_is_not_looked_up_for_a_view_that_did_not(client, otas):
    client.get("/api/items/1/", headers={**otas.agent_headers(), **ALICE})
    assert "user_id" not in only_event(otas)["metadata"]


def test_the_user_id_is_left_out_unless_asked_for(client, otas):
    with override_settings(OTAS={"capture_user": False}):
        client.get("/api/me/", headers={**otas.agent_headers(), **ALICE})
    assert "user_id" not in only_event(otas)["metadata"]


def test_annotate_adds_custom_properties(client, otas):
    headers = {**otas.agent_headers(), "X-Tenant": "acme"}
    response = client.post("/api/items/", {"name": "ink"}, "application/json", headers=headers)
    assert response.status_code == 201
    props = only_event(otas)["custom_properties"]
    assert props == {"tenant": "acme", "item_id": response.json()["id"]}


def test_annotate_with_something_else_than_the_request_logs_and_does_not_raise(caplog):
    with caplog.at_level(logging.ERROR, logger=LOGGER_NAME):
        otas_django.annotate("acme", tenant="acme")
    assert "takes the request first" in caplog.text


def test_annotate_finds_the_current_request_without_being_handed_it(otas):
    from django.test import RequestFactory

    def view(request):
        otas_capture.annotate(tenant="acme")
        otas_django.annotate(plan="pro")  # the Django form, without the request
        return HttpResponse("ok")

    middleware = otas_django.OtasCaptureMiddleware(view)
    request = RequestFactory().get("/x/", headers=otas.agent_headers())
    middleware(request).close()
    assert only_event(otas)["custom_properties"] == {"tenant": "acme", "plan": "pro"}


def test_the_package_wide_flush_and_stats_include_django(client, otas):
    before = otas_capture.stats()
    client.get("/api/items/1/", headers=otas.agent_headers())
    assert otas_capture.flush(timeout=5)
    after = otas_capture.stats()
    assert after["captured"] - before["captured"] == 1
    assert after["sent"] - before["sent"] == 1


def test_the_view_sees_the_request_meta_it_would_see_without_capture(otas):
    from django.test import RequestFactory

    seen = {}

    def view(request):
        seen.update(request.META)
        return HttpResponse("ok")

    middleware = otas_django.OtasCaptureMiddleware(view)
    for headers in ({}, otas.agent_headers()):
        request = RequestFactory().post("/x/", b"{}", "application/json", headers=headers)
        before = dict(request.META)
        middleware(request).close()
        added = set(seen) - set(before)  # only the key annotate() reads, when captured
        assert added == ({otas_django.EXCHANGE_ENVIRON_KEY} if headers else set())
        assert all(seen[key] is before[key] for key in before)
    assert len(otas.events()) == 1


def test_an_upload_passes_through_and_is_counted_exactly(client, otas):
    blob = bytes(range(256)) * 200
    from django.core.files.uploadedfile import SimpleUploadedFile

    upload = SimpleUploadedFile("blob.bin", blob, "application/octet-stream")
    response = client.post("/api/upload/", {"file": upload}, headers=otas.agent_headers())
    assert response.json() == {"files": {"file": len(blob)}, "bytes": len(blob)}
    event = only_event(otas)
    assert event["request_size_bytes"] > len(blob)  # the whole multipart body
    assert event["request_body"] == ""  # multipart is counted, not kept
    assert event["metadata"]["request_body_omitted"]


def test_a_streaming_response_passes_through_unchanged(client, otas):
    plain = b"".join(client.get("/api/export/").streaming_content)
    response = client.get("/api/export/", headers=otas.agent_headers())
    body = b"".join(response.streaming_content)
    assert body == plain
    event = only_event(otas)
    assert event["response_size_bytes"] == len(body)
    assert event["response_body"] == body.decode()


def test_a_file_response_passes_through_unchanged(client, otas):
    plain = b"".join(client.get("/api/download/").streaming_content)
    response = client.get("/api/download/", headers=otas.agent_headers())
    body = b"".join(response.streaming_content)
    assert body == plain and len(body) > 90_000
    assert response["Content-Length"] == str(len(body))
    assert only_event(otas)["response_size_bytes"] == len(body)


def test_requests_without_a_token_are_not_captured(client, otas):
    assert client.get("/api/items/1/").status_code == 200
    assert otas.events() == []
    assert otas.stats()["skipped"] >= 1


def test_skip_paths_from_the_otas_setting_apply(client, otas):
    assert client.get("/health/", headers=otas.agent_headers()).status_code == 200
    assert otas.events() == []


def test_stats_and_flush_act_on_the_middleware_the_settings_configure(client, otas):
    client.get("/api/items/1/", headers=otas.agent_headers())
    client.get("/api/items/1/")
    assert otas_django.flush(timeout=5)
    counts = otas_django.stats()
    assert counts["sent"] >= 1 and counts["reasons"]["skipped"]["no_token"] >= 1


def test_every_client_shares_one_middleware(otas):
    first, second = Client(), Client()
    first.get("/health/")
    second.get("/health/")
    cores = {id(m.core) for m in (_loaded(first), _loaded(second))}
    assert len(cores) == 1


def _loaded(client):
    handler = client.handler
    chain = handler._middleware_chain
    while not isinstance(chain, otas_django.OtasCaptureMiddleware):
        chain = chain.__closure__[0].cell_contents  # convert_exception_to_response's inner
    return chain


def test_wrapping_wsgi_py_as_well_ships_one_event_with_what_django_knows(otas):
    app = OtasMiddleware(WSGIHandler(), **otas.options)
    try:
        response = WerkzeugClient(app).get("/api/boom/", headers=otas.agent_headers())
        assert response.status_code == 500
        response.close()
        event = only_event(otas)
        assert event["metadata"]["route"] == "api/boom/"
        assert event["error"] == "ZeroDivisionError: division by zero"
    finally:
        app.close(timeout=2)


# -- settings ---------------------------------------------------------------------------


def test_the_otas_dict_wins_over_otas_names_which_win_over_the_environment(monkeypatch):
    monkeypatch.setenv("OTAS_SAMPLE_RATE", "0.1")
    monkeypatch.setenv("OTAS_MAX_BODY_BYTES", "10")
    with override_settings(OTAS={"SAMPLE_RATE": 0.5}, OTAS_SAMPLE_RATE=0.7, OTAS_QUEUE_SIZE=7):
        middleware = otas_django.OtasCaptureMiddleware(lambda request: None)
    config = middleware.core.config
    assert (config.sample_rate, config.queue_size, config.max_body_bytes) == (0.5, 7, 10)
    assert middleware.capture_user is False


def errors(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize(
    "settings, where",
    [
        ({"OTAS": {"SAMPLE_RATE": "abc"}}, 'settings.OTAS["SAMPLE_RATE"]'),
        ({"OTAS": {"sample_rate": "abc"}}, 'settings.OTAS["sample_rate"]'),
        ({"OTAS": {}, "OTAS_SAMPLE_RATE": "abc"}, "settings.OTAS_SAMPLE_RATE"),
    ],
)
def test_a_bad_settings_value_logs_one_error_naming_it_and_takes_the_default(
    monkeypatch, caplog, settings, where
):
    monkeypatch.setenv("OTAS_QUEUE_SIZE", "99")  # a fresh middleware, whatever ran before
    with override_settings(**settings), caplog.at_level(logging.ERROR, logger=LOGGER_NAME):
        first = otas_django.OtasCaptureMiddleware(lambda request: None)
        second = otas_django.OtasCaptureMiddleware(lambda request: None)  # a second handler
    assert first.core is second.core and first.core.config.sample_rate == 1.0
    (message,) = errors(caplog)
    # Named where it was set, not as the environment variable the user never set.
    assert message.startswith(f"otas-capture: {where} must be a number from 0 to 1, got 'abc'")


def test_a_bad_url_in_settings_ships_nothing_and_requests_pass_through(caplog):
    from django.test import RequestFactory

    from otas_capture.collector import DEMO_SDK_KEY
    from otas_capture.contract import SESSION_TOKEN_HEADER

    bad = {"BRAIN_URL": "htp://brain", "SDK_KEY": DEMO_SDK_KEY}
    with override_settings(OTAS=bad), caplog.at_level(logging.ERROR, logger=LOGGER_NAME):
        middleware = otas_django.OtasCaptureMiddleware(lambda request: HttpResponse("ok"))
    (message,) = errors(caplog)
    assert message.startswith('otas-capture: settings.OTAS["BRAIN_URL"] must be an http://')
    assert "nothing is sent to OTAS" in message
    request = RequestFactory().get("/", headers={SESSION_TOKEN_HEADER: "a.b.c"})
    assert middleware(request).content == b"ok"
    assert not middleware.core.config.shipping


def test_an_unknown_option_in_settings_is_logged_once_naming_it(caplog):
    with override_settings(OTAS={"sampel_rate": 0.5}):
        with caplog.at_level(logging.ERROR, logger=LOGGER_NAME):
            otas_django.OtasCaptureMiddleware(lambda request: None)
            otas_django.OtasCaptureMiddleware(lambda request: None)
            otas_django.stats()
    (message,) = errors(caplog)
    assert 'settings.OTAS["sampel_rate"] is not an option' in message
    assert "sample_rate" in message  # the list of options


def test_settings_otas_that_is_not_a_dict_is_logged_and_ignored(caplog):
    with override_settings(OTAS=["SDK_KEY"]), caplog.at_level(logging.ERROR, logger=LOGGER_NAME):
        options, _ = otas_django.load_options()
    assert "settings.OTAS must be a dict" in caplog.text


def test_a_bad_capture_user_setting_or_variable_is_logged_naming_it(monkeypatch, caplog):
    with caplog.at_level(logging.ERROR, logger=LOGGER_NAME):
        with override_settings(OTAS={"capture_user": "maybe"}):
            assert otas_django.load_options()[1] is False
        monkeypatch.setenv("OTAS_CAPTURE_USER", "perhaps")
        with override_settings(OTAS={}):
            assert otas_django.load_options()[1] is False
    assert errors(caplog) == [
        "otas-capture: settings.OTAS[\"capture_user\"] must be true or false, got 'maybe'; "
        "using false",
        "otas-capture: OTAS_CAPTURE_USER must be true or false, got 'perhaps'; using false",
    ]


def test_a_bad_value_in_settings_does_not_stop_runserver(tmp_path):
    (tmp_path / "bad_settings.py").write_text(
        "from shop.settings import *\nOTAS = {'SAMPLE_RATE': 'abc'}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTAS_")}
    env.update(
        DJANGO_SETTINGS_MODULE="bad_settings",
        PYTHONPATH=os.pathsep.join([str(tmp_path), str(PROJECT), env.get("PYTHONPATH", "")]),
    )
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "django", "runserver", "--noreload", f"127.0.0.1:{port}"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        body = _get_when_up(f"http://127.0.0.1:{port}/health/", server)
    finally:
        server.terminate()
        _, stderr = server.communicate(timeout=10)
    assert body == b"ok", stderr
    named = [line for line in stderr.splitlines() if "SAMPLE_RATE" in line]
    assert named == [
        "otas-capture: settings.OTAS[\"SAMPLE_RATE\"] must be a number from 0 to 1, got 'abc'; "
        "using the default (1.0) instead"
    ], stderr


def _get_when_up(url, process, timeout=30.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.read()
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_enabled_false_in_settings_turns_capture_off():
    from django.test import RequestFactory

    from otas_capture.collector import DEMO_SDK_KEY
    from otas_capture.contract import SESSION_TOKEN_HEADER

    with override_settings(OTAS={"ENABLED": False, "SDK_KEY": DEMO_SDK_KEY}):
        middleware = otas_django.OtasCaptureMiddleware(lambda request: HttpResponse("ok"))
    request = RequestFactory().get("/", headers={SESSION_TOKEN_HEADER: "a.b.c"})
    response = middleware(request)
    assert response.content == b"ok"
    assert otas_django.EXCHANGE_ENVIRON_KEY not in request.META
    assert middleware.core.stats()["captured"] == 0
