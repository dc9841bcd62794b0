"""The little of HTTP the collector, its viewer and the demo app need, on the standard library.

The local collector and ``otas-capture demo`` must run from a plain ``pip install``:
the middleware's own dependencies (requests, PyJWT) and nothing more. So instead of a
web framework, this module gives the handful of pieces they use:

- :class:`Request`: a view of a WSGI environ (method, decoded path, query arguments,
  case-insensitive headers, remote address) with a bounded body stream that reads at
  most the declared Content-Length, or, when the server de-chunked the body (it sets
  ``wsgi.input_terminated``), up to its end; without either there is no body.
- :class:`Response`: status, headers and a body (bytes, text, or an iterable of chunks
  for a streamed answer), itself a WSGI app.
- :class:`HTTPError` and its cases :class:`NotFound`, :class:`MethodNotAllowed`,
  :class:`ClientDisconnected`: raised by handlers or the router, answered as small
  HTML pages like a framework's default ones.
- :func:`status_phrase`: the reason phrase of a status code, from :class:`http.HTTPStatus`.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Iterator, Mapping
from http import HTTPStatus
from typing import Any, Callable
from urllib.parse import parse_qsl

__all__ = [
    "ClientDisconnected",
    "HTTPError",
    "MethodNotAllowed",
    "NotFound",
    "Request",
    "RequestHeaders",
    "Response",
    "status_phrase",
]

StartResponse = Callable[..., Any]

# Text types get an explicit charset, as browsers otherwise guess one.
_TEXT_PREFIXES = ("text/",)


def status_phrase(code: int, default: str = "Unknown") -> str:
    """``404`` -> ``"Not Found"``; ``default`` for a code HTTP does not name."""
    try:
        return HTTPStatus(code).phrase
    except ValueError:
        return default


def _wsgi_text(value: str) -> str:
    # WSGI hands URL parts over as latin-1 decoded bytes; the client sent UTF-8.
    return value.encode("latin-1").decode("utf-8", "replace")


class RequestHeaders(Mapping[str, str]):
    """A request's headers from its WSGI environ, looked up by any letter case."""

    def __init__(self, environ: Mapping[str, Any]) -> None:
        self._environ = environ

    @staticmethod
    def _key(name: str) -> str:
        key = name.upper().replace("-", "_")
        return key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + key

    def __getitem__(self, name: str) -> str:
        value = self._environ.get(self._key(name))
        if not isinstance(value, str):
            raise KeyError(name)
        return value

    def __iter__(self) -> Iterator[str]:
        for key, value in self._environ.items():
            if not isinstance(value, str):
                continue
            if key.startswith("HTTP_"):
                yield key[5:].replace("_", "-").title()
            elif key in ("CONTENT_TYPE", "CONTENT_LENGTH") and value:
                yield key.replace("_", "-").title()

    def __len__(self) -> int:
        return sum(1 for _ in self)


class _BodyStream:
    """Reads at most ``limit`` bytes of ``source`` (all of it when ``limit`` is None).

    A client that declared a length and hung up before sending it is reported as
    :class:`ClientDisconnected` rather than as a short body.
    """

    def __init__(self, source: Any, limit: int | None) -> None:
        self._source = source
        self._left = limit

    def read(self, size: int = -1) -> bytes:
        if self._left is not None:
            if self._left <= 0:
                return b""
            size = self._left if size < 0 else min(size, self._left)
        data: bytes = self._source.read(size) if size >= 0 else self._source.read()
        if self._left is not None:
            if not data:
                raise ClientDisconnected()
            self._left -= len(data)
        return data


class Request:
    """A WSGI request, read-only except for its body stream."""

    def __init__(self, environ: dict[str, Any]) -> None:
        self.environ = environ
        self.method: str = str(environ.get("REQUEST_METHOD", "GET")).upper()
        # The path below the app's mount point, as routes are written.
        self.path: str = _wsgi_text(environ.get("PATH_INFO", "")) or "/"
        query = _wsgi_text(environ.get("QUERY_STRING", ""))
        # The first value of each name, as a framework's ``args.get`` gives.
        self.args: dict[str, str] = {}
        for name, value in parse_qsl(query, keep_blank_values=True):
            self.args.setdefault(name, value)
        self.headers = RequestHeaders(environ)
        self.remote_addr: str | None = environ.get("REMOTE_ADDR")
        self._stream: _BodyStream | None = None

    def header_text(self, name: str, default: str = "") -> str:
        """A header's value as the text the client meant: WSGI gives header bytes as
        latin-1, and clients send UTF-8 (read as latin-1 if it is not valid UTF-8)."""
        value = self.headers.get(name)
        if value is None:
            return default
        raw = value.encode("latin-1", "replace")
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return value

    @property
    def content_length(self) -> int | None:
        """The declared body length; None when absent or not a number."""
        raw = self.environ.get("CONTENT_LENGTH", "")
        try:
            length = int(raw)
        except (TypeError, ValueError):
            return None
        return length if length >= 0 else None

    @property
    def mimetype(self) -> str:
        """The Content-Type without parameters, lower case (``""`` if none)."""
        return self.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()

    @property
    def stream(self) -> _BodyStream:
        """The body, never read past what the client declared or the server ended."""
        if self._stream is None:
            source = self.environ["wsgi.input"]
            length = self.content_length
            if length is not None:
                self._stream = _BodyStream(source, length)
            elif self.environ.get("wsgi.input_terminated"):
                self._stream = _BodyStream(source, None)
            else:  # no length and not de-chunked: reading could block, so no body
                self._stream = _BodyStream(source, 0)
        return self._stream

    def get_data(self, max_bytes: int) -> bytes | None:
        """The whole body, or None if it is longer than ``max_bytes``."""
        length = self.content_length
        if length is not None and length > max_bytes:
            return None
        chunks: list[bytes] = []
        total = 0
        while total <= max_bytes:
            chunk = self.stream.read(min(64 * 1024, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        return None if total > max_bytes else b"".join(chunks)

    def form(self, max_bytes: int) -> dict[str, str]:
        """A ``application/x-www-form-urlencoded`` body's fields (first value of each);
        empty for other content types or a body over ``max_bytes``."""
        if self.mimetype != "application/x-www-form-urlencoded":
            return {}
        raw = self.get_data(max_bytes)
        fields: dict[str, str] = {}
        if raw is not None:
            for name, value in parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True):
                fields.setdefault(name, value)
        return fields


class Response:
    """A status, headers and a body; call it as a WSGI app to send it.

    ``body`` is bytes, text (sent as UTF-8) or an iterable of byte or text chunks,
    sent as they come (no Content-Length). ``mimetype`` sets the Content-Type, with
    ``charset=utf-8`` for text types; ``headers`` are added as given.
    """

    def __init__(
        self,
        body: bytes | str | Iterable[bytes | str] = b"",
        status: int = 200,
        *,
        mimetype: str | None = "text/plain",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.status_code = status
        self.mimetype = mimetype
        self.headers: dict[str, str] = {}
        if mimetype is not None and status != 204:
            charset = "; charset=utf-8" if mimetype.startswith(_TEXT_PREFIXES) else ""
            self.headers["Content-Type"] = mimetype + charset
        self.headers.update(headers or {})
        self._data: bytes | None = None
        self._chunks: Iterable[bytes | str] | None = None
        if isinstance(body, str):
            self._data = body.encode("utf-8")
        elif isinstance(body, (bytes, bytearray)):
            self._data = bytes(body)
        else:
            self._chunks = body

    @property
    def status(self) -> str:
        """The WSGI status line, ``"404 Not Found"``."""
        return f"{self.status_code} {status_phrase(self.status_code)}"

    def get_data(self) -> bytes:
        """The whole body (a streamed body is consumed and then kept)."""
        if self._data is None:
            chunks = self._chunks or ()
            self._data = b"".join(c.encode("utf-8") if isinstance(c, str) else c for c in chunks)
            self._chunks = None
        return self._data

    def _iter_body(self) -> Iterator[bytes]:
        for chunk in self._chunks or ():
            data = chunk.encode("utf-8") if isinstance(chunk, str) else chunk
            if data:
                yield data

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        headers = list(self.headers.items())
        if self._data is not None:
            if self.status_code != 204:
                headers.append(("Content-Length", str(len(self._data))))
            start_response(self.status, headers)
            return [self._data] if self.status_code != 204 else []
        start_response(self.status, headers)
        return self._iter_body()


class HTTPError(Exception):
    """An error answer; raise it from a handler, or call it as a WSGI app to send it."""

    code = 500

    def __init__(self, description: str = "", headers: Mapping[str, str] | None = None) -> None:
        super().__init__(description or status_phrase(self.code))
        self.description = description
        self.headers = dict(headers or {})

    def response(self) -> Response:
        """An HTML page naming the status, as a framework's default error page."""
        title = f"{self.code} {html.escape(status_phrase(self.code))}"
        detail = f"<p>{html.escape(self.description)}</p>\n" if self.description else ""
        page = f"<!doctype html>\n<title>{title}</title>\n<h1>{title}</h1>\n{detail}"
        return Response(page, self.code, mimetype="text/html", headers=self.headers)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        return self.response()(environ, start_response)


class NotFound(HTTPError):
    code = 404


class MethodNotAllowed(HTTPError):
    code = 405

    def __init__(self, valid_methods: Iterable[str], description: str = "") -> None:
        super().__init__(description, {"Allow": ", ".join(sorted(valid_methods))})


class ClientDisconnected(HTTPError):
    """The client hung up before sending the body it declared."""

    code = 400


def int_arg(request: Request, name: str, default: int, low: int, high: int) -> int | None:
    """The query argument ``name`` as a whole number in [low, high]; ``default`` when
    absent, None when it is not one."""
    raw = request.args.get(name, "")
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        return None
    return value if low <= value <= high else None
