"""Specification of which names are credentials, and of masking their values everywhere."""

from __future__ import annotations

import json

import pytest

from otas_capture.config import BUILTIN_SENSITIVE_FIELDS
from otas_capture.contract import AGENT_KEY_HEADER, SDK_KEY_HEADER, SESSION_TOKEN_HEADER
from otas_capture.event.masking import (
    BUILTIN_SENSITIVE_HEADERS,
    REDACTED,
    Found,
    Rule,
    Scrubber,
    looks_like_form,
    mask_assignments,
    mask_cut_json,
    mask_elements,
    mask_form,
    mask_json,
    mask_labels,
    mask_multipart,
    mask_private_keys,
    mask_text,
    mask_userinfo,
    redact_header,
    split_words,
)
from otas_capture.event.masking.text import HIDING_MARKS

RULE = Rule()


def redact_headers(headers, rule, found=None):
    """Each header as the event builder makes it."""
    found = Found() if found is None else found
    return [redact_header(name, value, rule, found)[0] for name, value in headers]


# -- the table: names that must be masked, and names that must not -----------------------

MASKED = [
    # passwords, in every spelling
    "password",
    "Password",
    "PASSWORD",
    "passwd",
    "pwd",
    "passphrase",
    "passcode",
    "new_password",
    "user_password",
    "newPassword",
    "currentPassword",
    "old-password",
    "password_confirmation",
    "passwordConfirmation",
    "password2",
    "db.password",
    "user[password]",
    "password[]",
    "data[0][password]",
    "newpassword",
    "one_time_password",
    "password_hash",
    "pass",
    "user_pass",
    "db_pass",
    # secrets
    "secret",
    "secrets",
    "client_secret",
    "clientSecret",
    "secret_key",
    "secretKey",
    "api_secret",
    "aws_secret_access_key",
    # tokens (a single token)
    "token",
    "access_token",
    "accessToken",
    "refreshToken",
    "refresh_token",
    "idToken",
    "id_token",
    "id_token_hint",
    "auth_token",
    "authToken",
    "sessionToken",
    "csrf_token",
    "csrfmiddlewaretoken",
    "_csrf",
    "x-auth-token",
    "bearer_token",
    "remember_token",
    "jwt",
    # API and private keys
    "api_key",
    "apiKey",
    "apikey",
    "API-KEY",
    "x-api-key",
    "private_key",
    "privateKey",
    "signing_key",
    "encryption_key",
    # authorisation, cookies, sessions, credentials
    "authorization",
    "Authorization",
    "auth",
    "basic_auth",
    "credentials",
    "credential",
    "cookie",
    "cookies",
    "session",
    "session_id",
    "sessionId",
    "sessionid",
    "JSESSIONID",
    "PHPSESSID",
    "session_key",
    # cards
    "card_number",
    "cardNumber",
    "cardnumber",
    "credit_card_number",
    "cc_number",
    "creditCard",
    "cvv",
    "CVV2",
    "cvc",
    "security_code",
    # PINs, one-time codes, SSNs
    "pin",
    "PIN",
    "pin_code",
    "pinNumber",
    "pinCode",
    "otp",
    "totp",
    "otp_code",
    "mfa_code",
    "2fa_code",
    "verification_code",
    "recovery_code",
    "ssn",
    "social_security_number",
]

NOT_MASKED = [
    # LLM usage counts: plural tokens, or about tokens
    "max_tokens",
    "prompt_tokens",
    "total_tokens",
    "completion_tokens",
    "input_tokens",
    "output_tokens",
    "maxTokens",
    "max_completion_tokens",
    "tokens",
    "token_type",
    "tokenType",
    "token_count",
    "token_usage",
    "token_limit",
    "token_expires_in",
    "expires_in",
    "tokenizer",
    "max_token",
    # keys that are not credentials
    "key",
    "keys",
    "keyboard",
    "keyword",
    "monkey",
    "public_key",
    "primary_key",
    "sort_key",
    "cache_key",
    "idempotency_key",
    "api_key_id",
    "api_version",
    "apiUrl",
    # things about a credential, not the credential
    "password_hint",
    "password_policy",
    "password_length",
    "password_min_length",
    "password_expires_at",
    "passwordChangedAt",
    "has_password",
    "is_secret",
    "show_password",
    "secret_name",
    "credential_type",
    "auth_type",
    "auth_method",
    "auth_provider",
    "authorization_url",
    "cookie_policy",
    "cookie_consent",
    "session_count",
    "session_duration",
    "sessions",
    "otp_length",
    "pin_enabled",
    "card_type",
    "card_brand",
    "card_last4",
    "ssn_last4",
    # words that merely contain a credential's letters
    "author",
    "author_id",
    "authors",
    "authority",
    "authenticated",
    "passenger",
    "passport",
    "bypass",
    "boarding_pass",
    "compass",
    "secretary",
    "pinned",
    "spinner",
    "shipping",
    "opinion",
    "cookbook",
    "session_start",
    # ordinary fields
    "username",
    "email",
    "user_id",
    "id",
    "name",
    "code",
    "status_code",
    "country_code",
    "zip_code",
    "model",
    "temperature",
    "content",
    "message",
    "description",
]


def test_the_table_is_large_enough_both_ways():
    assert len(set(MASKED)) >= 40 and len(set(NOT_MASKED)) >= 40
    assert not set(MASKED) & set(NOT_MASKED)


@pytest.mark.parametrize("name", MASKED)
def test_names_that_say_they_are_credentials_are_masked(name):
    assert RULE.field(name) is True


@pytest.mark.parametrize("name", NOT_MASKED)
def test_names_that_are_not_credentials_are_kept(name):
    assert RULE.field(name) is False


@pytest.mark.parametrize("name", sorted(BUILTIN_SENSITIVE_FIELDS))
def test_every_name_of_the_old_list_is_still_masked_by_the_rule(name):
    assert RULE.field(name) is True


@pytest.mark.parametrize(
    "name, words",
    [
        ("newPassword", ("new", "password")),
        ("new_password", ("new", "password")),
        ("new-password", ("new", "password")),
        ("user.new.password", ("user", "new", "password")),
        ("user[password][]", ("user", "password")),
        ("APIKey", ("api", "key")),
        ("XAuthToken", ("x", "auth", "token")),
        ("CVV2", ("cvv", "2")),
        ("max_tokens", ("max", "tokens")),
        ("", ()),
        ("[]", ()),
    ],
)
def test_names_are_split_into_words_in_any_spelling(name, words):
    assert split_words(name) == words


# -- settings ----------------------------------------------------------------------------


def test_user_sensitive_fields_add_names_in_any_spelling():
    rule = Rule(extra_fields=["security_answer"])
    for name in ("security_answer", "securityAnswer", "Security-Answer", "user[security_answer]"):
        assert rule.field(name), name
    assert rule.field("my_security_answer")  # a name ending with the words
    assert not rule.field("security")


def test_user_sensitive_fields_can_mask_what_the_rule_keeps():
    assert Rule(extra_fields=["max_tokens"]).field("max_tokens")


def test_safe_fields_exempt_names_from_the_rule():
    rule = Rule(safe_fields=["session_id", "pin"])
    assert not rule.field("session_id") and not rule.field("sessionId")
    assert not rule.field("PIN")
    assert rule.field("password")  # everything else as before


def test_a_name_both_added_and_exempted_is_masked():
    assert Rule(extra_fields=["pin"], safe_fields=["pin"]).field("pin")


# -- headers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "Authorization",
        "authorization",
        "Proxy-Authorization",
        "Cookie",
        "Set-Cookie",
        "X-Api-Key",
        "Api-Key",
        "X-Auth-Token",
        "X-Access-Token",
        "X-Csrf-Token",
        "X-XSRF-TOKEN",
        "X-Amz-Security-Token",
        "X-Goog-Api-Key",
        "Authentication",
        "Ocp-Apim-Subscription-Key",
        "X_Custom_Secret",
        "X-Session-Id",
        SDK_KEY_HEADER,
        SESSION_TOKEN_HEADER,
        AGENT_KEY_HEADER,
        "X-Otas-Agent-Session-Token",
    ],
)
def test_credential_headers_are_redacted(name):
    assert redact_headers([(name, "value-123456")], RULE) == [(name, REDACTED)]


@pytest.mark.parametrize(
    "name",
    [
        "Content-Type",
        "Accept",
        "User-Agent",
        "X-Request-Id",
        "X-Authorization-Hint",
        "Cookie-Policy",
        "Sec-WebSocket-Key",
        "Idempotency-Key",
        "X-RateLimit-Remaining-Tokens",
        "WWW-Authenticate",
    ],
)
def test_other_headers_are_kept(name):
    assert redact_headers([(name, "v")], RULE) == [(name, "v")]


def test_the_standard_list_holds_the_otas_headers():
    for header in (SDK_KEY_HEADER, SESSION_TOKEN_HEADER, AGENT_KEY_HEADER):
        assert header.lower() in BUILTIN_SENSITIVE_HEADERS


def test_user_sensitive_headers_match_with_dash_or_underscore():
    rule = Rule(extra_headers=["X_Tenant"])
    assert redact_headers([("X-Tenant", "acme")], rule) == [("X-Tenant", REDACTED)]


def test_safe_fields_never_exempt_a_standard_header():
    rule = Rule(safe_fields=["authorization", "cookie"])
    assert redact_headers([("Cookie", "a=b")], rule) == [("Cookie", REDACTED)]


def test_headers_keep_their_order_and_repeats():
    headers = [("Set-Cookie", "a=1"), ("Vary", "A"), ("Set-Cookie", "b=2")]
    assert redact_headers(headers, RULE) == [
        ("Set-Cookie", REDACTED),
        ("Vary", "A"),
        ("Set-Cookie", REDACTED),
    ]


@pytest.mark.parametrize(
    "value",
    [
        "https://app.example/cb?access_token=tok-SECRET-1&state=ok",
        "https://app.example/cb#access_token=tok-SECRET-1&state=ok",
        "https://app.example/cb?state=ok&id_token=tok-SECRET-1",
        "/login?next=%2Fhome&password=tok-SECRET-1",
    ],
)
def test_tokens_in_urls_inside_header_values_are_masked(value):
    found = Found()
    [(name, masked)] = redact_headers([("Referer", value)], RULE, found)
    assert "tok-SECRET-1" not in masked and REDACTED in masked
    assert "state=ok" in masked or "next=%2Fhome" in masked
    assert "tok-SECRET-1" in found.values


def test_redacted_header_values_and_their_credentials_are_collected():
    found = Found()
    redact_headers(
        [
            ("Authorization", "Bearer abcdef123456"),
            ("Cookie", "theme=dark; sid=session-abc-123"),
            ("Set-Cookie", "sid=session-xyz-789; Path=/; HttpOnly"),
        ],
        RULE,
        found,
    )
    assert {"abcdef123456", "session-abc-123", "session-xyz-789"} <= found.values
    assert "HttpOnly" not in found.values and "Bearer" not in found.values


def test_the_password_of_basic_authorization_is_collected():
    found = Found()
    redact_headers(
        [("Authorization", "Basic YWxpY2U6czNjcmV0LXB3")], RULE, found
    )  # alice:s3cret-pw
    assert "s3cret-pw" in found.values


# -- forms and query strings -------------------------------------------------------------


@pytest.mark.parametrize("separator", ["&", ";"])
def test_forms_are_masked_with_either_separator(separator):
    text = separator.join(["user=bob", "new_password=hunter22", "password%5B%5D=abc123456"])
    masked, pairs, changed = mask_form(text, RULE, Found())
    assert changed
    assert "hunter22" not in masked and "abc123456" not in masked
    assert masked.startswith("user=bob" + separator)
    assert pairs == [("user", "bob"), ("new_password", REDACTED), ("password[]", REDACTED)]


def test_a_form_without_secrets_is_returned_as_sent():
    text = "user=bob&note=hello+world%21&flag"
    masked, pairs, changed = mask_form(text, RULE, Found())
    assert masked is text and not changed
    assert pairs == [("user", "bob"), ("note", "hello world!"), ("flag", "")]


def test_a_form_value_holding_its_own_pairs_is_masked_inside():
    masked, _, changed = mask_form("next=/cb?token=abcdef123", RULE, Found())
    assert changed and "abcdef123" not in masked


@pytest.mark.parametrize(
    "text, form",
    [
        ("user=bob&password=x", True),
        ("a=1;b=2", True),
        ("password=hunter2\n", True),
        ("just text", False),
        ('{"a": 1}', False),
        ("a = 1", False),
        ("", False),
    ],
)
def test_a_form_is_recognised_without_a_content_type(text, form):
    assert looks_like_form(text) is form


def test_assignments_in_free_text_are_masked():
    text = 'ValueError: bad login (user=bob, password=hunter2) api_key="k e y-123"'
    masked, changed = mask_assignments(text, RULE, Found())
    assert changed
    assert "hunter2" not in masked and "k e y-123" not in masked and "user=bob" in masked


# -- multipart ---------------------------------------------------------------------------

MULTIPART = (
    "--XyZ\r\n"
    'Content-Disposition: form-data; name="username"\r\n\r\n'
    "bob\r\n"
    "--XyZ\r\n"
    'Content-Disposition: form-data; name="newPassword"\r\n\r\n'
    "hunter2-long\r\n"
    "--XyZ\r\n"
    'Content-Disposition: form-data; name="avatar"; filename="a.txt"\r\n'
    "Content-Type: text/plain\r\n\r\n"
    "file text\r\n"
    "--XyZ--\r\n"
)


def test_multipart_form_fields_are_masked():
    masked, pairs, changed = mask_multipart(MULTIPART, RULE, Found())
    assert changed and "hunter2-long" not in masked
    assert masked.count("--XyZ") == 4
    assert pairs == [("username", "bob"), ("newPassword", REDACTED)]


def test_a_multipart_field_cut_at_the_limit_is_masked_to_the_end():
    cut = MULTIPART[: MULTIPART.index("hunter2-long") + 7]
    masked, _, changed = mask_multipart(cut, RULE, Found())
    assert changed and "hunter2" not in masked and masked.endswith(REDACTED)


# -- parsed JSON -------------------------------------------------------------------------


def test_mask_json_masks_at_any_depth_including_lists_of_dicts():
    document = {
        "data": {
            "users": [
                {"name": "a", "profile": {"newPassword": "p1", "apiKey": "k1"}},
                {"name": "b", "tokens": [{"refreshToken": "r1"}, {"kind": "x"}]},
            ]
        },
        "items": [[{"clientSecret": 1}], "plain", 3],
        "usage": {"max_tokens": 5, "token_type": "bearer"},
    }
    masked, changed = mask_json(document, RULE)
    assert changed is True
    assert masked == {
        "data": {
            "users": [
                {"name": "a", "profile": {"newPassword": REDACTED, "apiKey": REDACTED}},
                {"name": "b", "tokens": [{"refreshToken": REDACTED}, {"kind": "x"}]},
            ]
        },
        "items": [[{"clientSecret": REDACTED}], "plain", 3],
        "usage": {"max_tokens": 5, "token_type": "bearer"},
    }


@pytest.mark.parametrize("value", [{"nested": "object"}, ["a", "list"], 1234, None, True])
def test_mask_json_masks_the_whole_value_of_a_sensitive_key_whatever_its_type(value):
    assert mask_json({"token": value}, RULE) == ({"token": REDACTED}, True)


def test_mask_json_collects_every_value_it_removed():
    found = Found()
    mask_json(
        {"password": "hunter2-long", "auth": {"a": "nested-secret", "n": 4111111111}}, RULE, found
    )
    assert {"hunter2-long", "nested-secret", "4111111111"} <= found.values


def test_mask_json_leaves_a_document_without_secrets_unchanged():
    document = {"user": "bob", "list": [{"name": "x"}, [1, 2]], "tokenizer": "bpe"}
    masked, changed = mask_json(json.loads(json.dumps(document)), RULE)
    assert changed is False and masked == document


def test_json_kept_as_a_string_inside_json_is_masked_inside():
    document = {"payload": json.dumps({"user": "bob", "password": "inner-secret"})}
    masked, changed = mask_json(document, RULE)
    assert changed and "inner-secret" not in json.dumps(masked)
    assert json.loads(masked["payload"]) == {"user": "bob", "password": REDACTED}


def test_mask_json_never_lets_a_deeply_nested_secret_through():
    document: object = {"password": "s3cret-deep"}
    for _ in range(100):
        document = {"a": [document]}
    masked, changed = mask_json(document, RULE)
    assert "s3cret-deep" not in json.dumps(masked)
    assert changed is True


# -- JSON cut at the capture limit -------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ('{"password": "x"}', '{"password": "[REDACTED]"}'),
        ('{"newPassword":"hunter2","user":"bob"}', '{"newPassword":"[REDACTED]","user":"bob"}'),
        ('{"cvv": 123, "n": 4}', '{"cvv": "[REDACTED]", "n": 4}'),
        ('{"cvc": -1.5e3}', '{"cvc": "[REDACTED]"}'),
        ('{"token" :\n  "abc"}', '{"token" :\n  "[REDACTED]"}'),
        (
            '[{"secret": true}, {"secret": null}]',
            '[{"secret": "[REDACTED]"}, {"secret": "[REDACTED]"}]',
        ),
        ('{"a": "x", "password": "hunter2-and-mo', '{"a": "x", "password": "[REDACTED]"'),
        ('{"card_number": 41111111', '{"card_number": "[REDACTED]"'),
        ('{"password":', '{"password":"[REDACTED]"'),
    ],
)
def test_cut_json_masks_each_value_to_its_real_end_or_the_end_of_the_text(text, expected):
    assert mask_cut_json(text, RULE, Found()) == (expected, True)


def test_cut_json_masks_a_string_with_escaped_quotes_entirely():
    text = r'{"password": "a\"b\\\"c", "user": "bob", "n": [1'
    assert mask_cut_json(text, RULE, Found()) == (
        '{"password": "[REDACTED]", "user": "bob", "n": [1',
        True,
    )


def test_cut_json_masks_a_nested_value_whole_to_its_matching_bracket():
    text = '{"credentials": {"user": "u", "pw": ["a", "}"], "k": {"x": 1}}, "next": "kept", "z'
    masked, changed = mask_cut_json(text, RULE, Found())
    assert changed
    assert masked == '{"credentials": "[REDACTED]", "next": "kept", "z'


def test_cut_json_masks_a_nested_value_cut_before_its_end_to_the_end_of_the_text():
    text = '{"user": "bob", "auth": {"scheme": "basic", "user": "bob", "pass": "zz-sec'
    masked, changed = mask_cut_json(text, RULE, Found())
    assert changed and "zz-sec" not in masked and "basic" not in masked
    assert masked == '{"user": "bob", "auth": "[REDACTED]"'


def test_cut_json_masks_values_nested_in_unmasked_objects():
    text = '{"a": {"password": "zz1"}, "b": [{"apiKey": "zz2"}], "c": {"token": "zz3'
    masked, _ = mask_cut_json(text, RULE, Found())
    assert "zz" not in masked and masked.count(REDACTED) == 3


def test_cut_json_masks_escaped_json_inside_a_string():
    inner = json.dumps({"password": "inner-secret"})
    text = '{"log": ' + json.dumps(inner) + ', "more": "cut her'
    masked, changed = mask_cut_json(text, RULE, Found())
    assert changed and "inner-secret" not in masked


@pytest.mark.parametrize(
    "text",
    [
        '{"user": "bob", "email": "bob@example.com"',
        '{"username": "bob", "my_password_hint": "dog"}',
        '{"tokenizer": "bpe", "max_tokens": 3, "token_type": "bearer"}',
        '{"note": "the password is in the vault"}',
        "",
        "plain text, no JSON at all",
    ],
)
def test_cut_json_leaves_other_text_alone(text):
    assert mask_cut_json(text, RULE, Found()) == (text, False)


def test_mask_text_handles_json_then_pairs():
    assert (
        mask_text("password=hunter22 and more", RULE, Found())[0] == f"password={REDACTED} and more"
    )
    masked, changed = mask_text('{"password": "hunter22"}', RULE, Found())
    assert changed and json.loads(masked) == {"password": REDACTED}


# -- the cheap pre-check -----------------------------------------------------------------


def test_may_contain_is_false_only_when_no_sensitive_name_can_be_present():
    assert RULE.may_contain('{"user": "bob", "n": 1}') is False
    assert RULE.may_contain('{"newPassword": "x"}') is True
    assert RULE.may_contain("api-key=1") is True
    # Escaped spellings are only visible after parsing, so they count as "maybe".
    assert RULE.may_contain('{"pass\\u0077ord": "x"}') is True
    assert RULE.may_contain("pass%77ord=x") is True


def test_may_contain_sees_the_users_own_names():
    assert Rule(extra_fields=["tenant_answer"]).may_contain('{"tenantAnswer": 1}') is True


@pytest.mark.parametrize("name", MASKED)
def test_may_contain_never_misses_a_name_of_the_table(name):
    assert RULE.may_contain(json.dumps({name: "v"}))


# -- scrubbing known secrets -------------------------------------------------------------


def test_the_scrubber_replaces_every_spelling_of_a_secret():
    scrub = Scrubber(['p@ss w/rd"1'])
    assert scrub.text('raw p@ss w/rd"1 here') == f"raw {REDACTED} here"
    assert scrub.text(json.dumps({"x": 'p@ss w/rd"1'})) == '{"x": "[REDACTED]"}'
    assert scrub.text("a=p%40ss+w%2Frd%221") == f"a={REDACTED}"
    assert scrub.text("a=p%40ss%20w%2Frd%221") == f"a={REDACTED}"


def test_the_scrubber_ignores_short_values():
    scrub = Scrubber(["abc", "true"])
    assert not scrub and scrub.text("abc true") == "abc true"


def test_the_scrubber_replaces_the_longest_secret_first():
    scrub = Scrubber(["secret-one", "secret-one-two"])
    assert scrub.text("x secret-one-two y") == f"x {REDACTED} y"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "nothing known here",
        "Authorization: Bearer abcdefgh12345",
        "only the token abcdefgh12345",
        "Bearer%20abcdefgh12345",
        "otas_abc_defghijkl",
        "the longer secret-one-two",
        "just secret-one",
        "secret-on",
    ],
)
def test_the_scrubber_finds_a_secret_in_text_whichever_spelling_holds_it(text):
    secrets = ["Bearer abcdefgh12345", "abcdefgh12345", "otas_abc_defghijkl"]
    secrets += ["secret-one", "secret-one-two"]
    scrub = Scrubber(secrets)
    spellings = [s.encode() for s in scrub._variants]  # every spelling it replaces
    # The first searches read every spelling, the later ones only those holding no other.
    for encoded in [text.encode()] + [text.encode() + b" " + s for s in spellings]:
        assert scrub.absent_from_json(encoded) == (not any(s in encoded for s in spellings))


def test_the_scrubber_walks_json_values():
    scrub = Scrubber(["token-123456"])
    assert scrub.json({"a": ["x token-123456 y", 1, {"b": "token-123456"}]}) == {
        "a": [f"x {REDACTED} y", 1, {"b": REDACTED}]
    }


@pytest.mark.parametrize(
    "text, expected",
    [
        ("{'password': 'abc d'}", f"{{'password': '{REDACTED}'}}"),
        ('login(password: "x\\"y", user: "bob")', f'login(password: "{REDACTED}", user: "bob")'),
        ("api_key: k-1\nuser: bob", f"api_key: {REDACTED}\nuser: bob"),
        ("at 12:30 the author: bob", "at 12:30 the author: bob"),
        ("max_tokens: 5", "max_tokens: 5"),
    ],
)
def test_labels_in_free_text_are_masked(text, expected):
    assert mask_labels(text, RULE, Found())[0] == expected


def test_xml_elements_with_credential_names_are_masked():
    text = (
        '<login><user>bob</user><ns:Password type="x">xml-secret</ns:Password>'
        "<max_tokens>5</max_tokens><apiKey>cut-he"
    )
    masked, changed = mask_elements(text, RULE, Found())
    assert changed
    assert masked == (
        f'<login><user>bob</user><ns:Password type="x">{REDACTED}</ns:Password>'
        f"<max_tokens>5</max_tokens><apiKey>{REDACTED}"
    )


@pytest.mark.parametrize(
    "name",
    ["2[fa][code]", "credit[card][number]", "x[cc][number]", "user[api][key]", "a[security][code]"],
)
def test_may_contain_finds_names_spelled_with_brackets(name):
    assert RULE.field(name)
    assert RULE.may_contain(json.dumps({name: 1})[:-2])


# -- the adversarial pass: secrets in places a name-only rule does not look --------------


@pytest.mark.parametrize(
    "text, secret",
    [
        ("postgres://admin:db-Secret-1@db.internal:5432/app", "db-Secret-1"),
        ("connect to redis://:cache-Secret-2@cache:6379/0 now", "cache-Secret-2"),
        ("https://bob:p%40ss-Secret-3@proxy.example/", "p%40ss-Secret-3"),
    ],
)
def test_the_password_of_a_url_with_credentials_is_masked(text, secret):
    found = Found()
    masked, changed = mask_userinfo(text, found)
    assert changed and secret not in masked and REDACTED + "@" in masked
    assert secret in found.values
    assert RULE.may_contain(text)  # the pre-check lets it through to masking


def test_urls_without_credentials_are_left_alone():
    text = "see https://example.com/a:b@c and mailto:bob@example.com at 12:30"
    assert mask_userinfo(text, Found()) == (text, False)
    assert not RULE.may_contain(text)


def test_a_url_with_credentials_is_masked_in_a_header_a_json_string_and_a_form_value():
    found = Found()
    [(_, header)] = redact_headers([("X-Upstream", "https://u:hdr-Secret-1@h/x")], RULE, found)
    assert "hdr-Secret-1" not in header
    document, changed = mask_json({"dsn": "postgres://u:json-Secret-2@db/x"}, RULE, found)
    assert changed and "json-Secret-2" not in json.dumps(document)
    form, _, changed = mask_form("dsn=mysql://u:form-Secret-3@db/x&a=1", RULE, found)
    assert changed and "form-Secret-3" not in form and "a=1" in form


def test_a_form_value_holding_json_is_masked_inside():
    text = "payload=" + json.dumps({"password": "form-json-Secret"}) + "&user=bob"
    masked, pairs, changed = mask_form(text, RULE, Found())
    assert changed and "form-json-Secret" not in masked and "user=bob" in masked
    assert "form-json-Secret" not in json.dumps(pairs)


@pytest.mark.parametrize(
    "document",
    [
        {"env": [{"name": "DB_PASSWORD", "value": "env-Secret-1"}, {"name": "A", "value": "1"}]},
        {"parameters": [{"key": "stripe_secret_key", "value": "env-Secret-1"}]},
    ],
)
def test_the_value_of_a_name_value_pair_naming_a_credential_is_masked(document):
    found = Found()
    masked, changed = mask_json(document, RULE, found)
    assert changed and "env-Secret-1" not in json.dumps(masked)
    assert "env-Secret-1" in found.values


def test_xml_kept_as_a_string_inside_json_is_masked_inside():
    document = {"soap": "<auth><password>xml-in-json-1</password></auth>"}
    masked, changed = mask_json(document, RULE)
    assert changed and "xml-in-json-1" not in json.dumps(masked)


def test_a_name_value_pair_naming_no_credential_is_kept():
    document = {"name": "max_tokens", "value": 64}
    assert mask_json(document, RULE) == ({"name": "max_tokens", "value": 64}, False)


def test_an_xml_element_holding_cdata_is_masked():
    text = "<login><password><![CDATA[cdata-Secret-1]]></password><user>bob</user></login>"
    found = Found()
    masked, changed = mask_elements(text, RULE, found)
    assert changed and "cdata-Secret-1" not in masked and "<user>bob</user>" in masked
    assert "cdata-Secret-1" in found.values


@pytest.mark.parametrize(
    "disposition",
    [
        "form-data; name=password",
        "form-data; name*=UTF-8''pass%77ord",
        'form-data;name="password"',
    ],
)
def test_multipart_field_names_in_any_spelling_are_masked(disposition):
    text = f"--B\r\nContent-Disposition: {disposition}\r\n\r\nmp-Secret-1\r\n--B--\r\n"
    masked, pairs, changed = mask_multipart(text, RULE, Found())
    assert changed and "mp-Secret-1" not in masked
    assert pairs and pairs[0][1] == REDACTED


@pytest.mark.parametrize(
    "text",
    [
        "Authorization: Bearer line-Secret-1\nHost: x",
        "curl -H 'Authorization: Bearer line-Secret-1' -H 'Host: x'",
    ],
)
def test_an_authorization_line_in_free_text_masks_the_credential_after_its_scheme(text):
    found = Found()
    masked, changed = mask_labels(text, RULE, found)
    assert changed and "line-Secret-1" not in masked and "Host: x" in masked
    assert "line-Secret-1" in found.values


@pytest.mark.parametrize(
    "text",
    [
        '{"pass\\u0077ord": "esc-Secret-1"}',  # a JSON key spelled with an escape
        '{"a": 1, "pass\\u0077ord": "esc-Secret-1", "b": ',  # the same, cut
        '{"a":1}\n{"password":"esc-Secret-1"}\n',  # NDJSON
        '{"query": "mutation { login(password: \\"esc-Secret-1\\") }"}',  # GraphQL
        "<Login><Password>esc-Secret-1</Password></Login>",
        "user=bob&pass%77ord=esc-Secret-1",
    ],
)
def test_names_spelled_with_escapes_and_bodies_of_other_shapes_are_masked(text):
    assert RULE.may_contain(text)
    masked, changed = mask_text(text, RULE, Found())
    assert changed and "esc-Secret-1" not in masked


@pytest.mark.parametrize(
    "text",
    [
        "password = spaced-Secret-1\nuser = bob",
        '{:password => "spaced-Secret-1", :user => "bob"}',
        "$config = array('password' => 'spaced-Secret-1', 'user' => 'bob');",
    ],
)
def test_assignments_with_spaces_or_arrows_in_free_text_are_masked(text):
    masked, changed = mask_text(text, RULE, Found())
    assert changed and "spaced-Secret-1" not in masked and "bob" in masked


@pytest.mark.parametrize(
    "value", ['{"api_key": "hdr-Secret-1", "n": 1}', "api_key: hdr-Secret-1; n=1"]
)
def test_a_header_value_holding_named_secrets_is_masked_inside(value):
    [(_, masked)] = redact_headers([("X-Debug", value)], RULE, Found())
    assert "hdr-Secret-1" not in masked and "1" in masked


PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIEpem-Secret-1\n-----END RSA PRIVATE KEY-----"


def test_a_pem_private_key_is_masked_whatever_holds_it():
    found = Found()
    masked, changed = mask_json({"pem": PEM, "cert": "-----BEGIN CERTIFICATE-----x"}, RULE, found)
    assert changed and "pem-Secret-1" not in json.dumps(masked)
    assert masked["cert"] == "-----BEGIN CERTIFICATE-----x"
    assert mask_private_keys(PEM[:40], Found())[0].endswith(REDACTED)  # cut inside the key


def test_the_scrubber_replaces_a_secret_written_with_json_escaped_slashes():
    scrub = Scrubber(["ab/cd-Secret-1"])
    assert scrub.text('{"echo": "ab\\/cd-Secret-1"}') == '{"echo": "[REDACTED]"}'


@pytest.mark.parametrize(
    "html",
    [
        '<input type="hidden" name="csrfmiddlewaretoken" value="html-Secret-1">',
        "<INPUT value='html-Secret-1' NAME='password' type=password>",
        "<input name=api_key value=html-Secret-1 />",
    ],
)
def test_the_value_of_an_html_input_with_a_credential_name_is_masked(html):
    found = Found()
    masked, changed = mask_elements(
        f"<form>{html}<input name='user' value='bob'></form>", RULE, found
    )
    assert changed and "html-Secret-1" not in masked and "value='bob'" in masked
    assert "html-Secret-1" in found.values


@pytest.mark.parametrize("name", ["pinNumber", "pinEntry", "PINInput", "pinGuess", "userPinEntry"])
def test_a_name_whose_next_word_starts_with_a_letter_that_rules_a_near_miss_out_is_masked(name):
    # "pine", "ping" and "pinned" are not PINs; "pin" followed by "Number" is one.
    text = json.dumps({name: "4821-Secret-7", "note": "ok"})
    assert RULE.field(name)
    assert RULE.may_contain(text)
    masked, changed = mask_text(text, RULE, Found())
    assert changed and "4821-Secret-7" not in masked


def test_words_that_only_hold_a_needle_leave_the_text_unparsed():
    text = json.dumps({"pinecone": 1, "pinned": True, "max_tokens": 5, "Keyboard": "x" * 500})
    assert not RULE.may_contain(text)
    assert not RULE.may_contain(text)  # the second time from the word cache


# What each mark lets the walk read: a secret only that mark reveals.
HIDDEN_BY_MARK = {
    "=": ("note=x&password=hunter22-mark", "hunter22-mark"),
    ":": ("password: hunter22-mark", "hunter22-mark"),
    "<": ("<password>hunter22-mark</password>", "hunter22-mark"),
    "-----BEGIN": (PEM, "MIIEpem-Secret-1"),
}


def test_every_mark_a_string_may_hide_a_secret_behind_has_an_example():
    assert set(HIDDEN_BY_MARK) == set(HIDING_MARKS)


@pytest.mark.parametrize("mark", sorted(HIDDEN_BY_MARK))
@pytest.mark.parametrize("place", ["in an object", "in a list"])
def test_the_walk_reads_a_string_holding_each_mark(mark, place):
    text, secret = HIDDEN_BY_MARK[mark]
    document = {"note": text} if place == "in an object" else {"notes": ["plain", text]}
    masked, changed = mask_json(document, RULE)
    assert changed and secret not in json.dumps(masked)
