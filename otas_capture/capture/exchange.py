"""What the request thread records about one request: the raw material of an event.

This runs on the host application's request path, so it does as little as it can: it
counts bytes, keeps at most ``max_body_bytes`` of each body, and copies the few strings
it needs out of the WSGI environ. Parsing, redaction, masking and JSON encoding happen
later in the sender thread (see :mod:`otas_capture.event.build`).

The request body is counted and kept in a :class:`BodyBuffer` by
:class:`~otas_capture.capture.tee.InputTee`, which stands in for ``wsgi.input``.
"""

from __future__ import annotations

from itertools import chain
from typing import Any

from .._cache import BoundedCache

# Where the exchange of a captured request lives in its environ, for annotate() and the
# framework integrations. Its presence also tells a second OtasMiddleware around the
# same app that the request is already being captured.
EXCHANGE_ENVIRON_KEY = "otas_capture.exchange"

# Content types worth keeping as text. Anything else (images, archives, octet-stream,
# multipart uploads, Office documents, compressed bodies) is counted but not captured:
# it would be noise in OTAS and cost memory here.
_TEXT_SUBTYPES = frozenset(
    {
        "json",
        "xml",
        "javascript",
        "ecmascript",
        "graphql",
        "yaml",
        "x-yaml",
        "csv",
        "ndjson",
        "x-ndjson",
        "jsonl",
        "x-www-form-urlencoded",
    }
)
_TEXT_SUFFIXES = ("+json", "+xml", "+yaml")


def is_textual(content_type: str | None) -> bool:
    """Whether a body of this content type is captured. A missing type is sniffed later."""
    if not content_type:
        return True
    # Asked twice per request, of the same few types: the answers are kept.
    return _textual.lookup(content_type, _is_textual)


def _is_textual(content_type: str) -> bool:
    base = content_type.split(";", 1)[0].strip().lower()
    major, _, subtype = base.partition("/")
    if major == "text":
        return True
    return (
        subtype in _TEXT_SUBTYPES
        or subtype.endswith(_TEXT_SUFFIXES)
        # JSON and JavaScript dialects (x-json, x-amz-json-1.1, x-javascript) are text;
        # "xml" is not matched this way, as Office documents are zips named ...xml...
        or "json" in subtype
        or "javascript" in subtype
    )


_textual: BoundedCache[str, bool] = BoundedCache(256, max_key_length=200)


def is_encoded(content_encoding: Any) -> bool:
    """Whether a Content-Encoding value says the body is compressed (not identity)."""
    if not content_encoding:
        return False
    return str(content_encoding).strip().lower() not in ("", "identity")


class BodyBuffer:
    """Counts every byte that passes and keeps the first ``limit`` of them."""

    __slots__ = ("limit", "size", "data")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = 0
        # One growing buffer, not a list of chunks: a body read line by line would
        # otherwise cost a bytes object (~33 bytes of overhead) per line, unseen by
        # the queue's memory budget.
        self.data = bytearray()

    @property
    def kept(self) -> int:
        return len(self.data)

    def add(self, data: bytes | bytearray | memoryview) -> None:
        n = len(data)
        self.size += n
        room = self.limit - len(self.data)
        if room > 0 and n:
            self.data += data if n <= room else data[:room]

    @property
    def truncated(self) -> bool:
        return self.size > len(self.data) and self.limit > 0

    def getvalue(self) -> bytes:
        return bytes(self.data)


class Exchange:
    """One captured request and its response, handed from the request thread to the sender.

    Only plain values are kept: no reference to the environ, the application or the
    server's objects outlives the request.
    """

    __slots__ = (
        "token",
        "started_at",
        "start",
        "method",
        "script_name",
        "path_info",
        "query_string",
        "request_headers",
        "request_body",
        "content_length",
        "status",
        "response_headers",
        "response_body",
        "first_byte",
        "end",
        "error",
        "custom_properties",
        "metadata",
        "sealed",
    )

    def __init__(
        self,
        token: str,
        started_at: float,
        start: float,
        environ: dict[str, Any],
        request_body: BodyBuffer,
    ) -> None:
        self.token = token
        self.started_at = started_at
        self.start = start
        self.method: str = environ.get("REQUEST_METHOD", "GET")
        self.script_name: str = environ.get("SCRIPT_NAME", "")
        self.path_info: str = environ.get("PATH_INFO", "")
        self.query_string: str = environ.get("QUERY_STRING", "")
        # Copy only the header strings: the environ also holds the server's stream and
        # socket objects, which must not live on in the queue.
        self.request_headers: list[tuple[str, str]] = [
            (key, value) for key, value in environ.items() if key[:5] == "HTTP_"
        ]
        content_type = environ.get("CONTENT_TYPE")
        if content_type:
            self.request_headers.append(("CONTENT_TYPE", content_type))
        # Kept apart too: the request's declared size when the app never reads the body.
        self.content_length: str | None = environ.get("CONTENT_LENGTH")
        if self.content_length:
            self.request_headers.append(("CONTENT_LENGTH", self.content_length))
        self.request_body = request_body
        self.status: str | None = None
        self.response_headers: list[tuple[str, str]] = []
        self.response_body: BodyBuffer | None = None
        self.first_byte: float | None = None
        self.end: float | None = None
        self.error: str | None = None
        self.custom_properties: dict[str, Any] | None = None
        self.metadata: dict[str, Any] | None = None
        # Set when the exchange is handed to the sender: from then on the sender thread
        # reads it, so late additions (annotate() after the response ended) are ignored.
        self.sealed = False

    def fail(self, exc: BaseException) -> None:
        """Record the exception the application raised (the first one wins).

        Only its text is kept: the exception's traceback holds the application's frames
        and everything they reference.
        """
        if self.error is None and not self.sealed:
            self.error = describe_exception(exc)

    def annotate(self, props: dict[str, Any]) -> None:
        if self.sealed:
            return
        if self.custom_properties is None:
            self.custom_properties = {}
        self.custom_properties.update(props)

    def add_metadata(self, **values: Any) -> None:
        if self.sealed:
            return
        if self.metadata is None:
            self.metadata = {}
        self.metadata.update(values)

    def approx_size(self) -> int:
        """Bytes this exchange holds, for the queue's memory budget: everything it keeps.

        Runs on the request thread, so it adds lengths rather than asking each object
        for its size. The constants are CPython's object overheads rounded up: a str
        about 56 bytes, a header (two strs, a tuple, a list slot) about 176, the exchange
        with its lists and buffers about 512. Bodies count their allocated buffers,
        which grow in steps beyond what they keep. Annotations are walked up to 10,000
        nodes, so a cycle or a huge structure cannot stall the request; the unwalked
        rest counts 1 KiB a node.
        """
        request, response = self.request_headers, self.response_headers
        size = (
            512
            + 5 * 56
            + len(self.token)
            + len(self.method)
            + len(self.script_name)
            + len(self.path_info)
            + len(self.query_string)
            + self.request_body.data.__sizeof__()
            + 176 * (len(request) + len(response))
            + sum(map(len, chain.from_iterable(request)))
            + _headers_size(response)
        )
        if self.response_body is not None:
            size += self.response_body.data.__sizeof__()
        if self.error is not None:
            size += 56 + len(self.error)
        if not (self.custom_properties or self.metadata):
            return size
        # Annotations are usually a few flat strings and numbers: count those directly
        # and walk only what nests.
        stack: list[Any] = []
        for extra in (self.custom_properties, self.metadata):
            if not extra:
                continue
            size += 64 + 32 * len(extra)
            for key, value in extra.items():
                if type(key) is str and type(value) is str:
                    size += 112 + len(key) + len(value)
                else:
                    stack.append(key)
                    stack.append(value)
        walked = 0
        while stack:
            walked += 1
            if walked > 10_000:
                return size + 1024 * len(stack)
            item = stack.pop()
            if isinstance(item, (str, bytes)):
                size += 56 + len(item)
            elif isinstance(item, dict):
                size += 64 + 32 * len(item)
                stack.extend(item.keys())
                stack.extend(item.values())
            elif isinstance(item, (list, tuple, set, frozenset)):
                size += 64 + 16 * len(item)
                stack.extend(item)
            else:
                size += 32  # numbers, None, and anything else shallow
        return size


def _headers_size(headers: Any) -> int:
    """Characters in the app's response headers, whatever odd values it handed over.

    The app may pass anything to ``start_response`` (bytes, None, a non-pair); the
    server, not this count, is the one to refuse it.
    """
    try:
        return sum(map(len, chain.from_iterable(headers)))
    except (TypeError, ValueError):
        return sum(len(repr(pair)) for pair in headers) if isinstance(headers, list) else 1024


def describe_exception(exc: BaseException) -> str:
    """``"TypeName: message"``, never raising whatever ``__str__`` does."""
    try:
        message = str(exc)
    except Exception:  # a broken __str__ must not break the request
        message = "<unprintable>"
    name = type(exc).__name__
    if len(message) > _ERROR_LIMIT:  # some messages embed whole payloads
        message = message[:_ERROR_LIMIT] + "..."
    return f"{name}: {message}" if message else name


_ERROR_LIMIT = 4096


def decoded_path(path: str) -> str:
    """A PEP 3333 path (UTF-8 bytes carried as latin-1) as the text it spells."""
    try:
        return path.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return path


def mark_unread(exchange: Exchange, body: BodyBuffer) -> None:
    """The app never read a body the request declared: take its size from Content-Length."""
    try:
        declared = int(exchange.content_length or 0)
    except ValueError:
        return
    if declared > 0:
        body.size = declared
        body.limit = 0
        exchange.add_metadata(
            request_body_read=False, request_body_omitted="not read by the application"
        )
