"""Captured events in the formats other tools read: a cURL command line, a HAR log.

Pure functions over stored events, used by the viewer's "copy as cURL" and "export
HAR". They rebuild each request from what the SDK sent: values it masked stay
``[REDACTED]`` (the collector never had them) and are named, in a comment above the
command and in each HAR entry's ``comment``, so nobody mistakes the copy for the
original call.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

from .._version import __version__
from .browse import MASK, masked_fields, pairs, started_at

# Headers a replayed request gets from curl itself (or that name the URL, built apart).
_SKIPPED_HEADERS = frozenset({"host", "content-length", "connection", "transfer-encoding"})


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _encode(text: str) -> str:
    # A masked value stays readable in the URL: it is a marker, not the value.
    return MASK if text == MASK else quote(text, safe="")


def query_string(event: dict[str, Any]) -> str:
    """The request's query string rebuilt from ``query_params`` (no ``?``), masked
    values kept as ``[REDACTED]``."""
    return "&".join(f"{_encode(k)}={_encode(v)}" for k, v in pairs(event.get("query_params")))


def url(event: dict[str, Any]) -> str:
    """The request's URL: ``Host`` header (else ``localhost``), path and query string.
    The scheme is not captured; ``http`` is assumed."""
    headers = {name.lower(): value for name, value in pairs(event.get("request_headers"))}
    host = headers.get("host") or "localhost"
    path = _text(event.get("path")) or "/"
    query = query_string(event)
    return f"http://{host}{path}" + (f"?{query}" if query else "")


def _request_body(event: dict[str, Any]) -> str:
    body = event.get("request_body")
    if isinstance(body, str) and body:
        return body
    form = pairs(event.get("post_data"))
    return "&".join(f"{_encode(k)}={_encode(v)}" for k, v in form)


def curl_command(event: dict[str, Any]) -> str:
    """A shell command that replays the request with curl, as far as it was captured.

    Starts with a comment naming every masked value, when there are any: those must
    be filled in before the command can do what the original call did.
    """
    method = _text(event.get("method")) or "GET"
    target = url(event)
    words = ["curl", target]
    if "[" in target:
        words.append("--globoff")  # [REDACTED] in the URL is not a curl range
    body = _request_body(event)
    if method != "GET" or body:
        words += ["-X", method]
    for name, value in pairs(event.get("request_headers")):
        if name.lower() not in _SKIPPED_HEADERS:
            words += ["-H", f"{name}: {value}"]
    if body:
        words += ["--data-raw", body]
    command = _join([shlex.quote(word) for word in words])
    masked = masked_fields(event)
    if not masked:
        return command
    return (
        f"# Values shown as {MASK} were masked by the SDK and are not the real ones:\n"
        f"# {', '.join(masked)}\n{command}"
    )


def _join(words: list[str]) -> str:
    """``curl URL``, then one option and its value per line, continued with backslashes."""
    lines = [" ".join(words[:2])]
    i = 2
    while i < len(words):
        word = words[i]
        if word.startswith("-") and word != "--globoff" and i + 1 < len(words):
            lines.append(f"{word} {words[i + 1]}")
            i += 2
        else:
            lines.append(word)
            i += 1
    return " \\\n  ".join(lines)


def _header_list(text: Any) -> list[dict[str, str]]:
    return [{"name": name, "value": value} for name, value in pairs(text)]


def _size(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else -1


def har_entry(event: dict[str, Any]) -> dict[str, Any]:
    """One HAR 1.2 entry for a stored event."""
    latency = event.get("latency_ms")
    elapsed = float(latency) if isinstance(latency, (int, float)) else 0.0
    status = event.get("status_code")
    request: dict[str, Any] = {
        "method": _text(event.get("method")) or "GET",
        "url": url(event),
        "httpVersion": "HTTP/1.1",
        "cookies": [],
        "headers": _header_list(event.get("request_headers")),
        "queryString": _header_list(event.get("query_params")),
        "headersSize": -1,
        "bodySize": _size(event.get("request_size_bytes")),
    }
    body = _request_body(event)
    if body:
        mime = _text(event.get("request_content_type")) or "application/octet-stream"
        request["postData"] = {"mimeType": mime, "text": body}
    masked = masked_fields(event)
    metadata = event.get("metadata")
    environment = metadata.get("environment") if isinstance(metadata, dict) else None
    entry: dict[str, Any] = {
        "startedDateTime": started_at(event),
        "time": elapsed,
        "request": request,
        "response": {
            "status": status if isinstance(status, int) else 0,
            "statusText": "",
            "httpVersion": "HTTP/1.1",
            "cookies": [],
            "headers": _header_list(event.get("response_headers")),
            "content": {
                "size": _size(event.get("response_size_bytes")),
                "mimeType": _text(event.get("response_content_type")),
                "text": _text(event.get("response_body")),
            },
            "redirectURL": "",
            "headersSize": -1,
            "bodySize": _size(event.get("response_size_bytes")),
        },
        "cache": {},
        "timings": {"send": 0, "wait": elapsed, "receive": 0},
        "_otas": {
            "id": event.get("_id"),
            "agent_id": event.get("_agent_id"),
            "agent_session_id": event.get("_agent_session_id"),
            "environment": environment,
            "error": _text(event.get("error")),
        },
    }
    if masked:
        entry["comment"] = f"masked by the SDK ({MASK}): {', '.join(masked)}"
    return entry


def har_log(events: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """A HAR 1.2 document of ``events``, in the order given."""
    return {
        "log": {
            "version": "1.2",
            "creator": {"name": "otas-capture", "version": __version__},
            "pages": [],
            "entries": [har_entry(event) for event in events],
        }
    }
