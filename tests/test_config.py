"""Specification of the settings: defaults, precedence, parsing and the errors they give."""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import os
import secrets
import uuid

import pytest
import requests
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
    Setting,
    header_key,
)
from otas_capture.contract import (
    LOGGER_NAME,
    SDK_KEY_HEADER,
    SDK_KEY_PREFIX,
    SESSION_TOKEN_ENVIRON,
    SESSION_TOKEN_HEADER,
)

from .conftest import settle

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

# The defaults spelled out once, deliberately: this table pins them.
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
    "answer_timeout": None,
    "max_retries": 5,
    "retry_backoff": 0.5,
    "shutdown_timeout": 2.0,
    "spool_dir": None,
    "ca_bundle": None,
    "safe_fields": frozenset(),
    "before_send": None,
    "environment": None,
    "release": None,
    # Not a setting: the variables refused while loading.
    "env_refused": (),
}
SETTINGS = sorted(set(EXPECTED_DEFAULTS) - {"env_refused"})


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
    "answer_timeout": ("60", 60.0),
    "max_retries": ("0", 0),
    "retry_backoff": ("1", 1.0),
    "shutdown_timeout": ("0.5", 0.5),
    "spool_dir": ("/var/spool/otas", "/var/spool/otas"),
    "ca_bundle": (__file__, __file__),  # any existing file; its certificates load later
    "safe_fields": ("max_tokens, author", frozenset({"max_tokens", "author"})),
    "before_send": ("json:loads", __import__("json").loads),
    "environment": (" staging ", "staging"),
    "release": ("v1.4.2", "v1.4.2"),
}


def test_the_environment_table_covers_every_setting():
    assert sorted(FROM_ENVIRONMENT) == SETTINGS


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
    message = error_of({"enabled": text})
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


def test_sensitive_headers_extend_the_builtin_list_as_http_compares_names():
    config = load(sensitive_headers="X-Tenant-Secret, X_Other")
    assert config.sensitive_headers == BUILTIN_SENSITIVE_HEADERS | {"x-tenant-secret", "x-other"}


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
        SDK_KEY_HEADER.lower(),
        SESSION_TOKEN_HEADER.lower(),
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
    message = error_of({"sdk_key": value})
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


def test_the_middleware_takes_each_setting_as_a_keyword_and_documents_it():
    settings = [f.name for f in dataclasses.fields(Config) if f.name != "env_refused"]
    parameters = inspect.signature(OtasMiddleware.__init__).parameters.values()
    keywords = [p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY]
    assert keywords == settings
    assert all(p.default is None for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY)
    doc = OtasMiddleware.__doc__ or ""
    assert [name for name in settings if f":param {name}:" not in doc] == []


def test_an_unknown_keyword_of_the_middleware_is_a_type_error_naming_it():
    with pytest.raises(TypeError, match="sampel_rate"):
        OtasMiddleware(hello_app, sampel_rate=0.5)


def test_a_keyword_of_none_means_not_given(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("OTAS_SAMPLE_RATE", "0.25")
    assert OtasMiddleware(hello_app, sample_rate=None).config.sample_rate == 0.25
    assert OtasMiddleware(hello_app, sample_rate=0.5).config.sample_rate == 0.5


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


def test_middleware_starts_despite_a_bad_environment_variable(monkeypatch, caplog):
    monkeypatch.setenv("OTAS_SDK_KEY", KEY)
    monkeypatch.setenv("OTAS_CONCURRENCY", "many")
    with caplog.at_level(logging.WARNING, logger=LOGGER_NAME):
        middleware = OtasMiddleware(hello_app)
    try:
        assert middleware.config.concurrency == Config.concurrency and middleware.config.shipping
        [error] = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert "OTAS_CONCURRENCY" in error.getMessage()
    finally:
        middleware.close(timeout=0.1)


def _agent_request(app):
    return Client(app).post(
        "/api/v1/users/?q=1",
        data=b'{"password": "hunter2"}',
        headers={SESSION_TOKEN_HEADER: "a.b.c", "Content-Type": "application/json"},
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
        SESSION_TOKEN_ENVIRON: "a.b.c",
    }
    stream = environ["wsgi.input"]
    keys = set(environ)
    assert middleware(environ, lambda status, headers, exc_info=None: None) is result
    assert seen["input"] is stream
    assert seen["keys"] == keys
    assert middleware.stats()["captured"] == 0


def test_middleware_without_a_key_warns_once_and_passes_requests_through(caplog):
    with caplog.at_level(logging.DEBUG, logger=LOGGER_NAME):
        middleware = OtasMiddleware(hello_app)
        _assert_passes_through(middleware)
    warnings = [r for r in caplog.records if r.name == LOGGER_NAME and r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "OTAS_SDK_KEY" in warnings[0].getMessage()
    assert not [r for r in caplog.records if r.levelno > logging.WARNING]


def test_middleware_with_an_empty_key_variable_also_passes_through(monkeypatch, caplog):
    monkeypatch.setenv("OTAS_SDK_KEY", "")
    with caplog.at_level(logging.WARNING, logger=LOGGER_NAME):
        middleware = OtasMiddleware(hello_app)
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
    _assert_passes_through(middleware)


def test_middleware_disabled_passes_requests_through_even_with_a_key(caplog):
    with caplog.at_level(logging.WARNING, logger=LOGGER_NAME):
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


# -- real SDK keys, as UASAM makes them ----------------------------------------------------


def uasam_key() -> str:
    """A key exactly as UASAM makes one, with a ``_`` inside both random parts."""
    while True:
        prefix, secret = secrets.token_urlsafe(8), secrets.token_urlsafe(32)
        if "_" in prefix and "_" in secret:
            return SDK_KEY_PREFIX + "_" + prefix + "_" + secret


UASAM_KEYS = [uasam_key() for _ in range(50)]


def test_uasam_keys_used_here_have_underscores_in_both_random_parts():
    for key in UASAM_KEYS:
        assert key.count("_") >= 4


# Numbered ids: the keys are random, and a test id must be the same in every run.
@pytest.mark.parametrize("key", UASAM_KEYS, ids=[f"key{i}" for i in range(len(UASAM_KEYS))])
def test_every_key_uasam_makes_is_accepted_in_code_and_in_the_environment(key, caplog):
    with caplog.at_level(logging.WARNING, logger=LOGGER_NAME):
        assert load(sdk_key=key).sdk_key == key
        config = Config.load({}, {"OTAS_SDK_KEY": key})
    assert config.sdk_key == key and config.shipping
    assert not caplog.records


def test_a_uasam_key_from_the_environment_starts_the_app_and_ships(
    monkeypatch, collector_server, collector, serve_app, token
):
    key = uasam_key()
    project_id = str(uuid.uuid4())
    collector.add_sdk_key(key, project_id)
    monkeypatch.setenv("OTAS_SDK_KEY", key)
    monkeypatch.setenv("OTAS_BRAIN_URL", collector_server.url)
    monkeypatch.setenv("OTAS_UASAM_URL", collector_server.url)
    monkeypatch.setenv("OTAS_FLUSH_INTERVAL", "0.01")
    middleware = OtasMiddleware(hello_app)
    try:
        url = serve_app(middleware)
        response = requests.get(url + "/api/v1/users/", headers={SESSION_TOKEN_HEADER: token})
        assert response.text == "hello"
        stats = settle(middleware)
        assert stats["sent"] == 1, stats
        [event] = collector.events()
        assert event["_project_id"] == project_id and event["project_id"] == project_id
        assert event["path"] == "/api/v1/users/"
    finally:
        middleware.close(timeout=2.0)
        collector.remove_sdk_key(key)


# -- a bad environment never stops the app ---------------------------------------------


def errors_logged(caplog) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == LOGGER_NAME and r.levelno >= logging.WARNING
    ]


def load_environment(caplog, **variables: str) -> Config:
    with caplog.at_level(logging.DEBUG, logger=LOGGER_NAME):
        return Config.load({}, variables)


@pytest.mark.parametrize(
    "name, text, accepts",
    [
        ("concurrency", "many", "whole number from 1 to 64"),
        ("sample_rate", "2", "from 0 to 1"),
        ("timeout", "soon", "above 0"),
        ("max_body_bytes", "-1", "from 0 to 1048576"),
        ("project_id", "my-project", "UUID"),
        ("shutdown_timeout", "-1", "from 0 to 600"),
    ],
)
def test_a_bad_variable_logs_one_error_and_takes_the_default(name, text, accepts, caplog):
    config = load_environment(caplog, **{f"OTAS_{name.upper()}": text, "OTAS_SDK_KEY": KEY})
    assert getattr(config, name) == EXPECTED_DEFAULTS[name]
    assert config.shipping and config.env_refused == (f"OTAS_{name.upper()}",)
    [message] = errors_logged(caplog)
    assert f"OTAS_{name.upper()}" in message and accepts in message
    assert "default" in message
    assert caplog.records[0].levelno == logging.ERROR


@pytest.mark.parametrize(
    "name, text",
    [
        ("sdk_key", "otas_nounderscore"),
        ("sdk_key", "otas_pk_s3cr3t with space"),
        ("brain_url", "brain.internal:8002"),
        ("uasam_url", "http://localhost:0"),
        ("enabled", "maybe"),
        ("before_send", "no_such_module_here:scrub"),
    ],
)
def test_a_bad_key_url_switch_or_filter_in_the_environment_ships_nothing(name, text, caplog):
    variables = {"OTAS_SDK_KEY": KEY, f"OTAS_{name.upper()}": text}
    config = load_environment(caplog, **variables)
    assert config.shipping is False
    [message] = errors_logged(caplog)
    assert f"OTAS_{name.upper()}" in message and "nothing is sent" in message


def test_a_refused_key_is_never_repeated_in_the_log(caplog):
    bad = "otas_pk_s3cr3t\u20acvalue"  # the euro sign cannot travel in a header
    load_environment(caplog, OTAS_SDK_KEY=bad)
    [message] = errors_logged(caplog)
    assert "OTAS_SDK_KEY" in message and "Latin-1" in message
    assert "s3cr3t" not in caplog.text and bad not in caplog.text


def test_a_url_with_a_password_is_never_repeated_in_the_log(caplog):
    load_environment(caplog, OTAS_BRAIN_URL="http://otas:hunter2@brain.internal:8002")
    [message] = errors_logged(caplog)
    assert "OTAS_BRAIN_URL" in message and "hunter2" not in caplog.text


def test_each_bad_variable_is_named_in_its_own_error(caplog):
    config = load_environment(caplog, OTAS_SDK_KEY=KEY, OTAS_BATCH_SIZE="x", OTAS_TIMEOUT="y")
    messages = errors_logged(caplog)
    assert len(messages) == 2
    assert "OTAS_BATCH_SIZE" in messages[0] and "OTAS_TIMEOUT" in messages[1]
    assert config.env_refused == ("OTAS_BATCH_SIZE", "OTAS_TIMEOUT") and config.shipping


# -- framework settings: as the environment, named where they were set ------------------


def test_a_bad_framework_setting_is_logged_where_it_was_set_and_takes_the_default(caplog):
    options = {"sdk_key": KEY, "sample_rate": Setting("abc", 'settings.OTAS["SAMPLE_RATE"]')}
    with caplog.at_level(logging.DEBUG, logger=LOGGER_NAME):
        config = Config.load(options, {"OTAS_SAMPLE_RATE": "0.5"})
    assert config.sample_rate == 1.0 and config.shipping
    assert config.env_refused == ('settings.OTAS["SAMPLE_RATE"]',)
    [message] = errors_logged(caplog)
    assert message.startswith('otas-capture: settings.OTAS["SAMPLE_RATE"] must be a number')


def test_a_good_framework_setting_wins_over_the_environment():
    options = {"sample_rate": Setting("0.25", 'app.config["OTAS_SAMPLE_RATE"]')}
    assert Config.load(options, {"OTAS_SAMPLE_RATE": "0.5"}).sample_rate == 0.25


def test_a_bad_key_in_framework_settings_ships_nothing_and_is_never_shown(caplog):
    secret = "otas_pk_s3cr3t with space"
    setting = Setting(secret, 'app.config["OTAS_SDK_KEY"]')
    with caplog.at_level(logging.DEBUG, logger=LOGGER_NAME):
        config = Config.load({"sdk_key": setting}, {})
    assert not config.shipping
    assert 'app.config["OTAS_SDK_KEY"]' in caplog.text and "s3cr3t" not in caplog.text
    assert "s3cr3t" not in repr(setting)


@pytest.mark.parametrize("name", SETTINGS)
def test_an_empty_variable_counts_as_unset(name, caplog):
    config = load_environment(caplog, **{f"OTAS_{name.upper()}": " "})
    assert getattr(config, name) == EXPECTED_DEFAULTS[name]
    assert not errors_logged(caplog)


def test_an_error_raised_by_a_filter_module_on_import_is_contained(tmp_path, monkeypatch, caplog):
    (tmp_path / "otas_broken_filter.py").write_text("raise RuntimeError('boom at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    config = load_environment(caplog, OTAS_SDK_KEY=KEY, OTAS_BEFORE_SEND="otas_broken_filter:f")
    assert config.shipping is False
    [message] = errors_logged(caplog)
    assert "OTAS_BEFORE_SEND" in message


def test_the_same_bad_value_in_code_raises_naming_the_option():
    message = error_of({"concurrency": "many"})
    assert "concurrency=" in message and "OTAS_CONCURRENCY" in message


def test_a_bad_option_in_code_wins_over_a_good_variable_and_still_raises():
    with pytest.raises(ConfigError, match="sample_rate="):
        Config.load({"sample_rate": 2}, {"OTAS_SAMPLE_RATE": "0.5"})


def test_a_good_option_in_code_hides_a_bad_variable(caplog):
    with caplog.at_level(logging.DEBUG, logger=LOGGER_NAME):
        config = Config.load({"concurrency": 8}, {"OTAS_CONCURRENCY": "many"})
    assert config.concurrency == 8 and not errors_logged(caplog)


def test_a_middleware_with_a_bad_key_in_the_environment_passes_requests_through(
    monkeypatch, caplog
):
    monkeypatch.setenv("OTAS_SDK_KEY", "otas-not-a-key")
    with caplog.at_level(logging.DEBUG, logger=LOGGER_NAME):
        middleware = OtasMiddleware(hello_app)
    # One message, and the right one: not "OTAS_SDK_KEY is not set" nor "disabled".
    [message] = [r.getMessage() for r in caplog.records if r.name == LOGGER_NAME]
    assert "OTAS_SDK_KEY" in message and "otas-not-a-key" not in caplog.text
    _assert_passes_through(middleware)


# -- start-up refuses what cannot work ---------------------------------------------------


@pytest.mark.parametrize(
    "key, why",
    [
        ("otas_pk_s3cr3t\u20ac", "outside Latin-1"),
        ("otas_pk_s3cr3t\u4e2d\u6587", "outside Latin-1"),
        ("otas_pk_s3 cr3t", "space"),
        ("otas_pk_s3cr3t\nX-Injected: 1", "space or line break"),
        ("otas_pk_s3cr3t\x00", "control character"),
        ("otas_pk_s3cr3t\x7f", "control character"),
        ("otas_pk_s3\u00a0cr3t", "space"),
    ],
)
def test_a_key_that_cannot_travel_in_an_http_header_is_refused(key, why):
    message = error_of({"sdk_key": key})
    assert "sdk_key=" in message and why in message
    assert "s3cr3t" not in message


def test_a_latin1_key_is_accepted_as_http_allows_it():
    assert load(sdk_key="otas_pk_s\u00e9cret").sdk_key == "otas_pk_s\u00e9cret"


@pytest.mark.parametrize(
    "value, why",
    [
        ("http://localhost:0", "port"),
        ("http://localhost:65536", "port"),
        ("http://localhost:-1", "port"),
        ("http://brain internal:8002", "space"),
        ("http://brain.internal:8002/base path", "space"),
        ("http://brain.internal\t:8002", "space"),
        ("http://brain.internal:8002/\x00", "control character"),
        ("http://user:pw@brain.internal:8002", "user name or password"),
        ("http://brain.internal:8002/\udcff", "path is not valid text"),
    ],
)
def test_a_url_that_cannot_be_dialled_is_refused(value, why):
    message = error_of({"brain_url": value})
    assert "brain_url=" in message and why in message


@pytest.mark.parametrize("port", [1, 8002, 65535])
def test_ports_from_1_to_65535_are_accepted(port):
    assert load(brain_url=f"http://localhost:{port}").brain_url == f"http://localhost:{port}"


def test_an_ipv6_address_is_a_host():
    assert load(brain_url="http://[::1]:8002/").brain_url == "http://[::1]:8002"


def test_a_non_ascii_base_path_is_sent_percent_encoded():
    assert load(brain_url="https://otas.example/caf\u00e9/").brain_url == (
        "https://otas.example/caf%C3%A9"
    )


@pytest.mark.parametrize(
    "text", ["X_Custom_Secret", "x-custom-secret", "X-CUSTOM_SECRET", " x_custom_secret "]
)
def test_sensitive_header_names_are_normalised_as_http_compares_them(text):
    config = Config.load({}, {"OTAS_SENSITIVE_HEADERS": text})
    assert header_key("X-Custom-Secret") in config.sensitive_headers


def test_a_header_named_with_underscores_in_the_environment_is_redacted(
    monkeypatch, make_middleware, serve_app, collector, token
):
    monkeypatch.setenv("OTAS_SENSITIVE_HEADERS", "X_Custom_Secret")
    middleware = make_middleware(hello_app)
    url = serve_app(middleware)
    headers = {SESSION_TOKEN_HEADER: token, "X-Custom-Secret": "hush-hush-value"}
    assert requests.get(url + "/", headers=headers).text == "hello"
    assert settle(middleware)["sent"] == 1
    [event] = collector.events()
    assert "hush-hush-value" not in json.dumps(event)
    assert "X-Custom-Secret" in event["request_headers"]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("/caf\u00e9", "/caf\u00e9"),
        ("/caf%C3%A9", "/caf\u00e9"),
        ("/a%20b,/health", "/a b"),
        ("/100%", "/100%"),
    ],
)
def test_skip_paths_are_kept_as_decoded_text(text, expected):
    config = Config.load({}, {"OTAS_SKIP_PATHS": text})
    assert config.skip_paths[0] == expected
