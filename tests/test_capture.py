"""Specification of what the request thread records: content types, body buffers, the tee."""

from __future__ import annotations

import gc
import io
import tracemalloc
import weakref

import pytest

from otas_capture.capture.exchange import BodyBuffer, describe_exception, is_textual
from otas_capture.capture.tee import InputTee

# -- which bodies are captured -----------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "",
        "text/plain",
        "text/html; charset=utf-8",
        "text/csv",
        "text/event-stream",
        "application/json",
        "application/json; charset=utf-8",
        "APPLICATION/JSON",
        "application/problem+json",
        "application/vnd.api+json",
        "application/x-ndjson",
        "application/x-www-form-urlencoded",
        "application/x-www-form-urlencoded; charset=UTF-8",
        "application/xml",
        "application/soap+xml",
        "image/svg+xml",
        "application/javascript",
        "application/graphql",
        "application/x-yaml",
        "application/csv",
    ],
)
def test_text_content_types_are_captured(content_type):
    assert is_textual(content_type) is True


@pytest.mark.parametrize(
    "content_type",
    ["application/x-amz-json-1.1", "application/x-json", "application/x-javascript"],
)
def test_json_and_javascript_dialects_are_captured(content_type):
    assert is_textual(content_type) is True


@pytest.mark.parametrize(
    "content_type",
    [
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    ],
)
def test_office_documents_are_archives_and_not_captured(content_type):
    assert is_textual(content_type) is False


@pytest.mark.parametrize(
    "content_type",
    [
        "image/png",
        "image/jpeg",
        "audio/mpeg",
        "video/mp4",
        "font/woff2",
        "application/octet-stream",
        "application/pdf",
        "application/zip",
        "application/gzip",
        "application/x-protobuf",
        "application/msgpack",
        "multipart/form-data; boundary=----x",
        "multipart/mixed; boundary=json",
        "application/octet-stream; name=data.json",
        "MULTIPART/FORM-DATA",
    ],
)
def test_binary_content_types_are_not_captured(content_type):
    assert is_textual(content_type) is False


# -- the body buffer ---------------------------------------------------------------------


def test_body_buffer_keeps_everything_under_its_limit():
    buffer = BodyBuffer(10)
    buffer.add(b"abc")
    buffer.add(b"def")
    assert (buffer.getvalue(), buffer.size, buffer.kept, buffer.truncated) == (
        b"abcdef",
        6,
        6,
        False,
    )


def test_body_buffer_exactly_at_its_limit_is_not_truncated():
    buffer = BodyBuffer(6)
    buffer.add(b"abcdef")
    assert buffer.getvalue() == b"abcdef" and buffer.truncated is False


def test_body_buffer_counts_every_byte_but_keeps_at_most_its_limit():
    buffer = BodyBuffer(5)
    for chunk in (b"abc", b"defgh", b"ijklmnop"):
        buffer.add(chunk)
    assert buffer.size == 16
    assert buffer.kept == 5
    assert buffer.getvalue() == b"abcde"
    assert buffer.truncated is True


def test_body_buffer_keeps_the_first_bytes_of_one_large_chunk():
    buffer = BodyBuffer(4)
    buffer.add(b"0123456789")
    assert (buffer.getvalue(), buffer.size, buffer.truncated) == (b"0123", 10, True)


def test_body_buffer_with_limit_zero_keeps_nothing_and_counts_everything():
    buffer = BodyBuffer(0)
    buffer.add(b"abc")
    buffer.add(b"defg")
    assert buffer.getvalue() == b""
    assert buffer.size == 7 and buffer.kept == 0
    # A zero limit means "not captured", which is reported as omitted, not as truncated.
    assert buffer.truncated is False


def test_empty_chunks_change_nothing():
    buffer = BodyBuffer(3)
    buffer.add(b"")
    assert (buffer.size, buffer.kept, buffer.getvalue(), buffer.truncated) == (0, 0, b"", False)


def test_body_buffer_keeps_a_copy_of_mutable_chunks():
    data = bytearray(b"abc")
    buffer = BodyBuffer(10)
    buffer.add(data)
    buffer.add(memoryview(bytearray(b"xyz")))
    data[:] = b"zzz"
    assert buffer.getvalue() == b"abcxyz"


def test_a_body_read_in_tiny_pieces_costs_no_more_memory_than_its_bytes():
    buffer = BodyBuffer(65536)
    for _ in range(32768):
        buffer.add(b"a\n")
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = BodyBuffer(65536)
        for _ in range(32768):
            kept.add(b"a\n")
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert kept.kept == 65536
    assert held < 65536 * 1.5  # not one object per line


def test_a_tee_is_freed_with_its_request_without_waiting_for_the_garbage_collector():
    gc.disable()
    try:
        tee = InputTee(io.BytesIO(b"x" * 1024), BodyBuffer(100))
        tee.read()
        tee.readinto(bytearray(10))
        alive = weakref.ref(tee)
        del tee
        assert alive() is None
    finally:
        gc.enable()


# -- the input tee -----------------------------------------------------------------------

BODY = b"first line\nsecond line\n\nfourth line without newline"


def run_both(operations):
    """Apply the same reads to a plain stream and a tee of an identical one."""
    plain = io.BytesIO(BODY)
    buffer = BodyBuffer(1 << 20)
    tee = InputTee(io.BytesIO(BODY), buffer)
    got_plain = [operation(plain) for operation in operations]
    got_tee = [operation(tee) for operation in operations]
    return got_plain, got_tee, buffer


def flatten(results):
    out = b""
    for result in results:
        out += b"".join(result) if isinstance(result, list) else result
    return out


READS = {
    "read()": [lambda s: s.read()],
    "read(-1)": [lambda s: s.read(-1)],
    "read(None)": [lambda s: s.read(None)],
    "read(n) until empty": [lambda s: s.read(7)] * 12,
    "read(0)": [lambda s: s.read(0), lambda s: s.read()],
    "readline()": [lambda s: s.readline()] * 6,
    "readline(n)": [lambda s: s.readline(4)] * 16,
    "readlines()": [lambda s: s.readlines()],
    "readlines(hint)": [lambda s: s.readlines(5), lambda s: s.readlines()],
    "iteration": [lambda s: list(iter(s))],
    "mixed": [
        lambda s: s.read(3),
        lambda s: s.readline(),
        lambda s: s.readline(2),
        lambda s: s.readlines(1),
        lambda s: s.read(5),
        lambda s: next(iter(s)),
        lambda s: s.read(),
        lambda s: s.read(),
        lambda s: s.readline(),
    ],
}


@pytest.mark.parametrize("name", sorted(READS))
def test_input_tee_returns_exactly_what_the_stream_returns(name):
    got_plain, got_tee, _ = run_both(READS[name])
    assert got_tee == got_plain


@pytest.mark.parametrize("name", sorted(READS))
def test_input_tee_copies_what_was_read_in_order(name):
    _, got_tee, buffer = run_both(READS[name])
    assert buffer.getvalue() == flatten(got_tee)
    assert buffer.size == len(flatten(got_tee))


def test_input_tee_copies_the_whole_body_once_everything_is_read():
    _, _, buffer = run_both(READS["mixed"])
    assert buffer.getvalue() == BODY


def test_input_tee_copies_nothing_the_application_did_not_read():
    buffer = BodyBuffer(1024)
    tee = InputTee(io.BytesIO(BODY), buffer)
    assert tee.read(5) == b"first"
    assert buffer.getvalue() == b"first" and buffer.size == 5


def test_input_tee_respects_the_buffer_limit_but_gives_the_app_everything():
    buffer = BodyBuffer(8)
    tee = InputTee(io.BytesIO(BODY), buffer)
    assert tee.read() == BODY
    assert buffer.getvalue() == BODY[:8]
    assert buffer.size == len(BODY) and buffer.truncated


def test_iterating_the_tee_yields_lines_like_the_stream():
    tee = InputTee(io.BytesIO(BODY), BodyBuffer(1024))
    assert [line for line in tee] == list(io.BytesIO(BODY))


def test_input_tee_passes_other_attributes_through_to_the_stream():
    class Stream(io.BytesIO):
        custom = "mine"

        def peek_custom(self):
            return "peeked"

    stream = Stream(BODY)
    tee = InputTee(stream, BodyBuffer(1024))
    assert tee.custom == "mine"
    assert tee.peek_custom() == "peeked"
    assert tee.seekable() is True
    assert tee.closed is False
    tee.close()
    assert stream.closed is True


def test_input_tee_raises_attribute_error_for_what_the_stream_lacks():
    class Minimal:
        def read(self, *args):
            return b""

    tee = InputTee(Minimal(), BodyBuffer(10))
    with pytest.raises(AttributeError):
        tee.fileno  # noqa: B018
    assert not hasattr(tee, "close")


def test_input_tee_propagates_the_streams_errors():
    class Broken:
        def read(self, *args):
            raise OSError("client went away")

    tee = InputTee(Broken(), BodyBuffer(10))
    with pytest.raises(OSError, match="client went away"):
        tee.read()


# -- describing exceptions ---------------------------------------------------------------


class Unprintable(Exception):
    def __str__(self):
        raise RuntimeError("no str for you")


class NotAString(Exception):
    def __str__(self):
        return 42  # type: ignore[return-value]


@pytest.mark.parametrize(
    "exc, text",
    [
        (ValueError("bad value"), "ValueError: bad value"),
        (KeyError("user_id"), "KeyError: 'user_id'"),
        (RuntimeError("a", "b"), "RuntimeError: ('a', 'b')"),
        (ZeroDivisionError("division by zero"), "ZeroDivisionError: division by zero"),
    ],
)
def test_describe_exception_is_type_colon_message(exc, text):
    assert describe_exception(exc) == text


@pytest.mark.parametrize(
    "exc, text",
    [
        (ValueError(), "ValueError"),
        (KeyboardInterrupt(), "KeyboardInterrupt"),
        (RuntimeError(""), "RuntimeError"),
    ],
)
def test_describe_exception_is_the_bare_type_when_the_message_is_empty(exc, text):
    assert describe_exception(exc) == text


@pytest.mark.parametrize("exc", [Unprintable(), NotAString()])
def test_describe_exception_survives_a_broken_str(exc):
    assert describe_exception(exc) == f"{type(exc).__name__}: <unprintable>"


def test_describe_exception_cuts_a_huge_message():
    text = describe_exception(ValueError("x" * 1_000_000))
    assert text.startswith("ValueError: xxx") and len(text) < 5000


@pytest.mark.parametrize(
    "offered",
    [set(), {"readinto"}, {"read1"}, {"readall"}, {"readinto", "read1", "readall"}],
    ids=lambda names: "+".join(sorted(names)) or "none",
)
def test_the_tee_offers_exactly_the_optional_reads_its_stream_offers(offered):
    real = io.BytesIO(BODY)

    class Stream:
        def read(self, *args):
            return real.read(*args)

    for name in offered:
        setattr(Stream, name, lambda self, *args, _name=name: getattr(real, _name)(*args))
    if "readall" in offered:
        Stream.readall = lambda self: real.read()
    buffer = BodyBuffer(1 << 20)
    tee = InputTee(Stream(), buffer)
    assert {n for n in ("readinto", "read1", "readall") if hasattr(tee, n)} == offered
    if "readinto" in offered:
        chunk = bytearray(10)
        assert tee.readinto(chunk) == 10
    if "read1" in offered:
        tee.read1(5)
    if "readall" in offered:
        tee.readall()
    tee.read()
    assert buffer.getvalue() == BODY
