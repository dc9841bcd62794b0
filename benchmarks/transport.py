"""CPU per log call of each way to POST an event to Brain over a kept-alive connection.

Brain takes one event per call, so the sender's CPU per call is its CPU per event (plus
building the event). This script POSTs the same real event (about 2.6 KB of JSON, with
a valid session token) to the bundled collector running in another process, over one
kept-alive loopback connection, and reads the calling thread's CPU clock
(``time.thread_time``) around a batch of calls. Transports, run interleaved in rounds
(the machine is shared and noisy: the table shows the median of the rounds):

* ``http.client``: what ``otas_capture.sender.BrainConnection`` does today;
* ``wire.KeepAliveConnection``: preformatted headers, one ``sendall``, the strict parser;
* ``wire.Multiplexer``, 1 connection: the same bytes through the selector loop;
* ``wire.Multiplexer``, 4 connections: four calls in flight from one thread.

It also times the pieces of building an event: ``json.dumps`` of the event dict and,
where installed, ``orjson.dumps`` (shown for comparison only).

Run ``python benchmarks/transport.py [--calls N] [--rounds R]``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import socket
import statistics
import sys
import threading
import time
import urllib.request
from typing import Any, Callable

from otas_capture.collector import DEMO_PROJECT_ID, DEMO_SDK_KEY, EVENTS_PATH, Collector, serve
from otas_capture.contract import SDK_KEY_HEADER, SDK_LOG_PATH, SESSION_TOKEN_HEADER
from otas_capture.wire import KeepAliveConnection, Multiplexer

USER_AGENT = "otas-capture-bench"


def sample_event() -> dict[str, Any]:
    """An event like the Flask benchmark's (1 KB JSON in and out), about 2.6 KB."""
    body = json.dumps({"name": "Keyboard", "price": 49.9, "note": "x" * 960})
    headers = {"Host": "127.0.0.1:8000", "Content-Type": "application/json", "X-Tenant": "a"}
    return {
        "project_id": DEMO_PROJECT_ID,
        "path": "/api/items",
        "method": "POST",
        "status_code": 201,
        "latency_ms": 0.091,
        "request_size_bytes": len(body),
        "response_size_bytes": len(body),
        "request_headers": json.dumps(headers),
        "request_body": body,
        "query_params": "{}",
        "post_data": "",
        "response_headers": json.dumps({"Content-Type": "application/json"}),
        "response_body": body,
        "request_content_type": "application/json",
        "response_content_type": "application/json",
        "custom_properties": {},
        "error": "",
        "metadata": {"sdk": "otas-capture", "sdk_version": "0.1.0", "route": "/api/items"},
    }


def _serve_forever(port: int) -> None:
    serve(port=port)
    threading.Event().wait()


def start_collector() -> tuple[str, Any]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    process = multiprocessing.get_context("spawn").Process(
        target=_serve_forever, args=(port,), daemon=True
    )
    process.start()
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url + EVENTS_PATH, timeout=5).close()
            return url, process
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def clear(url: str) -> None:
    request = urllib.request.Request(url + EVENTS_PATH, method="DELETE")
    urllib.request.urlopen(request, timeout=30).close()


def http_client_calls(url: str, payload: bytes, token: str) -> Callable[[int], None]:
    host, port = url.split("//")[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    conn.connect()
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        SDK_KEY_HEADER: DEMO_SDK_KEY,
        SESSION_TOKEN_HEADER: token,
    }

    def run(n: int) -> None:
        for _ in range(n):
            conn.request("POST", SDK_LOG_PATH, payload, headers)
            response = conn.getresponse()
            response.read()
            assert response.status == 201, response.status

    return run


def fixed_headers() -> dict[str, str]:
    return {
        "User-Agent": USER_AGENT,
        "Content-Type": "application/json",
        SDK_KEY_HEADER: DEMO_SDK_KEY,
    }


def wire_calls(url: str, payload: bytes, token: str) -> Callable[[int], None]:
    conn = KeepAliveConnection(url, SDK_LOG_PATH, fixed_headers(), timeout=5)
    extra = ((SESSION_TOKEN_HEADER, token),)

    def run(n: int) -> None:
        for _ in range(n):
            response = conn.post(payload, extra)
            assert response.status == 201, response.status

    return run


def mux_calls(url: str, payload: bytes, token: str, connections: int) -> Callable[[int], None]:
    mux = Multiplexer(url, SDK_LOG_PATH, fixed_headers(), timeout=5, connections=connections)
    extra = ((SESSION_TOKEN_HEADER, token),)

    def run(n: int) -> None:
        started = done = 0
        while done < n:
            while mux.free and started < n:
                mux.submit(started, payload, extra)
                started += 1
            for _, outcome in mux.poll(1.0):
                assert not isinstance(outcome, Exception), outcome
                assert outcome.status == 201, outcome.status
                done += 1

    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=400, help="calls per batch (400)")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (7)")
    args = parser.parse_args(argv)

    url, process = start_collector()
    try:
        token = Collector().issue_token()
        event = sample_event()
        payload = json.dumps(event).encode()
        variants: dict[str, Callable[[int], None]] = {
            "http.client keep-alive": http_client_calls(url, payload, token),
            "wire.KeepAliveConnection": wire_calls(url, payload, token),
            "wire.Multiplexer, 1 connection": mux_calls(url, payload, token, 1),
            "wire.Multiplexer, 4 connections": mux_calls(url, payload, token, 4),
        }
        for run in variants.values():
            run(50)  # warm up: connections open, code paths hot
        cpu: dict[str, list[float]] = {name: [] for name in variants}
        wall: dict[str, list[float]] = {name: [] for name in variants}
        names = list(variants)
        for round_number in range(args.rounds):
            clear(url)
            order = names[round_number % len(names) :] + names[: round_number % len(names)]
            for name in order:
                start_cpu, start_wall = time.thread_time(), time.perf_counter()
                variants[name](args.calls)
                cpu[name].append((time.thread_time() - start_cpu) / args.calls * 1e6)
                wall[name].append((time.perf_counter() - start_wall) / args.calls * 1e6)
        encode: dict[str, list[float]] = {"json.dumps": []}
        try:
            import orjson  # type: ignore[import-not-found]

            encode["orjson.dumps"] = []
        except ImportError:
            orjson = None
        for _ in range(args.rounds):
            start = time.thread_time()
            for _ in range(2000):
                json.dumps(event).encode()
            encode["json.dumps"].append((time.thread_time() - start) / 2000 * 1e6)
            if orjson is not None:
                start = time.thread_time()
                for _ in range(2000):
                    orjson.dumps(event)
                encode["orjson.dumps"].append((time.thread_time() - start) / 2000 * 1e6)
    finally:
        process.terminate()
        process.join(5)

    print(f"{len(payload)}-byte event, {args.calls} calls x {args.rounds} rounds, medians\n")
    print("| transport | CPU per call, µs (calling thread) | wall per call, µs |")
    print("|---|---:|---:|")
    for name in names:
        print(
            f"| {name} | {statistics.median(cpu[name]):.1f} | {statistics.median(wall[name]):.1f} |"
        )
    for name, values in encode.items():
        print(f"| {name} of the event dict (encode only) | {statistics.median(values):.1f} | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
