"""JSON for events: orjson when it is installed (``otas-capture[fast]``), else the standard library.

Encoding the event and parsing bodies is a large share of the sender's CPU; orjson does
both three to six times faster than :mod:`json`. It is optional: without it (or where it
cannot give the standard library's answer) the standard library runs, and either way the
result is the same *as parsed JSON*. The bytes differ only in spacing: orjson writes no
space after ``,`` and ``:``, and spells some floats shorter (``1e16`` for ``1e+16``).

Where orjson would not give the standard library's answer, the standard library gives it:

* encoding: orjson refuses lone surrogates, integers outside 64 bits, keys that are not
  strings, subclasses of ``str``/``int``/``float``/``dict``/``list``, and nesting deeper
  than 254 (all of which the standard library encodes or refuses in its own way), and it
  writes NaN and infinities as ``null``: so an orjson text that holds ``null`` is checked
  for a non-finite float before it is trusted.
* decoding: orjson refuses ``NaN``, ``Infinity``, numbers that overflow a double, lone
  surrogate escapes and text that is not UTF-8, and it turns an integer outside 64 bits
  into a float without a word: text with 19 digits in a row goes to the standard library.

One difference is left, on purpose: a ``uuid.UUID`` or an ``enum.Enum`` member that is
not also a ``str`` or ``int`` is encoded by orjson, where the standard library raises
``TypeError``. The event builder only hands over JSON's own types (``clean_json``).

The standard library's encoder is made once per ``allow_nan`` and shared between threads:
``json.dumps`` makes a new one on every call, which costs more than encoding a few headers.
"""

from __future__ import annotations

import json
from typing import Any, Callable

try:
    import orjson
except ImportError:  # the fast extra is not installed: the standard library does it all
    orjson = None  # type: ignore[assignment]

__all__ = ["ACCELERATED", "dumps", "dumps_text", "loads", "loads_finite"]

ACCELERATED = orjson is not None

# Any integer of 18 digits or fewer fits in 64 bits; orjson turns bigger ones into floats.
_LONG_DIGIT_RUN = b"0" * 19
_DIGITS_TO_ZERO = bytes(48 if 48 <= byte <= 57 else 32 for byte in range(256))


def _stdlib_encoder(allow_nan: bool, make: Any = None) -> Callable[[Any], str]:
    """``json.dumps(value, ensure_ascii=False, allow_nan=allow_nan)``, with the C encoder
    made once. It skips the cycle check (which never changes the text; a cycle raises
    ``RecursionError`` instead of ``ValueError``). Without the C accelerator, or with one
    that takes other arguments or writes other text than ``json.dumps``, the plain
    ``JSONEncoder.encode`` runs. ``make``: a stand-in for the accelerator (tests)."""
    plain = json.JSONEncoder(ensure_ascii=False, allow_nan=allow_nan)
    if make is None:
        make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return plain.encode
    try:
        iterencode = make(
            None,  # markers: no cycle check
            plain.default,
            json.encoder.encode_basestring,
            None,  # indent
            ": ",
            ", ",
            False,  # sort_keys
            False,  # skipkeys
            allow_nan,
        )
    except Exception:
        return plain.encode

    def encode(value: Any) -> str:
        return "".join(iterencode(value, 0))

    probe = {"a": [1, -2.5, None, True, 'é\n"\\\u2028'], "b": {}, "c": 2**70}
    try:
        if encode(probe) != plain.encode(probe):
            return plain.encode
    except Exception:
        return plain.encode
    return encode


_STDLIB = {False: _stdlib_encoder(False), True: _stdlib_encoder(True)}


def _refuse(value: Any) -> Any:
    """orjson's ``default``: anything it does not encode natively goes to the stdlib."""
    raise TypeError(type(value).__name__)


if orjson is not None:
    # Subclasses, dataclasses and dates are the standard library's to encode or refuse.
    _OPTIONS = (
        orjson.OPT_PASSTHROUGH_SUBCLASS
        | orjson.OPT_PASSTHROUGH_DATACLASS
        | orjson.OPT_PASSTHROUGH_DATETIME
    )


def _has_non_finite(value: Any) -> bool:
    """Whether ``value`` holds a NaN or an infinity (which orjson writes as ``null``).

    Only called on what orjson encoded, so the containers are exactly dicts, lists and
    tuples, nested at most 254 deep.
    """
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is float:
            if item - item != 0.0:  # NaN - NaN and inf - inf are NaN; finite gives 0.0
                return True
        elif kind is dict:
            stack.extend(item.values())
        elif kind is list or kind is tuple:
            stack.extend(item)
    return False


def _fast_dumps(value: Any, finite: bool) -> bytes | None:
    """orjson's text for ``value``, or None where it would not be the stdlib's."""
    try:
        data = orjson.dumps(value, default=_refuse, option=_OPTIONS)
    except orjson.JSONEncodeError:
        return None
    if not finite and b"null" in data and _has_non_finite(value):
        return None
    return data


def dumps(value: Any, allow_nan: bool = False, *, finite: bool = False) -> bytes:
    """UTF-8 JSON of ``value``: as parsed, what
    ``json.dumps(value, ensure_ascii=False, allow_nan=allow_nan).encode()`` gives, and
    the same exception where that raises (``ValueError`` for NaN without ``allow_nan``,
    ``UnicodeEncodeError`` for a lone surrogate, ``TypeError`` for other types).

    ``finite``: the caller knows ``value`` holds no NaN and no infinity (see
    :func:`loads_finite`), which spares a walk of its floats when the text has a ``null``.
    """
    if orjson is not None:
        data = _fast_dumps(value, finite)
        if data is not None:
            # orjson leaves up to half again its length allocated; an event waiting in
            # the queue is counted by its length, so keep an exact copy (one memcpy).
            return bytes(memoryview(data)) if len(data) > _EXACT_FROM else data
    return _STDLIB[allow_nan](value).encode("utf-8")


_EXACT_FROM = 4096  # below this the slack is small next to an event's other costs


def dumps_text(value: Any, allow_nan: bool = False, *, finite: bool = False) -> str:
    """:func:`dumps` as a ``str``: as parsed, what
    ``json.dumps(value, ensure_ascii=False, allow_nan=allow_nan)`` gives (which may hold a
    lone surrogate: no encoding to UTF-8 happens on this path)."""
    if orjson is not None:
        data = _fast_dumps(value, finite)
        if data is not None:
            return data.decode("utf-8")
    return _STDLIB[allow_nan](value)


def loads(data: bytes | str) -> Any:
    """``json.loads(data)``: the same value, or the same exception."""
    return loads_finite(data)[0]


def loads_finite(data: bytes | str) -> tuple[Any, bool]:
    """:func:`loads`, and whether the value is known to hold no NaN and no infinity: true
    when orjson read it, since it refuses them. A value made from it by replacing items
    with strings (masking) can then be encoded with ``finite=True``."""
    if orjson is not None:
        try:
            raw = data.encode("utf-8") if isinstance(data, str) else data
        except UnicodeEncodeError:  # a lone surrogate: the stdlib keeps it, orjson refuses
            raw = b""
        if raw and _LONG_DIGIT_RUN not in raw.translate(_DIGITS_TO_ZERO):
            try:
                return orjson.loads(raw), True
            except orjson.JSONDecodeError:
                pass  # NaN, overflow, lone surrogate escapes, or not JSON: the stdlib decides
    return json.loads(data), False
