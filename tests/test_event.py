"""Specification of the event Brain receives: safe text, safe JSON, and the contract's fields."""

from __future__ import annotations

import hashlib
import json
import math
import time
import uuid
from datetime import datetime, timedelta
from urllib.parse import parse_qs

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from werkzeug.test import EnvironBuilder

import otas_capture
import otas_capture.event.limits as limits_module
import otas_capture.event.safe as safe_module
from otas_capture.capture.exchange import BodyBuffer, Exchange
from otas_capture.config import Config
from otas_capture.contract import (
    JSON_OBJECT_FIELDS,
    MAX_REQUEST_BYTES,
    PATH_LIMIT,
    SESSION_TOKEN_ENVIRON,
    SESSION_TOKEN_HEADER,
    SIZE_FIELDS,
)
from otas_capture.contract import (
    TEXT_FIELDS as CONTRACT_TEXT_FIELDS,
)
from otas_capture.event.build import EventBuilder, EventRefused
from otas_capture.event.headers import header_name
from otas_capture.event.limits import MAX_EVENT_BYTES, encode_event, status_code
from otas_capture.event.safe import clean_json, clean_text, wsgi_text

PROJECT = "123e4567-e89b-12d3-a456-426614174000"
TOKEN = "header.payload.signature"
TOKEN_HEADER = SESSION_TOKEN_HEADER
REDACTED = "[REDACTED]"

# -- text Brain's database accepts -------------------------------------------------------


def test_clean_text_replaces_nul_characters():
    assert clean_text("a\x00b\x00") == "a\ufffdb\ufffd"


def test_clean_text_replaces_nul_in_non_ascii_text_too():
    assert clean_text("café\x00") == "café\ufffd"


@pytest.mark.parametrize("text", ["a\ud800b", "\udfff", "x\udc80y", "é\ud83d"])
def test_clean_text_replaces_lone_surrogates_with_encodable_text(text):
    cleaned = clean_text(text)
    cleaned.encode("utf-8")  # does not raise
    assert not any(0xD800 <= ord(ch) <= 0xDFFF for ch in cleaned)
    assert len(cleaned) == len(text)
    assert cleaned[0] == text[0] or 0xD800 <= ord(text[0]) <= 0xDFFF


def test_clean_text_returns_plain_ascii_as_is():
    text = "GET /api/v1/users/?page=2 " + "x" * 1000
    assert clean_text(text) is text


@pytest.mark.parametrize("text", ["café", "naïve 日本語", "emoji 😀 and 𝄞", "\u00a0\u2028"])
def test_clean_text_keeps_valid_non_ascii_text_unchanged(text):
    assert clean_text(text) == text


def test_clean_text_of_empty_text_is_empty():
    assert clean_text("") == ""


# -- environ strings (PEP 3333: bytes carried as latin-1) --------------------------------


@pytest.mark.parametrize(
    "value, text",
    [
        ("/caf\xc3\xa9", "/café"),
        ("/\xe6\x97\xa5\xe6\x9c\xac", "/日本"),
        ("/\xf0\x9f\x98\x80", "/😀"),
        ("/plain/ascii", "/plain/ascii"),
        ("", ""),
    ],
)
def test_wsgi_text_decodes_utf8_carried_as_latin1(value, text):
    assert wsgi_text(value) == text


@pytest.mark.parametrize(
    "value, text",
    [
        ("/\xff", "/\ufffd"),
        ("/caf\xe9", "/caf\ufffd"),  # Latin-1 text is not UTF-8
        ("/\xc3", "/\ufffd"),  # cut UTF-8 sequence
        ("/\xed\xa0\x80", "/\ufffd\ufffd\ufffd"),  # UTF-8 encoded surrogate
    ],
)
def test_wsgi_text_replaces_invalid_bytes_with_the_replacement_character(value, text):
    assert wsgi_text(value) == text


def test_wsgi_text_replaces_nul():
    assert wsgi_text("/a\x00b") == "/a\ufffdb"


def test_wsgi_text_keeps_text_a_server_already_decoded():
    assert wsgi_text("/日本") == "/日本"


# -- JSON-safe user data -----------------------------------------------------------------


@pytest.mark.parametrize(
    "value, expected",
    [(math.nan, "nan"), (math.inf, "inf"), (-math.inf, "-inf")],
)
def test_clean_json_turns_non_finite_floats_into_strings(value, expected):
    assert clean_json(value) == expected
    assert clean_json({"x": [value]}) == {"x": [expected]}


@pytest.mark.parametrize("value", [None, True, False, 0, -7, 2**40, 1.5, "text", ""])
def test_clean_json_keeps_json_scalars(value):
    assert clean_json(value) == value and type(clean_json(value)) is type(value)


def test_clean_json_turns_non_string_keys_into_strings():
    assert clean_json({1: "a", None: "b", 2.5: "c", False: "d", (1, 2): "e"}) == {
        "1": "a",
        "None": "b",
        "2.5": "c",
        "False": "d",
        "(1, 2)": "e",
    }


def test_clean_json_turns_tuples_and_sets_into_lists():
    assert clean_json((1, 2)) == [1, 2]
    assert clean_json({"s": {3}, "f": frozenset({4}), "t": ((5,),)}) == {
        "s": [3],
        "f": [4],
        "t": [[5]],
    }


def test_clean_json_turns_other_objects_into_their_str():
    class Money:
        def __str__(self):
            return "12.50 EUR"

    assert clean_json({"price": Money(), "when": datetime(2024, 1, 2, 3, 4, 5)}) == {
        "price": "12.50 EUR",
        "when": "2024-01-02 03:04:05",
    }


def test_clean_json_cleans_strings_in_keys_and_values():
    cleaned = clean_json({"k\x00": ["v\ud800"]})
    assert list(cleaned) == ["k\ufffd"]
    value = cleaned["k\ufffd"][0]
    assert value.startswith("v") and len(value) == 2 and "\ud800" not in value


def test_clean_json_survives_an_object_whose_str_raises():
    class Broken:
        def __str__(self):
            raise RuntimeError("nope")

    assert clean_json({"x": Broken()}) == {"x": "<unprintable>"}


def test_clean_json_result_always_serializes_strictly():
    value = {"a": [math.nan, {1: object()}, (math.inf,), {"b"}], "c": b"bytes"}
    json.dumps(clean_json(value), allow_nan=False)


def test_clean_json_bounds_deep_nesting():
    value = []
    for _ in range(200):
        value = [value]
    cleaned = clean_json(value)
    depth = 0
    while isinstance(cleaned, list) and cleaned:
        cleaned, depth = cleaned[0], depth + 1
    assert depth <= 40
    assert isinstance(cleaned, str)  # the rest is summarized as text
    json.dumps(clean_json(value), allow_nan=False)


def test_clean_json_bounds_a_self_referencing_structure():
    value: list = []
    value.append(value)
    json.dumps(clean_json(value), allow_nan=False)


def test_clean_json_bounds_very_deep_nesting():
    value: list = []
    for _ in range(5000):
        value = [value]
    json.dumps(clean_json(value), allow_nan=False)


def test_clean_json_survives_a_key_whose_str_raises():
    class BrokenKey:
        def __str__(self):
            raise RuntimeError("nope")

    json.dumps(clean_json({BrokenKey(): 1}), allow_nan=False)


def test_clean_json_makes_huge_integers_serializable():
    json.dumps(clean_json({"n": 10**5000}), allow_nan=False)


# -- header names and status codes -------------------------------------------------------


@pytest.mark.parametrize(
    "key, name",
    [
        ("HTTP_X_REQUEST_ID", "X-Request-Id"),
        ("HTTP_ACCEPT", "Accept"),
        ("HTTP_USER_AGENT", "User-Agent"),
        (SESSION_TOKEN_ENVIRON, "X-Otas-Agent-Session-Token"),
        ("CONTENT_TYPE", "Content-Type"),
        ("CONTENT_LENGTH", "Content-Length"),
    ],
)
def test_header_name_restores_the_http_spelling_of_environ_keys(key, name):
    assert header_name(key) == name


@pytest.mark.parametrize(
    "status, code",
    [
        ("200 OK", 200),
        ("201 Created", 201),
        ("404 Not Found", 404),
        ("500 Internal Server Error", 500),
        ("418 I'm a teapot", 418),
        ("204", 204),
    ],
)
def test_status_code_is_the_number_of_the_status_line(status, code):
    assert status_code(status) == code


@pytest.mark.parametrize(
    "status", [None, "", "OK", "garbage", "2OO OK", "-1 Negative", "1e3 Float", "abc 200"]
)
def test_status_code_is_500_when_there_is_no_usable_status(status):
    assert status_code(status) == 500


# -- keeping an event under Brain's size limit -------------------------------------------


def small_event(**overrides):
    event = {
        "project_id": PROJECT,
        "path": "/api/v1/users/",
        "method": "POST",
        "status_code": 200,
        "latency_ms": 1.5,
        "request_size_bytes": 10,
        "response_size_bytes": 10,
        "request_headers": json.dumps({"Accept": "*/*"}),
        "request_body": "{}",
        "query_params": json.dumps({"a": ["1"]}),
        "post_data": "{}",
        "response_headers": json.dumps({"Content-Type": "application/json"}),
        "response_body": "{}",
        "request_content_type": "application/json",
        "response_content_type": "application/json",
        "custom_properties": {},
        "error": "",
        "metadata": {"sdk": "otas-capture"},
    }
    event.update(overrides)
    return event


BIG = 3 * 1024 * 1024


def assert_fits_and_is_valid(payload: bytes) -> dict:
    assert len(payload) <= MAX_EVENT_BYTES
    decoded = json.loads(payload.decode("utf-8"))
    assert decoded["path"]
    for field in ("request_headers", "response_headers", "query_params", "post_data"):
        assert isinstance(json.loads(decoded[field]), dict), field
    return decoded


def test_the_size_limit_leaves_room_under_brains_limit():
    assert MAX_EVENT_BYTES < MAX_REQUEST_BYTES


def test_a_small_event_is_encoded_unchanged():
    event = small_event()
    payload = encode_event(dict(event, metadata=dict(event["metadata"])))
    assert json.loads(payload) == event
    assert "cut_to_fit" not in json.loads(payload)["metadata"]


@pytest.mark.parametrize("field", ["request_body", "response_body", "error"])
def test_a_huge_text_field_is_cut_to_fit_and_recorded(field):
    decoded = assert_fits_and_is_valid(encode_event(small_event(**{field: "x" * BIG})))
    assert field in decoded["metadata"]["cut_to_fit"]
    assert decoded[field] == "x" * len(decoded[field])  # a prefix of the original


def test_both_huge_bodies_are_cut_and_recorded():
    decoded = assert_fits_and_is_valid(
        encode_event(small_event(request_body="a" * BIG, response_body="b" * BIG))
    )
    assert {"request_body", "response_body"} <= set(decoded["metadata"]["cut_to_fit"])


def test_multibyte_bodies_are_cut_by_their_encoded_size():
    decoded = assert_fits_and_is_valid(
        encode_event(small_event(request_body="😀" * 700_000, response_body="é" * 1_200_000))
    )
    assert set(decoded["request_body"]) <= {"😀"}


def test_a_huge_path_is_cut_but_never_emptied():
    decoded = assert_fits_and_is_valid(encode_event(small_event(path="/" + "p" * BIG)))
    assert decoded["path"].startswith("/ppp")
    assert "path" in decoded["metadata"]["cut_to_fit"]


@pytest.mark.parametrize(
    "field", ["request_headers", "response_headers", "query_params", "post_data"]
)
def test_huge_json_text_fields_are_replaced_whole_and_stay_valid_json(field):
    huge = json.dumps({"k": ["v" * BIG]})
    decoded = assert_fits_and_is_valid(encode_event(small_event(**{field: huge})))
    assert json.loads(decoded[field]) == {}
    assert field in decoded["metadata"]["cut_to_fit"]


def test_huge_custom_properties_are_dropped_to_fit_and_recorded():
    decoded = assert_fits_and_is_valid(
        encode_event(small_event(custom_properties={"blob": "z" * BIG}))
    )
    assert decoded["custom_properties"] == {}
    assert "custom_properties" in decoded["metadata"]["cut_to_fit"]


def test_cutting_keeps_the_required_fields():
    decoded = assert_fits_and_is_valid(
        encode_event(
            small_event(request_body="a" * BIG, request_headers=json.dumps({"h": "v" * BIG}))
        )
    )
    for field, value in (
        ("project_id", PROJECT),
        ("method", "POST"),
        ("status_code", 200),
        ("latency_ms", 1.5),
    ):
        assert decoded[field] == value


def test_everything_huge_at_once_still_fits():
    huge_json = json.dumps({"k": ["v" * BIG]})
    event = small_event(
        path="/" + "p" * BIG,
        request_body="a" * BIG,
        response_body="b" * BIG,
        error="e" * BIG,
        request_headers=huge_json,
        response_headers=huge_json,
        query_params=huge_json,
        post_data=huge_json,
        custom_properties={"blob": "z" * BIG},
    )
    assert_fits_and_is_valid(encode_event(event))


# -- building an event from a captured exchange ------------------------------------------

# The contract's text fields, and the project id, which the event sends as text too.
TEXT_FIELDS = ("project_id", *CONTRACT_TEXT_FIELDS)
CONTRACT_FIELDS = (*TEXT_FIELDS, "status_code", "latency_ms", *SIZE_FIELDS, *JSON_OBJECT_FIELDS)


def exchange(
    path="/api/v1/users/",
    method="POST",
    query_string="",
    body=b"",
    content_type=None,
    headers=None,
    limit=4096,
    status="200 OK",
    response_headers=None,
    response_body=b'{"ok": true}',
    latency=0.0123,
) -> Exchange:
    environ = EnvironBuilder(
        path=path,
        method=method,
        query_string=query_string,
        headers={TOKEN_HEADER: TOKEN, **(headers or {})},
        data=body,
        content_type=content_type,
    ).get_environ()
    start = time.perf_counter()
    ex = Exchange(TOKEN, time.time(), start, environ, BodyBuffer(limit))
    ex.request_body.add(body)
    ex.status = status
    ex.response_headers = (
        [("Content-Type", "application/json")] if response_headers is None else response_headers
    )
    if response_body is not None:
        ex.response_body = BodyBuffer(limit)
        ex.response_body.add(response_body)
    ex.end = start + latency
    return ex


def build(ex: Exchange, **options) -> dict:
    payload = EventBuilder(Config.load(options, {})).build(ex, PROJECT)
    assert isinstance(payload, bytes)
    return json.loads(payload.decode("utf-8"))


def assert_contract_types(event: dict) -> None:
    assert set(CONTRACT_FIELDS) <= set(event)
    for field in TEXT_FIELDS:
        assert isinstance(event[field], str), field
    for field in ("request_size_bytes", "response_size_bytes"):
        assert type(event[field]) is int and event[field] >= 0, field
    assert type(event["status_code"]) is int and event["status_code"] >= 0
    assert isinstance(event["latency_ms"], (int, float)) and not isinstance(
        event["latency_ms"], bool
    )
    assert math.isfinite(event["latency_ms"]) and event["latency_ms"] >= 0
    assert isinstance(event["custom_properties"], dict)
    assert isinstance(event["metadata"], dict)
    assert event["path"]
    assert len(event["method"]) <= 20
    assert len(event["request_content_type"]) <= 255
    assert len(event["response_content_type"]) <= 255
    for field in ("request_headers", "response_headers", "query_params", "post_data"):
        assert isinstance(json.loads(event[field]), dict), field


def test_an_event_has_every_contract_field_with_the_contract_type():
    event = build(
        exchange(body=b'{"name": "bob"}', content_type="application/json", query_string="page=2")
    )
    assert_contract_types(event)
    assert event["project_id"] == PROJECT
    assert event["path"] == "/api/v1/users/"
    assert event["method"] == "POST"
    assert event["status_code"] == 200
    assert event["latency_ms"] == pytest.approx(12.3)
    assert event["request_size_bytes"] == len(b'{"name": "bob"}')
    assert event["response_size_bytes"] == len(b'{"ok": true}')
    assert event["request_body"] == '{"name": "bob"}'
    assert event["response_body"] == '{"ok": true}'
    assert event["request_content_type"] == "application/json"
    assert event["response_content_type"] == "application/json"
    assert event["error"] == ""
    assert event["custom_properties"] == {}


def test_an_event_of_an_app_that_raised_before_responding_still_has_every_field():
    ex = exchange(status=None, response_headers=[], response_body=None)
    ex.fail(ValueError("database is down"))
    event = build(ex)
    assert_contract_types(event)
    assert event["status_code"] == 500
    assert event["error"] == "ValueError: database is down"
    assert event["response_body"] == "" and event["response_size_bytes"] == 0
    assert json.loads(event["response_headers"]) == {}


def unsafe_characters(value) -> list:
    """NUL characters and lone surrogates anywhere in a decoded JSON value."""
    if isinstance(value, str):
        return [ch for ch in value if ch == "\x00" or 0xD800 <= ord(ch) <= 0xDFFF]
    if isinstance(value, dict):
        return sum((unsafe_characters(k) + unsafe_characters(v) for k, v in value.items()), [])
    if isinstance(value, list):
        return sum((unsafe_characters(v) for v in value), [])
    return []


def decode_deep(event: dict) -> dict:
    """The event with its JSON-text fields decoded too."""
    event = dict(event)
    for field in ("request_headers", "response_headers", "query_params", "post_data"):
        event[field] = json.loads(event[field])
    return event


def test_the_event_is_utf8_json_without_nul_or_surrogates():
    ex = exchange(
        body=b"text\x00with nul and bad \xff\xed\xa0\x80 bytes",
        content_type="text/plain",
        path="/caf%C3%A9%00%FF",
        query_string="q=%00%ED%A0%80&r=\xff",
        headers={"X-Note": "a\x00b"},
        response_headers=[("Content-Type", "text/plain"), ("X-Reply", "nul\x00")],
        response_body=b"\x00\xc3",
    )
    ex.annotate({"k\x00": "v\ud800"})
    payload = EventBuilder(Config.load({}, {})).build(ex, PROJECT)
    event = json.loads(payload.decode("utf-8"))  # strict UTF-8
    assert_contract_types(event)
    assert unsafe_characters(event) == []
    # Inside the JSON-text fields a NUL may remain as the 6-character escape \\u0000 (plain
    # text to Brain's database), but never a surrogate.
    assert [ch for ch in unsafe_characters(decode_deep(event)) if ch != "\x00"] == []


def test_a_form_body_with_nul_and_surrogate_escapes_gives_safe_text():
    body = b"password=x&a=%00&b=%ED%A0%80"
    event = build(exchange(body=body, content_type="application/x-www-form-urlencoded"))
    assert unsafe_characters(event) == []
    assert json.loads(event["post_data"])["b"] == ["\ufffd" * 3]


def test_a_json_body_with_a_nul_escape_stays_an_escape():
    body = b'{"password": "x", "a": "\\u0000"}'
    event = build(exchange(body=body, content_type="application/json"))
    assert unsafe_characters(event) == []
    assert json.loads(event["request_body"]) == {"password": REDACTED, "a": "\x00"}


@pytest.mark.parametrize("side", ["request", "response"])
def test_a_masked_json_body_with_a_lone_surrogate_escape_still_builds(side):
    body = b'{"password": "x", "a": "\\ud800"}'
    if side == "request":
        ex = exchange(body=body, content_type="application/json")
    else:
        ex = exchange(response_body=body)
    event = build(ex)
    assert unsafe_characters(event) == []
    body_json = json.loads(event[f"{side}_body"])
    assert body_json["password"] == REDACTED
    assert len(body_json["a"]) == 1 and unsafe_characters(body_json) == []


def test_the_path_is_decoded_as_utf8():
    assert build(exchange(path="/caf%C3%A9/"))["path"] == "/café/"


def test_the_path_includes_the_script_name():
    ex = exchange(path="/users/")
    ex.script_name = "/api"
    assert build(ex)["path"] == "/api/users/"


def test_an_empty_path_is_reported_as_root():
    ex = exchange()
    ex.path_info = ""
    assert build(ex)["path"] == "/"


def test_a_long_method_is_cut_to_twenty_characters():
    ex = exchange()
    ex.method = "X" * 50
    assert build(ex)["method"] == "X" * 20


def test_a_long_content_type_is_cut_to_255_characters():
    long_type = "application/json; " + "p=" + "v" * 400
    event = build(exchange(body=b"{}", content_type=long_type))
    assert event["request_content_type"] == long_type[:255]


def test_query_params_are_a_json_object_of_lists():
    event = build(exchange(query_string="page=2&tag=a&tag=b&empty=&q=caf%C3%A9"))
    assert json.loads(event["query_params"]) == {
        "page": ["2"],
        "tag": ["a", "b"],
        "empty": [""],
        "q": ["café"],
    }


def test_sensitive_query_params_are_masked():
    event = build(exchange(query_string="user=bob&api_key=k123&Access-Token=t456"))
    assert json.loads(event["query_params"]) == {
        "user": ["bob"],
        "api_key": [REDACTED],
        "Access-Token": [REDACTED],
    }
    assert "k123" not in json.dumps(event) and "t456" not in json.dumps(event)


def test_no_query_string_gives_an_empty_object():
    assert json.loads(build(exchange())["query_params"]) == {}


def test_a_form_body_is_parsed_into_post_data_and_masked_in_both_places():
    body = b"user=bob&password=hunter2&tag=a&tag=b"
    event = build(exchange(body=body, content_type="application/x-www-form-urlencoded"))
    assert json.loads(event["post_data"]) == {
        "user": ["bob"],
        "password": [REDACTED],
        "tag": ["a", "b"],
    }
    assert parse_qs(event["request_body"]) == {
        "user": ["bob"],
        "password": [REDACTED],
        "tag": ["a", "b"],
    }
    assert "hunter2" not in json.dumps(event)


def test_a_form_body_without_secrets_is_shipped_as_sent():
    body = b"user=bob&note=hello+world%21"
    event = build(exchange(body=body, content_type="application/x-www-form-urlencoded"))
    assert event["request_body"] == body.decode()
    assert json.loads(event["post_data"]) == {"user": ["bob"], "note": ["hello world!"]}


def test_a_body_that_is_not_a_form_gives_empty_post_data():
    event = build(exchange(body=b'{"a": 1}', content_type="application/json"))
    assert json.loads(event["post_data"]) == {}


def test_json_bodies_are_masked_on_both_sides():
    ex = exchange(
        body=b'{"user": "bob", "profile": [{"password": "hunter2"}]}',
        content_type="application/json",
        response_body=b'{"access_token": "tok-789", "expires": 3600}',
    )
    event = build(ex)
    assert json.loads(event["request_body"]) == {
        "user": "bob",
        "profile": [{"password": REDACTED}],
    }
    assert json.loads(event["response_body"]) == {"access_token": REDACTED, "expires": 3600}
    assert "hunter2" not in json.dumps(event) and "tok-789" not in json.dumps(event)


def test_a_json_body_without_content_type_is_still_masked():
    event = build(exchange(body=b'{"user": "bob", "password": "hunter2"}', content_type=None))
    assert "hunter2" not in json.dumps(event)


def test_user_sensitive_fields_are_masked_too():
    event = build(
        exchange(body=b'{"PIN": "1234"}', content_type="application/json"), sensitive_fields="pin"
    )
    assert json.loads(event["request_body"]) == {"PIN": REDACTED}


def test_a_json_body_cut_at_the_limit_is_still_masked_and_flagged():
    body = b'{"user": "bob", "password": "hunter2-very-long-secret"}'
    limit = body.index(b"hunter2") + 4
    event = build(exchange(body=body, content_type="application/json", limit=limit))
    assert "hunt" not in event["request_body"]
    assert REDACTED in event["request_body"]
    assert event["metadata"]["request_body_truncated"] is True
    assert event["request_size_bytes"] == len(body)


def test_truncation_is_flagged_in_metadata_for_each_side():
    ex = exchange(
        body=b"a" * 100,
        content_type="text/plain",
        limit=10,
        response_body=b"b" * 50,
        response_headers=[("Content-Type", "text/plain")],
    )
    event = build(ex)
    assert event["request_body"] == "a" * 10 and event["response_body"] == "b" * 10
    assert event["request_size_bytes"] == 100 and event["response_size_bytes"] == 50
    assert event["metadata"]["request_body_truncated"] is True
    assert event["metadata"]["response_body_truncated"] is True


def test_a_body_within_the_limit_is_not_flagged():
    event = build(exchange(body=b"hello", content_type="text/plain"))
    assert "request_body_truncated" not in event["metadata"]
    assert "response_body_truncated" not in event["metadata"]


def test_a_body_cut_inside_a_utf8_character_is_still_valid_text():
    body = "é".encode() * 10
    event = build(exchange(body=body, content_type="text/plain", limit=5))
    assert event["request_body"].startswith("éé")


@pytest.mark.parametrize(
    "content_type", ["image/png", "application/octet-stream", "multipart/form-data; boundary=x"]
)
def test_binary_request_bodies_are_omitted_with_a_note(content_type):
    event = build(exchange(body=b"\x89PNG\r\n\x1a\n\x00\x00", content_type=content_type))
    assert event["request_body"] == ""
    assert event["metadata"]["request_body_omitted"]
    assert event["request_size_bytes"] == 10
    assert json.loads(event["post_data"]) == {}


def test_binary_response_bodies_are_omitted_with_a_note():
    ex = exchange(
        response_headers=[("Content-Type", "application/pdf")], response_body=b"%PDF-1.7\x00\x01"
    )
    event = build(ex)
    assert event["response_body"] == ""
    assert event["metadata"]["response_body_omitted"]
    assert event["response_size_bytes"] == 10
    assert event["response_content_type"] == "application/pdf"


def test_a_body_without_content_type_holding_nul_bytes_is_omitted_as_binary():
    event = build(exchange(body=b"\x00\x01\x02binary", content_type=None))
    assert event["request_body"] == ""
    assert event["metadata"]["request_body_omitted"]


def test_a_body_not_captured_at_all_is_omitted_with_a_note():
    event = build(exchange(body=b"hello", content_type="text/plain", limit=0))
    assert event["request_body"] == "" and event["request_size_bytes"] == 5
    assert event["metadata"]["request_body_omitted"]


def test_an_empty_body_has_no_note():
    event = build(exchange(body=b"", response_body=b""))
    assert event["request_body"] == "" and event["response_body"] == ""
    assert not {"request_body_omitted", "response_body_omitted"} & set(event["metadata"])


def test_sensitive_request_headers_are_redacted_and_names_restored():
    ex = exchange(
        headers={"Authorization": "Bearer abc", "X-Request-Id": "r-1", "Cookie": "sid=1"},
        body=b"{}",
        content_type="application/json",
    )
    headers = json.loads(build(ex)["request_headers"])
    assert headers["Authorization"] == REDACTED
    assert headers["Cookie"] == REDACTED
    assert headers["X-Otas-Agent-Session-Token"] == REDACTED
    assert headers["X-Request-Id"] == "r-1"
    assert headers["Content-Type"] == "application/json"
    assert "Bearer abc" not in json.dumps(build(ex))
    assert TOKEN not in json.dumps(build(ex))


def test_sensitive_response_headers_are_redacted_and_repeats_joined():
    ex = exchange(
        response_headers=[
            ("Content-Type", "application/json"),
            ("Set-Cookie", "sid=secret"),
            ("Vary", "Accept"),
            ("Vary", "Origin"),
        ]
    )
    headers = json.loads(build(ex)["response_headers"])
    assert headers == {
        "Content-Type": "application/json",
        "Set-Cookie": REDACTED,
        "Vary": "Accept, Origin",
    }


@pytest.mark.parametrize(
    "status",
    [
        "400 Bad Request",
        "404 Not Found",
        "422 Unprocessable Entity",
        "500 Internal Server Error",
        "503 Service Unavailable",
    ],
)
def test_the_error_of_a_failed_request_is_its_status_line(status):
    event = build(exchange(status=status))
    assert event["status_code"] == int(status[:3])
    assert event["error"] == status


@pytest.mark.parametrize("status", ["200 OK", "201 Created", "204 No Content", "302 Found"])
def test_the_error_of_a_successful_request_is_empty(status):
    assert build(exchange(status=status))["error"] == ""


def test_an_exception_is_the_error_even_after_a_success_status():
    ex = exchange(status="200 OK")
    ex.fail(RuntimeError("stream broke"))
    event = build(ex)
    assert event["status_code"] == 200 and event["error"] == "RuntimeError: stream broke"


def test_the_exception_wins_over_the_status_line_as_error():
    ex = exchange(status="500 Internal Server Error")
    ex.fail(KeyError("user"))
    assert build(ex)["error"] == "KeyError: 'user'"


def test_metadata_records_the_sdk_and_when_the_request_started():
    ex = exchange()
    event = build(ex)
    metadata = event["metadata"]
    assert metadata["sdk"] == "otas-capture"
    assert metadata["sdk_version"] == otas_capture.__version__
    started = datetime.fromisoformat(metadata["started_at"])
    assert started.utcoffset() == timedelta(0)
    assert abs(started.timestamp() - ex.started_at) < 1e-3


def test_metadata_records_time_to_first_byte_when_known():
    ex = exchange()
    ex.first_byte = ex.start + 0.004
    assert build(ex)["metadata"]["time_to_first_byte_ms"] == pytest.approx(4.0)


def test_custom_properties_are_made_json_safe():
    ex = exchange()
    ex.annotate({"tenant": "acme", "score": math.nan, 7: (1, 2)})
    assert build(ex)["custom_properties"] == {"tenant": "acme", "score": "nan", "7": [1, 2]}


def test_latency_is_never_negative():
    ex = exchange()
    ex.end = ex.start - 1
    assert build(ex)["latency_ms"] == 0


def test_a_missing_end_means_zero_latency():
    ex = exchange()
    ex.end = None
    assert build(ex)["latency_ms"] == 0


def test_an_event_with_huge_bodies_fits_and_says_what_was_cut():
    # Two bodies at the largest capture limit, mostly characters JSON must escape.
    body = b"\x01" * (1024 * 1024)
    ex = exchange(
        body=body,
        content_type="text/plain",
        limit=1024 * 1024,
        response_headers=[("Content-Type", "text/plain")],
        response_body=body,
    )
    payload = EventBuilder(Config.load({"max_body_bytes": 1024 * 1024}, {})).build(ex, PROJECT)
    assert len(payload) <= MAX_EVENT_BYTES
    event = json.loads(payload)
    assert_contract_types(event)
    assert {"request_body", "response_body"} <= set(event["metadata"]["cut_to_fit"])
    assert event["request_size_bytes"] == event["response_size_bytes"] == 1024 * 1024


def test_a_deeply_nested_password_in_a_json_body_is_never_shipped():
    body = '{"password": "s3cret-deep"}'
    for _ in range(100):
        body = f'{{"a": {body}}}'
    event = build(exchange(body=body.encode(), content_type="application/json", limit=1024 * 1024))
    assert "s3cret-deep" not in json.dumps(event)


# -- masking by meaning, in a built event (issue 8) --------------------------------------

LEAKY_NAMES = [
    "new_password",
    "user_password",
    "newPassword",
    "currentPassword",
    "password_confirmation",
    "accessToken",
    "refreshToken",
    "idToken",
    "auth_token",
    "sessionToken",
    "clientSecret",
    "cardNumber",
    "private_key",
    "secret_key",
    "cvc",
    "otp",
]
USEFUL_NAMES = ["max_tokens", "prompt_tokens", "total_tokens", "token_type", "keyboard", "author"]


@pytest.mark.parametrize("name", LEAKY_NAMES)
def test_credential_names_are_masked_in_json_forms_and_query_strings(name):
    secret = f"leak-{name}-value"
    json_event = build(
        exchange(
            body=json.dumps({"data": {name: secret}}).encode(),
            content_type="application/json",
            query_string=f"{name}={secret}x",
        )
    )
    form_event = build(
        exchange(
            body=f"a=1&{name}={secret}".encode(), content_type="application/x-www-form-urlencoded"
        )
    )
    assert json.loads(json_event["request_body"]) == {"data": {name: REDACTED}}
    assert json.loads(json_event["query_params"]) == {name: [REDACTED]}
    assert json.loads(form_event["post_data"]) == {"a": ["1"], name: [REDACTED]}
    assert secret not in json.dumps(json_event) + json.dumps(form_event)


def test_names_that_are_not_credentials_keep_their_values():
    body = {name: f"{name}-kept" for name in USEFUL_NAMES}
    event = build(exchange(body=json.dumps(body).encode(), content_type="application/json"))
    assert json.loads(event["request_body"]) == body


@pytest.mark.parametrize("key", ["password[]", "user[password]", "user[password][]"])
def test_bracketed_form_and_query_keys_are_masked(key):
    event = build(
        exchange(
            query_string=f"{key}=q-secret-1",
            body=f"{key}=f-secret-1".encode(),
            content_type="application/x-www-form-urlencoded",
        )
    )
    text = json.dumps(event)
    assert "q-secret-1" not in text and "f-secret-1" not in text


def test_a_form_separated_by_semicolons_is_masked():
    event = build(
        exchange(
            body=b"user=bob;password=hunter22", content_type="application/x-www-form-urlencoded"
        )
    )
    assert json.loads(event["post_data"]) == {"user": ["bob"], "password": [REDACTED]}
    assert "hunter22" not in json.dumps(event)


def test_a_form_posted_without_a_content_type_is_parsed_and_masked():
    event = build(exchange(body=b"user=bob&password=hunter22", content_type=None))
    assert json.loads(event["post_data"]) == {"user": ["bob"], "password": [REDACTED]}
    assert event["request_body"] == f"user=bob&password={REDACTED}"


@pytest.mark.parametrize(
    "name",
    [
        "X-Auth-Token",
        "X-Access-Token",
        "Api-Key",
        "X-Csrf-Token",
        "X-Amz-Security-Token",
        "X-Goog-Api-Key",
        "Proxy-Authorization",
    ],
)
def test_credential_request_headers_are_redacted(name):
    event = build(exchange(headers={name: "hdr-secret-123"}))
    assert json.loads(event["request_headers"])[name] == REDACTED
    assert "hdr-secret-123" not in json.dumps(event)


@pytest.mark.parametrize("mark", ["?", "#"])
def test_tokens_in_referer_and_location_urls_are_masked(mark):
    url = f"https://app.example/cb{mark}access_token=url-secret-9&state=s1"
    ex = exchange(
        headers={"Referer": url}, response_headers=[("Location", url)], status="302 Found"
    )
    event = build(ex)
    assert "url-secret-9" not in json.dumps(event)
    assert "state=s1" in json.loads(event["request_headers"])["Referer"]
    assert "state=s1" in json.loads(event["response_headers"])["Location"]


def test_json_cut_at_the_limit_is_masked_to_the_real_end_of_each_value():
    body = json.dumps(
        {
            "user": "bob",
            "credentials": {"user": "bob", "password": "nested-secret", "otp": "123456"},
            "after": "kept",
            "newPassword": "cut-secret-" + "x" * 100,
        }
    ).encode()
    limit = body.index(b"cut-secret-") + 20
    event = build(exchange(body=body, content_type="application/json", limit=limit))
    text = event["request_body"]
    assert "nested-secret" not in text and "cut-secret" not in text and "123456" not in text
    assert '"after": "kept"' in text
    assert text.endswith(f'"newPassword": "{REDACTED}"')


# -- scrubbing what the SDK knows is secret, everywhere ----------------------------------


def test_the_session_token_echoed_in_a_response_is_scrubbed():
    ex = exchange(response_body=json.dumps({"headers": {TOKEN_HEADER: TOKEN}}).encode())
    assert TOKEN not in json.dumps(build(ex))


def test_the_sdk_key_dumped_by_an_endpoint_is_scrubbed():
    key = "otas_abcd_efghijklmnop"
    ex = exchange(
        response_body=json.dumps({"config": {"OTAS_SDK_KEY": key}}).encode(),
        response_headers=[("Content-Type", "application/json"), ("X-Debug", f"k={key}")],
    )
    ex.fail(RuntimeError(f"cannot reach OTAS with {key}"))
    event = build(ex, sdk_key=key)
    assert key not in json.dumps(event)
    assert REDACTED in event["error"]


def test_a_masked_value_quoted_in_an_exception_and_echoed_back_is_scrubbed():
    ex = exchange(
        body=b'{"user": "bob", "newPassword": "tooShort1!"}',
        content_type="application/json",
        response_body=b'{"detail": "password tooShort1! is too weak"}',
        status="422 Unprocessable Entity",
    )
    ex.fail(ValueError("invalid value 'tooShort1!' for field newPassword"))
    event = build(ex)
    assert "tooShort1!" not in json.dumps(event)
    assert event["error"] == f"ValueError: invalid value '{REDACTED}' for field newPassword"


def test_redacted_header_values_are_scrubbed_from_bodies_properties_and_query():
    ex = exchange(
        headers={"Authorization": "Bearer bearer-secret-77", "Cookie": "sid=cookie-secret-88"},
        query_string="echo=bearer-secret-77",
        response_body=b'{"you_sent": "Bearer bearer-secret-77", "c": "cookie-secret-88"}',
    )
    ex.annotate({"debug": "auth was bearer-secret-77"})
    ex.add_metadata(note="cookie-secret-88")
    event = build(ex)
    text = json.dumps(event)
    assert "bearer-secret-77" not in text and "cookie-secret-88" not in text
    assert event["custom_properties"] == {"debug": f"auth was {REDACTED}"}


def test_a_secret_in_the_path_is_scrubbed():
    ex = exchange(path="/reset;token=path-secret-1/next")
    event = build(ex)
    assert "path-secret-1" not in json.dumps(event)


def test_a_secret_percent_encoded_in_a_form_is_scrubbed_from_the_json_response():
    ex = exchange(
        body=b"password=p%40ss+word%21",
        content_type="application/x-www-form-urlencoded",
        response_body=b'{"echo": "p@ss word!"}',
    )
    assert "p@ss word!" not in json.dumps(build(ex))


# -- before_send -------------------------------------------------------------------------


def build_with(before_send, ex=None):
    ex = ex if ex is not None else exchange()
    return EventBuilder(Config.load({"before_send": before_send}, {})).build(ex, PROJECT)


def test_before_send_sees_the_finished_event_and_its_edits_are_shipped():
    seen = {}

    def before_send(event):
        seen.update(event)
        event["custom_properties"]["reviewed"] = True
        event["response_body"] = ""
        return event

    ex = exchange(body=b'{"password": "hunter22"}', content_type="application/json")
    event = json.loads(build_with(before_send, ex))
    assert json.loads(seen["request_body"]) == {"password": REDACTED}
    assert seen["metadata"]["event_id"] == event["metadata"]["event_id"]
    assert event["custom_properties"] == {"reviewed": True}
    assert event["response_body"] == ""


def test_before_send_returning_none_skips_the_event():
    with pytest.raises(EventRefused) as refused:
        build_with(lambda event: None)
    assert (refused.value.kind, refused.value.reason) == ("skipped", "before_send")


@pytest.mark.parametrize("result", [RuntimeError("boom"), "not a dict", ["a"]])
def test_before_send_failing_drops_the_event(result):
    def before_send(event):
        if isinstance(result, Exception):
            raise result
        return result

    with pytest.raises(EventRefused) as refused:
        build_with(before_send)
    assert (refused.value.kind, refused.value.reason) == ("dropped", "before_send_error")
    assert "boom" not in str(refused.value)


def _answer(environ, start_response):
    start_response("200 OK", [("Content-Type", "application/json")])
    return [b'{"ok": true}']


@pytest.mark.parametrize(
    "before_send, counted, warned",
    [
        (lambda event: None, ("skipped", "before_send"), False),  # a filter, on purpose
        (lambda event: 1 / 0, ("dropped", "before_send_error"), True),  # a bug
    ],
    ids=["filters", "raises"],
)
def test_a_filtering_before_send_is_counted_and_only_a_raising_one_is_warned_about(
    make_middleware, collector, agent, caplog, before_send, counted, warned
):
    from werkzeug.test import Client

    middleware = make_middleware(_answer, before_send=before_send)
    client = Client(middleware)
    with caplog.at_level("DEBUG", logger="otas_capture"):
        for _ in range(3):
            client.get("/api/filtered", headers=agent).close()
        assert middleware.flush(timeout=5)
    kind, reason = counted
    assert middleware.stats()["reasons"][kind] == {reason: 3}
    warnings = [r for r in caplog.records if r.levelname == "WARNING" and reason in r.message]
    assert bool(warnings) == warned, [r.message for r in caplog.records]


def test_before_send_given_as_a_dotted_path_in_the_environment():
    config = Config.load({}, {"OTAS_BEFORE_SEND": "tests.test_event:drop_health_checks"})
    builder = EventBuilder(config)
    with pytest.raises(EventRefused):
        builder.build(exchange(path="/health"), PROJECT)
    assert json.loads(builder.build(exchange(path="/api"), PROJECT))["path"] == "/api"


def drop_health_checks(event):
    return None if event["path"] == "/health" else event


def test_before_send_cannot_make_the_event_unstorable():
    def vandal(event):
        del event["path"]
        del event["project_id"]
        event["method"] = "X" * 100
        event["status_code"] = "99999999999999999999"
        event["latency_ms"] = math.nan
        event["request_size_bytes"] = -5
        event["response_size_bytes"] = True
        event["request_headers"] = {"A": "b"}
        event["post_data"] = "password=not-json"
        event["query_params"] = None
        event["error"] = False
        event["request_body"] = "nul\x00 and \ud800"
        event["custom_properties"] = ["not", "an", "object"]
        event["metadata"] = {"n": math.inf}
        event["request_content_type"] = "t" * 1000
        event["unknown_field"] = 1
        return event

    payload = build_with(vandal)
    event = json.loads(payload.decode("utf-8"))
    assert_contract_types(event)
    assert event["path"] == "/api/v1/users/" and event["project_id"] == PROJECT
    assert event["status_code"] == 200 and event["latency_ms"] >= 0
    assert event["request_size_bytes"] == 0 and event["response_size_bytes"] == 12
    assert json.loads(event["request_headers"]) == {"A": "b"}
    assert event["query_params"] == event["post_data"] == "{}"
    assert event["error"] == "False"
    assert "\x00" not in event["request_body"]
    assert event["custom_properties"] == {}
    assert event["metadata"]["n"] == "inf"
    uuid.UUID(event["metadata"]["event_id"])
    assert "unknown_field" not in event


def test_before_send_cannot_remove_the_event_id_in_place():
    def forget(event):
        event["metadata"].clear()
        return event

    uuid.UUID(json.loads(build_with(forget))["metadata"]["event_id"])


def test_before_send_cannot_make_the_path_too_long():
    def lengthen(event):
        event["path"] = "/" + "p" * 5000
        return event

    event = json.loads(build_with(lengthen))
    assert len(event["path"].encode()) == PATH_LIMIT
    assert event["metadata"]["path_truncated"] is True


# -- status codes Brain can store --------------------------------------------------------


@pytest.mark.parametrize(
    "status", ["99999999999999999999 Huge", "42 Odd", "1000 Big", "099 Low", "-1 Neg", "x Y", ""]
)
def test_an_unusual_status_is_recorded_in_metadata_not_shipped(status):
    event = build(exchange(status=status))
    assert event["status_code"] == 500
    assert event["metadata"]["status_line"] == status


@pytest.mark.parametrize("status, code", [("600 Custom", 600), ("999 Max", 999), ("100 Go", 100)])
def test_any_three_digit_status_is_shipped_as_is(status, code):
    event = build(exchange(status=status))
    assert event["status_code"] == code and "status_line" not in event["metadata"]


def test_no_status_because_the_app_raised_is_500_without_a_note():
    ex = exchange()
    ex.status = None
    ex.fail(RuntimeError("boom"))
    event = build(ex)
    assert event["status_code"] == 500 and "status_line" not in event["metadata"]


# -- the path within Brain's index (issue 5) ---------------------------------------------


def test_a_long_path_is_cut_to_the_limit_with_its_length_and_hash_in_metadata():
    path = "/api/" + "a" * 3006
    event = build(exchange(path=path))
    assert event["path"] == path[:PATH_LIMIT]
    assert event["metadata"]["path_truncated"] is True
    assert event["metadata"]["path_bytes"] == len(path)
    assert event["metadata"]["path_sha256"] == hashlib.sha256(path.encode()).hexdigest()


def test_a_long_path_is_never_cut_inside_a_character():
    path = "/" + "é" * 2000  # 4,001 bytes
    event = build(exchange(path=path))
    cut = event["path"].encode()
    assert len(cut) <= PATH_LIMIT and len(cut) >= PATH_LIMIT - 1
    assert path.startswith(event["path"])


def test_a_path_at_the_limit_is_not_cut():
    path = "/" + "p" * (PATH_LIMIT - 1)
    event = build(exchange(path=path))
    assert event["path"] == path and "path_truncated" not in event["metadata"]


# -- one id per event (issue 7) ----------------------------------------------------------


def test_every_event_has_its_own_uuid4_event_id():
    ids = {build(exchange())["metadata"]["event_id"] for _ in range(5)}
    assert len(ids) == 5
    assert all(uuid.UUID(i).version == 4 for i in ids)


def test_an_event_id_given_by_the_capture_is_kept():
    ex = exchange()
    given = str(uuid.uuid4())
    ex.add_metadata(event_id=given)
    assert build(ex)["metadata"]["event_id"] == given


# -- annotations that repeat references or cycle (issue 7) -------------------------------


def test_annotations_repeating_references_are_bounded_and_flagged():
    shared: object = "leaf"
    for _ in range(40):  # 2**40 leaves when expanded
        shared = [shared, shared]
    ex = exchange()
    ex.annotate({"tree": shared, "tenant": "acme"})
    event = build(ex)
    assert event["metadata"]["custom_properties_truncated"] is True
    assert len(json.dumps(event["custom_properties"])) < 200_000


def test_annotations_with_cycles_are_serialised():
    cyclic: dict = {"name": "loop"}
    cyclic["self"] = cyclic
    items: list = [1]
    items.append(items)
    ex = exchange()
    ex.annotate({"d": cyclic, "l": items})
    event = build(ex)
    assert event["custom_properties"] == {
        "d": {"name": "loop", "self": "<cycle>"},
        "l": [1, "<cycle>"],
    }


def test_a_huge_annotation_string_is_cut_and_flagged():
    ex = exchange()
    ex.annotate({"blob": "z" * 1_000_000})
    event = build(ex)
    assert len(event["custom_properties"]["blob"]) < 100_000
    assert event["metadata"]["custom_properties_truncated"] is True


def test_shared_references_that_are_not_cycles_are_kept_whole():
    shared = {"k": "v"}
    ex = exchange()
    ex.annotate({"a": shared, "b": shared})
    assert build(ex)["custom_properties"] == {"a": {"k": "v"}, "b": {"k": "v"}}


def test_a_captured_multipart_body_has_its_fields_masked_and_listed():
    body = (
        b"--b1\r\n"
        b'Content-Disposition: form-data; name="user"\r\n\r\n'
        b"bob\r\n"
        b"--b1\r\n"
        b'Content-Disposition: form-data; name="user[password]"\r\n\r\n'
        b"multi-secret-1\r\n"
        b"--b1--\r\n"
    )
    event = build(exchange(body=body, content_type="multipart/form-data; boundary=b1"))
    assert "multi-secret-1" not in json.dumps(event)
    assert json.loads(event["post_data"]) == {"user": ["bob"], "user[password]": [REDACTED]}
    assert event["request_body"].count("--b1") == 3


def test_a_python_repr_quoted_in_an_exception_is_masked():
    ex = exchange()
    ex.fail(ValueError("invalid input {'user': 'bob', 'password': 'repr-secret-1'}"))
    event = build(ex)
    assert "repr-secret-1" not in json.dumps(event)
    assert (
        event["error"] == f"ValueError: invalid input {{'user': 'bob', 'password': '{REDACTED}'}}"
    )


def test_graphql_arguments_inside_a_json_body_are_masked():
    query = 'mutation { login(user: "bob", password: "gql-secret-1") { token } }'
    body = json.dumps({"query": query, "variables": {"newPassword": "gql-secret-2"}}).encode()
    event = build(exchange(body=body, content_type="application/json"))
    text = json.dumps(event)
    assert "gql-secret-1" not in text and "gql-secret-2" not in text
    assert "{ token }" in json.loads(event["request_body"])["query"]


def test_yaml_like_text_bodies_are_masked():
    body = b"user: bob\napi_key: yaml-secret-1\nmax_tokens: 5\n"
    event = build(exchange(body=body, content_type="application/yaml"))
    assert event["request_body"] == f"user: bob\napi_key: {REDACTED}\nmax_tokens: 5\n"


def test_annotations_are_masked_by_the_rule_too():
    ex = exchange()
    ex.annotate({"tenant": "acme", "stripe": {"secret_key": "sk-annot-1"}})
    event = build(ex)
    assert event["custom_properties"] == {"tenant": "acme", "stripe": {"secret_key": REDACTED}}


def test_an_xml_body_has_its_credential_elements_masked():
    body = b"<login><user>bob</user><password>xml-secret-1</password></login>"
    event = build(exchange(body=body, content_type="application/xml"))
    assert (
        event["request_body"] == f"<login><user>bob</user><password>{REDACTED}</password></login>"
    )


# -- JSON text ----------------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None, database=None)
@given(JSON_VALUES)
def test_the_shared_json_encoders_write_what_json_dumps_means(value):
    # Equal as parsed JSON: with orjson installed the spacing differs (see jsoncodec).
    assert json.loads(safe_module.text_json(value)) == value
    assert json.loads(limits_module.dumps(value)) == value


@pytest.mark.parametrize("number", [math.nan, math.inf, -math.inf])
def test_the_event_encoder_refuses_what_json_cannot_carry_and_the_text_encoder_writes_it(number):
    assert safe_module.text_json({"x": number}) == json.dumps({"x": number}, ensure_ascii=False)
    with pytest.raises(ValueError):
        limits_module.dumps({"x": number})


# -- headers seen before -----------------------------------------------------------------


def test_a_redacted_header_is_redacted_and_scrubbed_in_every_event_of_a_builder():
    # Headers that pass unchanged are remembered between events; a secret one never is:
    # every event redacts it and scrubs its value from the other fields.
    builder = EventBuilder(Config.load({}, {}))
    for _ in range(3):
        ex = exchange(
            headers={"Authorization": "Bearer s3cret-value-1", "User-Agent": "agent/1"},
            response_body=b'{"echo": "s3cret-value-1"}',
        )
        event = json.loads(builder.build(ex, PROJECT))
        headers = json.loads(event["request_headers"])
        assert headers["Authorization"] == REDACTED
        assert headers["User-Agent"] == "agent/1"
        assert "s3cret-value-1" not in event["response_body"]


def test_a_header_holding_a_secret_is_masked_in_every_event_of_a_builder():
    builder = EventBuilder(Config.load({}, {}))
    for _ in range(3):
        ex = exchange(headers={"Referer": "https://app/cb?access_token=abcdef123456"})
        referer = json.loads(json.loads(builder.build(ex, PROJECT))["request_headers"])["Referer"]
        assert "abcdef123456" not in referer


def test_a_response_header_pair_that_cannot_be_remembered_still_ships():
    builder = EventBuilder(Config.load({}, {}))
    for _ in range(2):
        ex = exchange(response_headers=[["Content-Type", "application/json"], ("X-N", 7)])
        headers = json.loads(json.loads(builder.build(ex, PROJECT))["response_headers"])
        assert headers == {"Content-Type": "application/json", "X-N": "7"}


def test_remembered_headers_stay_bounded():
    builder = EventBuilder(Config.load({}, {}))
    for n in range(3000):
        builder.build(exchange(headers={"X-Request-Id": f"r-{n}"}), PROJECT)
    assert len(builder._request_headers._seen) <= 1024


# -- bodies of a route that held a credential are walked without the pre-check ----------


def test_a_route_that_held_a_credential_masks_the_same_as_one_that_did_not():
    builder = EventBuilder(Config.load({}, {}))
    secret = b'{"user": "ann", "password": "route-secret-1"}'
    clean = b'{"user": "ann", "note": "nothing to hide here"}'
    events = [
        json.loads(
            builder.build(exchange(path="/login", body=b, content_type="application/json"), PROJECT)
        )
        for b in (secret, clean, secret, clean, clean)
    ]
    for event, body in zip(events, (secret, clean, secret, clean, clean)):
        if body is secret:
            assert json.loads(event["request_body"]) == {"user": "ann", "password": REDACTED}
            assert "route-secret-1" not in json.dumps(event)
        else:
            assert event["request_body"] == clean.decode()  # shipped as sent, not re-encoded


def test_the_body_of_a_route_whose_last_body_held_a_credential_skips_the_pre_check():
    builder = EventBuilder(Config.load({}, {}))
    checked: list[str] = []
    may_contain = builder.rule.may_contain

    def counting(text: str) -> bool:
        checked.append(text)
        return may_contain(text)

    builder.rule.may_contain = counting
    body = b'{"password": "route-secret-2"}'

    def request_body_checks(path: str) -> int:
        checked.clear()
        ex = exchange(path=path, body=body, content_type="application/json", response_body=None)
        builder.build(ex, PROJECT)
        return sum(text == body.decode() for text in checked)

    assert request_body_checks("/reset") == 1  # nothing known yet: pre-checked
    assert request_body_checks("/reset") == 0  # the last one held a credential
    assert request_body_checks("/other") == 1  # another route: known apart
