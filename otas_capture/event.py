"""Turning a captured :class:`~otas_capture.capture.Exchange` into the JSON body Brain takes.

This is where the work the request thread skipped is done, in the sender thread: header
names are restored from the environ, secrets are redacted, bodies are decoded and
masked, query strings and forms are parsed, and everything is made safe for the real
server. The contract's rules for "safe" are strict: text must be valid UTF-8 with no
NUL characters and no lone surrogates, every text field must be a string (Brain would
store the ``str()`` of anything else), sizes must not be negative, and the whole body
must stay under Brain's 2.5 MiB limit.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qsl, urlencode

from ._version import __version__
from .capture import BodyBuffer, Exchange, is_textual
from .config import Config
from .contract import CONTENT_TYPE_LIMIT, METHOD_LIMIT
from .redaction import TextMasker, mask_json, mask_pairs, redact_headers

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


def clean_text(text: str) -> str:
    """Text Brain's database accepts: no NUL, no lone surrogate."""
    if text.isascii():
        return text.replace("\x00", "\ufffd") if "\x00" in text else text
    text = text.encode("utf-8", "replace").decode("utf-8")
    return text.replace("\x00", "\ufffd")


def wsgi_text(value: str) -> str:
    """Decode a PEP 3333 environ string (bytes carried as latin-1) as UTF-8 text."""
    try:
        raw = value.encode("latin-1")
    except UnicodeEncodeError:  # the server already decoded it properly
        return clean_text(value)
    return clean_text(raw.decode("utf-8", "replace"))


def clean_json(value: Any, depth: int = 0) -> Any:
    """A JSON-safe copy of user data: clean strings, finite numbers, string keys."""
    if isinstance(value, str):
        return clean_text(value)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        # Brain's JSON columns hold 64-bit integers; bigger ones travel as text.
        return value if -(2**63) <= value < 2**63 else _safe_str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if depth >= _JSON_DEPTH_LIMIT:
        return "<nested too deep>"
    if isinstance(value, dict):
        return {_safe_str(k): clean_json(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [clean_json(v, depth + 1) for v in value]
    return _safe_str(value)


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
    if environ_key.startswith("HTTP_"):
        environ_key = environ_key[5:]
    return "-".join(part.capitalize() for part in environ_key.split("_"))


def headers_json(headers: list[tuple[str, str]]) -> str:
    combined: dict[str, str] = {}
    for name, value in headers:
        # Repeated headers (Set-Cookie, Vary) keep every value, as HTTP allows.
        combined[name] = f"{combined[name]}, {value}" if name in combined else value
    return json.dumps(combined, ensure_ascii=False)


def find_header(headers: list[tuple[str, str]], name: str) -> str:
    for key, value in headers:
        if key.lower() == name:
            return value
    return ""


def status_code(status: str | None) -> int:
    """The code of a WSGI status line; 500 when the app never sent one (it raised)."""
    if not status:
        return 500
    try:
        code = int(status.split(" ", 1)[0])
    except ValueError:
        return 500
    return code if code >= 0 else 500


def utc_iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="microseconds")


class EventBuilder:
    """Builds events for one configuration; holds what can be prepared once."""

    def __init__(self, config: Config) -> None:
        self._config = config
        self._text_masker = TextMasker(config.sensitive_fields)

    def build(self, ex: Exchange, project_id: str) -> bytes:
        """The UTF-8 JSON body of the log call for ``ex``."""
        config = self._config
        fields = config.sensitive_fields
        metadata: dict[str, Any] = {
            "sdk": SDK_NAME,
            "sdk_version": __version__,
            "started_at": utc_iso(ex.started_at),
        }
        end = ex.end if ex.end is not None else ex.start
        if ex.first_byte is not None:
            metadata["time_to_first_byte_ms"] = round((ex.first_byte - ex.start) * 1000, 3)

        request_headers = [
            (header_name(key), wsgi_text(value)) for key, value in ex.request_headers
        ]
        response_headers = [(str(k), clean_text(str(v))) for k, v in ex.response_headers]
        request_type = find_header(request_headers, "content-type")
        response_type = find_header(response_headers, "content-type")

        query_pairs, _ = mask_pairs(
            parse_qsl(wsgi_text(ex.query_string), keep_blank_values=True), fields
        )
        request_body, form_pairs = self._body_text(
            ex.request_body, request_type, "request", metadata
        )
        response_body, _ = self._body_text(ex.response_body, response_type, "response", metadata)

        code = status_code(ex.status)
        error = ex.error or ""
        if not error and code >= 400:
            error = wsgi_text(ex.status or str(code))
        if ex.metadata:
            metadata.update(ex.metadata)

        event = {
            "project_id": project_id,
            "path": wsgi_text(ex.script_name + ex.path_info) or "/",
            "method": wsgi_text(ex.method)[:METHOD_LIMIT],
            "status_code": code,
            "latency_ms": round(max(0.0, end - ex.start) * 1000, 3),
            "request_size_bytes": ex.request_body.size,
            "response_size_bytes": ex.response_body.size if ex.response_body else 0,
            "request_headers": headers_json(
                redact_headers(request_headers, config.sensitive_headers)
            ),
            "request_body": request_body,
            "query_params": json.dumps(_group(query_pairs), ensure_ascii=False),
            "post_data": json.dumps(_group(form_pairs), ensure_ascii=False),
            "response_headers": headers_json(
                redact_headers(response_headers, config.sensitive_headers)
            ),
            "response_body": response_body,
            "request_content_type": request_type[:CONTENT_TYPE_LIMIT],
            "response_content_type": response_type[:CONTENT_TYPE_LIMIT],
            "custom_properties": clean_json(ex.custom_properties or {}),
            "error": clean_text(error),
            "metadata": clean_json(metadata),
        }
        return encode_event(event)

    def _body_text(
        self, body: BodyBuffer | None, content_type: str, side: str, metadata: dict[str, Any]
    ) -> tuple[str, list[tuple[str, str]]]:
        """(text to ship, parsed form pairs) of a captured body, masked."""
        if body is None or body.size == 0:
            return "", []
        if body.limit == 0 or not is_textual(content_type):
            metadata[f"{side}_body_omitted"] = "binary or compressed content"
            return "", []
        raw = body.getvalue()
        if not content_type and b"\x00" in raw:
            metadata[f"{side}_body_omitted"] = "binary content"
            return "", []
        if body.truncated:
            metadata[f"{side}_body_truncated"] = True
        text = clean_text(raw.decode("utf-8", "replace"))
        ctype = content_type.lower()
        fields = self._config.sensitive_fields
        if ctype.startswith("application/x-www-form-urlencoded"):
            pairs, changed = mask_pairs(parse_qsl(text, keep_blank_values=True), fields)
            return (urlencode(pairs, safe="[]") if changed else text), pairs
        if not self._text_masker.may_contain(text):
            return text, []  # no sensitive name in it: nothing to parse or mask
        # A body without a content type is masked as JSON when it looks like JSON.
        if "json" in ctype or (not ctype and text.lstrip()[:1] in ("{", "[")):
            try:
                parsed = json.loads(text)
            except (ValueError, RecursionError):
                return self._text_masker.mask(text)[0], []
            masked, changed = mask_json(parsed, fields)
            if not changed:
                return text, []
            # Parsing turned any "\ud800" escape into a real lone surrogate: clean again.
            return clean_text(json.dumps(masked, ensure_ascii=False)), []
        # Other text may still embed JSON ("key": value pairs): mask those too.
        return self._text_masker.mask(text)[0], []


def _group(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for key, value in pairs:
        grouped.setdefault(key, []).append(value)
    return grouped


def encode_event(event: dict[str, Any]) -> bytes:
    """Serialize, cutting the largest parts (and saying so) until it fits Brain's limit."""
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
    return json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8")
