"""The answer parser against h11, the oracle: the same answers read the same, or both refused.

Answers are drawn from a grammar of status lines, header lines and bodies, good and
bad (lengths of many digits, control bytes in values, both framings at once, broken
chunks, bytes past the end), and fed to the parser cut at random places. h11 reads
them whole. Where h11 is lenient on purpose (bare LF line ends, obsolete line folding,
HTTP versions other than 1.0 and 1.1, a protocol switch nobody asked for) this parser
refuses; those are the only answers h11 may accept that it refuses. It may also close a
connection h11 would keep (both framings at once, bytes past the answer), never keep
one h11 would close.
"""

from __future__ import annotations

import re
from typing import Union

import h11
from hypothesis import example, given, settings
from hypothesis import strategies as st

from otas_capture.otas.wire import ProtocolError, ResponseParser

# status, reason, headers (lower-case names, repeats joined), body, keeps the connection
Read = tuple[int, str, dict[str, str], bytes, bool]
Outcome = Union[Read, str]  # or "refused"

# Normalised by h11 in ways that do not matter here (deduplicated, lower-cased).
_FRAMING = {"content-length", "transfer-encoding"}


def _ours(answer: bytes, cuts: list[int]) -> Outcome:
    parser = ResponseParser()
    pieces = [answer[a:b] for a, b in zip([0, *cuts], [*cuts, len(answer)])]
    try:
        for piece in pieces:
            if piece and parser.feed(piece):
                break
        else:
            parser.eof()
    except ProtocolError:
        return "refused"
    response = parser.response
    assert response is not None
    headers = {k: v for k, v in response.headers.items() if k not in _FRAMING}
    keeps = not response.will_close and not parser.leftover
    return response.status, response.reason, headers, response.body, keeps


def _h11(answer: bytes) -> Outcome:
    conn = h11.Connection(h11.CLIENT)
    conn.send(
        h11.Request(method="POST", target="/", headers=[("Host", "a"), ("Content-Length", "0")])
    )
    conn.send(h11.EndOfMessage())
    conn.receive_data(answer)
    conn.receive_data(b"")  # the server closed after sending it
    body: list[bytes] = []
    head: h11.Response | None = None
    try:
        while True:
            event = conn.next_event()
            if isinstance(event, h11.Response):
                head = event
            elif isinstance(event, h11.Data):
                body.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                break
            elif not isinstance(event, h11.InformationalResponse):
                return "refused"  # closed before the answer ended
    except h11.RemoteProtocolError:
        return "refused"
    assert head is not None
    headers: dict[str, str] = {}
    for raw_name, raw_value in head.headers:
        name, value = raw_name.decode("latin-1"), raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    headers = {k: v for k, v in headers.items() if k not in _FRAMING}
    keeps = conn.their_state is h11.DONE
    return head.status_code, head.reason.decode("latin-1"), headers, b"".join(body), keeps


_BARE_LF = re.compile(rb"(?<!\r)\n")
_FOLD = re.compile(rb"\r?\n[ \t]")
_OTHER_VERSION = re.compile(rb"HTTP/(?!1\.[01] )[0-9]\.[0-9] |HTTP/1\.[01] 101")


def _h11_is_lenient(answer: bytes) -> bool:
    """Whether ``answer`` holds what h11 accepts on purpose and this parser refuses: a
    bare LF ending a line, a folded line, another HTTP version, an unasked-for switch."""
    return bool(_BARE_LF.search(answer) or _FOLD.search(answer) or _OTHER_VERSION.search(answer))


_CLEAN = st.lists(st.sampled_from(list(b"aZ09 \t,;:=\x7f\xff\x01")), max_size=6).map(bytes)
_DIRTY = st.lists(st.sampled_from(list(b"a \t\x00\r\n\x0b\x0c")), min_size=1, max_size=4).map(bytes)
_value = st.one_of(_CLEAN, _CLEAN, _CLEAN, _DIRTY)
_bad_lengths = st.sampled_from(
    [b"", b"-1", b"+2", b"2,3", b"9" * 20, b"9" * 21, b"9" * 5000, b"\xb2", b"2\x00", b"0x2"]
)
_codings = st.sampled_from(
    [b"chunked", b"chunked", b"Chunked", b"gzip, chunked", b"identity", b"", b"chunked, chunked"]
)
_connection = st.sampled_from(
    [b"", b"", b"Connection: close", b"Connection: keep-alive", b"Connection: Close, x",
     b"Connection: closed", b"connection: upgrade"]
)  # fmt: skip
_field = st.one_of(
    st.tuples(st.sampled_from([b"Retry-After", b"X-A", b"x-a", b"Date", b"Server"]), _value),
    st.tuples(st.sampled_from([b"X-A", b"Vary"]), _CLEAN),
    st.tuples(st.sampled_from([b"Bad Name", b"", b" folded", b"N\x00", b"\tX", b"X "]), _value),
).map(lambda pair: pair[0] + b":" + pair[1])
_status_line = st.builds(
    lambda version, code, reason: version + b" " + code + reason,
    st.sampled_from([b"HTTP/1.1"] * 6 + [b"HTTP/1.0", b"HTTP/2.0", b"http/1.1", b"HTTP/1.1 "]),
    st.sampled_from(
        [b"200", b"201", b"201", b"204", b"304", b"400", b"503", b"999", b"101", b"099", b"20"]
    ),
    st.sampled_from([b" OK", b" Created", b"", b" ", b" a\tb", b" a\x00b", b" \xff", b" a\rb"]),
)


def _chunked(pieces: list[bytes], extension: bytes, trailer: list[bytes]) -> bytes:
    out = b"".join(b"%x%s\r\n%s\r\n" % (len(p), extension, p) for p in pieces)
    return out + b"0\r\n" + b"".join(line + b"\r\n" for line in trailer) + b"\r\n"


_chunks = st.builds(
    _chunked,
    st.lists(st.binary(min_size=1, max_size=5), max_size=3),
    st.sampled_from([b"", b"", b";a=b", b"; x", b" ", b";\n", b" ;a"]),
    st.lists(st.sampled_from([b"T: v", b"bad", b" fold", b"T:\x00"]), max_size=2),
) | st.sampled_from([b"zz\r\n", b"2\r\nab", b"2\r\nabX\r\n0\r\n\r\n", b"1" * 25 + b"\r\n"])


@st.composite
def _answers(draw: st.DrawFn) -> bytes:
    """An answer: mostly well-formed, with one or two things wrong in many."""
    lines = draw(st.lists(_field, max_size=3))
    lines.append(draw(_connection))
    framing = draw(st.sampled_from(["length", "length", "chunked", "close", "both", "bad"]))
    body = draw(st.binary(max_size=8))
    if framing in ("chunked", "both"):
        lines.append(b"Transfer-Encoding: " + draw(_codings))
        body = draw(_chunks)
    if framing in ("length", "both"):
        length = b"%d" % len(body)
        length = draw(
            st.sampled_from([length, length, length, length + b", " + length, b"0" + length])
        )
        lines.append(b"Content-Length: " + length)
    if framing == "bad":
        lines.append(b"Content-Length: " + draw(_bad_lengths))
    lines = [draw(_status_line), *draw(st.permutations([line for line in lines if line]))]
    interim = draw(st.sampled_from([b"", b"", b"", b"HTTP/1.1 100 Continue\r\n\r\n"]))
    ending = draw(st.sampled_from([b"\r\n\r\n"] * 8 + [b"\n\n", b"\r\n\n"]))
    extra = draw(st.sampled_from([b""] * 4 + [b"HTTP/1.1 200 OK\r\n\r\n"]))
    return interim + b"\r\n".join(lines) + ending + body + extra


@settings(max_examples=1500, deadline=None, database=None)
@given(_answers() | st.binary(max_size=60), st.data())
@example(b"HTTP/1.1 201 Created\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n", None)
@example(b"HTTP/1.1 201 Created\r\nX: a\x00b\r\nContent-Length: 0\r\n\r\n", None)
@example(
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", None
)
def test_the_parser_reads_every_answer_as_h11_does_or_refuses_it(
    answer: bytes, data: st.DataObject | None
) -> None:
    cuts = [] if data is None else sorted(data.draw(st.lists(st.integers(0, len(answer)))))
    ours, theirs = _ours(answer, cuts), _h11(answer)
    if ours == "refused":
        assert theirs == "refused" or _h11_is_lenient(answer), (answer, theirs)
        return
    assert theirs != "refused", answer
    assert isinstance(ours, tuple) and isinstance(theirs, tuple)
    assert ours[:4] == theirs[:4], answer
    assert not ours[4] or theirs[4], answer  # never keeps a connection h11 would close
