"""Turning a captured :class:`~otas_capture.capture.exchange.Exchange` into Brain's JSON body.

This is where the work the request thread skipped is done, in the sender thread, and
this module puts the event together from its parts: headers (:mod:`.headers`: names
restored from the environ, secrets redacted), bodies (:mod:`.bodies`: decoded and masked
by their format), query strings and forms, all made safe for the real server
(:mod:`.safe`) and within Brain's limits (:mod:`.limits`). What cannot be shipped as is
goes into ``metadata``.

After masking (see :mod:`otas_capture.event.masking`), every secret the event is known to
hold (the SDK key, the session token, redacted header values, masked values) is
scrubbed from all of its fields. Each event gets a ``metadata.event_id`` here, once:
the sender keeps the payload for retries, so a retry carries the same id. Last, the
user's ``before_send`` may edit or drop the event; what it returns is checked again.
"""

from __future__ import annotations

import functools
import os
from datetime import datetime, timezone
from typing import Any, Callable

from .._version import __version__
from ..capture.exchange import Exchange
from ..config import Config
from ..contract import CONTENT_TYPE_LIMIT, METHOD_LIMIT
from .bodies import body_text
from .context import event_context
from .headers import HeaderMasker, find_header, headers_json, request_header, response_header
from .limits import (
    MAX_EVENT_BYTES,
    STATUS_LINE_LIMIT,
    cut_path,
    dumps,
    encode_event,
    parse_status,
    storable,
)
from .masking import (
    BUILTIN_SENSITIVE_FIELDS,
    Found,
    Rule,
    Scrubber,
    mask_assignments,
    mask_form,
    mask_json,
    mask_text,
)
from .safe import bounded_json, clean_text, text_json, wsgi_text

__all__ = ["MAX_EVENT_BYTES", "SDK_NAME", "EventBuilder", "EventRefused", "encode_event"]

SDK_NAME = "otas-capture"


class EventRefused(Exception):
    """Raised by :meth:`EventBuilder.build` for an event that must not be shipped.

    ``kind`` is the stats outcome (``skipped`` when the user's ``before_send`` dropped it on
    purpose, ``dropped`` when ``before_send`` failed) and ``reason`` the reason counted.
    """

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(f"{kind}: {reason}")
        self.kind = kind
        self.reason = reason


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
            "query_params": text_json(_group([(k, text(v)) for k, v in self.query_pairs])),
            "post_data": text_json(_group([(k, text(v)) for k, v in self.form_pairs])),
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

        self._request_headers = HeaderMasker(self._rule, request_header)
        self._response_headers = HeaderMasker(self._rule, response_header)

    @property
    def rule(self) -> Rule:
        return self._rule

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
            payload = dumps(event)
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
            **event_context(self._config, ex),  # environment, release, trace ids
        }
        end = ex.end if ex.end is not None else ex.start
        if ex.first_byte is not None:
            metadata["time_to_first_byte_ms"] = round((ex.first_byte - ex.start) * 1000, 3)

        parts = _Parts()
        parts.request_headers = self._request_headers.mask(ex.request_headers, found)
        parts.response_headers = self._response_headers.mask(ex.response_headers, found)
        request_type = find_header(parts.request_headers, "content-type")
        response_type = find_header(parts.response_headers, "content-type")

        _, parts.query_pairs, _ = mask_form(wsgi_text(ex.query_string), rule, found)
        route = _route(ex)
        parts.request_body, parts.form_pairs = body_text(
            ex.request_body, request_type, "request", metadata, rule, found, route
        )
        parts.response_body, _ = body_text(
            ex.response_body, response_type, "response", metadata, rule, found, route
        )

        code, usable = parse_status(ex.status)
        if not usable:
            metadata["status_line"] = wsgi_text(ex.status or "")[:STATUS_LINE_LIMIT]
        error = ex.error or ""
        if not error and code >= 400:
            error = wsgi_text(ex.status or str(code))[:STATUS_LINE_LIMIT]
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


def _route(ex: Exchange) -> str:
    """Where bodies are alike: the method and the framework's route (set by the Flask and
    Django integrations), else the path."""
    route = ex.metadata.get("route") if ex.metadata else None
    if not isinstance(route, str):
        route = ex.script_name + ex.path_info
    return f"{ex.method} {route}"


def _group(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for key, value in pairs:
        grouped.setdefault(key, []).append(value)
    return grouped
