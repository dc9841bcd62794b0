"""Every event says which deployment served it and which trace it belongs to.

``OTAS_ENVIRONMENT`` / ``OTAS_RELEASE`` (or the options, or the framework settings) land in
``metadata.environment`` / ``metadata.release``; a W3C ``traceparent`` header or
OpenTelemetry's current span lands in ``metadata.trace_id`` / ``metadata.span_id``. Each
case ships a real request over loopback to the collector and reads what it received.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

import pytest
import requests
from flask import Flask

from otas_capture import ConfigError, OtasMiddleware
from otas_capture.collector import DEMO_SDK_KEY
from otas_capture.config import Config
from otas_capture.contract import LOGGER_NAME
from otas_capture.event.context import parse_traceparent
from otas_capture.flask import init_app

from .conftest import settle

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


def hello_app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


def one_event(make_middleware, serve_app, collector, agent, app=hello_app, headers=(), **options):
    middleware = make_middleware(app, **options)
    url = serve_app(middleware)
    requests.get(url + "/hello", headers={**agent, **dict(headers)}, timeout=5)
    settle(middleware)
    (event,) = collector.events()
    return event["metadata"]


# -- environment and release -------------------------------------------------------------


def test_environment_and_release_given_in_code_are_in_the_event(
    make_middleware, serve_app, collector, agent
):
    metadata = one_event(
        make_middleware, serve_app, collector, agent, environment="staging", release="v1.4.2"
    )
    assert metadata["environment"] == "staging"
    assert metadata["release"] == "v1.4.2"


def test_environment_and_release_come_from_the_environment_variables(
    make_middleware, serve_app, collector, agent, monkeypatch
):
    monkeypatch.setenv("OTAS_ENVIRONMENT", "production")
    monkeypatch.setenv("OTAS_RELEASE", "3f2c1ab")
    metadata = one_event(make_middleware, serve_app, collector, agent)
    assert (metadata["environment"], metadata["release"]) == ("production", "3f2c1ab")


def test_without_them_the_event_has_neither_key(make_middleware, serve_app, collector, agent):
    metadata = one_event(make_middleware, serve_app, collector, agent)
    assert "environment" not in metadata and "release" not in metadata


def test_flask_reads_them_from_app_config(collector_server, collector, agent):
    app = Flask("context_app")
    app.config.update(OTAS_ENVIRONMENT="staging", OTAS_RELEASE="2026.12.07")

    @app.get("/hello")
    def hello():
        return "hello"

    middleware = init_app(
        app, sdk_key=DEMO_SDK_KEY, brain_url=collector_server.url, uasam_url=collector_server.url
    )
    try:
        app.test_client().get("/hello", headers=agent).close()
        settle(middleware)
    finally:
        middleware.close(timeout=2)
    metadata = collector.events()[0]["metadata"]
    assert (metadata["environment"], metadata["release"]) == ("staging", "2026.12.07")


@pytest.mark.parametrize("value", ["a" * 201, "prod\nuction", 3, ["production"]])
def test_a_bad_value_in_code_is_a_config_error_naming_the_option(value):
    with pytest.raises(ConfigError, match="environment=.*OTAS_ENVIRONMENT"):
        OtasMiddleware(hello_app, environment=value)


def test_a_bad_variable_is_logged_by_name_and_left_out(caplog):
    with caplog.at_level(logging.ERROR, logger=LOGGER_NAME):
        config = Config.load({}, {"OTAS_RELEASE": "v1\x00", "OTAS_ENVIRONMENT": "  "})
    assert config.release is None and config.environment is None
    assert "OTAS_RELEASE must be a text of at most 200 characters" in caplog.text
    assert config.shipping is False  # no key here; a refused label never stops shipping
    assert "OTAS_RELEASE" in config.env_refused


# -- trace correlation -------------------------------------------------------------------


def test_a_traceparent_header_gives_the_trace_and_the_callers_span(
    make_middleware, serve_app, collector, agent
):
    metadata = one_event(
        make_middleware, serve_app, collector, agent, headers={"traceparent": TRACEPARENT}
    )
    assert (metadata["trace_id"], metadata["span_id"]) == (TRACE_ID, PARENT_ID)


def test_an_invalid_traceparent_is_ignored(make_middleware, serve_app, collector, agent):
    metadata = one_event(
        make_middleware, serve_app, collector, agent, headers={"traceparent": "00-nonsense-01"}
    )
    assert "trace_id" not in metadata and "span_id" not in metadata


@pytest.mark.parametrize(
    "value, expected",
    [
        (TRACEPARENT, (TRACE_ID, PARENT_ID)),
        (f" {TRACEPARENT} ", (TRACE_ID, PARENT_ID)),  # optional whitespace around it
        (f"01-{TRACE_ID}-{PARENT_ID}-01-later-fields", (TRACE_ID, PARENT_ID)),
        (f"00-{TRACE_ID}-{PARENT_ID}-01-extra", None),  # version 00 has four fields
        (f"ff-{TRACE_ID}-{PARENT_ID}-01", None),  # version ff is forbidden
        (f"00-{'0' * 32}-{PARENT_ID}-01", None),  # all-zero trace id
        (f"00-{TRACE_ID}-{'0' * 16}-01", None),  # all-zero span id
        (f"00-{TRACE_ID.upper()}-{PARENT_ID}-01", None),  # upper case is not valid
        (f"00-{TRACE_ID[:-1]}-{PARENT_ID}-01", None),
        (f"00-{TRACE_ID}-{PARENT_ID}", None),
        (f"{TRACEPARENT},{TRACEPARENT}", None),  # two headers joined by the server
        (TRACEPARENT.encode(), (TRACE_ID, PARENT_ID)),  # as ASGI carries it
        ("", None),
        (None, None),
    ],
)
def test_traceparent_values_follow_the_w3c_rules(value, expected):
    assert parse_traceparent(value) == expected


def test_opentelemetry_current_span_is_recorded(make_middleware, serve_app, collector, agent):
    trace = pytest.importorskip("opentelemetry.trace")
    sdk = pytest.importorskip("opentelemetry.sdk.trace")
    tracer = sdk.TracerProvider().get_tracer("test")
    seen = {}

    def traced_app(environ, start_response):
        # The app's own span, current while it answers, as OpenTelemetry's
        # instrumentations make it: a child of the caller's traceparent.
        with tracer.start_as_current_span("GET /hello") as span:
            seen["trace_id"] = format(span.get_span_context().trace_id, "032x")
            seen["span_id"] = format(span.get_span_context().span_id, "016x")
            assert trace.get_current_span() is span
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"hello"]

    metadata = one_event(
        make_middleware,
        serve_app,
        collector,
        agent,
        app=traced_app,
        headers={"traceparent": TRACEPARENT},
    )
    # The app's span wins over the header: it is this request's own span.
    assert (metadata["trace_id"], metadata["span_id"]) == (seen["trace_id"], seen["span_id"])


def test_opentelemetry_is_never_imported_by_the_package():
    code = textwrap.dedent(
        """
        import sys
        from otas_capture import OtasMiddleware
        from otas_capture.event import build, context
        OtasMiddleware(lambda e, s: [], sdk_key="otas_a_b")
        print(sorted(name for name in sys.modules if name.startswith("opentelemetry")))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"
