"""Specification of how secrets are kept out of events: headers, pairs, JSON and raw text."""

from __future__ import annotations

import copy
import json

import pytest

from otas_capture.config import BUILTIN_SENSITIVE_FIELDS, BUILTIN_SENSITIVE_HEADERS
from otas_capture.redaction import (
    REDACTED,
    TextMasker,
    mask_json,
    mask_pairs,
    normalize_name,
    redact_headers,
)

FIELDS = BUILTIN_SENSITIVE_FIELDS | {"security_answer"}


def test_the_redaction_marker():
    assert REDACTED == "[REDACTED]"


# -- names -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, normal",
    [
        ("Password", "password"),
        ("API-KEY", "api_key"),
        ("api_key", "api_key"),
        (" Access-Token ", "access_token"),
    ],
)
def test_field_names_match_in_any_case_and_with_dash_or_underscore(name, normal):
    assert normalize_name(name) == normal


# -- headers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "Authorization",
        "authorization",
        "AUTHORIZATION",
        "Cookie",
        "Set-Cookie",
        "X-OTAS-SDK-KEY",
        "X-Otas-Agent-Session-Token",
        "x-api-key",
        "Proxy-Authorization",
    ],
)
def test_sensitive_headers_are_redacted_in_any_case(name):
    assert redact_headers([(name, "secret value")], BUILTIN_SENSITIVE_HEADERS) == [(name, REDACTED)]


def test_other_headers_keep_their_name_value_and_order():
    headers = [
        ("Content-Type", "application/json"),
        ("Authorization", "Bearer t"),
        ("X-Request-Id", "r-1"),
        ("Accept", "*/*"),
    ]
    assert redact_headers(headers, BUILTIN_SENSITIVE_HEADERS) == [
        ("Content-Type", "application/json"),
        ("Authorization", REDACTED),
        ("X-Request-Id", "r-1"),
        ("Accept", "*/*"),
    ]


def test_repeated_sensitive_headers_are_each_redacted():
    headers = [("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")]
    assert redact_headers(headers, BUILTIN_SENSITIVE_HEADERS) == [
        ("Set-Cookie", REDACTED),
        ("Set-Cookie", REDACTED),
    ]


def test_user_sensitive_headers_are_redacted_too():
    sensitive = BUILTIN_SENSITIVE_HEADERS | {"x-tenant-secret"}
    assert redact_headers([("X-Tenant-Secret", "s")], sensitive) == [("X-Tenant-Secret", REDACTED)]


def test_a_header_that_merely_contains_a_sensitive_name_is_kept():
    headers = [("X-Authorization-Hint", "bearer"), ("Cookie-Policy", "strict")]
    assert redact_headers(headers, BUILTIN_SENSITIVE_HEADERS) == headers


# -- pairs (forms and query strings) -----------------------------------------------------


def test_mask_pairs_masks_sensitive_keys_and_says_so():
    pairs = [("user", "bob"), ("password", "hunter2"), ("next", "/home")]
    assert mask_pairs(pairs, FIELDS) == (
        [("user", "bob"), ("password", REDACTED), ("next", "/home")],
        True,
    )


@pytest.mark.parametrize(
    "key", ["PASSWORD", "Password", "api-key", "API_KEY", "Access-Token", "security-answer"]
)
def test_mask_pairs_matches_keys_in_any_case_and_dash_or_underscore(key):
    masked, changed = mask_pairs([(key, "s3cret")], FIELDS)
    assert masked == [(key, REDACTED)] and changed is True


def test_mask_pairs_masks_every_value_of_a_repeated_key():
    masked, _ = mask_pairs([("token", "a"), ("token", "b")], FIELDS)
    assert masked == [("token", REDACTED), ("token", REDACTED)]


def test_mask_pairs_leaves_other_pairs_identical_and_reports_no_change():
    pairs = [("user", "bob"), ("passwords_hint", "x"), ("tokenizer", "bpe"), ("", "")]
    masked, changed = mask_pairs(pairs, FIELDS)
    assert masked == pairs and changed is False


def test_mask_pairs_does_not_modify_its_input():
    pairs = [("password", "hunter2")]
    mask_pairs(pairs, FIELDS)
    assert pairs == [("password", "hunter2")]


# -- parsed JSON -------------------------------------------------------------------------


def test_mask_json_masks_a_top_level_key():
    assert mask_json({"user": "bob", "password": "hunter2"}, FIELDS) == (
        {"user": "bob", "password": REDACTED},
        True,
    )


def test_mask_json_masks_at_any_depth_including_lists_of_dicts():
    document = {
        "data": {
            "users": [
                {"name": "a", "credentials": {"password": "p1", "api_key": "k1"}},
                {"name": "b", "tokens": [{"refresh_token": "r1"}, {"kind": "x"}]},
            ]
        },
        "items": [[{"secret": 1}], "plain", 3],
    }
    masked, changed = mask_json(document, FIELDS)
    assert changed is True
    assert masked == {
        "data": {
            "users": [
                {"name": "a", "credentials": {"password": REDACTED, "api_key": REDACTED}},
                {"name": "b", "tokens": [{"refresh_token": REDACTED}, {"kind": "x"}]},
            ]
        },
        "items": [[{"secret": REDACTED}], "plain", 3],
    }


@pytest.mark.parametrize(
    "key", ["Password", "PASSWORD", "Api-Key", "API_KEY", "apiKey", "Client-Secret", "CARD_NUMBER"]
)
def test_mask_json_matches_keys_in_any_case_and_dash_or_underscore(key):
    masked, changed = mask_json({key: "s3cret"}, FIELDS)
    assert masked == {key: REDACTED} and changed is True


@pytest.mark.parametrize("value", [{"nested": "object"}, ["a", "list"], 1234, None, True])
def test_mask_json_masks_the_whole_value_of_a_sensitive_key_whatever_its_type(value):
    assert mask_json({"token": value}, FIELDS) == ({"token": REDACTED}, True)


def test_mask_json_leaves_a_document_without_secrets_identical():
    document = {
        "user": "bob",
        "n": 1.5,
        "ok": True,
        "none": None,
        "list": [{"name": "x"}, [1, 2]],
        "tokenizer": "bpe",
    }
    original = copy.deepcopy(document)
    masked, changed = mask_json(document, FIELDS)
    assert changed is False
    assert masked == original
    assert json.dumps(masked) == json.dumps(original)  # key order too


@pytest.mark.parametrize("value", ["text", 42, 1.5, None, True, []])
def test_mask_json_leaves_scalars_and_empty_containers_alone(value):
    assert mask_json(value, FIELDS) == (value, False)


def test_mask_json_returns_a_copy_and_leaves_its_input_alone():
    document = {"a": [{"password": "hunter2"}]}
    masked, _ = mask_json(document, FIELDS)
    assert document == {"a": [{"password": "hunter2"}]}
    assert masked == {"a": [{"password": REDACTED}]}


def test_mask_json_sensitive_key_inside_a_list_at_the_top():
    assert mask_json([{"password": "a"}, {"user": "b"}], FIELDS) == (
        [{"password": REDACTED}, {"user": "b"}],
        True,
    )


def test_mask_json_never_lets_a_deeply_nested_secret_through():
    document = {"password": "s3cret-deep"}
    for _ in range(100):
        document = {"a": [document]}
    masked, changed = mask_json(document, FIELDS)
    assert "s3cret-deep" not in json.dumps(masked)
    assert changed is True


# -- JSON-like text that could not be parsed ---------------------------------------------


@pytest.fixture
def masker() -> TextMasker:
    return TextMasker(FIELDS)


@pytest.mark.parametrize(
    "text, expected",
    [
        ('{"password": "x"}', '{"password": "[REDACTED]"}'),
        ('{"password":"hunter2","user":"bob"}', '{"password":"[REDACTED]","user":"bob"}'),
        ('{"cvv": 123, "n": 4}', '{"cvv": "[REDACTED]", "n": 4}'),
        ('{"cvv": -1.5e3}', '{"cvv": "[REDACTED]"}'),
        ('{"token" :\n  "abc"}', '{"token" :\n  "[REDACTED]"}'),
        (
            '[{"secret": true}, {"secret": null}]',
            '[{"secret": "[REDACTED]"}, {"secret": "[REDACTED]"}]',
        ),
    ],
)
def test_text_masker_masks_string_and_scalar_values(masker, text, expected):
    assert masker.mask(text) == (expected, True)


def test_text_masker_masks_a_string_with_escaped_quotes_entirely(masker):
    text = r'{"password": "a\"b\\\"c", "user": "bob"}'
    assert masker.mask(text) == ('{"password": "[REDACTED]", "user": "bob"}', True)


def test_text_masker_masks_an_unterminated_string_at_the_end_of_cut_json(masker):
    text = '{"user": "bob", "items": [1, 2], "password": "hunter2-and-mo'
    masked, changed = masker.mask(text)
    assert masked == '{"user": "bob", "items": [1, 2], "password": "[REDACTED]"'
    assert changed is True


def test_text_masker_masks_an_unterminated_string_ending_in_an_escape(masker):
    masked, changed = masker.mask('{"password": "hunter2\\"more')
    assert "hunter2" not in masked and "more" not in masked and changed is True


def test_text_masker_masks_an_unterminated_number_at_the_end(masker):
    assert masker.mask('{"card_number": 41111111') == ('{"card_number": "[REDACTED]"', True)


@pytest.mark.parametrize("key", ["PASSWORD", "Password", "api-key", "API_KEY", "Api-Key"])
def test_text_masker_matches_keys_in_any_case_and_dash_or_underscore(masker, key):
    masked, changed = masker.mask(f'{{"{key}": "s3cret"')
    assert masked == f'{{"{key}": "[REDACTED]"' and changed is True


def test_text_masker_masks_every_occurrence_at_any_depth(masker):
    text = '{"a": {"password": "zz1"}, "b": [{"password": "zz2"}], "c": {"token": "zz3'
    masked, _ = masker.mask(text)
    assert "zz" not in masked
    assert masked.count(REDACTED) == 3


@pytest.mark.parametrize(
    "text",
    [
        '{"user": "bob", "email": "bob@example.com"',
        '{"username": "bob", "my_password_hint": "dog"}',
        '{"tokenizer": "bpe", "passwords": 3}',
        '{"note": "the password is in the vault"}',
        "password=hunter2",
        "",
        "plain text, no JSON at all",
    ],
)
def test_text_masker_leaves_other_text_alone(masker, text):
    assert masker.mask(text) == (text, False)


def test_text_masker_without_fields_changes_nothing():
    text = '{"password": "hunter2"}'
    assert TextMasker(()).mask(text) == (text, False)


def test_text_masker_result_of_complete_json_is_still_json(masker):
    text = '{"password": "a\\"b", "cvv": 12, "list": [{"token": null}], "ok": "yes"}'
    masked, _ = masker.mask(text)
    assert json.loads(masked) == {
        "password": REDACTED,
        "cvv": REDACTED,
        "list": [{"token": REDACTED}],
        "ok": "yes",
    }


def test_mask_pairs_masks_bracketed_form_keys_by_their_innermost_name():
    pairs, changed = mask_pairs(
        [("user[password]", "hunter2"), ("user[name]", "bob")], {"password"}
    )
    assert changed
    assert pairs == [("user[password]", REDACTED), ("user[name]", "bob")]


def test_may_contain_is_false_only_when_no_sensitive_name_can_be_present():
    masker = TextMasker({"password", "api_key"})
    assert masker.may_contain('{"user": "bob"}') is False
    assert masker.may_contain('{"Password": "x"}') is True
    assert masker.may_contain("api-key=1") is True
    # Escaped spellings are only visible after parsing, so they count as "maybe".
    assert masker.may_contain('{"pass\\u0077ord": "x"}') is True
    assert masker.may_contain("pass%77ord=x") is True
