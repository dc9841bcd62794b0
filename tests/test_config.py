"""Specification of the settings: defaults, precedence, parsing and the errors they give."""

from __future__ import annotations

import dataclasses
import logging
import os

import pytest
from werkzeug.test import Client
from werkzeug.wrappers import Response

import otas_capture
from otas_capture import OtasMiddleware
from otas_capture.config import (
    BUILTIN_SENSITIVE_FIELDS,
    BUILTIN_SENSITIVE_HEADERS,
    MAX_BODY_BYTES_LIMIT,
    Config,
    ConfigError,
)

KEY = "otas_pk123_s3cr3tS3cr3t"
PROJECT = "123e4567-e89b-12d3-a456-426614174000"


@pytest.fixture(autouse=True)
def no_otas_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever the machine running the tests has set, these tests start from nothing."""
    for name in list(os.environ):
        if name.startswith("OTAS_"):
            monkeypatch.delenv(name)


def load(**options):
    return Config.load(options, {})


def error_of(options=None, environ=None) -> str:
    with pytest.raises(ConfigError) as info:
        Config.load(options or {}, environ or {})
    return str(info.value)


# -- defaults ----------------------------------------------------------------------------

EXPECTED_DEFAULTS = {
    "sdk_key": None,
    "project_id": None,
    "brain_url": "http://localhost:8002",
    "uasam_url": "http://localhost:8000",
    "enabled": True,
    "max_body_bytes": 102_400,
    "sensitive_headers": BUILTIN_SENSITIVE_HEADERS,
    "sensitive_fields": BUILTIN_SENSITIVE_FIELDS,
    "skip_paths": (),
    "sample_rate": 1.0,
    "queue_size": 10_000,
    "queue_max_bytes": 64 * 1024 * 1024,
    "batch_size": 100,
    "flush_interval": 1.0,
    "concurrency": 16,
    "timeout": 10.0,
    "max_retries": 5,
    "retry_backoff": 0.5,
    "shutdown_timeout": 2.0,
    "spool_dir": None,
    "safe_fields": frozenset(),
    "before_send": None,
}


def test_the_expected_defaults_cover_every_setting():
    assert set(EXPECTED_DEFAULTS) == {field.name for field in dataclasses.fields(Config)}


@pytest.mark.parametrize("name, expected", sorted(EXPECTED_DEFAULTS.items()))
def test_each_setting_has_its_documented_default(name, expected):
    assert getattr(Config.load({}, {}), name) == expected


def test_loading_nothing_gives_the_dataclass_defaults():
    assert Config.load({}, {}) == Config()


def test_without_a_key_nothing_is_shipped():
    assert Config.load({}, {}).shipping is False


def test_with_a_key_events_are_shipped():
    assert load(sdk_key=KEY).shipping is True


def test_disabled_with_a_key_ships_nothing():
    assert load(sdk_key=KEY, enabled=False).shipping is False


def test_load_reads_the_process_environment_when_none_is_given(monkeypatch):
    monkeypatch.setenv("OTAS_SAMPLE_RATE", "0.25")
    assert Config.load({}).sample_rate == 0.25


# -- precedence --------------------------------------------------------------------------


def test_option_in_code_wins_over_environment():
    config = Config.load({"sample_rate": 0.5}, {"OTAS_SAMPLE_RATE": "0.1"})
    assert config.sample_rate == 0.5


def test_environment_wins_over_default():
    assert Config.load({}, {"OTAS_BATCH_SIZE": "7"}).batch_size == 7


def test_option_given_as_none_falls_back_to_environment():
    assert Config.load({"batch_size": None}, {"OTAS_BATCH_SIZE": "7"}).batch_size == 7


def test_environment_variables_of_other_programs_are_ignored():
    config = Config.load({}, {"BATCH_SIZE": "7", "otas_batch_size": "7", "OTAS_UNKNOWN": "x"})
    assert config.batch_size == 100


FROM_ENVIRONMENT = {
    # name: (text of OTAS_<NAME>, the parsed value)
    "sdk_key": (KEY, KEY),
    "project_id": (PROJECT, PROJECT),
    "brain_url": ("https://brain.example.com/", "https://brain.example.com"),
    "uasam_url": ("https://uasam.example.com", "https://uasam.example.com"),
    "enabled": ("false", False),
    "max_body_bytes": ("2048", 2048),
    "sensitive_headers": ("X-Tenant", BUILTIN_SENSITIVE_HEADERS | {"x-tenant"}),
    "sensitive_fields": ("pin", BUILTIN_SENSITIVE_FIELDS | {"pin"}),
    "skip_paths": ("/health", ("/health",)),
    "sample_rate": ("0.5", 0.5),
    "queue_size": ("50", 50),
    "queue_max_bytes": ("4096", 4096),
    "batch_size": ("10", 10),
    "flush_interval": ("0.1", 0.1),
    "concurrency": ("2", 2),
    "timeout": ("2.5", 2.5),
    "max_retries": ("0", 0),
    "retry_backoff": ("1", 1.0),
    "shutdown_timeout": ("0.5", 0.5),
    "spool_dir": ("/var/spool/otas", "/var/spool/otas"),
    "safe_fields": ("max_tokens, author", frozenset({"max_tokens", "author"})),
    "before_send": ("json:loads", __import__("json").loads),
}


def test_the_environment_table_covers_every_setting():
    assert set(FROM_ENVIRONMENT) == set(EXPECTED_DEFAULTS)


@pytest.mark.parametrize("name", sorted(FROM_ENVIRONMENT))
def test_every_setting_is_read_from_its_upper_case_otas_variable(name):
    text, expected = FROM_ENVIRONMENT[name]
    assert getattr(Config.load({}, {f"OTAS_{name.upper()}": text}), name) == expected


# -- booleans ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["1", "true", "True", "TRUE", "yes", "Yes", "on", "ON", " true ", "tRuE"]
)
def test_enabled_accepts_every_spelling_of_true(text):
    assert Config.load({}, {"OTAS_ENABLED": text}).enabled is True


@pytest.mark.parametrize(
    "text", ["0", "false", "False", "FALSE", "no", "No", "off", "OFF", " off ", "fAlSe"]
)
def test_enabled_accepts_every_spelling_of_false(text):
    assert Config.load({}, {"OTAS_ENABLED": text}).enabled is False


@pytest.mark.parametrize("value", [True, False])
def test_enabled_accepts_python_booleans(value):
    assert load(enabled=value).enabled is value


@pytest.mark.parametrize("text", ["", "maybe", "2", "enabled", "y", "t"])
def test_enabled_refuses_other_words_and_lists_the_spellings(text):
    message = error_of(environ={"OTAS_ENABLED": text})
    assert "OTAS_ENABLED" in message and "enabled=" in message
    assert "true/false" in message and "1/0" in message
    assert "yes/no" in message and "on/off" in message


# -- whole numbers -----------------------------------------------------------------------

INT_SETTINGS = {
    # name: (lowest accepted, highest accepted or None)
    "max_body_bytes": (0, MAX_BODY_BYTES_LIMIT),
    "queue_size": (1, None),
    "queue_max_bytes": (1024, None),
    "batch_size": (1, None),
    "concurrency": (1, 64),
    "max_retries": (0, 100),
}


@pytest.mark.parametrize("name", sorted(INT_SETTINGS))
def test_whole_numbers_are_parsed_from_environment_text(name):
    low, _ = INT_SETTINGS[name]
    value = max(low, 1) + 1
    assert getattr(Config.load({}, {f"OTAS_{name.upper()}": f" {value} "}), name) == value


@pytest.mark.parametrize("name", sorted(INT_SETTINGS))
def test_whole_numbers_accept_their_bounds(name):
    low, high = INT_SETTINGS[name]
    assert getattr(load(**{name: low}), name) == low
    if high is not None:
        assert getattr(load(**{name: high}), name) == high


# max_body_bytes has its own tests below: its error message states its maximum wrongly.
RANGE_MESSAGE_SETTINGS = sorted(set(INT_SETTINGS) - {"max_body_bytes"})


@pytest.mark.parametrize("name", RANGE_MESSAGE_SETTINGS)
def test_whole_numbers_below_their_range_are_refused_with_the_range(name):
    low, high = INT_SETTINGS[name]
    message = error_of({name: low - 1})
    assert f"OTAS_{name.upper()}" in message and f"{name}=" in message
    assert "whole number" in message
    assert (f"from {low} to {high}" if high is not None else f"at least {low}") in message


@pytest.mark.parametrize("name", [n for n in RANGE_MESSAGE_SETTINGS if INT_SETTINGS[n][1]])
def test_whole_numbers_above_their_range_are_refused_with_the_range(name):
    low, high = INT_SETTINGS[name]
    message = error_of({name: high + 1})
    assert f"OTAS_{name.upper()}" in message and f"from {low} to {high}" in message


@pytest.mark.parametrize("value", ["ten", "1.5", "", "1e3", 1.5, True, [1], object()])
def test_whole_numbers_refuse_what_is_not_a_whole_number(value):
    message = error_of({"batch_size": value})
    assert "OTAS_BATCH_SIZE" in message and "batch_size=" in message
    assert "whole number" in message


def test_a_float_option_with_a_whole_value_is_accepted_as_int():
    config = load(batch_size=5.0)
    assert config.batch_size == 5 and type(config.batch_size) is int


def test_max_body_bytes_is_capped_at_one_mebibyte():
    assert MAX_BODY_BYTES_LIMIT == 1024 * 1024
    assert load(max_body_bytes=1024 * 1024).max_body_bytes == 1024 * 1024
    for value in (1024 * 1024 + 1, 10 * 1024 * 1024, -1):
        message = error_of({"max_body_bytes": value})
        assert "OTAS_MAX_BODY_BYTES" in message and "max_body_bytes=" in message
        assert "whole number from 0 to" in message


def test_max_body_bytes_error_states_the_exact_maximum():
    message = error_of({"max_body_bytes": 1024 * 1024 + 1})
    assert "from 0 to 1048576" in message


def test_max_body_bytes_of_zero_is_allowed_to_capture_no_bodies():
    assert load(max_body_bytes=0).max_body_bytes == 0


# -- numbers -----------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [("0", 0.0), ("0.5", 0.5), (" 1 ", 1.0), ("1.0", 1.0)])
def test_sample_rate_is_a_fraction_from_zero_to_one(text, expected):
    assert Config.load({}, {"OTAS_SAMPLE_RATE": text}).sample_rate == expected


@pytest.mark.parametrize("value", [2, "1.01", -0.1, "-1", "nan", "inf", "half", ""])
def test_sample_rate_outside_zero_to_one_is_refused_with_the_range(value):
    message = error_of({"sample_rate": value})
    assert "OTAS_SAMPLE_RATE" in message and "sample_rate=" in message
    assert "from 0 to 1" in message


@pytest.mark.parametrize("value", [True, False])
def test_number_settings_refuse_booleans(value):
    message = error_of({"sample_rate": value})
    assert "OTAS_SAMPLE_RATE" in message and "a number" in message


@pytest.mark.parametrize("name", ["flush_interval", "timeout", "retry_backoff"])
def test_durations_accept_any_positive_number(name):
    assert getattr(Config.load({}, {f"OTAS_{name.upper()}": "0.25"}), name) == 0.25
    assert getattr(load(**{name: 3}), name) == 3.0


@pytest.mark.parametrize("name", ["flush_interval", "timeout", "retry_backoff"])
@pytest.mark.parametrize("value", [0, "0", -1, "soon", "nan"])
def test_durations_must_be_above_zero(name, value):
    message = error_of({name: value})
    assert f"OTAS_{name.upper()}" in message and f"{name}=" in message
    assert "above 0" in message


def test_retry_backoff_is_at_most_a_minute():
    assert load(retry_backoff=60).retry_backoff == 60.0
    message = error_of({"retry_backoff": 61})
    assert "OTAS_RETRY_BACKOFF" in message and "at most 60" in message


@pytest.mark.parametrize("name", ["flush_interval", "timeout"])
@pytest.mark.parametrize("value", ["inf", "Infinity", float("inf")])
def test_durations_must_be_finite(name, value):
    message = error_of({name: value})
    assert f"OTAS_{name.upper()}" in message


@pytest.mark.parametrize("name", ["flush_interval", "timeout"])
def test_durations_too_long_for_the_platform_are_refused(name):
    message = error_of({name: "1e10"})
    assert f"OTAS_{name.upper()}" in message


# -- lists -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "/health, /metrics",
        "/health,/metrics",
        " /health ,, /metrics ,",
        ["/health", "/metrics"],
        ("/health", " /metrics ", ""),
    ],
)
def test_skip_paths_come_from_a_comma_string_or_a_python_list(value):
    assert load(skip_paths=value).skip_paths == ("/health", "/metrics")


def test_skip_paths_from_the_environment():
    assert Config.load({}, {"OTAS_SKIP_PATHS": "/a,/b"}).skip_paths == ("/a", "/b")


def test_an_empty_skip_paths_string_means_none():
    assert Config.load({}, {"OTAS_SKIP_PATHS": ""}).skip_paths == ()


def test_a_list_setting_that_is_not_a_list_is_refused():
    message = error_of({"skip_paths": 5})
    assert "OTAS_SKIP_PATHS" in message and "skip_paths=" in message
    assert "comma-separated string or a list of strings" in message


def test_sensitive_headers_extend_the_builtin_list_lower_cased():
    config = load(sensitive_headers="X-Tenant-Secret, X_Other")
    assert config.sensitive_headers == BUILTIN_SENSITIVE_HEADERS | {"x-tenant-secret", "x_other"}


def test_sensitive_headers_given_as_a_list_also_extend():
    config = load(sensitive_headers=["X-Internal"])
    assert BUILTIN_SENSITIVE_HEADERS < config.sensitive_headers
    assert "x-internal" in config.sensitive_headers


def test_sensitive_fields_extend_the_builtin_list_lower_cased_with_dashes_as_underscores():
    config = Config.load({}, {"OTAS_SENSITIVE_FIELDS": "PIN, Security-Answer"})
    assert config.sensitive_fields == BUILTIN_SENSITIVE_FIELDS | {"pin", "security_answer"}


def test_builtin_sensitive_lists_cannot_be_emptied():
    config = load(sensitive_headers="", sensitive_fields=[])
    assert config.sensitive_headers == BUILTIN_SENSITIVE_HEADERS
    assert config.sensitive_fields == BUILTIN_SENSITIVE_FIELDS


def test_builtin_sensitive_lists_hold_the_credentials_of_otas_and_http():
    assert {
        "authorization",
        "cookie",
        "set-cookie",
        "x-otas-sdk-key",
        "x-otas-agent-session-token",
    } <= BUILTIN_SENSITIVE_HEADERS
    assert {"password", "token", "api_key", "secret"} <= BUILTIN_SENSITIVE_FIELDS


# -- URLs --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["brain_url", "uasam_url"])
@pytest.mark.parametrize(
    "value, expected",
    [
        ("http://brain.internal:8002", "http://brain.internal:8002"),
        ("http://brain.internal:8002/", "http://brain.internal:8002"),
        ("https://otas.example.com//", "https://otas.example.com"),
        (" https://otas.example.com/base/ ", "https://otas.example.com/base"),
        ("http://127.0.0.1", "http://127.0.0.1"),
    ],
)
def test_urls_accept_http_and_https_and_drop_trailing_slashes(name, value, expected):
    assert getattr(load(**{name: value}), name) == expected


@pytest.mark.parametrize("name", ["brain_url", "uasam_url"])
@pytest.mark.parametrize(
    "value",
    ["ftp://brain.internal", "brain.internal:8002", "localhost", "http://", "", "file:///x"],
)
def test_urls_that_are_not_http_are_refused_with_an_example(name, value):
    message = error_of({name: value})
    assert f"OTAS_{name.upper()}" in message and f"{name}=" in message
    assert "http:// or https:// URL" in message


@pytest.mark.parametrize("value", ["http://brain:8002/?x=1", "http://brain:8002/#top"])
def test_a_base_url_with_a_query_or_fragment_is_refused(value):
    message = error_of({"brain_url": value})
    assert "OTAS_BRAIN_URL" in message and "without query or fragment" in message


@pytest.mark.parametrize("value", ["http://localhost:80o2", "http://localhost:99999"])
def test_a_url_with_a_bad_port_is_refused(value):
    message = error_of({"brain_url": value})
    assert "OTAS_BRAIN_URL" in message


# -- the SDK key -------------------------------------------------------------------------


@pytest.mark.parametrize("value", [KEY, " " + KEY + " "])
def test_sdk_key_of_the_form_otas_prefix_secret_is_accepted(value):
    assert load(sdk_key=value).sdk_key == KEY


@pytest.mark.parametrize("value", ["", "   "])
def test_an_empty_sdk_key_means_not_set(value):
    config = Config.load({}, {"OTAS_SDK_KEY": value})
    assert config.sdk_key is None and config.shipping is False


@pytest.mark.parametrize(
    "value",
    [
        "mysecretkeyvalue",
        "otas_onlytwos3cr3t",
        "otass3cr3t-with-dashes",
    ],
)
def test_a_malformed_sdk_key_is_refused_without_repeating_it(value):
    message = error_of(environ={"OTAS_SDK_KEY": value})
    assert "OTAS_SDK_KEY" in message and "sdk_key=" in message
    assert "otas_<prefix>_<secret>" in message
    assert value not in message
    assert "s3cr3t" not in message and "mysecretkeyvalue" not in message


def test_the_sdk_key_never_appears_in_the_repr_of_a_config():
    config = load(sdk_key=KEY, project_id=PROJECT)
    assert KEY not in repr(config) and "s3cr3t" not in repr(config)
    assert KEY not in str(config)
    assert "sdk_key='<set>'" in repr(config)


def test_the_repr_of_a_config_without_a_key_says_none():
    assert "sdk_key=None" in repr(Config.load({}, {}))


# -- the project id ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", [PROJECT, PROJECT.upper(), " " + PROJECT + " ", PROJECT.replace("-", "")]
)
def test_project_id_is_a_uuid_in_canonical_form(value):
    assert load(project_id=value).project_id == PROJECT


def test_an_empty_project_id_means_learn_it_from_the_key():
    assert Config.load({}, {"OTAS_PROJECT_ID": ""}).project_id is None


@pytest.mark.parametrize("value", ["my-project", "123", PROJECT + "0", "123e4567-e89b-12d3-a456"])
def test_a_project_id_that_is_not_a_uuid_is_refused(value):
    message = error_of({"project_id": value})
    assert "OTAS_PROJECT_ID" in message and "project_id=" in message
    assert "UUID" in message


# -- unknown options ---------------------------------------------------------------------


def test_an_unknown_option_is_refused_by_name_with_the_list_of_options():
    message = error_of({"sampel_rate": 0.5})
    assert "'sampel_rate'" in message
    assert "sample_rate" in message and "brain_url" in message


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


def test_config_errors_do_not_chain_the_parse_exception():
    with pytest.raises(ConfigError) as info:
        load(batch_size="ten")
    assert info.value.__cause__ is None and info.value.__suppress_context__


# -- through the public API --------------------------------------------------------------


def hello_app(environ, start_response):
    environ["test.seen"] = True
    return Response("hello", headers={"X-App": "yes"})(environ, start_response)


def test_otas_capture_exports_config_error():
    assert otas_capture.ConfigError is ConfigError


def test_middleware_refuses_a_bad_option_at_construction():
    with pytest.raises(otas_capture.ConfigError, match="OTAS_SAMPLE_RATE"):
        OtasMiddleware(hello_app, sample_rate=2)


def test_middleware_refuses_a_bad_environment_variable_at_construction(monkeypatch):
    monkeypatch.setenv("OTAS_CONCURRENCY", "many")
    with pytest.raises(otas_capture.ConfigError, match="OTAS_CONCURRENCY"):
        OtasMiddleware(hello_app)


def test_middleware_refuses_an_unknown_option_at_construction():
    with pytest.raises(otas_capture.ConfigError, match="'sdkkey'"):
        OtasMiddleware(hello_app, sdkkey=KEY)


def _agent_request(app):
    return Client(app).post(
        "/api/v1/users/?q=1",
        data=b'{"password": "hunter2"}',
        headers={"X-OTAS-AGENT-SESSION-TOKEN": "a.b.c", "Content-Type": "application/json"},
    )


def _assert_passes_through(middleware):
    response = _agent_request(middleware)
    assert response.status_code == 200
    assert response.get_data() == b"hello"
    assert response.headers["X-App"] == "yes"
    # The environ and the result reach the app and the server untouched.
    seen = {}

    def app(environ, start_response):
        seen["input"] = environ["wsgi.input"]
        seen["keys"] = set(environ)
        start_response("200 OK", [])
        return result

    result = [b"x"]
    middleware.app = app
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/",
        "wsgi.input": object(),
        "HTTP_X_OTAS_AGENT_SESSION_TOKEN": "a.b.c",
    }
    stream = environ["wsgi.input"]
    keys = set(environ)
    assert middleware(environ, lambda status, headers, exc_info=None: None) is result
    assert seen["input"] is stream
    assert seen["keys"] == keys
    assert middleware.stats()["captured"] == 0


def test_middleware_without_a_key_warns_once_and_passes_requests_through(caplog):
    with caplog.at_level(logging.DEBUG, logger="otas_capture"):
        middleware = OtasMiddleware(hello_app)
        _assert_passes_through(middleware)
    warnings = [
        r for r in caplog.records if r.name == "otas_capture" and r.levelno == logging.WARNING
    ]
    assert len(warnings) == 1
    assert "OTAS_SDK_KEY" in warnings[0].getMessage()
    assert not [r for r in caplog.records if r.levelno > logging.WARNING]


def test_middleware_with_an_empty_key_variable_also_passes_through(monkeypatch, caplog):
    monkeypatch.setenv("OTAS_SDK_KEY", "")
    with caplog.at_level(logging.WARNING, logger="otas_capture"):
        middleware = OtasMiddleware(hello_app)
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
    _assert_passes_through(middleware)


def test_middleware_disabled_passes_requests_through_even_with_a_key(caplog):
    with caplog.at_level(logging.WARNING, logger="otas_capture"):
        middleware = OtasMiddleware(hello_app, sdk_key=KEY, enabled=False)
    try:
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
        _assert_passes_through(middleware)
    finally:
        middleware.close(timeout=0.1)


def test_middleware_disabled_by_environment_passes_requests_through(monkeypatch):
    monkeypatch.setenv("OTAS_SDK_KEY", KEY)
    monkeypatch.setenv("OTAS_ENABLED", "off")
    middleware = OtasMiddleware(hello_app)
    try:
        assert middleware.config.shipping is False
        _assert_passes_through(middleware)
    finally:
        middleware.close(timeout=0.1)
