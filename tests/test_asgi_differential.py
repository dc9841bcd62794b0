"""Differential tests: under real ASGI servers, the wrapped app and the bare one are
indistinguishable on the wire.

Hypothesis generates ASGI responses (status, headers, body chunks, with or without
Content-Length, trailers (which HTTP/1.1 servers refuse or drop, alike for both), an
exception before the response or midway through it; how much of the request body the
app reads) and requests (method, path, query, body). Each is sent over a raw loopback
socket to the bare app (tests/asgi_apps.py's ``spec_bare``) and to the wrapped one
(``spec_wrapped``), each served by its own process of every server of the README's
matrix (uvicorn with h11 and with httptools, hypercorn, gunicorn with uvicorn workers),
and the bytes of the two answers are compared (but ``Date`` and ``Server``). The
wrapped processes ship to the test collector, and no event may fail inside the SDK.

A bounded number of examples runs with the suite; ``pytest -m slow`` runs many more
(``OTAS_DIFFERENTIAL_EXAMPLES`` sets how many).
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from .asgi_servers import ServerProcess
from .test_differential import (
    SETTINGS,
    SLOW_EXAMPLES,
    RequestSpec,
    raw_request,
    request_specs,
    without_variable_headers,
)

ASGI_CI_EXAMPLES = 15
SERVERS = ("uvicorn-h11", "uvicorn-httptools", "hypercorn", "gunicorn-uvicorn")


@dataclass
class ResponseSpec:
    status: int
    headers: list[tuple[str, str]]
    chunks: list[bytes]
    style: str
    read: str
    content_length: bool

    def header(self) -> str:
        data = dict(vars(self), chunks=[base64.b64encode(c).decode() for c in self.chunks])
        encoded = base64.b64encode(json.dumps(data).encode()).decode()
        return f"X-Differential-Spec: {encoded}\r\nTE: trailers\r\n"


header_names = st.sampled_from(["x-a", "x-trace", "cache-control", "content-type", "vary"])
header_values = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-/;= ", max_size=30).map(
    str.strip
)
response_specs = st.builds(
    ResponseSpec,
    status=st.sampled_from([200, 201, 204, 302, 404, 500, 599]),
    headers=st.lists(st.tuples(header_names, header_values), max_size=4),
    chunks=st.lists(st.binary(max_size=400), max_size=5),
    style=st.sampled_from(["normal", "trailers", "raise_before", "raise_midway"]),
    read=st.sampled_from(["none", "one", "all"]),
    content_length=st.booleans(),
)


@pytest.fixture(scope="module")
def asgi_servers(collector_server) -> Iterator[dict[str, tuple[ServerProcess, ServerProcess]]]:
    """For each server, a process serving the bare app and one serving the wrapped app."""
    started: dict[str, tuple[ServerProcess, ServerProcess]] = {}
    try:
        for kind in SERVERS:
            started[kind] = (
                ServerProcess(kind, "tests.asgi_apps:spec_bare", collector_server.url),
                ServerProcess(kind, "tests.asgi_apps:spec_wrapped", collector_server.url),
            )
        yield started
    finally:
        for pair in started.values():
            for server in pair:
                server.stop()


def wrapped_stats(server: ServerProcess) -> dict[str, Any]:
    stats: dict[str, Any] = requests.get(server.url + "/__stats", timeout=5).json()
    return stats


def compare(servers: Any, token: str, response: ResponseSpec, request: RequestSpec) -> None:
    for kind, (bare, wrapped) in servers.items():
        extra = response.header()
        expected = without_variable_headers(raw_request(bare.url, request, token, extra))
        got = without_variable_headers(raw_request(wrapped.url, request, token, extra))
        assert got == expected, kind


@settings(max_examples=ASGI_CI_EXAMPLES, **SETTINGS)  # type: ignore[arg-type]
@given(response=response_specs, request=request_specs)
def test_under_asgi_servers_the_wrapped_app_is_indistinguishable_from_the_bare_one(
    asgi_servers, token, response, request
):
    compare(asgi_servers, token, response, request)


@pytest.mark.slow
@settings(max_examples=SLOW_EXAMPLES, **SETTINGS)  # type: ignore[arg-type]
@given(response=response_specs, request=request_specs)
def test_under_asgi_servers_the_wrapped_app_is_indistinguishable_at_length(
    asgi_servers, token, response, request
):
    compare(asgi_servers, token, response, request)


def test_every_differential_request_was_captured_and_settled_without_an_sdk_error(asgi_servers):
    for kind, (_, wrapped) in asgi_servers.items():
        deadline = time.monotonic() + 10
        stats = wrapped_stats(wrapped)
        while stats["queued"] and time.monotonic() < deadline:
            time.sleep(0.05)
            stats = wrapped_stats(wrapped)
        assert stats["captured"] > 0, kind
        assert stats["queued"] == 0, (kind, stats)
        for outcome in ("failed", "dropped"):
            assert "internal_error" not in stats["reasons"][outcome], (kind, stats)
