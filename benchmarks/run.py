"""One command that measures otas-capture against the bare app and OpenTelemetry.

    python benchmarks/run.py            # about 20 minutes on 2 shared cores
    python benchmarks/run.py --quick    # about 6 minutes, fewer and shorter rounds

It makes its own virtual environment (``benchmarks/.venv``, gitignored) with this
checkout installed in editable mode and what it compares against: Flask, gunicorn, the
OpenTelemetry SDK with its WSGI instrumentation and OTLP/HTTP exporter. It uses
Debian's ``wrk`` as the load generator (installing it with apt-get when run as root and
it is missing), or a small Python load generator otherwise. Then it re-runs itself in
that environment and measures, each variant in a process of its own, everything shipped
over loopback to a sink in another process (the bundled collector for otas-capture, a
span-counting OTLP sink for OpenTelemetry), and checks that every event arrived. Besides
bare, otas-capture and OpenTelemetry it runs "otas-capture + wire", the sender with
``otas_capture.otas.wire`` forced as its transport (``--no-wire`` leaves it out: wire is the
default now, so the column only differs for an older checkout measured with
``--otas PATH``, which runs every variant with that checkout's ``otas_capture``).

Each of the first three is measured for two events, shipped over plain HTTP and over
TLS (a local HTTPS front, ``apps.serve_tls_proxy``, with a CA made by trustme that the
variants' processes trust through SSL_CERT_FILE): the *small* one (1 KB of JSON each way,
no secret in the bodies) and a *realistic* one (about 3 KB each way, five secret fields);
``--cases`` and ``--gunicorn-cases`` choose.

* request path: time of one call of the Flask app (in-process, no server), median and
  p99, while shipping runs; bare, otas-capture, OpenTelemetry;
* CPU per request: process CPU (all threads, sender included) from the first timed
  request until everything is delivered, per request, minus the bare app's;
* gunicorn (gthread, 1 worker, 4 threads) driven over loopback: throughput and latency,
  bare and wrapped; the backlog left when the load ended, the time until the app's flush
  had delivered it, throughput over load plus drain, and the worker's CPU per request
  over both; every request captured and delivered;
* delivery rate against the collector with 50 ms and 200 ms added to each log call, at
  ``concurrency`` 4 and 16, against the ideal ``concurrency / latency``;
* idle CPU of a process whose middleware has started its sender; ``import otas_capture``
  time; peak memory while OTAS is unreachable, against the queue bound.

On a machine of two or more CPUs the gunicorn phase runs the server on the first CPU
and the collector, the sinks, the load generator and this driver on the others
(``--no-pin``: no pinning), so that a sink's work does not come out of the server's
CPU: the collector answers one call per event, the OpenTelemetry sink one per batch
of spans.

Variants run interleaved (each round runs every variant once, in a rotating order) and
the table shows the median of the rounds: the machine is shared and noisy, so a single
run means little. Load is bounded: a few seconds per variant per round, loopback only.
See benchmarks/README.md for what each number means and the latest results.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.client import HTTPException
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
VENV = HERE / ".venv"
STAMP = VENV / "bench-requirements.txt"
# Installed first: setup.cfg reads the version by importing the package.
BOOTSTRAP = ["setuptools", "wheel", "requests", "werkzeug", "PyJWT"]
REQUIREMENTS = [
    "Flask",
    "gunicorn",
    "opentelemetry-sdk",
    "opentelemetry-instrumentation-wsgi",
    "opentelemetry-exporter-otlp-proto-http",
    "trustme",  # the local CA of the HTTPS sinks
]
# contract.SESSION_TOKEN_HEADER, spelled out: this runs before the package can be imported
# (it installs the package's dependencies into its own virtual environment first).
TOKEN_HEADER = "X-OTAS-AGENT-SESSION-TOKEN"
GUNICORN_CONNECTIONS = 8
GUNICORN_THREADS = 4
LATENCIES = (0.05, 0.2)
CONCURRENCIES = (4, 16)


# -- the environment ------------------------------------------------------------------------


def venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def in_venv() -> bool:
    return Path(sys.prefix).resolve() == VENV.resolve()


def ensure_env(args: argparse.Namespace) -> None:
    """Create benchmarks/.venv with what the benchmark needs, then re-run inside it."""
    if in_venv() or args.no_venv:
        return
    # The local collector needs its extra (waitress); fast is orjson, which users of
    # otas-capture[fast] have (--no-orjson measures without it).
    project = f"{ROOT}[collector,fast]"
    wanted = "\n".join(BOOTSTRAP + REQUIREMENTS + [project]) + "\n"
    if not STAMP.exists() or STAMP.read_text() != wanted:
        say(f"setting up {VENV} (once) ...")
        if not venv_python().exists():
            subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        pip = [str(venv_python()), "-m", "pip", "install", "-q"]
        subprocess.run(pip + BOOTSTRAP, check=True)
        subprocess.run(pip + ["--no-build-isolation", "-e", project], check=True)
        subprocess.run(pip + REQUIREMENTS, check=True)
        STAMP.write_text(wanted)
    os.execv(str(venv_python()), [str(venv_python()), str(Path(__file__).resolve())] + sys.argv[1:])


def ensure_wrk(args: argparse.Namespace) -> str | None:
    found = shutil.which("wrk")
    if found or args.python_loadgen:
        return None if args.python_loadgen else found
    if not args.no_apt and shutil.which("apt-get") and os.geteuid() == 0:
        say("installing wrk with apt-get ...")
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        if subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], **quiet).returncode:
            subprocess.run(["apt-get", "update", "-q"], **quiet)
            subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], **quiet)
        found = shutil.which("wrk")
    if not found:
        say("wrk not found: using the Python load generator")
    return found


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- helper processes ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def http(method: str, url: str, timeout: float = 30) -> str:
    request = urllib.request.Request(url, method=method)
    context = TLS.client_context() if url.startswith("https:") else None
    with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
        return str(response.read().decode())


class TLS:
    """A local CA and a certificate for 127.0.0.1, made with trustme, as PEM files.

    The variants trust the CA through the environment of their processes: SSL_CERT_FILE
    is what ``ssl.create_default_context()`` (and so otas-capture's ``wire``) reads,
    REQUESTS_CA_BUNDLE what ``requests`` reads, BENCH_CA what apps.py gives OpenTelemetry's
    exporter.
    """

    ca_file = ""
    server_file = ""

    @classmethod
    def setup(cls, directory: str) -> None:
        import trustme

        ca = trustme.CA()
        cls.ca_file = os.path.join(directory, "ca.pem")
        cls.server_file = os.path.join(directory, "server.pem")
        ca.cert_pem.write_to_path(cls.ca_file)
        ca.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem.write_to_path(
            cls.server_file
        )

    @classmethod
    def client_context(cls) -> Any:
        import ssl

        return ssl.create_default_context(cafile=cls.ca_file)

    @classmethod
    def env(cls) -> dict[str, str]:
        return {
            "SSL_CERT_FILE": cls.ca_file,
            "REQUESTS_CA_BUNDLE": cls.ca_file,
            "BENCH_CA": cls.ca_file,
        }


# Where the gunicorn phase runs its processes. On a machine of two or more CPUs the
# server gets the first CPU and everything else (the collector, the sinks, the load
# generator, this driver) the others, so that the sink of one variant does not take
# CPU from the server it measures: otas-capture's collector answers one call per
# event, OpenTelemetry's sink one per batch. Empty: no pinning (one CPU, not Linux,
# or --no-pin). The in-process phases run unpinned.
APP_CPUS: set[int] = set()
OTHER_CPUS: set[int] = set()


def split_cpus(enabled: bool) -> None:
    global APP_CPUS, OTHER_CPUS
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if enabled and len(cpus) >= 2:
        APP_CPUS, OTHER_CPUS = {cpus[0]}, set(cpus[1:])


def pin(pids: list[int], cpus: set[int]) -> None:
    """Move running processes (0: this one) to ``cpus``; nothing when not pinning."""
    if not cpus:
        return
    for pid in pids:
        try:
            os.sched_setaffinity(pid, cpus)
        except OSError:  # gone already
            pass


def pinned(cpus: set[int]) -> Callable[[], None] | None:
    """A ``preexec_fn`` that runs the child on ``cpus`` (None when not pinning)."""
    if not cpus:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


class Process:
    """A child process serving HTTP on a loopback port; ready once ``probe`` answers."""

    def __init__(
        self,
        argv: list[str],
        port: int,
        probe: str,
        env: dict[str, str] | None = None,
        cpus: set[int] | None = None,
        scheme: str = "http",
    ):
        self.url = f"{scheme}://127.0.0.1:{port}"
        self._proc = subprocess.Popen(
            argv, env=env, stdin=subprocess.DEVNULL, preexec_fn=pinned(cpus or set())
        )
        self.pid = self._proc.pid
        deadline = time.monotonic() + 60
        while True:
            try:
                http("GET", self.url + probe, timeout=5)
                return
            except (OSError, HTTPException):
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"{argv[:3]} did not start")
                time.sleep(0.05)

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()


def me() -> list[str]:
    return [sys.executable, str(Path(__file__).resolve())]


def start_collector(latency: float = 0.0) -> Process:
    port = free_port()
    argv = me() + ["--serve", "collector", "--port", str(port), "--latency", str(latency)]
    return Process(argv, port, "/bench/count")


def start_sink() -> Process:
    port = free_port()
    return Process(me() + ["--serve", "sink", "--port", str(port)], port, "/")


def start_tls_proxy(upstream: Process, probe: str) -> Process:
    """An HTTPS front for ``upstream`` (see apps.serve_tls_proxy)."""
    port = free_port()
    argv = me() + ["--serve", "tls", "--port", str(port), "--upstream", upstream.url]
    argv += ["--cert", TLS.server_file]
    return Process(argv, port, probe, scheme="https")


class Sinks:
    """Where the variants ship: the collector and the span sink, and their HTTPS fronts.

    Counting and resetting always go to the plain servers; ``brain(transport)`` and
    ``spans(transport)`` are the URLs a variant ships to."""

    def __init__(self, tls: bool) -> None:
        self.collector, self.sink = start_collector(), start_sink()
        self._fronts: dict[str, Process] = {}
        if tls:
            self._fronts["collector"] = start_tls_proxy(self.collector, "/bench/count")
            self._fronts["sink"] = start_tls_proxy(self.sink, "/")

    def brain(self, transport: str) -> str:
        return (self._fronts["collector"] if transport == "tls" else self.collector).url

    def spans(self, transport: str) -> str:
        return (self._fronts["sink"] if transport == "tls" else self.sink).url

    def pids(self) -> list[int]:
        return [p.pid for p in (self.collector, self.sink, *self._fronts.values())]

    def stop(self) -> None:
        for process in (*self._fronts.values(), self.collector, self.sink):
            process.stop()


def delivered(variant: str, collector: Process, sink: Process) -> int:
    if variant.startswith("otas"):
        return int(http("GET", collector.url + "/bench/count"))
    if variant == "otel":
        return int(http("GET", sink.url + "/"))
    return 0


def reset(collector: Process, sink: Process) -> None:
    http("DELETE", collector.url + "/bench/count")
    http("DELETE", sink.url + "/")


def wait_delivered(
    variant: str, expected: int, collector: Process, sink: Process, timeout: float = 60
) -> int:
    deadline = time.monotonic() + timeout
    while True:
        count = delivered(variant, collector, sink)
        if variant == "bare" or count >= expected or time.monotonic() > deadline:
            return count
        time.sleep(0.2)


def measured_path() -> str:
    """PYTHONPATH for the processes that run the variants: ``--otas PATH`` (another
    checkout's ``otas_capture``, ahead of the editable install) and this directory.
    The collector and the sinks always run this checkout's code."""
    other = os.environ.get("BENCH_OTAS", "")
    blocker = str(HERE / "no_orjson") if os.environ.get("BENCH_NO_ORJSON") else ""
    return os.pathsep.join(part for part in (blocker, other, str(HERE)) if part)


def run_worker(
    name: str, params: dict[str, Any], bytecode: bool = False, tls: bool = False
) -> dict[str, Any]:
    """Run ``worker_<name>(params)`` in a fresh process; return what it printed (JSON).

    ``bytecode``: let Python read and write ``__pycache__`` even when the environment
    says not to (PYTHONDONTWRITEBYTECODE), as an installed package always can.
    """
    argv = me() + ["--worker", name, "--params", json.dumps(params)]
    env = dict(os.environ, PYTHONPATH=measured_path())
    if tls:
        env.update(TLS.env())
    if bytecode:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
    out = subprocess.run(argv, check=True, stdout=subprocess.PIPE, text=True, env=env).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def token() -> str:
    from otas_capture.collector import Collector

    return Collector().issue_token()


# -- workers (each in a process of its own) -----------------------------------------------


def worker_request_path(p: dict[str, Any]) -> dict[str, Any]:
    """Time calls of one variant of the Flask app in-process; CPU until all delivered."""
    import io

    from apps import PAYLOADS, make_app
    from werkzeug.test import EnvironBuilder

    PATH, REQUEST_BODY, RESPONSE_BODY = PAYLOADS[p["event"]]
    total = p["warmup"] + p["iterations"]
    wrapped = make_app(p["variant"], p["collector"], p["sink"], events=total)
    app = wrapped.app
    base = EnvironBuilder(
        path=PATH,
        method="POST",
        data=REQUEST_BODY,
        content_type="application/json",
        headers={TOKEN_HEADER: p["token"]},
    ).get_environ()

    def noop(data: bytes) -> None:
        pass

    def start_response(status: str, headers: Any, exc_info: Any = None) -> Callable[..., None]:
        return noop

    def call() -> bytes:
        environ = dict(base)
        environ["wsgi.input"] = io.BytesIO(REQUEST_BODY)
        result = app(environ, start_response)
        try:
            return b"".join(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()

    for _ in range(p["warmup"]):
        if call() != RESPONSE_BODY:
            raise SystemExit("the app did not answer as expected")
    wrapped.flush(120)  # the warm-up's events are not part of the measure
    samples = []
    now = time.perf_counter_ns
    gc.collect()
    sent_before = wrapped.stats().get("sent", 0)
    gc.disable()  # so that a collection pause does not land on a random variant
    cpu = time.process_time()
    try:
        for _ in range(p["iterations"]):
            environ = dict(base)  # outside the timed span
            environ["wsgi.input"] = io.BytesIO(REQUEST_BODY)
            start = now()
            result = app(environ, start_response)
            b"".join(result)
            if hasattr(result, "close"):
                result.close()
            samples.append(now() - start)
    finally:
        gc.enable()
    # A sender that ships during the timed calls competes with them; one that falls
    # behind leaves its work to the flush below (counted in CPU, not in the timings).
    shipped_during = wrapped.stats().get("sent", 0) - sent_before
    flushed = wrapped.flush(600)
    cpu = time.process_time() - cpu
    samples.sort()
    return {
        "median_us": samples[len(samples) // 2] / 1000,
        "p99_us": samples[min(len(samples) - 1, int(len(samples) * 0.99))] / 1000,
        "cpu_per_request_us": cpu / p["iterations"] * 1e6,
        "shipped_during": shipped_during / p["iterations"],
        "flushed": bool(flushed),
        "events": total,
        "stats": {k: v for k, v in wrapped.stats().items() if k != "reasons"},
    }


def worker_delivery(p: dict[str, Any]) -> dict[str, Any]:
    """Capture ``events`` requests, then time flush() against a slow collector: events
    per second and process CPU per event, of those delivered during the flush."""
    import io

    from apps import PATH, REQUEST_BODY, make_flask_app
    from werkzeug.test import EnvironBuilder

    from otas_capture import OtasMiddleware
    from otas_capture.collector import DEMO_PROJECT_ID, DEMO_SDK_KEY

    events = p["events"]
    if p["transport"] == "wire":
        from apps import use_wire_transport

        use_wire_transport()
    options: dict[str, Any] = {
        "sdk_key": DEMO_SDK_KEY,
        "project_id": DEMO_PROJECT_ID,
        "brain_url": p["collector"],
        "uasam_url": p["collector"],
        "concurrency": p["concurrency"],
        "queue_size": events + 100,
        "queue_max_bytes": (events + 100) * 16 * 1024,
        # An old checkout (--otas) batches: nothing starts before flush() there. This
        # code ships at once, so what went out while the requests were captured is
        # left out of the flush's rate and CPU below.
        "batch_size": events + 1,
        "flush_interval": 600.0,
    }
    middleware = OtasMiddleware(make_flask_app().wsgi_app, **options)
    base = EnvironBuilder(
        path=PATH,
        method="POST",
        data=REQUEST_BODY,
        content_type="application/json",
        headers={TOKEN_HEADER: p["token"]},
    ).get_environ()
    for _ in range(events):
        environ = dict(base)
        environ["wsgi.input"] = io.BytesIO(REQUEST_BODY)
        result = middleware(environ, lambda status, headers, exc_info=None: None)
        b"".join(result)
        result.close()  # type: ignore[attr-defined]  # queues the event
    sent_before = middleware.stats()["sent"]
    wall, cpu = time.perf_counter(), time.process_time()
    flushed = middleware.flush(300)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    stats = middleware.stats()
    middleware.close(1)
    in_flush = stats["sent"] - sent_before
    return {
        "rate": in_flush / wall if wall else 0.0,
        "cpu_per_event_us": cpu / max(1, in_flush) * 1e6,
        "sent": stats["sent"],
        "events": events,
        "flushed": bool(flushed),
    }


def worker_idle(p: dict[str, Any]) -> dict[str, Any]:
    """CPU a process spends while its middleware has nothing to do."""
    from apps import make_app

    wrapped = make_app("otas", p["collector"], events=10)
    client = wrapped.app.test_client()  # type: ignore[attr-defined]
    from apps import PATH, REQUEST_BODY

    client.post(
        PATH,
        data=REQUEST_BODY,
        headers={TOKEN_HEADER: p["token"], "Content-Type": "application/json"},
    ).close()  # the event is queued when the response is closed
    if not wrapped.flush(30) or wrapped.stats()["sent"] != 1:
        raise SystemExit(f"idle: the request was not delivered: {wrapped.stats()}")
    time.sleep(0.5)
    threads = threading.active_count()
    others = [t.ident for t in threading.enumerate() if t is not threading.current_thread()]

    def others_cpu() -> float:
        total = 0.0
        for ident in others:
            try:
                total += time.clock_gettime(time.pthread_getcpuclockid(ident))  # type: ignore[arg-type]
            except OSError:  # the thread ended
                pass
        return total

    cpu, wall, background = time.process_time(), time.perf_counter(), others_cpu()
    time.sleep(p["seconds"])
    background = others_cpu() - background
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    # The process figure includes the clock's own granularity (a bare sleeping process
    # shows tens of µs per second here); the other threads' clocks are exact.
    return {
        "cpu_us_per_s": cpu / wall * 1e6,
        "threads_us_per_s": background / wall * 1e6,
        "threads": threads,
    }


# Timed in an interpreter that has imported nothing else (not this script, whose own
# imports include much of what the package needs): sys and time are built in.
IMPORT_SCRIPT = """
import sys, time
if sys.argv[1] == "after-flask":
    import flask  # what an app has loaded before it adds the middleware
start, cpu = time.perf_counter(), time.process_time()
import otas_capture
if sys.argv[1] == "with-middleware":
    otas_capture.OtasMiddleware(
        lambda environ, start_response: [],
        sdk_key="otas_bench_importtimekey",
        project_id="123e4567-e89b-12d3-a456-426614174000",
        brain_url="http://127.0.0.1:9",
        uasam_url="http://127.0.0.1:9",
    )
wall, cpu = time.perf_counter() - start, time.process_time() - cpu
print(wall * 1000, cpu * 1000, otas_capture.__file__)
"""


def measure_import(mode: str) -> dict[str, Any]:
    """``import otas_capture`` in a fresh interpreter (``mode``: alone, after-flask,
    with-middleware), bytecode cached as an installed package has it."""
    env = dict(os.environ, PYTHONPATH=measured_path())
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    argv = [sys.executable, "-c", IMPORT_SCRIPT, mode]
    # Run from this directory: with -c the working directory comes first on sys.path,
    # and a checkout's root would shadow the one --otas names.
    out = subprocess.run(
        argv, check=True, stdout=subprocess.PIPE, text=True, env=env, cwd=HERE
    ).stdout
    wall, cpu, where = out.split()
    return {"ms": float(wall), "cpu_ms": float(cpu), "where": str(Path(where).parent.parent)}


def worker_memory(p: dict[str, Any]) -> dict[str, Any]:
    """memory.py's OTAS-unreachable scenario: peak traced memory against its bound."""
    import logging
    import tracemalloc

    import memory

    from otas_capture.contract import LOGGER_NAME

    logging.getLogger(LOGGER_NAME).setLevel(logging.CRITICAL)
    args = argparse.Namespace(hold=1.0, close_timeout=1.0, hang_timeout=1.0)
    tracemalloc.start()
    result = memory.run_queue(
        "unreachable",
        "unreachable",
        memory.whole_body_workload(),
        p["requests"],
        p["queue_max_bytes"],
        args,
    )
    tracemalloc.stop()
    return {
        "peak_mib": result.watch.peak / memory.MiB,
        "bound_mib": result.bound / memory.MiB,
        "queue_mib": p["queue_max_bytes"] / memory.MiB,
        "failures": result.failures,
    }


WORKERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "request_path": worker_request_path,
    "delivery": worker_delivery,
    "idle": worker_idle,
    "memory": worker_memory,
}


# -- load generators ----------------------------------------------------------------------


def wrk_load(
    wrk: str, url: str, seconds: float, connections: int, tok: str, body: bytes
) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(
            'wrk.method = "POST"\n'
            f"wrk.body = [==[{body.decode()}]==]\n"
            'wrk.headers["Content-Type"] = "application/json"\n'
            f'wrk.headers["{TOKEN_HEADER}"] = "{tok}"\n'
        )
    try:
        out = subprocess.run(
            [wrk, "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency"]
            + ["-s", script.name, url],
            check=True,
            stdout=subprocess.PIPE,
            text=True,
            preexec_fn=pinned(OTHER_CPUS),
        ).stdout
    finally:
        os.unlink(script.name)
    if "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk saw errors:\n{out}")

    def latency(label: str) -> float:
        match = re.search(rf"^\s*{label}\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not match:
            raise RuntimeError(f"no {label} latency in wrk output:\n{out}")
        return float(match[1]) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[match[2]]

    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert rate is not None, out
    return {"rps": float(rate[1]), "p50_ms": latency("50%"), "p99_ms": latency("99%")}


def python_load(
    url: str, seconds: float, connections: int, tok: str, body: bytes
) -> dict[str, Any]:
    """A small keep-alive load generator: ``connections`` threads, POST after POST."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    headers = {"Content-Type": "application/json", TOKEN_HEADER: tok}
    latencies: list[float] = []
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def client() -> None:
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
        mine = []
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            conn.request("POST", parts.path, body, headers)
            response = conn.getresponse()
            response.read()
            if response.status != 201:
                raise RuntimeError(f"answer {response.status}")
            mine.append(time.perf_counter() - start)
        conn.close()
        with lock:
            latencies.extend(mine)

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "rps": len(latencies) / elapsed,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
    }


# -- phases --------------------------------------------------------------------------------


VARIANTS: tuple[str, ...] = ("bare", "otas", "otel")
WIRE = "otas-wire"  # otas-capture with the prototype transport (otas_capture.otas.wire)
# (event, transport) pairs: the small event (1 KB each way, no secret in the bodies) and
# the realistic one (about 3 KB each way, five secrets), shipped over plain HTTP or TLS.
CASES = ("small/http", "small/tls", "realistic/http", "realistic/tls")
GUNICORN_CASES = ("small/http", "realistic/tls")
CASE_NAMES = {
    "small/http": "small event, HTTP",
    "small/tls": "small event, TLS",
    "realistic/http": "realistic event, HTTP",
    "realistic/tls": "realistic event, TLS",
}

Results = dict[str, dict[str, list[dict[str, Any]]]]  # case -> variant -> rounds


def rotated(items: tuple[str, ...], round_number: int) -> list[str]:
    k = round_number % len(items)
    return list(items[k:] + items[:k])


def case_variants(args: argparse.Namespace, case: str) -> tuple[str, ...]:
    """The wire column only differs for an older checkout, and only the first case has it."""
    if case == args.cases[0]:
        return tuple(args.variants)
    return tuple(v for v in args.variants if v != WIRE)


def phase_request_path(
    args: argparse.Namespace, sinks: Sinks, tok: str, problems: list[str]
) -> Results:
    results: Results = {}
    for case in args.cases:
        event, transport = case.split("/")
        variants = case_variants(args, case)
        results[case] = {v: [] for v in variants}
        for round_number in range(args.rounds):
            for variant in rotated(variants, round_number):
                say(f"request path, {case}, round {round_number + 1}/{args.rounds}: {variant} ...")
                reset(sinks.collector, sinks.sink)
                result = run_worker(
                    "request_path",
                    {
                        "variant": variant,
                        "event": event,
                        "iterations": args.iterations,
                        "warmup": args.warmup,
                        "collector": sinks.brain(transport),
                        "sink": sinks.spans(transport),
                        "token": tok,
                    },
                    tls=transport == "tls",
                )
                got = wait_delivered(variant, result["events"], sinks.collector, sinks.sink)
                if variant != "bare" and got != result["events"]:
                    problems.append(
                        f"request path, {case}, {variant}: {got} of {result['events']} delivered"
                    )
                results[case][variant].append(result)
    return results


def phase_gunicorn(
    args: argparse.Namespace, sinks: Sinks, tok: str, wrk: str | None, problems: list[str]
) -> Results:
    results: Results = {}
    gunicorn = str(venv_python().parent / "gunicorn") if in_venv() else "gunicorn"
    everywhere = os.sched_getaffinity(0) if APP_CPUS else set()
    pin([0, *sinks.pids()], OTHER_CPUS)
    try:
        for case in args.gunicorn_cases:
            variants = case_variants(args, case)
            results[case] = {v: [] for v in variants}
            for round_number in range(args.rounds):
                for variant in rotated(variants, round_number):
                    say(f"gunicorn, {case}, round {round_number + 1}/{args.rounds}: {variant} ...")
                    result = gunicorn_run(args, case, variant, gunicorn, sinks, tok, wrk, problems)
                    results[case][variant].append(result)
    finally:
        pin([0, *sinks.pids()], everywhere)
    return results


def gunicorn_run(
    args: argparse.Namespace,
    case: str,
    variant: str,
    gunicorn: str,
    sinks: Sinks,
    tok: str,
    wrk: str | None,
    problems: list[str],
) -> dict[str, Any]:
    """Serve one variant with gunicorn, load it, then let it deliver everything it captured.

    Measured: the load's requests/s and latency as the load generator saw them; the
    backlog (answered but not yet delivered) when the load ended; the drain: from the
    load's end until the app's ``flush`` returned and the sink had every event (the
    flush sends OpenTelemetry's last batch at once instead of after its 5 s delay; the
    otas sender has no delay to skip); requests/s over load plus drain; and the worker's
    CPU (every thread) from just before the load to the end of the drain, per request.
    """
    from apps import PAYLOADS

    event, transport = case.split("/")
    path, body, _ = PAYLOADS[event]
    collector, sink = sinks.collector, sinks.sink
    reset(collector, sink)
    port = free_port()
    env = dict(os.environ)
    if transport == "tls":
        env.update(TLS.env())
    env.update(
        BENCH_VARIANT=variant,
        BENCH_COLLECTOR=sinks.brain(transport),
        BENCH_SINK=sinks.spans(transport),
        PYTHONPATH=measured_path(),
    )
    argv = [gunicorn, "-k", "gthread", "--threads", str(GUNICORN_THREADS), "-w", "1"]
    argv += ["-b", f"127.0.0.1:{port}", "--log-level", "warning", "apps:application"]
    server = Process(argv, port, "/bench/handled", env, cpus=APP_CPUS)
    try:
        url = server.url + path
        cpu_before = float(http("GET", server.url + "/bench/cpu"))
        started = time.monotonic()
        if wrk:
            load = wrk_load(wrk, url, args.seconds, GUNICORN_CONNECTIONS, tok, body)
        else:
            load = python_load(url, args.seconds, GUNICORN_CONNECTIONS, tok, body)
        load_end = time.monotonic()
        answered = int(http("GET", server.url + "/bench/handled"))
        backlog = 0 if variant == "bare" else answered - delivered(variant, collector, sink)
        http("GET", server.url + "/bench/flush", timeout=180)
        drain = 0.0 if variant == "bare" else time.monotonic() - load_end
        cpu = float(http("GET", server.url + "/bench/cpu")) - cpu_before
        # Requests still in flight when the load stopped are answered (and captured)
        # after it: wait for the count to settle, then check every event arrived.
        handled = -1
        while handled != (now := int(http("GET", server.url + "/bench/handled"))):
            handled = now
            time.sleep(0.1)
        got = wait_delivered(variant, handled, collector, sink, timeout=120)
        if variant != "bare" and got != handled:
            problems.append(f"gunicorn, {case}, {variant}: {got} of {handled} delivered")
        load.update(
            handled=handled,
            backlog=backlog,
            drain_s=drain,
            rps_with_drain=handled / (load_end - started + drain),
            cpu_per_request_us=cpu / max(1, handled) * 1e6,
        )
        return load
    finally:
        server.stop()


def phase_delivery(
    args: argparse.Namespace, tok: str, problems: list[str]
) -> dict[tuple[float, int, str], list[dict[str, Any]]]:
    results: dict[tuple[float, int, str], list[dict[str, Any]]] = {}
    transports = ("http.client", "wire") if WIRE in args.variants else ("http.client",)
    for latency in LATENCIES:
        collector = start_collector(latency)
        try:
            for round_number in range(args.delivery_rounds):
                for concurrency in CONCURRENCIES:
                    for transport in rotated(transports, round_number):
                        ideal = concurrency / latency
                        events = max(40, int(ideal * args.delivery_seconds))
                        say(
                            f"delivery, {latency * 1000:.0f} ms x {concurrency}, {transport}, "
                            f"round {round_number + 1}/{args.delivery_rounds} ({events} events)"
                        )
                        http("DELETE", collector.url + "/bench/count")
                        result = run_worker(
                            "delivery",
                            {
                                "collector": collector.url,
                                "concurrency": concurrency,
                                "events": events,
                                "token": tok,
                                "transport": transport,
                            },
                        )
                        got = int(http("GET", collector.url + "/bench/count"))
                        if result["sent"] != events or got != events:
                            problems.append(
                                f"delivery {latency}s x {concurrency} {transport}: "
                                f"{result['sent']} sent, {got} of {events} received"
                            )
                        key = (latency, concurrency, transport)
                        results.setdefault(key, []).append(result)
        finally:
            collector.stop()
    return results


# -- the table ------------------------------------------------------------------------------


def med(rows: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(row[key] for row in rows))


def build_table(
    args: argparse.Namespace,
    path: Results | None,
    guni: Results | None,
    deliv: dict[tuple[float, int, str], list[dict[str, Any]]],
    idle: dict[str, Any] | None,
    import_ms: dict[str, tuple[float, float]] | None,
    mem: dict[str, Any] | None,
) -> list[str]:
    wire = WIRE in args.variants
    columns = ["bare app", "otas-capture"] + (["otas-capture + wire"] if wire else [])
    columns += ["OpenTelemetry", "target"]
    lines = [
        "| measure | " + " | ".join(columns) + " |",
        "|---|" + "---:|" * (len(columns) - 1) + "---|",
    ]
    shown = ["otas"] + ([WIRE] if wire else []) + ["otel"]

    def row(measure: str, bare: str, cells: dict[str, str], target: str = "") -> None:
        values = [bare] + [cells.get(variant, "") for variant in shown] + [target]
        lines.append(f"| {measure} | " + " | ".join(values) + " |")

    for case, runs in (path or {}).items():
        name = CASE_NAMES[case]
        present = [v for v in shown if v in runs]
        for key, label, target in (
            ("median_us", "request path, median µs (Flask, shipping running)", "otas ≤ +50"),
            ("p99_us", "request path, p99 µs", ""),
            (
                "cpu_per_request_us",
                "CPU per captured + delivered request, µs (process, all threads, drain included)",
                "otas ≤ +100 and ≤ 0.75x OTel (small); below OTel (realistic, TLS)",
            ),
        ):
            bare = med(runs["bare"], key)
            row(
                f"{name}: {label}",
                f"{bare:.1f}",
                {v: f"{med(runs[v], key) - bare:+.1f}" for v in present},
                target if key != "median_us" or case == args.cases[0] else "",
            )
        row(
            f"{name}: share of the request path's events shipped while the calls were timed",
            "",
            {v: f"{med(runs[v], 'shipped_during'):.0%}" for v in present if v.startswith("otas")},
        )
    for case, runs in (guni or {}).items():
        name = f"gunicorn gthread, {CASE_NAMES[case]}"
        present = [v for v in shown if v in runs]
        bare_rps = med(runs["bare"], "rps")
        row(
            f"{name}: requests/s during the load ({GUNICORN_CONNECTIONS} connections)",
            f"{bare_rps:.0f}",
            {
                v: f"{med(runs[v], 'rps'):.0f} ({med(runs[v], 'rps') / bare_rps:.0%})"
                for v in present
            },
        )
        row(
            f"{name}: events not yet delivered when the load ended",
            "",
            {v: f"{med(runs[v], 'backlog'):.0f}" for v in present},
            "none dropped",
        )
        row(
            f"{name}: seconds from the load's end until everything was delivered (flush)",
            "",
            {v: f"{med(runs[v], 'drain_s'):.2f}" for v in present},
            "≤ 5",
        )
        bare_all = med(runs["bare"], "rps_with_drain")
        row(
            f"{name}: requests/s over load + drain",
            f"{bare_all:.0f}",
            {
                v: f"{med(runs[v], 'rps_with_drain'):.0f} "
                f"({med(runs[v], 'rps_with_drain') / bare_all:.0%})"
                for v in present
            },
            "otas share above OTel's",
        )
        bare_cpu = med(runs["bare"], "cpu_per_request_us")
        row(
            f"{name}: worker CPU per request, µs (all threads, load + drain)",
            f"{bare_cpu:.0f}",
            {v: f"{med(runs[v], 'cpu_per_request_us') - bare_cpu:+.0f}" for v in present},
        )

        def latency_ms(rows: list[dict[str, Any]]) -> str:
            return f"{med(rows, 'p50_ms'):.2f} / {med(rows, 'p99_ms'):.2f}"

        row(
            f"{name}: latency p50 / p99, ms",
            latency_ms(runs["bare"]),
            {v: latency_ms(runs[v]) for v in present},
        )
    for latency in LATENCIES:
        for concurrency in CONCURRENCIES:
            ideal = concurrency / latency
            cells = {}
            for transport, variant in (("http.client", "otas"), ("wire", WIRE)):
                rows = deliv.get((latency, concurrency, transport))
                if rows:
                    rate = med(rows, "rate")
                    cells[variant] = (
                        f"{rate:.0f} ({rate / ideal:.0%}); {med(rows, 'cpu_per_event_us'):.0f}"
                    )
            if cells:
                row(
                    f"delivery at {latency * 1000:.0f} ms per call, concurrency {concurrency}: "
                    f"events/s (of {ideal:.0f} ideal); CPU µs per event",
                    "",
                    cells,
                    "≥ 80% of ideal",
                )
    if idle is not None:
        row(
            "idle CPU, µs per second: process (its threads but the main one)",
            "",
            {"otas": f"{idle['cpu_us_per_s']:.0f} ({idle.get('threads_us_per_s', 0):.0f})"},
            "0",
        )
    if import_ms is not None:
        for mode, label, target in (
            ("alone", "`import otas_capture` in a fresh interpreter, ms wall (CPU)", "< 50"),
            ("after-flask", "`import otas_capture` after `import flask`, ms wall (CPU)", ""),
            (
                "with-middleware",
                "`import otas_capture` and make an `OtasMiddleware`, ms wall (CPU)",
                "",
            ),
        ):
            wall, cpu = import_ms[mode]
            row(label, "", {"otas": f"{wall:.1f} ({cpu:.1f})"}, target)
    if mem is not None:
        row(
            f"peak traced MiB, OTAS unreachable, queue_max_bytes {mem['queue_mib']:.0f} MiB",
            "",
            {"otas": f"{mem['peak_mib']:.2f} (bound {mem['bound_mib']:.1f})"},
            "≤ bound",
        )
    return lines


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from importlib.metadata import version

    return (
        f"Python {platform.python_version()}, {platform.system()} {platform.machine()}, "
        f"{os.cpu_count()} CPUs ({cpu}), Flask {version('flask')}, OpenTelemetry SDK "
        f"{version('opentelemetry-sdk')}"
    )


# -- main ----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Measure otas-capture against the bare app and OpenTelemetry "
        "(request path, CPU, gunicorn throughput, delivery, idle CPU, import time, memory)."
    )
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds")
    parser.add_argument("--rounds", type=int, help="rounds of each variant (5; quick 3)")
    parser.add_argument("--iterations", type=int, help="timed calls per variant (3000; quick 1000)")
    parser.add_argument("--seconds", type=float, help="gunicorn load per variant, s (4; quick 2)")
    parser.add_argument(
        "--only",
        default="path,gunicorn,delivery,idle,import,memory",
        help="comma-separated subset of path,gunicorn,delivery,idle,import,memory",
    )
    parser.add_argument(
        "--no-wire",
        action="store_true",
        help="skip the otas-capture + wire variant (the prototype transport)",
    )
    parser.add_argument(
        "--otas",
        metavar="PATH",
        help="measure the otas_capture of another checkout at PATH (e.g. an older commit "
        "made with `git worktree add`); the collector and sinks stay this checkout's",
    )
    parser.add_argument(
        "--cases",
        default=",".join(CASES),
        help="request path and CPU: comma-separated event/transport pairs of "
        f"{', '.join(CASES)} (default: all)",
    )
    parser.add_argument(
        "--gunicorn-cases",
        default=",".join(GUNICORN_CASES),
        help=f"the same for the gunicorn phase (default: {','.join(GUNICORN_CASES)})",
    )
    parser.add_argument(
        "--no-orjson",
        action="store_true",
        help="run the variants without orjson, as otas-capture without its fast extra",
    )
    parser.add_argument("--python-loadgen", action="store_true", help="do not use wrk")
    parser.add_argument(
        "--no-pin",
        action="store_true",
        help="do not give the gunicorn server a CPU of its own (see APP_CPUS)",
    )
    parser.add_argument("--no-apt", action="store_true", help="never apt-get install wrk")
    parser.add_argument("--no-venv", action="store_true", help="use this interpreter as it is")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--params", help=argparse.SUPPRESS)
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--latency", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--upstream", help=argparse.SUPPRESS)
    parser.add_argument("--cert", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    quick = args.quick
    args.rounds = args.rounds or (3 if quick else 5)
    args.iterations = args.iterations or (1000 if quick else 3000)
    args.warmup = 300 if quick else 500
    args.seconds = args.seconds or (2.0 if quick else 4.0)
    args.delivery_rounds = 1 if quick else 3
    args.delivery_seconds = 1.5 if quick else 2.5
    args.idle_seconds = 2.0 if quick else 5.0
    args.memory_requests = 300 if quick else 1000
    args.variants = VARIANTS[:2] + ((WIRE,) if not args.no_wire else ()) + VARIANTS[2:]
    args.only = {part.strip() for part in args.only.split(",") if part.strip()}
    for option in ("cases", "gunicorn_cases"):
        chosen = tuple(part.strip() for part in getattr(args, option).split(",") if part.strip())
        unknown = set(chosen) - set(CASES)
        if unknown or not chosen:
            parser.error(f"--{option.replace('_', '-')}: choose from {', '.join(CASES)}")
        setattr(args, option, chosen)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(HERE))
    if args.serve:
        import apps

        if args.serve == "collector":
            apps.serve_collector(args.port, args.latency)
        elif args.serve == "tls":
            apps.serve_tls_proxy(args.port, int(args.upstream.rsplit(":", 1)[1]), args.cert)
        else:
            apps.serve_span_sink(args.port)
        return 0
    if args.worker:
        print(json.dumps(WORKERS[args.worker](json.loads(args.params))))
        return 0

    ensure_env(args)  # re-runs this script in benchmarks/.venv unless already there
    if args.no_orjson:
        os.environ["BENCH_NO_ORJSON"] = "1"
    if args.otas:
        os.environ["BENCH_OTAS"] = str(Path(args.otas).resolve())
        say(f"measuring the otas_capture of {os.environ['BENCH_OTAS']}")
    wrk = ensure_wrk(args) if "gunicorn" in args.only else None
    split_cpus(not args.no_pin)
    started = time.perf_counter()
    problems: list[str] = []
    tok = token()
    tls_dir = tempfile.TemporaryDirectory(prefix="otas-bench-tls-")
    TLS.setup(tls_dir.name)
    uses_tls = any(case.endswith("/tls") for case in args.cases + args.gunicorn_cases)
    sinks = Sinks(tls=uses_tls)
    path: Results | None = None
    guni: Results | None = None
    deliv: dict[tuple[float, int], list[dict[str, Any]]] = {}
    idle: dict[str, Any] | None = None
    mem: dict[str, Any] | None = None
    import_ms: dict[str, tuple[float, float]] | None = None
    try:
        if "path" in args.only:
            path = phase_request_path(args, sinks, tok, problems)
        if "gunicorn" in args.only:
            guni = phase_gunicorn(args, sinks, tok, wrk, problems)
        if "idle" in args.only:
            say("idle CPU ...")
            idle = run_worker(
                "idle",
                {"collector": sinks.collector.url, "token": tok, "seconds": args.idle_seconds},
            )
    finally:
        sinks.stop()
        tls_dir.cleanup()
    if "delivery" in args.only:
        deliv = phase_delivery(args, tok, problems)
    if "import" in args.only:
        say("import time ...")
        measure_import("with-middleware")  # writes __pycache__, as installing does
        import_ms = {}
        for mode in ("alone", "after-flask", "with-middleware"):
            runs = [measure_import(mode) for _ in range(7)]
            import_ms[mode] = (
                statistics.median(row["ms"] for row in runs),
                statistics.median(row["cpu_ms"] for row in runs),
            )
        say(f"imported otas_capture from {runs[0]['where']}")
    if "memory" in args.only:
        say("memory during an outage ...")
        mem = run_worker(
            "memory", {"requests": args.memory_requests, "queue_max_bytes": 8 * 1024 * 1024}
        )
        problems += [f"memory: {failure}" for failure in mem["failures"]]

    print(f"\n{machine()}")
    import importlib.util

    orjson = (
        "without orjson"
        if args.no_orjson
        else ("with orjson" if importlib.util.find_spec("orjson") else "orjson not installed")
    )
    print(
        f"`python benchmarks/run.py{' --quick' if args.quick else ''}`: {args.rounds} rounds, "
        f"variants {orjson}, "
        f"{args.iterations} timed requests per variant per round, gunicorn "
        f"{args.seconds:g} s per variant per round with "
        f"{'wrk' if wrk else 'the Python load generator'}; medians of rounds; "
        + (
            f"gunicorn on CPU {sorted(APP_CPUS)}, sinks and load on {sorted(OTHER_CPUS)}. "
            if APP_CPUS
            else "no CPU pinning. "
        )
        + f"Took {time.perf_counter() - started:.0f} s.\n"
    )
    print("\n".join(build_table(args, path, guni, deliv, idle, import_ms, mem)))
    if problems:
        print("\nerror: not everything was delivered or bounded:", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    print("\nEvery captured request was delivered (checked at the sinks).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
