"""How much memory otas-capture holds, whatever the payload size or the state of OTAS.

The middleware promises that its memory stays bounded: each captured body is cut to
``max_body_bytes`` while the bytes stream past, and events waiting for OTAS live in a
queue capped at ``queue_size`` events and ``queue_max_bytes`` bytes, beyond which new
events are dropped and counted. This script checks that promise with numbers, so that a
change that makes memory grow with the payload or with an outage shows up.

Memory is measured two ways, for each scenario separately:

* ``tracemalloc``: the peak of memory traced across the whole process (request thread,
  sender threads, and the bundled collector where one runs), above what was traced
  when the scenario started. This is the exact number the checks use.
* RSS: the growth of the process's resident set, from ``VmHWM`` (the peak, reset at
  the start of each scenario through ``/proc/self/clear_refs``) minus ``VmRSS`` at the
  start, where Linux offers them; "n/a" elsewhere. It includes what tracemalloc cannot
  see (thread stacks, allocator slack, tracemalloc's own bookkeeping) and what the
  allocator keeps from earlier scenarios, so it is a second opinion, not a check.

Two more readings catch memory that outlives its request: right after the last request
the script runs ``gc.collect()`` and reports what that freed ("held by cycles": memory
a finished request left in reference cycles, which only the cyclic collector frees, at
a time no budget controls), and after ``close()`` it checks that almost nothing stays.

As in ``overhead.py``, there is no HTTP server in front of the app: a WSGI environ is
built once with werkzeug's ``EnvironBuilder``, each call gets a copy with a fresh body
stream, and the response is consumed and ``close()``d, as a server would. Each scenario
uses a new middleware, closed at its end with a short timeout. Scenarios:

* huge payloads: one request streaming a generated request body (never held whole;
  the app reads it in 64 KiB chunks and throws them away) and a streamed response of
  the same size, shipped to the bundled collector. Run at 2 MiB and 200 MiB each way:
  the peak must not grow with the size, and the event must carry the exact sizes.
* OTAS unreachable: Brain's URL is a closed loopback port; thousands of requests with a
  64 KiB JSON request body and a 64 KiB text response each. The queue fills to
  ``queue_max_bytes`` and the rest is dropped (``queue_bytes_full``). Run with the
  default 64 MiB and with 8 MiB: the peak follows the setting.
* Brain hangs: every log call gets no answer; the sender times out and retries.
* Brain answers 500: every event is tried at once and waits for its retry as a built
  JSON payload (a 500 does not pause the sender the way an outage does).
* small chunks: OTAS unreachable, the app reads a CSV request body line by line and
  streams its CSV response row by row, so each body is kept as many small pieces.

Each scenario states the bound its peak must stay under (printed with the results);
the script exits 1 if a peak, the memory held by cycles or what stays after ``close()``
is over its limit, or if the huge event's sizes are not exact.

Run ``python benchmarks/memory.py --help``; see benchmarks/README.md for results.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import gc
import io
import itertools
import json
import logging
import os
import platform
import socket
import sys
import threading
import time
import tracemalloc
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Callable

from werkzeug.test import EnvironBuilder

from otas_capture import OtasMiddleware
from otas_capture.collector import DEMO_PROJECT_ID, DEMO_SDK_KEY, Collector, CollectorServer, serve
from otas_capture.config import Config
from otas_capture.contract import LOGGER_NAME, SESSION_TOKEN_HEADER

KiB = 1024
MiB = 1024 * KiB
TOKEN_HEADER = SESSION_TOKEN_HEADER
PATH = "/api/items"
CHUNK = 64 * KiB
BODY_SIZE = 64 * KiB  # request and response body of the queue scenarios
CSV_ROW = 32  # bytes per row in the small-chunks scenario
# Bodies the queue scenarios keep whole: cut at 64 KiB, as the scenario asks.
QUEUE_MAX_BODY_BYTES = 64 * KiB
# The stated bound of the queue scenarios: queue_max_bytes, times a margin for JSON
# escaping (an event that has been tried is held as its JSON payload, which is a little
# larger than the bodies it was built from), plus room for work in progress.
PAYLOAD_MARGIN = 1.25
WORK_IN_PROGRESS = 2 * MiB
# Memory a scenario may leave to the cyclic garbage collector, or keep after close().
CYCLE_LIMIT = 1 * MiB
LEFT_LIMIT = 1 * MiB
SENDER_THREAD_PREFIX = "otas-capture-sender"

WSGIApp = Callable[..., Iterable[bytes]]
Stats = dict[str, Any]


# -- memory readings --------------------------------------------------------------------


def proc_status_kib(name: str) -> int | None:
    """A ``kB`` field of /proc/self/status (VmRSS, VmHWM), or None where there is none."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(name + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux 4.0+); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return True


def _find_malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        return ctypes.CDLL(name).malloc_trim  # glibc only
    except (OSError, AttributeError):
        return None


_malloc_trim = _find_malloc_trim()


def release_freed_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc), so that one
    scenario's RSS does not start on pages another scenario left with the allocator."""
    gc.collect()
    if _malloc_trim is not None:
        _malloc_trim(0)


class MemoryWatch:
    """Peak traced memory and peak RSS growth over a ``with`` block."""

    def __init__(self) -> None:
        self.peak = 0
        self.left = 0
        self.rss_growth: int | None = None
        self._traced_start = 0
        self._rss_start: int | None = None
        self._rss_reset = False

    def __enter__(self) -> MemoryWatch:
        release_freed_memory()
        self._rss_reset = reset_peak_rss()
        self._rss_start = proc_status_kib("VmRSS")
        tracemalloc.reset_peak()
        self._traced_start = tracemalloc.get_traced_memory()[0]
        return self

    def __exit__(self, *exc_info: Any) -> None:
        peak = tracemalloc.get_traced_memory()[1]
        self.peak = peak - self._traced_start
        peak_rss = proc_status_kib("VmHWM")
        if self._rss_reset and self._rss_start is not None and peak_rss is not None:
            self.rss_growth = max(0, peak_rss - self._rss_start) * KiB
        gc.collect()
        self.left = tracemalloc.get_traced_memory()[0] - self._traced_start


def cycle_garbage() -> int:
    """Bytes that only the cyclic garbage collector frees (collecting them now).

    What a request leaves behind should go when its last reference does; memory kept
    by reference cycles instead lingers until a collection, outside every budget.
    """
    before = tracemalloc.get_traced_memory()[0]
    gc.collect()
    return max(0, before - tracemalloc.get_traced_memory()[0])


# -- bodies, apps and calls ---------------------------------------------------------------


def json_body(size: int) -> tuple[bytes, bytes]:
    """A JSON document of exactly ``size`` bytes, split where an 8-digit number goes.

    ``head + b"%08d" % n + tail`` is a new, distinct document for each ``n``, so that no
    two requests share a bytes object (the queue would then hold one copy, not many).
    """
    records = []
    length = 0
    for i in itertools.count():
        record = json.dumps(
            {
                "id": i,
                "name": f"item-{i:05d}",
                "price": 9.99,
                "tags": ["usb", "wired"],
                "in_stock": True,
            }
        )
        if length + len(record) + 2 > size - 64:
            break
        records.append(record)
        length += len(record) + 2
    document = '{"request": "########", "items": [' + ", ".join(records) + "]}"
    document += " " * (size - len(document))  # trailing whitespace is valid JSON
    head, _, tail = document.partition("########")
    return head.encode(), tail.encode()


def text_body(size: int) -> tuple[bytes, bytes]:
    """A plain-text document of exactly ``size`` bytes, split like :func:`json_body`."""
    lines = b"".join(
        b"line %06d of a plain text answer, nothing to mask\n" % i for i in range(size // 40)
    )
    document = (b"answer ########\n" + lines)[:size]
    head, _, tail = document.partition(b"########")
    return head, tail


def numbered(parts: tuple[bytes, bytes], number: int) -> bytes:
    return b"".join((parts[0], b"%08d" % number, parts[1]))


def csv_row(number: int) -> bytes:
    row = b"%08d,item-%08d,9.99,ok" % (number, number)
    return row + b" " * (CSV_ROW - 1 - len(row)) + b"\n"


class GeneratedStream:
    """A request body of ``size`` bytes made up as it is read, never held whole.

    Each ``read(n)`` returns a new bytes object of at most ``n`` bytes (NDJSON lines),
    as a socket-backed ``wsgi.input`` would.
    """

    LINE = b'{"id": 12345678, "name": "uploaded row", "price": 9.99, "ok": true}\n'

    def __init__(self, size: int) -> None:
        self._size = size
        self.position = 0
        self._pattern = self.LINE * (CHUNK // len(self.LINE) + 2)

    def read(self, size: int | None = -1) -> bytes:
        left = self._size - self.position
        wanted = left if size is None or size < 0 else min(size, left)
        pieces = []
        while wanted > 0:
            offset = self.position % len(self.LINE)
            piece = self._pattern[offset : offset + min(wanted, CHUNK)]  # a new object
            pieces.append(piece)
            self.position += len(piece)
            wanted -= len(piece)
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)


def generated_chunks(size: int) -> Iterator[bytes]:
    """``size`` bytes of NDJSON as new 64 KiB chunks, made as the server asks for them."""
    line = GeneratedStream.LINE
    pattern = line * (CHUNK // len(line) + 2)
    position = 0
    while position < size:
        offset = position % len(line)
        chunk = pattern[offset : offset + min(CHUNK, size - position)]
        position += len(chunk)
        yield chunk


def streaming_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Reads the request body in 64 KiB chunks, throwing them away; streams its answer."""
    stream = environ["wsgi.input"]
    read = 0
    while True:
        chunk = stream.read(CHUNK)
        if not chunk:
            break
        read += len(chunk)
    environ["bench.bytes_read"] = read
    size = environ["bench.response_size"]
    start_response(
        "200 OK", [("Content-Type", "application/x-ndjson"), ("Content-Length", str(size))]
    )
    return generated_chunks(size)


def make_whole_body_app() -> WSGIApp:
    """Reads the whole 64 KiB JSON body in one call; answers 64 KiB of new text."""
    answer = text_body(BODY_SIZE)
    numbers = itertools.count()

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        environ["bench.bytes_read"] = len(environ["wsgi.input"].read(length))
        body = numbered(answer, next(numbers))
        start_response(
            "200 OK",
            [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))],
        )
        return [body]

    return app


def csv_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Reads a CSV upload line by line; streams a 64 KiB CSV export row by row."""
    read = 0
    for line in environ["wsgi.input"]:
        read += len(line)
    environ["bench.bytes_read"] = read
    start_response("200 OK", [("Content-Type", "text/csv")])
    return (csv_row(number) for number in range(BODY_SIZE // CSV_ROW))


def _write(data: bytes) -> None:
    pass


def start_response(
    status: str, headers: list[Any], exc_info: Any = None
) -> Callable[[bytes], None]:
    return _write


def environ_for(token: str, content_type: str) -> dict[str, Any]:
    return EnvironBuilder(
        path=PATH, method="POST", content_type=content_type, headers={TOKEN_HEADER: token}
    ).get_environ()


def fresh(base: dict[str, Any], stream: Any, length: int) -> dict[str, Any]:
    environ = dict(base)
    environ["wsgi.input"] = stream
    environ["CONTENT_LENGTH"] = str(length)
    return environ


def call(app: WSGIApp, environ: dict[str, Any]) -> int:
    """Run one request the way a WSGI server does; return the response's byte count."""
    result = app(environ, start_response)
    sent = 0
    try:
        for chunk in result:
            sent += len(chunk)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    return sent


# -- scenarios ------------------------------------------------------------------------------


@dataclass
class Result:
    name: str
    requests: int
    bytes_through: int
    watch: MemoryWatch
    bound: int
    bounded_by: str
    stats: Stats
    config: Config
    outage: str
    cycles: int = 0
    queued_at_close: int = 0
    notes: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def closed_port_url() -> str:
    """The URL of a loopback port nothing listens on: connections are refused at once."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def options_for(url: str, **overrides: Any) -> dict[str, Any]:
    """Every numeric setting explicit, so that OTAS_* variables cannot change a run."""
    defaults = Config()
    options: dict[str, Any] = {
        name: getattr(defaults, name)
        for name in (
            "max_body_bytes",
            "queue_size",
            "queue_max_bytes",
            "batch_size",
            "flush_interval",
            "concurrency",
            "timeout",
            "max_retries",
            "retry_backoff",
            "sample_rate",
        )
    }
    options.update(
        sdk_key=DEMO_SDK_KEY,
        project_id=DEMO_PROJECT_ID,
        brain_url=url,
        uasam_url=url,
        enabled=True,
        skip_paths=(),
    )
    options.update(overrides)
    return options


def close_and_settle(middleware: OtasMiddleware, close_timeout: float) -> None:
    """close() with a short timeout, then wait for sender threads still inside a call
    (a hung POST) to return, so that the stats read afterwards do not move."""
    middleware.close(timeout=close_timeout)
    for thread in threading.enumerate():
        if thread.name.startswith(SENDER_THREAD_PREFIX):
            thread.join(middleware.config.timeout + 1.0)


def total_settled(stats: Stats) -> int:
    return stats["sent"] + stats["failed"] + stats["dropped"] + stats["skipped"]


def check_accounting(result: Result) -> None:
    stats = result.stats
    if stats["captured"] != result.requests:
        result.failures.append(f"captured {stats['captured']} of {result.requests} requests")
    if stats["queued"] != 0 or total_settled(stats) != stats["captured"]:
        result.failures.append(f"outcomes do not add up after close(): {stats}")


def check_bound(result: Result) -> None:
    if result.watch.peak > result.bound:
        result.failures.append(
            f"peak traced memory {mib(result.watch.peak)} MiB is over the stated bound "
            f"{mib(result.bound)} MiB ({result.bounded_by})"
        )
    if result.cycles > CYCLE_LIMIT:
        result.failures.append(
            f"{mib(result.cycles)} MiB was held by reference cycles after the requests: "
            f"freed only by gc.collect(), not when the requests ended"
        )
    if result.watch.left > LEFT_LIMIT:
        result.failures.append(
            f"{mib(result.watch.left)} MiB of traced memory was still held after close() "
            f"and gc.collect()"
        )


def run_huge(size: int, args: argparse.Namespace) -> Result:
    """One request with a streamed body and a streamed response of ``size`` bytes each."""
    name = f"huge payload: {size // MiB} MiB each way, collector up"
    print(f"running {name} ...", file=sys.stderr, flush=True)
    server = serve()
    try:
        middleware = OtasMiddleware(streaming_app, **options_for(server.url))
        max_body = middleware.config.max_body_bytes
        base = environ_for(server.collector.issue_token(), "application/x-ndjson")
        result_sizes: dict[str, Any] = {}
        with MemoryWatch() as watch:
            environ = fresh(base, GeneratedStream(size), size)
            environ["bench.response_size"] = size
            answered = call(middleware, environ)
            read = environ["bench.bytes_read"]
            del environ
            cycles = cycle_garbage()
            middleware.flush(timeout=30.0)
            events = server.collector.wait_for_events(1, timeout=10.0)
            close_and_settle(middleware, args.close_timeout)
            if events:
                event = events[0]
                result_sizes = {
                    key: event.get(key) for key in ("request_size_bytes", "response_size_bytes")
                }
                result_sizes["kept"] = (
                    len(event.get("request_body", "")),
                    len(event.get("response_body", "")),
                )
                result_sizes["truncated"] = (
                    event.get("metadata", {}).get("request_body_truncated"),
                    event.get("metadata", {}).get("response_body_truncated"),
                )
            del events
            server.collector.clear()  # it keeps every event in memory
        # Bodies kept (max_body_bytes each way), their copies while the event is built
        # and JSON-encoded on the sender side and decoded and stored by the collector
        # in this process, and a few 64 KiB chunks on the way.
        bound = 16 * max_body + 1 * MiB
        result = Result(
            name,
            1,
            read + answered,
            watch,
            bound,
            f"max_body_bytes ({max_body // KiB} KiB) per body",
            middleware.stats(),
            middleware.config,
            "collector up",
            cycles,
        )
    finally:
        server.stop()
    result.notes.append(
        f"app read {read} request bytes, server received {answered} response bytes; "
        f"collector got request_size_bytes={result_sizes.get('request_size_bytes')}, "
        f"response_size_bytes={result_sizes.get('response_size_bytes')}, bodies kept "
        f"{result_sizes.get('kept')} characters, truncated flags "
        f"{result_sizes.get('truncated')}"
    )
    if read != size or answered != size:
        result.failures.append(f"the app read {read} and answered {answered} bytes, not {size}")
    if (result_sizes.get("request_size_bytes"), result_sizes.get("response_size_bytes")) != (
        size,
        size,
    ):
        result.failures.append(f"the event's sizes are {result_sizes}, expected {size} each")
    if result.stats["sent"] != 1:
        result.failures.append(f"the event was not sent: {result.stats}")
    check_accounting(result)
    check_bound(result)
    return result


@dataclass
class Workload:
    """What each request of a queue scenario sends and how the app reads it."""

    name: str
    app: WSGIApp
    content_type: str
    body: Callable[[int], bytes]


def whole_body_workload() -> Workload:
    parts = json_body(BODY_SIZE)
    return Workload(
        "64 KiB JSON body read whole, 64 KiB text answer",
        make_whole_body_app(),
        "application/json",
        lambda number: numbered(parts, number),
    )


def csv_workload() -> Workload:
    rows = BODY_SIZE // CSV_ROW

    def body(number: int) -> bytes:
        return b"".join(csv_row(number * rows + i) for i in range(rows))

    return Workload(
        f"64 KiB CSV read line by line, 64 KiB CSV answer in {CSV_ROW}-byte rows",
        csv_app,
        "text/csv",
        body,
    )


def run_queue(
    name: str,
    outage: str,
    workload: Workload,
    requests: int,
    queue_max_bytes: int,
    args: argparse.Namespace,
) -> Result:
    """Many requests while OTAS does not take events: the queue must cap the memory."""
    print(f"running {name} ...", file=sys.stderr, flush=True)
    server: CollectorServer | None = None
    overrides: dict[str, Any] = {
        "max_body_bytes": QUEUE_MAX_BODY_BYTES,
        "queue_max_bytes": queue_max_bytes,
        "max_retries": 100,
    }
    if outage == "unreachable":
        url = closed_port_url()
    else:
        collector = Collector()
        if outage == "hangs":
            # The handler threads sleep past the end of the run and never answer.
            collector.fail_next(1000, status=None, delay=3600.0)
            overrides["timeout"] = args.hang_timeout
        else:
            collector.fail_next(20_000, status=500)
        server = serve(collector)
        url = server.url
    try:
        middleware = OtasMiddleware(workload.app, **options_for(url, **overrides))
        base = environ_for(Collector().issue_token(), workload.content_type)
        through = 0
        with MemoryWatch() as watch:
            for number in range(requests):
                body = workload.body(number)
                environ = fresh(base, io.BytesIO(body), len(body))
                through += call(middleware, environ) + environ["bench.bytes_read"]
                del body, environ
            cycles = cycle_garbage()
            time.sleep(args.hold)  # OTAS stays down while the sender works on the backlog
            queued = middleware.stats()["queued"]
            close_and_settle(middleware, args.close_timeout)
        config = middleware.config
        bound = int(config.queue_max_bytes * PAYLOAD_MARGIN) + WORK_IN_PROGRESS
        result = Result(
            name,
            requests,
            through,
            watch,
            bound,
            f"queue_max_bytes ({config.queue_max_bytes // MiB} MiB)",
            middleware.stats(),
            config,
            outage,
            cycles,
            queued,
        )
    finally:
        if server is not None:
            server.stop()
    result.notes.append(
        f"workload: {workload.name}; {queued} events held when close() "
        f"began; traced memory left after close() and gc.collect(): "
        f"{mib(watch.left)} MiB"
    )
    if result.stats["sent"]:
        result.failures.append(f"{result.stats['sent']} events were sent during an outage")
    check_accounting(result)
    check_bound(result)
    return result


SCENARIOS = ("huge", "unreachable", "hangs", "error500", "small-chunks")


def run_all(args: argparse.Namespace) -> list[Result]:
    results: list[Result] = []
    chosen = args.scenarios
    if "huge" in chosen:
        results.append(run_huge(2 * MiB, args))
        results.append(run_huge(args.huge_mib * MiB, args))
    if "unreachable" in chosen:
        for budget in (8 * MiB, Config().queue_max_bytes):
            results.append(
                run_queue(
                    f"OTAS unreachable, queue_max_bytes {budget // MiB} MiB",
                    "unreachable",
                    whole_body_workload(),
                    args.requests,
                    budget,
                    args,
                )
            )
    if "hangs" in chosen:
        results.append(
            run_queue(
                f"Brain hangs (timeout {args.hang_timeout:g} s), queue_max_bytes 8 MiB",
                "hangs",
                whole_body_workload(),
                args.small_requests,
                8 * MiB,
                args,
            )
        )
    if "error500" in chosen:
        results.append(
            run_queue(
                "Brain answers 500, queue_max_bytes 8 MiB",
                "error500",
                whole_body_workload(),
                args.small_requests,
                8 * MiB,
                args,
            )
        )
    if "small-chunks" in chosen:
        results.append(
            run_queue(
                f"small chunks ({CSV_ROW}-byte lines and rows), OTAS unreachable, "
                "queue_max_bytes 8 MiB",
                "unreachable",
                csv_workload(),
                args.csv_requests,
                8 * MiB,
                args,
            )
        )
    return results


# -- report ---------------------------------------------------------------------------------


def mib(value: float) -> str:
    return f"{value / MiB:.2f}"


def data_size(value: int) -> str:
    return f"{value / MiB:,.0f} MiB" if value >= 10 * MiB else f"{value / MiB:.1f} MiB"


def outcome_text(stats: Stats) -> str:
    parts = []
    for kind in ("captured", "sent", "failed", "dropped", "skipped", "retried"):
        count = stats.get(kind, 0)
        if not count and kind != "captured":
            continue
        reasons = stats.get("reasons", {}).get(kind) or {}
        detail = ", ".join(f"{reason} {n}" for reason, n in sorted(reasons.items()))
        parts.append(f"{kind} {count}" + (f" ({detail})" if detail else ""))
    return "; ".join(parts)


def print_report(results: list[Result], args: argparse.Namespace) -> None:
    rss = "VmHWM - VmRSS from /proc/self/status" if proc_status_kib("VmRSS") else "n/a here"
    print(
        f"Python {platform.python_version()} ({platform.python_implementation()}) on "
        f"{platform.system()} {platform.machine()}, nproc {os.cpu_count()}; peak traced "
        f"memory by tracemalloc (process-wide), peak RSS growth {rss}.\n"
    )
    print(
        "| scenario | requests | bytes through | peak traced MiB | stated bound MiB "
        "| what bounds it | held by cycles MiB | peak RSS growth MiB "
        "| stats() after close() |"
    )
    print("|---|---:|---:|---:|---:|---|---:|---:|---|")
    for r in results:
        growth = "n/a" if r.watch.rss_growth is None else mib(r.watch.rss_growth)
        print(
            f"| {r.name} | {r.requests:,} | {data_size(r.bytes_through)} | "
            f"{mib(r.watch.peak)} | {mib(r.bound)} | {r.bounded_by} | {mib(r.cycles)} | "
            f"{growth} | {outcome_text(r.stats)} |"
        )

    print("\nSettings of each scenario (given explicitly; sensitive fields default):\n")
    names = (
        "max_body_bytes",
        "queue_size",
        "queue_max_bytes",
        "batch_size",
        "flush_interval",
        "concurrency",
        "timeout",
        "max_retries",
        "retry_backoff",
    )
    print("| scenario | OTAS | " + " | ".join(names) + " |")
    print("|---|---|" + "---:|" * len(names))
    for r in results:
        values = " | ".join(
            f"{getattr(r.config, name):g}"
            if isinstance(getattr(r.config, name), float)
            else str(getattr(r.config, name))
            for name in names
        )
        print(f"| {r.name} | {r.outage} | {values} |")
    print(
        f"\nEvery middleware also had project_id set (no UASAM call), sample_rate 1; "
        f"queue scenarios waited {args.hold:g} s after their requests, with OTAS still "
        f"down, before close(timeout={args.close_timeout:g}). Stated bound: queue "
        f"scenarios {PAYLOAD_MARGIN:g} x queue_max_bytes + {WORK_IN_PROGRESS // MiB} MiB; "
        f"huge payloads 16 x max_body_bytes + 1 MiB. Held by cycles: traced memory "
        f"that gc.collect() freed right after the last request (limit "
        f"{CYCLE_LIMIT // MiB} MiB); after close() and gc.collect() at most "
        f"{LEFT_LIMIT // MiB} MiB may stay traced.\n"
    )
    for r in results:
        for note in r.notes:
            print(f"- {r.name}: {note}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Show that otas-capture's memory stays bounded whatever the payload size "
        "or the state of OTAS: peak traced memory (tracemalloc) and RSS growth "
        "per scenario, in-process (no HTTP server for the app). Exits 1 if a "
        "peak is over its stated bound, memory outlives its requests, or an "
        "event's sizes are wrong."
    )
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"comma-separated subset of {','.join(SCENARIOS)} (default all)",
    )
    parser.add_argument(
        "--requests",
        type=int,
        default=5_000,
        help="requests in the OTAS-unreachable scenarios (default 5000)",
    )
    parser.add_argument(
        "--small-requests",
        type=int,
        default=1_000,
        help="requests in the hangs and error500 scenarios (default 1000)",
    )
    parser.add_argument(
        "--csv-requests",
        type=int,
        default=300,
        help="requests in the small-chunks scenario (default 300)",
    )
    parser.add_argument(
        "--huge-mib",
        type=int,
        default=200,
        help="MiB of request body and of response in the huge-payload "
        "scenario (default 200; a 2 MiB run comes first for comparison)",
    )
    parser.add_argument(
        "--hold",
        type=float,
        default=2.0,
        help="seconds a queue scenario waits after its requests, OTAS still "
        "down, before close() (default 2)",
    )
    parser.add_argument(
        "--close-timeout",
        type=float,
        default=1.0,
        help="timeout given to close() at the end of each scenario (default 1)",
    )
    parser.add_argument(
        "--hang-timeout",
        type=float,
        default=1.0,
        help="the middleware's timeout setting while Brain hangs (default 1)",
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="show the otas_capture logger's warnings (drops, retries)",
    )
    args = parser.parse_args(argv)
    args.scenarios = [name.strip() for name in args.scenarios.split(",") if name.strip()]
    unknown = sorted(set(args.scenarios) - set(SCENARIOS))
    if unknown or not args.scenarios:
        parser.error(f"--scenarios: unknown {unknown}; choose from {', '.join(SCENARIOS)}")
    if min(args.requests, args.small_requests, args.csv_requests, args.huge_mib) < 1:
        parser.error("request counts and --huge-mib must be at least 1")
    if args.hold < 0 or args.close_timeout < 0 or args.hang_timeout <= 0:
        parser.error("--hold and --close-timeout must not be negative, --hang-timeout positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.verbose:
        # Drops and retries are the point here; their (rate-limited) warnings are noise.
        logging.getLogger(LOGGER_NAME).setLevel(logging.ERROR)
    started = time.perf_counter()
    tracemalloc.start()
    try:
        results = run_all(args)
    finally:
        tracemalloc.stop()
    print_report(results, args)
    failures = [f"{r.name}: {failure}" for r in results for failure in r.failures]
    print(f"\nRun time {time.perf_counter() - started:.1f} s.")
    if failures:
        print("\nerror: some checks failed:", file=sys.stderr)
        for failure in failures:
            print(f"  - {failure}", file=sys.stderr)
        return 1
    print(
        "All checks passed: every peak is within its stated bound, no memory outlived "
        "its requests, and the event sizes are exact."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
