"""A fleet of gunicorn workers shipping to one capacity-bound Brain (issue 18).

Brain serves a fixed number of events per second whatever the number of calls in
flight; calls beyond its workers queue, and a call whose caller gave up is stored all
the same, so a resend stores a duplicate row. This script serves the collector's
capacity emulation (``Collector.set_capacity``: ``workers`` x ``service`` seconds) on
loopback from this process, starts real gunicorn masters whose workers capture every
agent request with ``OtasMiddleware``, sends each a burst of agent requests (32 in
flight), and reports per configuration:

- events stored (distinct ``event_id``) of those answered, and duplicate rows;
- timeouts: log calls Brain answered after the SDK's ``OTAS_TIMEOUT`` (the caller gave
  up and will resend);
- delivered events/s as a share of Brain's capacity, first to last stored event;
- median and p95 call latency at Brain (queueing included) over the service time;
- the peak of calls in flight at Brain;
- fairness: over the time every worker still had events to ship, the smallest share a
  worker got of what its fair share (1/workers) would be.

"2 hosts" runs two masters whose workers do not share the host-wide limit (each gets
its own ``XDG_RUNTIME_DIR``), as two machines would not. It runs the same against any
checkout (``--src``), so BEFORE/AFTER is::

    python benchmarks/fleet.py                         # this checkout, a short matrix
    python benchmarks/fleet.py --src /tmp/main-checkout
    python benchmarks/fleet.py --full                  # 1,2,4,8 workers and 2 hosts x
                                                       # 10 and 40 ev/s x 100,300,1000
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE))

import requests  # noqa: E402

from otas_capture.collector import (  # noqa: E402
    DEMO_PROJECT_ID,
    DEMO_SDK_KEY,
    Collector,
    CollectorServer,
)
from otas_capture.contract import SESSION_TOKEN_HEADER  # noqa: E402

# Each worker tags its events with its pid, so that the table can say who shipped what.
APP = """
import os
from otas_capture import OtasMiddleware, annotate

def hello(environ, start_response):
    annotate(environ, worker=os.getpid())
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]

app = OtasMiddleware(hello)
"""

IN_FLIGHT = 32  # agent requests in flight during a burst


class TimedBrain:
    """The collector, with the time each log call spent inside it (queueing included).

    With ``pile_up`` set, the collector serves calls at once and this wrapper makes them
    slow down as they pile up, as the real Brain does on its server and database: each
    call needs ``service`` seconds of work; up to ``pile_up`` calls in flight each go at
    full speed, beyond that each goes at ``(pile_up / in_flight) ** 1.5``: they share
    the server, and the database thrashes. Best throughput is at ``pile_up`` calls in
    flight; ``pile_up=1`` is a Brain saturated by a single call. (The collector's own
    emulation has capacity, not this shape; it lives here until the collector has it.)
    """

    def __init__(self, collector: Collector, pile_up: int = 0, service: float = 0.0) -> None:
        self.collector = collector
        self.pile_up = pile_up
        self.service = service
        self.lock = threading.Lock()
        self.latencies: list[float] = []
        self.in_flight = 0
        self.peak = 0

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if "/log/sdk" not in environ.get("PATH_INFO", ""):
            return self.collector(environ, start_response)
        arrived = time.perf_counter()
        if self.pile_up:
            self._work()
        body = list(self.collector(environ, start_response))
        with self.lock:
            self.latencies.append(time.perf_counter() - arrived)
        return body

    def _work(self) -> None:
        with self.lock:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
        try:
            left = self.service
            for _ in range(100_000):  # bounded: steps of 10 ms
                if left <= 0:
                    break
                crowd = max(self.in_flight, 1)
                speed = 1.0 if crowd <= self.pile_up else (self.pile_up / crowd) ** 1.5
                step = min(0.01, left / speed)
                time.sleep(step)
                left -= step * speed
        finally:
            with self.lock:
                self.in_flight -= 1


class LimitSampler(threading.Thread):
    """Reads the hosts' shared limits (slots.py's state files) every 50 ms, while the
    burst is shipped; none where the checkout under test has no such file."""

    def __init__(self, work: Path) -> None:
        super().__init__(daemon=True)
        self.work = work
        self.samples: list[float] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.05):
            total = 0.0
            for state in self.work.glob("host*/otas-capture/*.state"):
                try:
                    total += json.loads(state.read_text())["limiter"][0]
                except (OSError, ValueError, KeyError):
                    pass
            if total:
                self.samples.append(total)

    def stop(self) -> str:
        self.done.set()
        self.join()
        if not self.samples:
            return "-"
        return f"{statistics.mean(self.samples):.1f} / {max(self.samples):.0f}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_master(
    src: Path, work: Path, url: str, workers: int, runtime: Path, timeout: float
) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("OTAS_")}
    env.update(
        OTAS_SDK_KEY=DEMO_SDK_KEY,
        OTAS_PROJECT_ID=DEMO_PROJECT_ID,
        OTAS_BRAIN_URL=url,
        OTAS_UASAM_URL=url,
        OTAS_TIMEOUT=str(timeout),
        PYTHONPATH=os.pathsep.join([str(src), str(work)]),
        XDG_RUNTIME_DIR=str(runtime),
    )
    gunicorn = str(Path(sys.executable).with_name("gunicorn"))
    command = [gunicorn, "-b", f"127.0.0.1:{port}", "-w", str(workers), "fleetapp:app"]
    process = subprocess.Popen(
        command, cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and process.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.05)
    return process, port


def burst(ports: list[int], token: str, count: int, prefix: str) -> int:
    """``count`` agent requests, ``IN_FLIGHT`` at a time, spread over ``ports``."""
    local = threading.local()

    def one(number: int) -> bool:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        port = ports[number % len(ports)]
        try:
            answer = local.session.get(
                f"http://127.0.0.1:{port}/{prefix}/{number}",
                headers={SESSION_TOKEN_HEADER: token},
                timeout=30,
            )
        except requests.RequestException:
            return False
        return answer.status_code == 200

    with ThreadPoolExecutor(IN_FLIGHT) as pool:
        return sum(pool.map(one, range(count)))


def fairness(events: list[dict[str, Any]]) -> float:
    """The smallest share of its fair share a worker got while every worker had work:
    from the moment the last of them captured its first request to the moment the
    first of them had shipped its last event."""
    captured: dict[Any, list[float]] = {}
    stored: dict[Any, list[float]] = {}
    for event in events:
        worker = (event.get("custom_properties") or {}).get("worker")
        started = datetime.fromisoformat(event["metadata"]["started_at"]).timestamp()
        captured.setdefault(worker, []).append(started)
        stored.setdefault(worker, []).append(event["_at"])
    start = max(min(times) for times in captured.values())
    end = min(max(times) for times in stored.values())
    counts = [sum(1 for t in times if start <= t <= end) for times in stored.values()]
    total = sum(counts)
    if end <= start or total < 2 * len(counts):
        return 1.0  # too short to judge
    return min(counts) / (total / len(counts))


def parse_brain(brain: str) -> tuple[int, float, bool]:
    """ "4x0.1": (4 workers, 0.1 s, capacity emulation); "pile3x0.45": pile-up shape."""
    workers, service = brain.removeprefix("pile").split("x")
    return int(workers), float(service), brain.startswith("pile")


def run(
    src: Path, masters: int, workers: int, brain: str, events: int, timeout: float
) -> dict[str, Any]:
    brain_workers, service, pile_up = parse_brain(brain)
    collector = Collector()
    timed = TimedBrain(collector, brain_workers if pile_up else 0, service)
    server = CollectorServer(timed, threads=128).start()  # type: ignore[arg-type]
    if not pile_up:
        collector.set_capacity(brain_workers, service)
    token = collector.issue_token()
    processes = []
    with tempfile.TemporaryDirectory() as work:
        (Path(work) / "fleetapp.py").write_text(APP)
        try:
            ports = []
            for host in range(masters):
                runtime = Path(work) / f"host{host}"
                runtime.mkdir(mode=0o700)
                process, port = start_master(src, Path(work), server.url, workers, runtime, timeout)
                processes.append(process)
                ports.append(port)
            time.sleep(1.0)  # every worker booted
            began = time.perf_counter()
            sampler = LimitSampler(Path(work))
            sampler.start()
            answered = burst(ports, token, events, "b")
            capacity = brain_workers / service
            deadline = time.perf_counter() + events / capacity * 3 + 30
            while time.perf_counter() < deadline:
                if len({e["metadata"]["event_id"] for e in collector.events()}) >= answered:
                    break
                time.sleep(0.2)
            time.sleep(min(timeout, 3.0))  # late resends would show as duplicates
            elapsed = time.perf_counter() - began
            limits = sampler.stop()
        finally:
            for process in processes:
                process.send_signal(signal.SIGTERM)
            for process in processes:
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
            time.sleep(0.5)
    stored = collector.events()
    peak = timed.peak if pile_up else collector.peak_in_flight
    server.stop()
    ids = Counter(e["metadata"]["event_id"] for e in stored)
    for event in stored:
        event["_at"] = datetime.fromisoformat(event["_received_at"]).timestamp()
    moments = sorted(e["_at"] for e in stored)
    rate = (len(moments) - 1) / (moments[-1] - moments[0]) if len(moments) > 1 else 0.0
    latencies = sorted(timed.latencies)
    return {
        "answered": answered,
        "stored": len(ids),
        "dupes": sum(n - 1 for n in ids.values()),
        "timeouts": sum(1 for x in latencies if x > timeout),
        "share": rate / capacity,
        "median": statistics.median(latencies) / service if latencies else 0.0,
        "p95": latencies[int(len(latencies) * 0.95) - 1] / service if latencies else 0.0,
        "peak": peak,
        "fair": fairness(stored),
        "limits": limits,
        "elapsed": elapsed,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--src", type=Path, default=HERE, help="checkout under test")
    parser.add_argument("--full", action="store_true", help="the whole matrix (long)")
    parser.add_argument("--fleets", nargs="*", help="e.g. 1 4 8 2x2 (masters x workers)")
    parser.add_argument(
        "--brains", nargs="*", help="4x0.1: 4 workers x 0.1 s; pile3x0.45: pile-up shape"
    )
    parser.add_argument("--events", type=int, nargs="*", help="burst sizes")
    parser.add_argument("--timeout", type=float, default=5.0, help="OTAS_TIMEOUT of the SDK")
    args = parser.parse_args(argv)
    fleets = args.fleets or (["1", "2", "4", "8", "2x4"] if args.full else ["1", "4", "8", "2x2"])
    brains = args.brains or (
        ["4x0.4", "4x0.1", "pile3x0.45", "pile1x0.45"]
        if args.full
        else ["4x0.4", "4x0.1", "pile3x0.45"]
    )
    sizes = args.events or ([100, 300, 1000] if args.full else [150])

    print(f"otas_capture from {args.src}, OTAS_TIMEOUT={args.timeout:g} s")
    print(
        "| fleet | Brain | burst | stored | dupes | timeouts | of capacity "
        "| latency median / p95 (x service) | peak in flight | shared limit mean / max | fairness |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for brain in brains:
        brain_workers, service, pile_up = parse_brain(brain)
        shape = f"pile-up, best at {brain_workers}" if pile_up else brain
        for fleet in fleets:
            masters, _, workers = fleet.rpartition("x")
            for size in sizes:
                r = run(args.src, int(masters or 1), int(workers), brain, size, args.timeout)
                name = f"2 hosts x {workers} workers" if masters else f"{workers} workers"
                print(
                    f"| {name} | {brain_workers / service:.3g}/s ({shape}) | {size} "
                    f"| {r['stored']}/{r['answered']} | {r['dupes']} | {r['timeouts']} "
                    f"| {r['share']:.0%} | {r['median']:.1f} / {r['p95']:.1f} | {r['peak']} "
                    f"| {r['limits']} | {r['fair']:.2f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
