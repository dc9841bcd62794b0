"""Captured headers as the event holds them: names spelled as in HTTP, values as text,
sensitive ones redacted, named secrets inside the others masked."""

from __future__ import annotations

from typing import Any, Callable

from .masking import Found, Rule, redact_header
from .safe import header_text, safe_str, text_json

__all__ = [
    "HeaderMasker",
    "find_header",
    "header_name",
    "headers_json",
    "request_header",
    "response_header",
]


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
    return text_json(combined)


def request_header(environ_key: str, value: str) -> tuple[str, str]:
    return header_name(environ_key), header_text(value)


def response_header(name: Any, value: Any) -> tuple[str, str]:
    return safe_str(name), safe_str(value)


_SEEN_HEADERS = 1024
_SEEN_HEADER_CHARS = 512


def find_header(headers: list[tuple[str, str]], name: str) -> str:
    for key, value in headers:
        if key.lower() == name:
            return value
    return ""


class HeaderMasker:
    """Masks one side's captured headers, remembering the pairs that pass unchanged.

    Most headers (User-Agent, Accept, Host, Content-Type) come back event after event with
    the same value: what each became is kept when it held nothing to hide (only those:
    the others add to ``found``).
    """

    def __init__(self, rule: Rule, as_text: Callable[[Any, Any], tuple[str, str]]) -> None:
        self._rule = rule
        self._as_text = as_text
        self._seen: dict[Any, tuple[str, str]] = {}

    def mask(self, raw: list[tuple[Any, Any]], found: Found) -> list[tuple[str, str]]:
        rule = self._rule
        seen = self._seen
        result = []
        for pair in raw:
            remember = True
            try:
                done = seen.get(pair)
            except TypeError:  # an unhashable pair the app handed over: not remembered
                done, remember = None, False
            if done is None:
                done, passed = redact_header(*self._as_text(*pair), rule, found)
                if passed and remember and len(done[1]) <= _SEEN_HEADER_CHARS:
                    if len(seen) >= _SEEN_HEADERS:
                        seen.clear()
                    seen[pair] = done
            result.append(done)
        return result
