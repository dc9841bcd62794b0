"""Delivery against a capacity-bound Brain: events/s, call latency and timeouts per ceiling.

Brain takes one event per call and its throughput does not grow with the calls in
flight (each call checks the SDK key with a slow password hash). This script imitates
such a Brain on loopback: ``--workers`` slots, each call holding one for ``--service``
seconds, later calls queueing for a free slot, in front of the local collector. It then
captures ``--events`` agent requests through the middleware as fast as it can and
reports, for each ``OTAS_CONCURRENCY`` ceiling:

- delivered events per second, against the emulated capacity (workers / service);
- call latency as Brain sees it (queueing included), median and p95, against the
  service time;
- calls longer than the SDK's timeout, and rows stored twice;
- the adaptive limit the sender ended with (where the sender has one).

It runs the same way against any checkout, so BEFORE/AFTER is::

    python benchmarks/delivery.py                                  # this checkout
    PYTHONPATH=/path/to/other/checkout python benchmarks/delivery.py

Everything runs in this one process on loopback; keep the runs short on a shared machine.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from typing import Any, Callable

from werkzeug.test import Client

import otas_capture
from otas_capture import OtasMiddleware
from otas_capture.collector import DEMO_PROJECT_ID, DEMO_SDK_KEY, Collector, CollectorServer
from otas_capture.contract import SESSION_TOKEN_HEADER

TOKEN_HEADER = SESSION_TOKEN_HEADER


class CapacityBrain:
    """The collector behind ``workers`` slots of ``service`` seconds each (None: no limit)."""

    def __init__(self, collector: Collector, workers: int | None, service: float) -> None:
        self.collector = collector
        self.service = service
        self.slots = threading.BoundedSemaphore(workers) if workers else None
        self.lock = threading.Lock()
        self.latencies: list[float] = []
        self.accepted_at: list[float] = []

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if not environ.get("PATH_INFO", "").endswith("/log/sdk/"):
            return self.collector(environ, start_response)
        arrived = time.perf_counter()
        if self.slots is not None:
            self.slots.acquire()
        try:
            time.sleep(self.service)
            body = list(self.collector(environ, start_response))
        finally:
            if self.slots is not None:
                self.slots.release()
        done = time.perf_counter()
        with self.lock:
            self.latencies.append(done - arrived)
            self.accepted_at.append(done)
        return body


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "application/json")])
    return [b'{"ok": true}']


def run(ceiling: int, workers: int | None, service: float, events: int, timeout: float) -> dict:
    collector = Collector()
    brain = CapacityBrain(collector, workers, service)
    server = CollectorServer(brain).start()  # type: ignore[arg-type]
    try:
        token = collector.issue_token()
        middleware = OtasMiddleware(
            app,
            sdk_key=DEMO_SDK_KEY,
            project_id=DEMO_PROJECT_ID,
            brain_url=server.url,
            uasam_url=server.url,
            concurrency=ceiling,
            timeout=timeout,
            max_retries=5,
        )
        client = Client(middleware)
        limits: list[int] = []
        start = time.perf_counter()
        for i in range(events):
            client.get(f"/api/things/{i}", headers={TOKEN_HEADER: token}, buffered=True)
        budget = events * service / (workers or events) * 4 + 30
        deadline = time.perf_counter() + budget
        while middleware.stats()["queued"] and time.perf_counter() < deadline:
            # The adaptive limit: on the sender in older checkouts, on the pacing now.
            sender = getattr(middleware, "_sender", None)
            pacing = getattr(getattr(sender, "_worker", None), "_pacing", None)
            holder = sender if hasattr(sender, "limit") else pacing
            if holder is not None and hasattr(holder, "limit"):
                limits.append(holder.limit)
            time.sleep(0.05)
        elapsed = time.perf_counter() - start
        stats = middleware.stats()
        middleware.close(timeout=1.0)
        stored = collector.events()
    finally:
        try:
            server.stop()
        except OSError:  # a stop racing the server's own shutdown; the port is free anyway
            pass
    accepted = sorted(brain.accepted_at)
    # Throughput over the steady part: from the 10th to the last accepted call.
    steady = accepted[10:] if len(accepted) > 20 else accepted
    rate = (len(steady) - 1) / (steady[-1] - steady[0]) if len(steady) > 1 else 0.0
    latencies = sorted(brain.latencies)
    p95 = latencies[int(len(latencies) * 0.95) - 1] if latencies else 0.0
    return {
        "ceiling": ceiling,
        "capacity": (workers / service) if workers else None,
        "rate": rate,
        "median": statistics.median(latencies) if latencies else 0.0,
        "p95": p95,
        "over_timeout": sum(1 for x in latencies if x > timeout),
        "delivered": len({e["path"] for e in stored}),
        "stored": len(stored),
        "events": events,
        "failed": stats["failed"],
        "retried": stats["retried"],
        "limit": f"{max(limits)}/{limits[-1]}" if limits else "-",
        "elapsed": elapsed,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ceilings", type=int, nargs="*", default=[4, 16, 64])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--service", type=float, default=0.1)
    parser.add_argument("--events", type=int, default=400)
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--plenty-events", type=int, default=1000, help="0 to skip")
    parser.add_argument("--plenty-service", type=float, default=0.5)
    parser.add_argument("--slow-service", type=float, default=0.4, help="0 to skip")
    parser.add_argument("--slow-events", type=int, default=200)
    args = parser.parse_args(argv)

    print(f"otas_capture from {otas_capture.__file__}")
    header = (
        "| Brain | ceiling | delivered/s (capacity) | latency median / p95 (service) "
        "| > timeout | stored / events | limit max/end |"
    )
    print(header)
    print("|---|---|---|---|---|---|---|")
    scenarios = [(c, args.workers, args.service, args.events) for c in args.ceilings]
    # A Brain as slow as the public stack was (about 0.45 s a call with 4 in flight):
    # queueing 64 calls there pushes each past the default-era 5 s timeout.
    if args.slow_service:
        scenarios.append((64, args.workers, args.slow_service, args.slow_events))
    if args.plenty_events:
        scenarios.append((64, None, args.plenty_service, args.plenty_events))
    for ceiling, workers, service, events in scenarios:
        r = run(ceiling, workers, service, events, args.timeout)
        brain = f"{workers} x {service:g} s" if workers else f"unbounded x {service:g} s"
        capacity = f"{r['capacity']:.0f}" if r["capacity"] else "-"
        print(
            f"| {brain} | {ceiling} | {r['rate']:.1f} ({capacity}) "
            f"| {r['median']:.3f} / {r['p95']:.3f} s ({service:g}) | {r['over_timeout']} "
            f"| {r['stored']} / {r['events']} | {r['limit']} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
