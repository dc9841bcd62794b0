"""Turning a captured :class:`~otas_capture.capture.exchange.Exchange` into Brain's JSON body.

This is where the work the request thread skipped is done, in the sender thread: header
names are restored from the environ, secrets are redacted, bodies are decoded and
masked, query strings and forms are parsed, and everything is made safe for the real
server. The contract's rules for "safe" are strict: text must be valid UTF-8 with no
NUL characters and no lone surrogates, every text field must be a string (Brain would
store the ``str()`` of anything else), sizes must not be negative, the path must fit
Brain's index, the status code must have three digits, and the whole body must stay
under Brain's 2.5 MiB limit. What cannot be shipped as is goes into ``metadata``.

After masking (see :mod:`otas_capture.event.masking`), every secret the event is known to
hold (the SDK key, the session token, redacted header values, masked values) is
scrubbed from all of its fields. Each event gets a ``metadata.event_id`` here, once:
the sender keeps the payload for retries, so a retry carries the same id. Last, the
user's ``before_send`` may edit or drop the event; what it returns is checked again.
"""

from __future__ import annotations

import functools
import json
import math
import os
from datetime import datetime, timezone
from typing import Any, Callable

from .._version import __version__
from ..capture.exchange import BodyBuffer, Exchange, is_textual
from ..config import Config
from ..contract import (
    CONTENT_TYPE_LIMIT,
    JSON_OBJECT_FIELDS,
    MAX_INTEGER,
    METHOD_LIMIT,
    PATH_LIMIT,
    REQUIRED_FIELDS,
    SIZE_FIELDS,
    TEXT_FIELDS,
)
from .masking import (
    BUILTIN_SENSITIVE_FIELDS,
    Found,
    Rule,
    Scrubber,
    looks_like_form,
    mask_assignments,
    mask_form,
    mask_json,
    mask_multipart,
    mask_text,
    redact_header,
)

SDK_NAME = "otas-capture"
# Brain refuses bodies over 2,621,440 bytes; leave room for the HTTP layer's slack.
MAX_EVENT_BYTES = 2_000_000
_JSON_DEPTH_LIMIT = 32


class EventRefused(Exception):
    """Raised by :meth:`EventBuilder.build` for an event that must not be shipped.

    ``kind`` is the stats outcome (``skipped`` when the user's ``before_send`` dropped it on
    purpose, ``dropped`` when ``before_send`` failed) and ``reason`` the reason counted.
    """

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(f"{kind}: {reason}")
        self.kind = kind
        self.reason = reason


def _json_encoder(allow_nan: bool, make: Any = "c_make_encoder") -> Callable[[Any], str]:
    """``json.JSONEncoder(ensure_ascii=False, allow_nan=allow_nan).encode``, made cheaper.

    ``JSONEncoder.encode`` makes a new C encoder on every call, which costs more than
    encoding a few headers. The C encoder is made once here, without the cycle check
    (what is encoded here is built here and has no cycles; the check does not change
    the text), and is safe to share between threads. Without the C accelerator, or
    with one that takes other arguments or writes other text (another Python), the
    plain ``encode`` is used.
    """
    plain = json.JSONEncoder(ensure_ascii=False, allow_nan=allow_nan)
    if isinstance(make, str):  # the accelerator's name (tests pass a stand-in)
        make = getattr(json.encoder, make, None)
    if make is None:
        return plain.encode

    def encoded(value: Any) -> str:
        return "".join(encode(value, 0))

    probe = {"a": [1, -2.5, None, True, 'é\n"\\'], "b": {}}
    try:
        encode = make(
            None,
            plain.default,
            json.encoder.encode_basestring,
            None,
            ": ",
            ", ",
            False,
            False,
            allow_nan,
        )
        if encoded(probe) != plain.encode(probe):
            return plain.encode
    except Exception:
        return plain.encode
    return encoded


_text_json = _json_encoder(allow_nan=True)
_event_json = _json_encoder(allow_nan=False)


def clean_text(text: str) -> str:
    """Text Brain's database accepts: no NUL, no lone surrogate."""
    if text.isascii():
        return text.replace("\x00", "\ufffd") if "\x00" in text else text
    text = text.encode("utf-8", "replace").decode("utf-8")
    return text.replace("\x00", "\ufffd")


def wsgi_text(value: str) -> str:
    """Decode a PEP 3333 environ string (bytes carried as latin-1) as UTF-8 text."""
    if value.isascii():  # the usual case: decoding would give the same text back
        return clean_text(value)
    try:
        raw = value.encode("latin-1")
    except UnicodeEncodeError:  # the server already decoded it properly
        return clean_text(value)
    return clean_text(raw.decode("utf-8", "replace"))


# Annotations are the user's objects: bound what they may cost the sender thread.
_ANNOTATION_DEPTH = 16
_ANNOTATION_NODES = 2_000
_ANNOTATION_CHARS = 64 * 1024
_TRUNCATED = "<truncated>"


class _Budget:
    """What a serialisation may still spend: values visited and characters of text."""

    __slots__ = ("nodes", "chars", "exhausted")

    def __init__(self, nodes: int, chars: int) -> None:
        self.nodes = nodes
        self.chars = chars
        self.exhausted = False


def bounded_json(
    value: Any,
    max_depth: int = _ANNOTATION_DEPTH,
    max_nodes: int = _ANNOTATION_NODES,
    max_chars: int = _ANNOTATION_CHARS,
) -> tuple[Any, bool]:
    """A JSON-safe copy of user data, and whether a bound cut it.

    Strings are cleaned, numbers made finite, keys made strings, other objects turned
    into their ``str()``. The copy is bounded in depth, in the number of values visited
    and in characters, so that neither a cycle nor a small structure that repeats
    references (a list holding the same list twice, forty levels deep, is 2**40 values
    when expanded) can keep the sender busy: what is past a bound becomes a marker.
    """
    budget = _Budget(max_nodes, max_chars)
    return _bounded(value, 0, max_depth, budget, set()), budget.exhausted


def clean_json(value: Any) -> Any:
    """:func:`bounded_json` without saying whether it was cut."""
    return bounded_json(value)[0]


def _bounded(value: Any, depth: int, max_depth: int, budget: _Budget, path: set[int]) -> Any:
    budget.nodes -= 1
    if budget.nodes < 0:
        budget.exhausted = True
        return _TRUNCATED
    if isinstance(value, str):
        return _spend_text(clean_text(value), budget)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        # Brain's JSON columns hold 64-bit integers; bigger ones travel as text.
        return value if -(2**63) <= value < 2**63 else _spend_text(_safe_str(value), budget)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if not isinstance(value, (dict, list, tuple, set, frozenset)):
        return _spend_text(_safe_str(value), budget)
    if depth >= max_depth:
        budget.exhausted = True
        return "<nested too deep>"
    if id(value) in path:
        return "<cycle>"  # a container inside itself
    path.add(id(value))
    try:
        if isinstance(value, dict):
            result: dict[str, Any] = {}
            for key, item in value.items():
                if budget.nodes <= 0 or budget.chars <= 0:
                    budget.exhausted = True
                    result[_TRUNCATED] = True
                    break
                name = _spend_text(_safe_str(key), budget)
                result[name] = _bounded(item, depth + 1, max_depth, budget, path)
            return result
        items = []
        for item in value:
            if budget.nodes <= 0 or budget.chars <= 0:
                budget.exhausted = True
                items.append(_TRUNCATED)
                break
            items.append(_bounded(item, depth + 1, max_depth, budget, path))
        return items
    except Exception:  # a container whose iteration raises (a dict changed meanwhile)
        return "<unprintable>"
    finally:
        path.discard(id(value))


def _spend_text(text: str, budget: _Budget) -> str:
    if len(text) <= budget.chars:
        budget.chars -= len(text)
        return text
    budget.exhausted = True
    kept = text[: max(budget.chars, 0)]
    budget.chars = 0
    return kept + "..."


def _safe_str(value: Any) -> str:
    """``str(value)`` made clean, never raising whatever the value's ``__str__`` does."""
    if isinstance(value, str):
        return clean_text(value)
    try:
        return clean_text(str(value))
    except Exception:  # a broken __str__, or an int too long to print
        return "<unprintable>"


def header_name(environ_key: str) -> str:
    """``HTTP_X_REQUEST_ID`` -> ``X-Request-Id``; ``CONTENT_TYPE`` -> ``Content-Type``."""
    name = _header_names.get(environ_key)
    if name is None:
        name = _header_name(environ_key)
        if len(environ_key) <= 64:  # the same few dozen names recur: keep them
            if len(_header_names) >= 512:
                _header_names.clear()
            _header_names[environ_key] = name
    return name


_header_names: dict[str, str] = {}


def _header_name(environ_key: str) -> str:
    if environ_key.startswith("HTTP_"):
        environ_key = environ_key[5:]
    return "-".join(part.capitalize() for part in environ_key.split("_"))


def headers_json(headers: list[tuple[str, str]]) -> str:
    combined: dict[str, str] = {}
    for name, value in headers:
        # Repeated headers (Set-Cookie, Vary) keep every value, as HTTP allows.
        combined[name] = f"{combined[name]}, {value}" if name in combined else value
    return _text_json(combined)


def _request_header(environ_key: str, value: str) -> tuple[str, str]:
    return header_name(environ_key), wsgi_text(value)


def _response_header(name: Any, value: Any) -> tuple[str, str]:
    return _safe_str(name), _safe_str(value)


_SEEN_HEADERS = 1024
_SEEN_HEADER_CHARS = 512


def find_header(headers: list[tuple[str, str]], name: str) -> str:
    for key, value in headers:
        if key.lower() == name:
            return value
    return ""


def status_code(status: str | None) -> int:
    """The code of a WSGI status line; 500 when there is no code Brain can store."""
    return parse_status(status)[0]


def parse_status(status: str | None) -> tuple[int, bool]:
    """(code, usable) of a WSGI status line.

    Brain stores three-digit codes. Anything else (no status because the app raised, a
    word, ``99999999999999999999 Huge``, ``42``) is reported as 500, and ``usable`` is
    False when the app did send a line, so that the line itself goes into metadata
    instead of failing the event on every retry.
    """
    if not status:
        return 500, status is None
    head = status.split(" ", 1)[0]
    if len(head) == 3 and head.isascii() and head.isdigit() and head[0] != "0":
        return int(head), True
    return 500, False


def cut_path(path: str, metadata: dict[str, Any]) -> str:
    """``path`` within Brain's index limit, never splitting a character.

    A cut path keeps its full length and a hash of the whole in metadata, so that two
    long paths that differ only past the cut can still be told apart.
    """
    if len(path) * 4 <= PATH_LIMIT:  # cannot exceed the limit: skip encoding
        return path
    raw = path.encode("utf-8")
    if len(raw) <= PATH_LIMIT:
        return path
    metadata["path_truncated"] = True
    metadata["path_bytes"] = len(raw)
    import hashlib  # only for the rare over-long path; slow to import

    metadata["path_sha256"] = hashlib.sha256(raw).hexdigest()
    return raw[:PATH_LIMIT].decode("utf-8", "ignore")


def _event_id() -> str:
    """A random UUID (version 4) as text, as ``str(uuid.uuid4())`` writes it, made without
    the UUID object (a third of the cost)."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # the RFC 4122 variant
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


# The same few secrets (the key, a session's token and its Authorization header) recur
# event after event: their Scrubber (every spelling, sorted) is made once. Only small
# sets are kept, so that the cache stays small.
_cached_scrubber = functools.lru_cache(maxsize=64)(Scrubber)
_CACHED_SECRETS_CHARS = 4096


def _scrubber(secrets: set[str]) -> Scrubber:
    if sum(map(len, secrets)) <= _CACHED_SECRETS_CHARS:
        return _cached_scrubber(frozenset(secrets))
    return Scrubber(secrets)


def utc_iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="microseconds")


class _Parts:
    """An event's fields after masking, before the known secrets are scrubbed from them."""

    __slots__ = (
        "path",
        "request_headers",
        "response_headers",
        "query_pairs",
        "form_pairs",
        "request_body",
        "response_body",
        "error",
        "custom_properties",
        "metadata",
        "fixed",
        "scrub",
    )

    path: str
    request_headers: list[tuple[str, str]]
    response_headers: list[tuple[str, str]]
    query_pairs: list[tuple[str, str]]
    form_pairs: list[tuple[str, str]]
    request_body: str
    response_body: str
    error: str
    custom_properties: dict[str, Any]
    metadata: dict[str, Any]
    fixed: dict[str, Any]
    scrub: Scrubber

    def assemble(self, scrub: bool) -> dict[str, Any]:
        """The event, in the contract's field order; ``scrub``: with every known secret
        replaced (False only when the caller knows there is none to replace)."""
        text = self.scrub.text if scrub else _same
        fixed = self.fixed
        metadata = self.metadata
        return {
            "project_id": fixed["project_id"],
            "path": cut_path(text(self.path), metadata),
            "method": fixed["method"],
            "status_code": fixed["status_code"],
            "latency_ms": fixed["latency_ms"],
            "request_size_bytes": fixed["request_size_bytes"],
            "response_size_bytes": fixed["response_size_bytes"],
            "request_headers": headers_json([(k, text(v)) for k, v in self.request_headers]),
            "request_body": text(self.request_body),
            "query_params": _text_json(_group([(k, text(v)) for k, v in self.query_pairs])),
            "post_data": _text_json(_group([(k, text(v)) for k, v in self.form_pairs])),
            "response_headers": headers_json([(k, text(v)) for k, v in self.response_headers]),
            "response_body": text(self.response_body),
            "request_content_type": fixed["request_content_type"],
            "response_content_type": fixed["response_content_type"],
            "custom_properties": self.scrub.json(self.custom_properties)
            if scrub
            else self.custom_properties,
            "error": text(self.error),
            "metadata": self.scrub.json(metadata) if scrub else metadata,
        }


def _same(text: str) -> str:
    return text


class EventBuilder:
    """Builds events for one configuration; holds what can be prepared once."""

    def __init__(self, config: Config) -> None:
        self._config = config
        # The built-in names are the rule's own; only the user's additions are extra,
        # so that OTAS_SAFE_FIELDS can exempt a built-in name.
        self._rule = Rule(
            config.sensitive_fields - BUILTIN_SENSITIVE_FIELDS,
            config.safe_fields,
            config.sensitive_headers,
        )

        # Most headers (User-Agent, Accept, Host, Content-Type) come back event after
        # event with the same value: what each became, when it held nothing to hide.
        self._request_headers_seen: dict[tuple[str, str], tuple[str, str]] = {}
        self._response_headers_seen: dict[tuple[Any, Any], tuple[str, str]] = {}

    @property
    def rule(self) -> Rule:
        return self._rule

    def _headers(
        self,
        raw: list[tuple[Any, Any]],
        seen: dict[Any, tuple[str, str]],
        as_text: Callable[[Any, Any], tuple[str, str]],
        found: Found,
    ) -> list[tuple[str, str]]:
        """Captured headers as text, redacted and masked; ``seen`` remembers the pairs
        that pass unchanged (only those: the others add to ``found``)."""
        rule = self._rule
        result = []
        for pair in raw:
            remember = True
            try:
                done = seen.get(pair)
            except TypeError:  # an unhashable pair the app handed over: not remembered
                done, remember = None, False
            if done is None:
                done, passed = redact_header(*as_text(*pair), rule, found)
                if passed and remember and len(done[1]) <= _SEEN_HEADER_CHARS:
                    if len(seen) >= _SEEN_HEADERS:
                        seen.clear()
                    seen[pair] = done
            result.append(done)
        return result

    def build(self, ex: Exchange, project_id: str) -> bytes:
        """The UTF-8 JSON body of the log call for ``ex``.

        Raises :class:`EventRefused` when the user's ``before_send`` drops the event or
        fails (the event is then not shipped: fail closed).
        """
        parts = self._parts(ex, project_id)
        before_send = self._config.before_send
        # The whole path is searched too: the event carries it cut to Brain's limit, and
        # a secret across the cut would not show in the encoded text.
        if before_send is None and parts.scrub.absent_from_json(
            parts.path.encode("utf-8", "surrogatepass")
        ):
            # Most events hold no known secret outside the fields masking replaced: encode
            # once without scrubbing, and scrub only if a secret shows up in the text.
            event = parts.assemble(scrub=False)
            payload = _dumps(event)
            if parts.scrub.absent_from_json(payload):
                return encode_event(event, payload)
        event = parts.assemble(scrub=True)
        if before_send is not None:
            event = self._run_before_send(before_send, event)
        return encode_event(event)

    def event(self, ex: Exchange, project_id: str) -> dict[str, Any]:
        """The event for ``ex`` as a dict, masked and scrubbed, before ``before_send``."""
        return self._parts(ex, project_id).assemble(scrub=True)

    def _parts(self, ex: Exchange, project_id: str) -> _Parts:
        """The event's fields, masked, and the secrets still to scrub from them."""
        rule = self._rule
        found = Found()
        metadata: dict[str, Any] = {
            "sdk": SDK_NAME,
            "sdk_version": __version__,
            "started_at": utc_iso(ex.started_at),
        }
        end = ex.end if ex.end is not None else ex.start
        if ex.first_byte is not None:
            metadata["time_to_first_byte_ms"] = round((ex.first_byte - ex.start) * 1000, 3)

        parts = _Parts()
        parts.request_headers = self._headers(
            ex.request_headers, self._request_headers_seen, _request_header, found
        )
        parts.response_headers = self._headers(
            ex.response_headers, self._response_headers_seen, _response_header, found
        )
        request_type = find_header(parts.request_headers, "content-type")
        response_type = find_header(parts.response_headers, "content-type")

        _, parts.query_pairs, _ = mask_form(wsgi_text(ex.query_string), rule, found)
        parts.request_body, parts.form_pairs = self._body_text(
            ex.request_body, request_type, "request", metadata, found
        )
        parts.response_body, _ = self._body_text(
            ex.response_body, response_type, "response", metadata, found
        )

        code, usable = parse_status(ex.status)
        if not usable:
            metadata["status_line"] = wsgi_text(ex.status or "")[:_STATUS_LINE_LIMIT]
        error = ex.error or ""
        if not error and code >= 400:
            error = wsgi_text(ex.status or str(code))[:_STATUS_LINE_LIMIT]
        error = clean_text(error)
        if error and rule.may_contain(error):
            # Validation errors quote the input: "password=hunter2", {'token': '...'}.
            error = mask_text(error, rule, found)[0]
        parts.error = error
        path = wsgi_text(ex.script_name + ex.path_info) or "/"
        if "=" in path:  # matrix parameters: /reset;token=...
            path = mask_assignments(path, rule, found)[0]
        parts.path = path

        custom_properties: dict[str, Any] = {}
        if ex.custom_properties:
            custom_properties, cut = bounded_json(ex.custom_properties)
            if cut:
                metadata["custom_properties_truncated"] = True
            # Annotations are the app's own words, but an annotated api_key is still a key.
            mask_json(custom_properties, rule, found)
        parts.custom_properties = custom_properties
        if ex.metadata:
            metadata.update(bounded_json(ex.metadata)[0])
        # One id per event, made once: a retry sends the same payload, so the same id.
        if "event_id" not in metadata:
            metadata["event_id"] = _event_id()
        parts.metadata = metadata

        # Everything this request is known to hold secret, wherever else it shows up.
        secrets = found.values
        if self._config.sdk_key:
            secrets.add(self._config.sdk_key)
        if ex.token:
            secrets.add(ex.token)
        parts.scrub = _scrubber(secrets)
        parts.fixed = {
            "project_id": project_id,
            "method": wsgi_text(ex.method)[:METHOD_LIMIT],
            "status_code": code,
            "latency_ms": round(max(0.0, end - ex.start) * 1000, 3),
            "request_size_bytes": ex.request_body.size,
            "response_size_bytes": ex.response_body.size if ex.response_body else 0,
            "request_content_type": request_type[:CONTENT_TYPE_LIMIT],
            "response_content_type": response_type[:CONTENT_TYPE_LIMIT],
        }
        return parts

    def _run_before_send(
        self, before_send: Callable[[dict[str, Any]], Any], event: dict[str, Any]
    ) -> dict[str, Any]:
        # The user may edit the event in place: keep what restoring it needs.
        original = dict(event, metadata=dict(event["metadata"]))
        try:
            result = before_send(event)
        except Exception:
            # Fail closed: an event the user's filter could not judge is not shipped.
            raise EventRefused("dropped", "before_send_error") from None
        if result is None:
            raise EventRefused("skipped", "before_send")
        if not isinstance(result, dict):
            raise EventRefused("dropped", "before_send_error")
        try:
            return storable(result, original)
        except Exception:
            raise EventRefused("dropped", "before_send_error") from None

    def _body_text(
        self,
        body: BodyBuffer | None,
        content_type: str,
        side: str,
        metadata: dict[str, Any],
        found: Found,
    ) -> tuple[str, list[tuple[str, str]]]:
        """(text to ship, parsed form pairs) of a captured body, masked."""
        if body is None or body.size == 0:
            return "", []
        ctype = content_type.lower()
        multipart = ctype.startswith("multipart/form-data")
        if body.limit == 0 or not (multipart or is_textual(content_type)):
            metadata[f"{side}_body_omitted"] = "binary or compressed content"
            return "", []
        raw = body.getvalue()
        if (multipart or not content_type) and b"\x00" in raw:
            metadata[f"{side}_body_omitted"] = "binary content"
            return "", []
        if body.truncated:
            metadata[f"{side}_body_truncated"] = True
        text = clean_text(raw.decode("utf-8", "replace"))
        rule = self._rule
        if multipart:
            masked, pairs, _ = mask_multipart(text, rule, found)
            return masked, pairs
        if ctype.startswith("application/x-www-form-urlencoded") or (
            not ctype and looks_like_form(text)
        ):
            masked, pairs, _ = mask_form(text, rule, found)
            return masked, pairs
        if not rule.may_contain(text):
            return text, []  # no sensitive name in it: nothing to parse or mask
        # A body without a content type is masked as JSON when it looks like JSON.
        if "json" in ctype or (not ctype and text.lstrip()[:1] in ("{", "[")):
            try:
                parsed = json.loads(text)
            except (ValueError, RecursionError):
                return mask_text(text, rule, found)[0], []
            masked, changed = mask_json(parsed, rule, found)
            if not changed:
                return text, []
            # Parsing turned any "\ud800" escape into a real lone surrogate: clean again.
            return clean_text(_text_json(masked)), []
        # Other text may embed JSON ("key": value pairs) or name=value pairs: mask those.
        return mask_text(text, rule, found)[0], []


_STATUS_LINE_LIMIT = 200


def _group(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for key, value in pairs:
        grouped.setdefault(key, []).append(value)
    return grouped


_JSON_TEXT_FIELDS = ("request_headers", "response_headers", "query_params", "post_data")


def _json_object_text(value: Any) -> str:
    if isinstance(value, dict):
        return _text_json(clean_json(value))
    if isinstance(value, str) and value.lstrip()[:1] == "{":
        try:
            if isinstance(json.loads(value), dict):
                return value
        except (ValueError, RecursionError):
            pass
    return "{}"


def storable(event: dict[str, Any], original: dict[str, Any]) -> dict[str, Any]:
    """What ``before_send`` returned, made into an event Brain can store.

    Only the contract's fields are kept. A required field that is missing or of the
    wrong type gets its value from ``original`` (the event before ``before_send``);
    text is cleaned and cut to the contract's limits; sizes and codes must be in range;
    ``metadata`` keeps the event's id.
    """
    result: dict[str, Any] = {}
    for field in REQUIRED_FIELDS:
        result[field] = event.get(field, original[field])
    for field in TEXT_FIELDS:
        value = event.get(field, original.get(field, ""))
        if field in _JSON_TEXT_FIELDS:
            # These hold a JSON object in a string; anything else the user put there is
            # replaced by an empty one (not by the original: they may have meant to hide it).
            value = _json_object_text(value)
        elif value is None:
            value = ""
        result[field] = clean_text(value if isinstance(value, str) else _safe_str(value))
    result["project_id"] = _safe_str(result["project_id"]) or original["project_id"]
    result["path"] = cut_path(result["path"], original["metadata"]) or original["path"]
    result["method"] = result["method"][:METHOD_LIMIT] or original["method"]
    for field in ("request_content_type", "response_content_type"):
        result[field] = result[field][:CONTENT_TYPE_LIMIT]
    code = result["status_code"]
    if isinstance(code, bool) or not isinstance(code, int) or not 100 <= code <= 999:
        result["status_code"] = original["status_code"]
    latency = result["latency_ms"]
    if (
        isinstance(latency, bool)
        or not isinstance(latency, (int, float))
        or not math.isfinite(latency)
        or latency < 0
    ):
        result["latency_ms"] = original["latency_ms"]
    for field in SIZE_FIELDS:
        size = event.get(field, original[field])
        ok = isinstance(size, int) and not isinstance(size, bool) and 0 <= size <= MAX_INTEGER
        result[field] = size if ok else original[field]
    for field in JSON_OBJECT_FIELDS:
        value = event.get(field, {})
        result[field] = clean_json(value) if isinstance(value, dict) else {}
    metadata = result["metadata"]
    for key in ("event_id", "path_truncated", "path_bytes", "path_sha256"):
        if key in original["metadata"]:
            metadata[key] = original["metadata"][key]
    return result


def encode_event(event: dict[str, Any], payload: bytes | None = None) -> bytes:
    """Serialize, cutting the largest parts (and saying so) until it fits Brain's limit.

    ``payload``: ``event`` already serialized, when the caller has it.
    """
    if payload is None:
        payload = _dumps(event)
    for keep in (256 * 1024, 16 * 1024, 1024, 0):
        if len(payload) <= MAX_EVENT_BYTES:
            break
        cut = event["metadata"].setdefault("cut_to_fit", [])
        for field in _CUTTABLE_TEXT:
            # A required field must stay non-empty.
            limit = max(keep, 1024) if field == "path" else keep
            if len(event[field]) > limit:
                event[field] = event[field][:limit]
                cut.append(field)
        for field in _CUTTABLE_JSON_TEXT:
            # A cut JSON string would no longer parse: replace it whole.
            if len(event[field]) > max(keep, 2):
                event[field] = "{}"
                cut.append(field)
        if keep == 0 and len(_dumps(event["custom_properties"])) > 1024:
            event["custom_properties"] = {}
            cut.append("custom_properties")
        payload = _dumps(event)
    return payload


_CUTTABLE_TEXT = ("request_body", "response_body", "error", "path")
_CUTTABLE_JSON_TEXT = ("request_headers", "response_headers", "query_params", "post_data")


def _dumps(value: Any) -> bytes:
    return _event_json(value).encode("utf-8")
