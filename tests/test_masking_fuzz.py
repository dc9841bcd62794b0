"""Property tests: fuzzed names, bodies and requests against the masking table and Brain's limits.

Bounded for CI (50 examples a property); set ``OTAS_FUZZ_EXAMPLES`` for a longer run, e.g.
``OTAS_FUZZ_EXAMPLES=5000 pytest tests/test_masking_fuzz.py``.
"""

from __future__ import annotations

import json
import os
import re
import time
from typing import Any
from urllib.parse import quote

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from werkzeug.test import EnvironBuilder

from otas_capture.capture.exchange import BodyBuffer, Exchange
from otas_capture.config import Config
from otas_capture.contract import (
    JSON_OBJECT_FIELDS,
    MAX_REQUEST_BYTES,
    PATH_LIMIT,
    REQUIRED_FIELDS,
    SIZE_FIELDS,
    TEXT_FIELDS,
)
from otas_capture.event.bodies import _json, _text
from otas_capture.event.build import EventBuilder
from otas_capture.event.limits import MAX_EVENT_BYTES, encode_event
from otas_capture.event.masking import Found, Rule, split_words

from .test_event import PROJECT, TOKEN, TOKEN_HEADER, assert_contract_types
from .test_redaction import MASKED, NOT_MASKED

FUZZ = settings(
    max_examples=int(os.environ.get("OTAS_FUZZ_EXAMPLES", "50")),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
RULE = Rule()
BUILDER = EventBuilder(Config.load({}, {}))

# -- spellings ---------------------------------------------------------------------------


def spell(words: tuple[str, ...], style: str) -> str:
    if style == "camel":
        return words[0] + "".join(w.capitalize() for w in words[1:])
    if style == "pascal":
        return "".join(w.capitalize() for w in words)
    if style == "upper":
        return "_".join(words).upper()
    if style == "bracket":
        return words[0] + "".join(f"[{w}]" for w in words[1:])
    return {"snake": "_", "kebab": "-", "dotted": "."}[style].join(words)


STYLES = st.sampled_from(["snake", "kebab", "dotted", "camel", "pascal", "upper", "bracket"])
# Names whose words survive respelling (glued words like "jsessionid" stay one word).
MASKED_WORDS = st.sampled_from(sorted({split_words(n) for n in MASKED if split_words(n)}))
KEPT_WORDS = st.sampled_from(sorted({split_words(n) for n in NOT_MASKED if split_words(n)}))


@FUZZ
@given(MASKED_WORDS, STYLES)
def test_a_masked_name_is_masked_in_every_spelling(words, style):
    assert RULE.field(spell(words, style)), spell(words, style)


@FUZZ
@given(KEPT_WORDS, STYLES)
def test_a_kept_name_is_kept_in_every_spelling(words, style):
    assert not RULE.field(spell(words, style)), spell(words, style)


# -- bodies ------------------------------------------------------------------------------

SECRET_MARK = "QQ"  # no generated text holds a Q: its presence means a leak
SAFE_TEXT = st.text(alphabet="abcdefghijklmnoprstuvwxyz0123456789 -_.é日", max_size=12)
SECRETS = st.text(alphabet="abcdefXYZ0123456789-_!@ ", min_size=6, max_size=24).map(
    lambda s: SECRET_MARK + s
)
KEPT_KEYS = st.sampled_from(["user", "items", "data", "max_tokens", "author", "id", "meta"])


@st.composite
def documents_with_a_secret(draw: Any) -> Any:
    """A JSON document holding one credential, at any depth, inside other values."""
    words = draw(MASKED_WORDS)
    name = spell(words, draw(STYLES))
    secret_value = draw(
        st.one_of(
            SECRETS,
            st.lists(SECRETS, min_size=1, max_size=3),
            st.dictionaries(KEPT_KEYS, SECRETS, min_size=1, max_size=3),
        )
    )
    document: Any = {name: secret_value}
    for _ in range(draw(st.integers(0, 6))):
        siblings = draw(st.dictionaries(KEPT_KEYS, SAFE_TEXT, max_size=3))
        if draw(st.booleans()):
            document = [draw(SAFE_TEXT), document]
        else:
            document = {**siblings, draw(KEPT_KEYS) + "_x": document}
    return document


def exchange_with(
    body: bytes,
    content_type: str | None,
    limit: int = 1 << 20,
    response_body: bytes = b"{}",
    **environ: Any,
) -> Exchange:
    builder = EnvironBuilder(
        path=environ.get("path", "/fuzz"),
        method="POST",
        query_string=environ.get("query_string", ""),
        headers={TOKEN_HEADER: TOKEN, **environ.get("headers", {})},
        data=body,
        content_type=content_type,
    )
    start = time.perf_counter()
    ex = Exchange(TOKEN, time.time(), start, builder.get_environ(), BodyBuffer(limit))
    ex.request_body.add(body)
    ex.status = environ.get("status", "200 OK")
    ex.response_headers = [("Content-Type", "application/json")]
    ex.response_body = BodyBuffer(limit)
    ex.response_body.add(response_body)
    ex.end = start + 0.001
    return ex


def shipped(ex: Exchange, builder: EventBuilder = BUILDER) -> dict[str, Any]:
    payload = builder.build(ex, PROJECT)
    assert len(payload) <= MAX_EVENT_BYTES < MAX_REQUEST_BYTES
    event: dict[str, Any] = json.loads(payload.decode("utf-8"))
    assert_contract_types(event)
    assert "\x00" not in payload.decode("utf-8")
    return event


@FUZZ
@given(documents_with_a_secret(), st.sampled_from(["application/json", None, "text/plain"]))
def test_any_json_nesting_of_a_credential_never_leaks_its_value(document, content_type):
    body = json.dumps(document).encode()
    event = shipped(exchange_with(body, content_type, response_body=body))
    assert SECRET_MARK not in json.dumps(event, ensure_ascii=False)


@FUZZ
@given(documents_with_a_secret(), st.data())
def test_json_cut_anywhere_never_leaks_a_credential(document, data):
    body = json.dumps(document, ensure_ascii=False).encode()
    limit = data.draw(st.integers(1, len(body)))
    event = shipped(exchange_with(body, "application/json", limit=limit))
    assert SECRET_MARK not in event["request_body"]


@FUZZ
@given(MASKED_WORDS, STYLES, SECRETS, st.sampled_from(["&", ";"]), st.booleans())
def test_forms_and_query_strings_never_leak_a_credential(words, style, secret, sep, typed):
    name = spell(words, style)
    from urllib.parse import quote_plus

    form = sep.join(["a=1", f"{quote_plus(name)}={quote_plus(secret)}", "b=2"])
    ex = exchange_with(
        form.encode(),
        "application/x-www-form-urlencoded" if typed else None,
        query_string=form,
    )
    assert SECRET_MARK not in json.dumps(shipped(ex), ensure_ascii=False)


@FUZZ
@given(st.dictionaries(KEPT_KEYS, SAFE_TEXT, max_size=5))
def test_a_body_without_credentials_is_shipped_unchanged(document):
    body = json.dumps(document, ensure_ascii=False).encode()
    event = shipped(exchange_with(body, "application/json"))
    assert event["request_body"] == body.decode()


# -- anything at all still makes an event Brain can store --------------------------------

JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@FUZZ
@given(
    body=st.binary(max_size=300) | st.text(max_size=300).map(str.encode),
    content_type=st.sampled_from(
        [
            None,
            "application/json",
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
        ]
    ),
    limit=st.integers(0, 400),
    status=st.text(max_size=30),
    # Not "//...": werkzeug's test environ reads that as a host ("//[" raises).
    path=st.text(min_size=1, max_size=3000).map(lambda p: "/" + p.lstrip("/")),
    query=st.text(max_size=100),
    annotations=st.dictionaries(st.text(max_size=8), JSONISH, max_size=4),
    header_value=st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=255), max_size=60),
)
def test_any_request_gives_valid_utf8_json_within_brains_limits(
    body, content_type, limit, status, path, query, annotations, header_value
):
    ex = exchange_with(
        body,
        content_type,
        limit=limit,
        response_body=body,
        path=path.replace("?", "").replace("#", ""),
        query_string=query.encode("utf-8", "surrogatepass").decode("latin-1"),
        headers={"Referer": header_value, "X-Auth-Token": header_value},
        status=status,
    )
    ex.annotate(annotations)
    event = shipped(ex)
    assert 100 <= event["status_code"] <= 999
    assert len(event["path"].encode("utf-8")) <= PATH_LIMIT


# -- the cheap pre-check never hides a name the rule masks -------------------------------

PIECES = st.sampled_from(
    sorted(
        {word for name in MASKED + NOT_MASKED for word in split_words(name)}
        | {"user", "new", "x", "api", "credit", "debit", "mfa", "2", "fa", "social", "data"}
    )
)


@FUZZ
@given(st.lists(PIECES, min_size=1, max_size=4), STYLES)
def test_the_pre_check_finds_every_name_the_rule_masks(words, style):
    name = spell(tuple(words), style)
    if RULE.field(name):
        assert RULE.may_contain(json.dumps({name: 1})), name
        assert RULE.may_contain(f"{name}=1"), name


# Pieces of text around the needles: near misses (tokens, keyboard, access), the words
# that make a needle count on either side (api key, card no), separators, digits, case,
# and non-ASCII letters that lower-case to ASCII ones (the Kelvin sign).
TEXT_PIECES = st.sampled_from(
    sorted(
        {word for name in MASKED + NOT_MASKED for word in split_words(name)}
        | {"tokens", "keyboard", "monkey", "access", "success", "decode", "discard", "cards"}
        | {"api", "credit", "debit", "mfa", "fa", "no", "num", "nr", "security", "code", "cc"}
        | {"_", "-", ".", " ", "][", "___", "____", '": "', "9", "2fa", "\u212aey", "é"}
        | {"API", "Key", "PASS", "Word", "SeSSion", "Id", "xxxxxxxx" * 20}
    )
)
# A rule that remembers words across examples, and rules with a user's names.
SHARED_RULE = Rule()
USER_RULES = [Rule(extra_fields=["tenant_answer"]), Rule(extra_fields=["secret_2", "x.9"])]
SEPARATORS = st.sampled_from(['"', '": "', "=", "&", " ", "\n", "<", ">", ": ", "\\n"])


@FUZZ
@given(
    st.lists(TEXT_PIECES, max_size=6).map("".join),
    st.lists(PIECES, min_size=1, max_size=4),
    STYLES,
    SEPARATORS,
    st.lists(TEXT_PIECES, max_size=6).map("".join),
)
def test_the_pre_check_finds_a_masked_name_whatever_text_surrounds_it(
    before, words, style, separator, after
):
    name = spell(tuple(words), style)
    text = before + separator + name + separator + after
    for rule in [SHARED_RULE, Rule(), *USER_RULES]:
        if rule.field(name):
            for _ in range(2):  # the second time from the word cache
                assert rule.may_contain(text), text


# -- the pre-check only saves work: an event is what full masking makes of it -----------

# A builder whose pre-check always says "maybe": every body is parsed and masked.
PARSE_ALL = EventBuilder(Config.load({}, {}))
PARSE_ALL.rule.may_contain = lambda text: True  # type: ignore[method-assign]
NAMES = st.builds(
    lambda words, style: spell(tuple(words), style),
    st.lists(PIECES, min_size=1, max_size=3),
    STYLES,
)
VALUES = st.lists(TEXT_PIECES, max_size=4).map("".join) | st.integers() | st.booleans()
DOCUMENTS = st.recursive(
    VALUES,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(NAMES, inner, max_size=4),
    max_leaves=12,
)


@FUZZ
@given(
    DOCUMENTS,
    st.dictionaries(NAMES, st.lists(TEXT_PIECES, max_size=3).map("".join), max_size=4),
    st.sampled_from(["application/json", "text/plain", None]),
)
def test_the_pre_check_never_changes_the_event_only_the_work(document, pairs, content_type):
    body = json.dumps(document).encode()
    form = "&".join(f"{name}={value}" for name, value in pairs.items())
    ex = exchange_with(body, content_type, response_body=form.encode(), query_string=form)
    ex.error = " ".join(f"{name}: {value}" for name, value in pairs.items())
    checked, parsed = shipped(ex), shipped(ex, PARSE_ALL)
    for event in (checked, parsed):
        del event["metadata"]["event_id"]
    assert checked == parsed


# -- whatever before_send returns, the event stays storable ------------------------------

FIELDS = sorted(
    {
        "project_id",
        *REQUIRED_FIELDS,
        *SIZE_FIELDS,
        *TEXT_FIELDS,
        *JSON_OBJECT_FIELDS,
        "something_else",
    }
)
ANY_VALUE = JSONISH | st.text(min_size=200, max_size=3000) | st.integers(-(2**70), 2**70)


@FUZZ
@given(
    st.dictionaries(st.sampled_from(FIELDS), ANY_VALUE, max_size=8),
    st.sets(st.sampled_from(FIELDS)),
)
def test_whatever_before_send_returns_is_made_storable(changes, removed):
    def before_send(event: dict[str, Any]) -> dict[str, Any]:
        for field in removed:
            event.pop(field, None)
        event.update(changes)
        return event

    builder = EventBuilder(Config.load({"before_send": before_send}, {}))
    event = shipped(exchange_with(b'{"a": 1}', "application/json"), builder)
    assert 100 <= event["status_code"] <= 999
    assert len(event["path"].encode("utf-8")) <= PATH_LIMIT
    assert "something_else" not in event


PLAIN_SECRETS = st.text(alphabet="abcdefXYZ0123456789-_", min_size=6, max_size=24).map(
    lambda s: SECRET_MARK + s
)
# Body shapes other than JSON and forms: (content type, how to write name and secret).
SHAPES = {
    "ndjson": ("application/x-ndjson", lambda n, s: '{"a": 1}\n' + json.dumps({n: s}) + "\n"),
    "xml": ("application/xml", lambda n, s: f"<r><{n}>{s}</{n}><b>1</b></r>"),
    "yaml": ("text/plain", lambda n, s: f"user: bob\n{n}: {s}\nplan: pro\n"),
    "config": ("text/plain", lambda n, s: f"user = bob\n{n} = {s}\n"),
    "html": ("text/html", lambda n, s: f'<form><input type="hidden" name="{n}" value="{s}">'),
    "multipart": (
        "multipart/form-data; boundary=B",
        lambda n, s: f"--B\r\nContent-Disposition: form-data; name={n}\r\n\r\n{s}\r\n--B--\r\n",
    ),
    "graphql": (
        "application/json",
        lambda n, s: json.dumps({"query": f'mutation {{ login(user: "bob", {n}: "{s}") }}'}),
    ),
}
XML_NAME = re.compile(r"[A-Za-z_][\w.-]*")


@FUZZ
@given(MASKED_WORDS, STYLES, PLAIN_SECRETS, st.sampled_from(sorted(SHAPES)))
def test_bodies_of_other_shapes_never_leak_a_credential(words, style, secret, shape):
    name = spell(words, style)
    # Each shape takes the names its syntax allows.
    assume(XML_NAME.fullmatch(name) if shape in ("xml", "yaml", "config") else True)
    assume(re.fullmatch(r"[A-Za-z_]\w*", name) if shape == "graphql" else True)
    content_type, write = SHAPES[shape]
    body = write(name, secret).encode()
    event = shipped(exchange_with(body, content_type, response_body=body))
    assert SECRET_MARK not in json.dumps(event, ensure_ascii=False), (shape, name)


@FUZZ
@given(KEPT_KEYS, PLAIN_SECRETS, st.sampled_from(["postgres", "redis", "https", "amqp"]))
def test_the_password_of_a_url_with_credentials_never_leaks(key, secret, scheme):
    body = json.dumps({key: {"url": f"{scheme}://admin:{secret}@host.internal:5/x"}}).encode()
    ex = exchange_with(body, "application/json", headers={"X-Upstream": f"{scheme}://u:{secret}@h"})
    assert SECRET_MARK not in json.dumps(shipped(ex), ensure_ascii=False)


# -- scrubbing: one search of the encoded event, or every field --------------------------

ECHO_SECRETS = st.text(alphabet='abcXYZ019-_!@ "\\/%é\n\t', min_size=6, max_size=16).filter(
    lambda s: s.strip() == s and len(s) >= 6
)
ECHO_PLACES = st.sets(
    st.sampled_from(
        ["request_body", "response_body", "header", "query", "path", "annotation", "error"]
    )
)


@FUZZ
@given(ECHO_SECRETS, ECHO_PLACES, st.booleans(), st.booleans())
def test_building_gives_the_bytes_of_the_fully_scrubbed_event(secret, places, key, token):
    # build() encodes once and scrubs only when a known secret shows up in the text;
    # whatever the secret's characters and wherever it is echoed, the bytes must be
    # those of the event with every field scrubbed.
    builder = EventBuilder(Config.load({"sdk_key": "otas_key_" + "k3y" * 4}, {}))
    echoed = secret
    if key:
        echoed += " otas_key_" + "k3y" * 4
    if token:
        echoed += " " + TOKEN
    masked = json.dumps({"password": secret, "note": "x"})
    request = masked if "request_body" not in places else masked + " " + json.dumps(echoed)
    environ: dict[str, Any] = {
        # A header cannot hold a line break; a tab is allowed.
        "headers": {"X-Echo": echoed.replace("\n", " ")} if "header" in places else {},
        "query_string": "q=" + quote(echoed) if "query" in places else "",
        "path": "/a/" + quote(echoed) if "path" in places else "/a",
    }
    response = json.dumps({"echo": echoed} if "response_body" in places else {"ok": 1})
    ex = exchange_with(request.encode(), "text/plain", response_body=response.encode(), **environ)
    ex.metadata = {"event_id": "fixed"}
    if "annotation" in places:
        ex.annotate({"echo": echoed})
    if "error" in places:
        ex.error = "ValueError: " + echoed
    assert builder.build(ex, PROJECT) == encode_event(builder.event(ex, PROJECT))


# -- walking without the pre-check (a route whose last body held a credential) ----------

NAMES = st.sampled_from(sorted(MASKED) + sorted(NOT_MASKED) + ["note", "dsn", "url", "a"])
VALUES = st.one_of(
    st.text(max_size=30),
    st.integers(),
    st.none(),
    st.sampled_from(
        ["a=b", "password=hunter22", "postgres://u:pw12345@h/db", "x: y", "<token>abc123</token>"]
    ),
)
ANY_DOCUMENTS = st.recursive(
    VALUES,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(NAMES, inner, max_size=4)),
    max_leaves=12,
)


@FUZZ
@given(ANY_DOCUMENTS, st.booleans(), st.sampled_from(["json", "text"]))
def test_a_body_walked_without_the_pre_check_is_masked_exactly_as_with_it(document, cut, kind):
    text = json.dumps(document)
    if cut:  # cut at the capture limit: no longer parses
        text = text[: len(text) * 2 // 3]
    mask = _json if kind == "json" else _text
    checked, walked = Found(), Found()
    assert mask(text, RULE, checked, False)[0] == mask(text, RULE, walked, True)[0]
    assert checked.values == walked.values  # the same values scrubbed from the rest
