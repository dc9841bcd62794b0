"""The event JSON codec gives what the standard library gives, with orjson and without it.

Every property here runs twice: in this process (with orjson when it is installed) and,
by ``test_the_same_properties_hold_without_orjson``, in a child process where importing
orjson fails, as it does when the ``fast`` extra is not installed. "The same" means the
same value once parsed (orjson's bytes differ in spacing), or the same exception.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otas_capture.event import jsoncodec

# In the child process the properties also check that orjson really is out of the way.
WITHOUT_ORJSON = os.environ.get("OTAS_TEST_JSONCODEC_WITHOUT_ORJSON") == "1"

PROPERTY = settings(
    max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)

# What orjson refuses, rewrites or reads otherwise than the standard library.
EDGE_STRINGS = ["\ud800", "\udfff", "a\ud83d", "\x00", "\u2028", '"', "\\", "/", "\x7f", "é😀"]
EDGE_NUMBERS: list[Any] = [
    math.nan,
    math.inf,
    -math.inf,
    -0.0,
    1e16,
    5e-324,
    2**63 - 1,
    2**63,
    2**64 - 1,
    2**64,
    -(2**63),
    -(2**63) - 1,
    10**30,
]

texts = st.lists(st.one_of(st.characters(), st.sampled_from(EDGE_STRINGS)), max_size=8).map("".join)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    st.sampled_from(EDGE_NUMBERS),
    texts,
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.tuples(children, children),
        st.dictionaries(texts, children, max_size=4),
    ),
    max_leaves=20,
)


def outcome(function: Any, *args: Any) -> tuple[str, Any]:
    """What a call gives: ``("value", canonical(result))`` or ``("raises", exception type)``."""
    try:
        result = function(*args)
    except Exception as error:  # the type is what is compared
        return "raises", _family(error)
    return "value", canonical(result)


def encoded(function: Any, *args: Any) -> tuple[str, Any]:
    """:func:`outcome` of an encoder, its text compared as parsed JSON."""
    return outcome(lambda: json.loads(function(*args)))


def _family(error: Exception) -> type:
    # json.JSONDecodeError and orjson's own are both ValueErrors; compare on what callers catch.
    for kind in (UnicodeError, RecursionError, ValueError, TypeError):
        if isinstance(error, kind):
            return kind
    return type(error)


def canonical(value: Any) -> str:
    """A text equal for equal JSON values: NaN equals NaN, 1 differs from 1.0, -0.0 from 0.0."""
    return repr(value)


@pytest.fixture(autouse=True)
def _the_expected_path_runs() -> None:
    if WITHOUT_ORJSON:
        assert not jsoncodec.ACCELERATED


@PROPERTY
@given(json_values, st.booleans())
def test_property_dumps_is_json_dumps_as_parsed(value: Any, allow_nan: bool) -> None:
    def stdlib(v: Any) -> bytes:
        return json.dumps(v, ensure_ascii=False, allow_nan=allow_nan).encode("utf-8")

    assert encoded(jsoncodec.dumps, value, allow_nan) == encoded(stdlib, value)


@PROPERTY
@given(json_values, st.booleans())
def test_property_dumps_text_is_json_dumps_as_parsed(value: Any, allow_nan: bool) -> None:
    def stdlib(v: Any) -> str:
        return json.dumps(v, ensure_ascii=False, allow_nan=allow_nan)

    assert encoded(jsoncodec.dumps_text, value, allow_nan) == encoded(stdlib, value)


@PROPERTY
@given(json_values, st.booleans(), st.booleans())
def test_property_loads_reads_what_json_dumps_wrote(
    value: Any, ensure_ascii: bool, as_bytes: bool
) -> None:
    # ensure_ascii=True writes a lone surrogate as a "\ud800" escape, which orjson refuses.
    text = json.dumps(value, ensure_ascii=ensure_ascii)
    data: bytes | str = text.encode("utf-8", "surrogatepass") if as_bytes else text
    assert outcome(jsoncodec.loads, data) == outcome(json.loads, data)


@PROPERTY
@given(
    st.one_of(
        texts,
        st.lists(
            st.sampled_from(
                ['{"a":', "1", "NaN", "-Infinity", "1e400", "-", ",", "]", "[", "}", " ", '"x"']
                + ['"\\ud800"', "18446744073709551616", "01", "\ufeff", "true", "null"]
            ),
            max_size=6,
        ).map("".join),
    )
)
def test_property_loads_accepts_and_refuses_what_json_loads_does(text: str) -> None:
    assert outcome(jsoncodec.loads, text) == outcome(json.loads, text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("18446744073709551616", 2**64),  # orjson alone would give a float
        ("-9223372036854775809", -(2**63) - 1),
        ('{"id": 123456789012345678901234567890}', {"id": 123456789012345678901234567890}),
        ("18446744073709551615", 2**64 - 1),
        ('"\\ud800"', "\ud800"),  # a lone surrogate escape, which orjson refuses
        ("1e400", math.inf),
        ("[NaN, -Infinity]", [math.nan, -math.inf]),
    ],
)
def test_edge_cases_read_as_the_standard_library_reads_them(text: str, expected: Any) -> None:
    assert canonical(jsoncodec.loads(text)) == canonical(expected)


@pytest.mark.parametrize(
    ("value", "allow_nan", "expected"),
    [
        ({"x": math.nan}, True, {"x": "nan"}),  # orjson alone would write null
        ({"x": [1, -math.inf]}, True, {"x": [1, "-inf"]}),
        ({"n": 2**64}, False, {"n": 2**64}),
        ({1: "a", None: "b"}, False, {"1": "a", "null": "b"}),
        ({"s": "a\ud800"}, True, None),  # lone surrogate: bytes cannot hold it
        ({"x": math.nan}, False, None),  # the stdlib refuses NaN without allow_nan
    ],
)
def test_edge_cases_encode_as_the_standard_library_encodes_them(
    value: Any, allow_nan: bool, expected: Any
) -> None:
    if expected is None:
        with pytest.raises(ValueError):  # UnicodeEncodeError is a ValueError too
            jsoncodec.dumps(value, allow_nan)
        return
    parsed = json.loads(jsoncodec.dumps(value, allow_nan))

    def floats_as_text(item: Any) -> Any:
        if isinstance(item, float) and not math.isfinite(item):
            return str(item)
        if isinstance(item, dict):
            return {k: floats_as_text(v) for k, v in item.items()}
        if isinstance(item, list):
            return [floats_as_text(v) for v in item]
        return item

    assert floats_as_text(parsed) == expected


@PROPERTY
@given(json_values, st.booleans())
def test_property_what_loads_finite_vouches_for_holds_no_nan(
    value: Any, ensure_ascii: bool
) -> None:
    text = json.dumps(value, ensure_ascii=ensure_ascii)
    parsed, finite = jsoncodec.loads_finite(text)
    if finite:
        assert outcome(jsoncodec.dumps_text, parsed, True) == outcome(
            lambda v: jsoncodec.dumps_text(v, True, finite=True), parsed
        )
        assert canonical(json.loads(jsoncodec.dumps(parsed, finite=True))) == canonical(parsed)
    if WITHOUT_ORJSON:
        assert not finite


def test_strings_are_escaped_exactly_as_the_standard_library_escapes_them() -> None:
    # The known-secret check searches the encoded event for a secret as json.dumps
    # (ensure_ascii=False) spells it, so every character must come out the same.
    characters = [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    spacing = (",", ":") if jsoncodec.ACCELERATED else (", ", ": ")  # orjson writes no spaces
    standard = json.dumps(characters, ensure_ascii=False, separators=spacing)
    assert jsoncodec.dumps_text(characters) == standard


def test_text_keeps_a_lone_surrogate_as_the_standard_library_does() -> None:
    assert jsoncodec.dumps_text({"s": "a\ud800"}) == json.dumps(
        {"s": "a\ud800"}, ensure_ascii=False
    )


def test_null_values_without_non_finite_floats_keep_the_fast_text() -> None:
    value = {"a": None, "b": [1.5, None], "c": "null"}
    expected = b'{"a":null,"b":[1.5,null],"c":"null"}' if jsoncodec.ACCELERATED else None
    got = jsoncodec.dumps(value)
    assert json.loads(got) == value
    if expected is not None:
        assert got == expected


def test_the_stdlib_encoder_falls_back_to_plain_encoding_when_the_accelerator_differs() -> None:
    def wrong(*args: Any) -> Any:
        return lambda value, indent: ["not json"]

    encode = jsoncodec._stdlib_encoder(False, make=wrong)
    assert encode({"a": 1}) == '{"a": 1}'


@pytest.mark.skipif(WITHOUT_ORJSON, reason="already the child process")
def test_the_same_properties_hold_without_orjson() -> None:
    script = (
        "import sys; sys.modules['orjson'] = None; import pytest; "
        f"sys.exit(pytest.main(['-q', '-n', '0', '-p', 'no:cacheprovider', {__file__!r}]))"
    )
    env = dict(os.environ, OTAS_TEST_JSONCODEC_WITHOUT_ORJSON="1")
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert " passed" in done.stdout and "1 skipped" in done.stdout
