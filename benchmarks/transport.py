"""CPU per log call of each way to POST an event to Brain over a kept-alive connection.

Brain takes one event per call, so the sender's CPU per call is its CPU per event (plus
building the event). This script POSTs the same real event (about 2.6 KB of JSON, with
a valid session token) to the bundled collector running in another process, over one
kept-alive loopback connection, and reads the calling thread's CPU clock
(``time.thread_time``) around a batch of calls. Transports, run interleaved in rounds
(the machine is shared and noisy: the table shows the median of the rounds):

* ``http.client``: the standard library's keep-alive connection;
* ``wire.KeepAliveConnection``: preformatted headers, one ``sendall``, the strict parser.

A second table makes the collector answer each call ``--latency`` seconds late (50 ms)
and keeps ``--concurrency`` calls in flight (16), that many threads each with a
connection (``http.client``, or ``wire``). It reports the process's CPU per call (all
threads: what the hand-offs between threads cost shows here) and calls per second
against the ideal ``concurrency / latency``.

It also times the pieces of building an event: ``json.dumps`` of the event dict and,
where installed, ``orjson.dumps`` (shown for comparison only).

Run ``python benchmarks/transport.py [--calls N] [--rounds R]``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import Process, start_collector  # noqa: E402
from run import http as http_call  # noqa: E402

from otas_capture.collector import DEMO_PROJECT_ID, DEMO_SDK_KEY, Collector  # noqa: E402
from otas_capture.contract import (  # noqa: E402
    SDK_KEY_HEADER,
    SDK_LOG_PATH,
    SESSION_TOKEN_HEADER,
)
from otas_capture.otas.wire import KeepAliveConnection  # noqa: E402

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


def clear(url: str) -> None:
    http_call("DELETE", url + "/bench/count")  # forget what the collector accepted so far


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


def threaded_delivery(
    make: Callable[[], Callable[[int], None]], calls: int, concurrency: int
) -> None:
    """``calls`` calls shared by ``concurrency`` threads, each with its own connection."""
    runners = [make() for _ in range(concurrency)]
    share = [calls // concurrency + (i < calls % concurrency) for i in range(concurrency)]
    threads = [threading.Thread(target=run, args=(n,)) for run, n in zip(runners, share)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def slow_server_table(args: argparse.Namespace, token: str, payload: bytes) -> list[str]:
    """Threads, each with its connection, with the collector slow to answer."""
    collector: Process = start_collector(args.latency)
    url = collector.url
    concurrency = args.concurrency
    calls = max(concurrency * 4, int(concurrency / args.latency * 2))
    variants: dict[str, Callable[[], None]] = {
        f"{concurrency} threads, http.client": lambda: threaded_delivery(
            lambda: http_client_calls(url, payload, token), calls, concurrency
        ),
        f"{concurrency} threads, wire.KeepAliveConnection": lambda: threaded_delivery(
            lambda: wire_calls(url, payload, token), calls, concurrency
        ),
    }
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    rate: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    try:
        for round_number in range(args.slow_rounds):
            k = round_number % len(names)
            for name in names[k:] + names[:k]:
                clear(url)
                start_cpu, start_wall = time.process_time(), time.perf_counter()
                variants[name]()
                cpu[name].append((time.process_time() - start_cpu) / calls * 1e6)
                rate[name].append(calls / (time.perf_counter() - start_wall))
                got = int(http_call("GET", url + "/bench/count"))
                if got != calls:
                    raise SystemExit(f"{name}: {got} of {calls} calls were accepted")
    finally:
        collector.stop()
    ideal = concurrency / args.latency
    lines = [
        f"\nWith {args.latency * 1000:g} ms added to each call, {calls} calls, "
        f"{args.slow_rounds} rounds, medians (connections opened inside the measure):\n",
        "| how | process CPU per call, µs | calls/s (ideal " + f"{ideal:.0f}) |",
        "|---|---:|---:|",
    ]
    for name in names:
        lines.append(
            f"| {name} | {statistics.median(cpu[name]):.1f} | {statistics.median(rate[name]):.0f} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=400, help="calls per batch (400)")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (7)")
    parser.add_argument(
        "--latency", type=float, default=0.05, help="s added per call, slow table (0.05)"
    )
    parser.add_argument("--concurrency", type=int, default=16, help="slow table (16)")
    parser.add_argument("--slow-rounds", type=int, default=3, help="slow table rounds (3)")
    args = parser.parse_args(argv)

    collector = start_collector()
    url = collector.url
    try:
        token = Collector().issue_token()
        event = sample_event()
        payload = json.dumps(event).encode()
        variants: dict[str, Callable[[int], None]] = {
            "http.client keep-alive": http_client_calls(url, payload, token),
            "wire.KeepAliveConnection": wire_calls(url, payload, token),
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
        collector.stop()

    print(f"{len(payload)}-byte event, {args.calls} calls x {args.rounds} rounds, medians\n")
    print("| transport | CPU per call, µs (calling thread) | wall per call, µs |")
    print("|---|---:|---:|")
    for name in names:
        print(
            f"| {name} | {statistics.median(cpu[name]):.1f} | {statistics.median(wall[name]):.1f} |"
        )
    for name, values in encode.items():
        print(f"| {name} of the event dict (encode only) | {statistics.median(values):.1f} | |")
    if args.slow_rounds > 0:
        print("\n".join(slow_server_table(args, token, payload)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
