"""Delivery scenarios of issues 5 and 7: events sent against events OTAS stored.

Each scenario runs the SDK under test in real child processes (``waitress-serve``,
``python app.py``, ``flask run``, gunicorn, or a plain script driving a test client),
with ``PYTHONPATH`` set to ``--src``, so the same scenarios run against any checkout::

    python benchmarks/delivery_scenarios.py                    # this checkout
    python benchmarks/delivery_scenarios.py --src /tmp/before64

The stand-in Brain is the local collector of *this* checkout (whatever ``--src`` is),
served from this process on loopback, with its fault switches; the one thing it cannot
do, trickle an answer a byte at a time, is emulated here by a small socket server. The
child processes only use what every version of the SDK has: ``OtasMiddleware``,
``init_app``, ``annotate``, ``stats``, ``flush`` and ``close``, configured by environment.

For each scenario the table gives the agent requests answered ("sent"), the distinct
events stored ("delivered"), rows stored more than once ("dupes") and a note with what
else the scenario measures. Runs take a few minutes; keep them to one at a time on a
shared machine. ``--only NAME`` runs the scenarios whose name contains NAME.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections import Counter
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

# The WSGI app every server child serves: "hello" for any path, the body never read.
WSGI_APP = """
import os
from otas_capture import OtasMiddleware

def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]

app = OtasMiddleware(hello)
"""

FLASK_APP = """
import sys
from flask import Flask
from otas_capture.flask import init_app

app = Flask(__name__)
init_app(app)

@app.route("/<path:name>", methods=["GET", "POST"])
def hello(name):
    return "hello"

if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(sys.argv[1]))
"""

# A script child: builds the app, runs BODY (which fills ``result``), prints it as JSON.
SCRIPT_HEAD = """
import json, math, os, sys, time, threading
from otas_capture import OtasMiddleware, annotate
TOKEN = os.environ["SCENARIO_TOKEN"]
P = os.environ["SCENARIO_PREFIX"]
HEADERS = {"X-OTAS-AGENT-SESSION-TOKEN": TOKEN}
def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]
result = {}
"""
SCRIPT_TAIL = """
print("RESULT " + json.dumps(result, default=str), flush=True)
"""
# Ends a child at once, without its exit flush (a hung Brain would hold it otherwise).
QUIT = 'print("RESULT " + json.dumps(result, default=str), flush=True); os._exit(0)'


class Row:
    def __init__(self, name: str, sent: int, delivered: int, dupes: int, note: str) -> None:
        self.name, self.sent, self.delivered, self.dupes, self.note = (
            name,
            sent,
            delivered,
            dupes,
            note,
        )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Harness:
    def __init__(self, src: Path, work: Path) -> None:
        self.src = src
        self.work = work
        self.collector = Collector()
        self.server = CollectorServer(self.collector, threads=32).start()
        self.token = self.collector.issue_token()
        self.prefix = "s0"
        self.runs = 0

    def env(self, **extra: str) -> dict[str, str]:
        environment = {
            key: value for key, value in os.environ.items() if not key.startswith("OTAS_")
        }
        environment.update(
            OTAS_SDK_KEY=DEMO_SDK_KEY,
            OTAS_PROJECT_ID=DEMO_PROJECT_ID,
            OTAS_BRAIN_URL=self.server.url,
            OTAS_UASAM_URL=self.server.url,
            PYTHONPATH=os.pathsep.join([str(self.src), str(self.work)]),
            PYTHONUNBUFFERED="1",
            SCENARIO_TOKEN=self.token,
            SCENARIO_PREFIX=self.prefix,
        )
        environment.update(extra)
        return environment

    def reset(self) -> None:
        """A healthy, empty collector and a new path prefix: a late call of an earlier
        scenario (a hung one, released) never counts in this one."""
        self.collector.reset()
        self.runs += 1
        self.prefix = f"s{self.runs}"

    def stored(self) -> tuple[int, int]:
        """(distinct events, extra rows) by path, each request having its own path."""
        paths = Counter(
            event["path"]
            for event in self.collector.events()
            if event["path"].startswith(f"/{self.prefix}/")
        )
        return len(paths), sum(count - 1 for count in paths.values())

    def settle(self, expected: int, timeout: float) -> None:
        self.collector.wait_for_events(expected, timeout)
        time.sleep(0.3)

    def script(self, body: str, timeout: float = 60.0, **env: str) -> dict[str, Any]:
        code = SCRIPT_HEAD + textwrap.dedent(body).replace("{QUIT}", QUIT) + SCRIPT_TAIL
        try:
            done = subprocess.run(
                [sys.executable, "-c", code],
                cwd=self.work,
                env=self.env(**env),
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            return {"error": f"child still running after {timeout:.0f} s (killed)"}
        for line in done.stdout.splitlines():
            if line.startswith("RESULT "):
                result: dict[str, Any] = json.loads(line[7:])
                return result
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"exit {done.returncode}: {last[:80]}"}

    def start_server(self, command: list[str], port: int, **env: str) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            command,
            cwd=self.work,
            env=self.env(**env),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and process.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return process
            except OSError:
                time.sleep(0.05)
        return process

    def stop(self, process: subprocess.Popen[str], timeout: float = 40.0) -> str:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            _, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            _, stderr = process.communicate()
        return stderr or ""

    def close(self) -> None:
        self.server.stop()


def burst(port: int, token: str, count: int, prefix: str) -> tuple[int, float]:
    """``count`` agent requests in turn; (answered, slowest answer in seconds)."""
    answered, slowest = 0, 0.0
    with requests.Session() as session:
        for number in range(count):
            began = time.monotonic()
            try:
                response = session.get(
                    f"http://127.0.0.1:{port}/{prefix}/{number}",
                    headers={SESSION_TOKEN_HEADER: token},
                    timeout=30,
                )
            except requests.RequestException:
                continue
            slowest = max(slowest, time.monotonic() - began)
            answered += response.status_code == 200
    return answered, slowest


def server_sigterm(
    h: Harness, name: str, kind: str, count: int, latency: float = 0.0, **env: str
) -> Row:
    h.reset()
    h.collector.set_latency(latency)
    port = free_port()
    if kind == "waitress-serve":
        (h.work / "agentapp.py").write_text(WSGI_APP)
        waitress = str(Path(sys.executable).with_name("waitress-serve"))
        command = [waitress, f"--listen=127.0.0.1:{port}", "agentapp:app"]
    elif kind == "python app.py":
        (h.work / "app.py").write_text(FLASK_APP)
        command = [sys.executable, "app.py", str(port)]
    elif kind == "flask run":
        (h.work / "app.py").write_text(FLASK_APP)
        flask = str(Path(sys.executable).with_name("flask"))
        command = [flask, "--app", "app", "run", "--port", str(port)]
    else:  # gunicorn, with extra arguments after a colon
        (h.work / "agentapp.py").write_text(WSGI_APP)
        gunicorn = str(Path(sys.executable).with_name("gunicorn"))
        extra = kind.split(":", 1)[1].split() if ":" in kind else []
        command = [gunicorn, "-b", f"127.0.0.1:{port}", "-w", "2", *extra, "agentapp:app"]
    process = h.start_server(command, port, **env)
    sent, slowest = burst(port, h.token, count, h.prefix)
    began = time.monotonic()
    stderr = h.stop(process)
    stop_time = time.monotonic() - began
    h.settle(sent, 3.0 + latency * 4)
    delivered, dupes = h.stored()
    note = f"exit {process.returncode}, stop took {stop_time:.1f} s"
    if "max-requests" in kind:
        note += f", slowest request {slowest:.1f} s"
    # Every worker's exit summary, added up (the old SDK logged per event instead).
    missing = sum(int(n) for n in re.findall(r"(\d+) of \d+ captured events were not", stderr))
    unknown = sum(int(n) for n in re.findall(r"unknown (\d+)", stderr))
    shutdown_lines = stderr.count("event dropped (shutdown)")
    if missing:
        note += f"; exit summaries: {missing} not delivered ({unknown} of them unknown)"
    elif shutdown_lines:
        note += f"; {shutdown_lines} log line(s) 'event dropped (shutdown); 1 so far'"
    h.collector.set_latency(0.0)
    return Row(name, sent, delivered, dupes, note)


# -- the scenarios ---------------------------------------------------------------------------


def s_flask_test_client(h: Harness) -> Row:
    h.reset()
    result = h.script(
        """
        from flask import Flask
        from otas_capture.flask import init_app
        app = Flask("t")
        otas = init_app(app)
        @app.get("/<path:name>")
        def page(name):
            return "hello"
        client = app.test_client()
        for number in range(20):
            client.get(f"/{P}/{number}", headers=HEADERS)
        result["flush"] = otas.flush(5.0)
        result["captured"] = otas.stats().get("captured")
        """
    )
    h.settle(20, 3)
    delivered, dupes = h.stored()
    return Row("Flask test_client, responses not closed", 20, delivered, dupes, _note(result))


def s_werkzeug_client(h: Harness) -> Row:
    h.reset()
    result = h.script(
        """
        from werkzeug.test import Client
        otas = OtasMiddleware(hello)
        client = Client(otas)
        for number in range(20):
            client.get(f"/{P}/{number}", headers=HEADERS)
        result["flush"] = otas.flush(5.0)
        result["captured"] = otas.stats().get("captured")
        """
    )
    h.settle(20, 3)
    delivered, dupes = h.stored()
    return Row("werkzeug Client, responses not closed", 20, delivered, dupes, _note(result))


def _note(result: dict[str, Any]) -> str:
    return ", ".join(f"{key} {value}" for key, value in result.items())


def slow_brain(h: Harness, latency: float, timeout: str | None) -> Row:
    """Brain stores each event, then answers ``latency`` s later (as the public one can)."""
    h.reset()
    h.collector.set_latency(latency)
    env = {"OTAS_TIMEOUT": timeout} if timeout else {}
    result = h.script(
        """
        from werkzeug.test import Client
        otas = OtasMiddleware(hello)
        client = Client(otas)
        for number in range(4):
            client.get(f"/{P}/{number}", headers=HEADERS).close()
        result["flush"] = otas.flush(25.0)
        otas.close(0.5)
        stats = otas.stats()
        for key in ("possible_duplicate", "unknown", "retried"):
            result[key] = stats.get(key, "n/a")
        """,
        **env,
    )
    h.collector.set_latency(0.0)
    h.settle(99, 2)
    delivered, dupes = h.stored()
    setting = f"OTAS_TIMEOUT={timeout}" if timeout else "default OTAS_TIMEOUT"
    name = f"Brain answers in {latency:g} s, {setting}"
    return Row(name, 4, delivered, dupes, _note(result))


class TrickleBrain:
    """Answers each call with a 201 a byte every 0.2 s; records how long each call lasted."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.durations: list[float] = []
        self.stopping = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        began = time.monotonic()
        answer = b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
        answer += b"X-Pad: " + b"x" * 150 + b"\r\nContent-Length: 2\r\n\r\n{}"
        conn.settimeout(5)
        try:
            conn.recv(65536)
            for byte in answer:
                if self.stopping:
                    break
                conn.sendall(bytes([byte]))
                time.sleep(0.2)
        except OSError:
            pass
        finally:
            self.durations.append(time.monotonic() - began)
            conn.close()

    def close(self) -> None:
        self.stopping = True
        self.sock.close()


def s_trickle(h: Harness) -> Row:
    brain = TrickleBrain()
    result = h.script(
        """
        from werkzeug.test import Client
        otas = OtasMiddleware(hello)
        Client(otas).get(f"/{P}/0", headers=HEADERS).close()
        time.sleep(6)
        began = time.monotonic()
        otas.close(1.0)
        result["close_s"] = round(time.monotonic() - began, 1)
        """,
        OTAS_TIMEOUT="1",
        OTAS_BRAIN_URL=brain.url,
    )
    time.sleep(0.5)
    brain.close()
    longest = max(brain.durations, default=0.0)
    note = f"longest call {longest:.1f} s, {len(brain.durations)} calls in 6 s; " + _note(result)
    return Row("Brain trickles its answer, OTAS_TIMEOUT=1", 1, 0, 0, note)


def s_memory(h: Harness) -> Row:
    h.reset()
    h.collector.brain_down(503)
    result = h.script(
        """
        from werkzeug.test import Client
        def rss():
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        otas = OtasMiddleware(hello)
        client = Client(otas)
        import gc, tracemalloc
        client.get("/warm", headers=HEADERS).close()
        time.sleep(0.5)
        gc.collect()
        tracemalloc.start()
        before = rss()
        for number in range(400):
            # Values of their own per request, as real requests have (no shared strings).
            headers = dict(HEADERS)
            for n in range(40):
                headers[f"X-Big-{n}"] = f"{number}-{n}-" + "v" * 4000
            client.get(f"/{P}/{number}", headers=headers).close()
            del headers
        time.sleep(1.0)
        gc.collect()
        result["held_MiB"] = round(tracemalloc.get_traced_memory()[0] / 2**20, 1)
        result["rss_growth_MiB"] = round((rss() - before) / 2**20, 1)
        result["budget_MiB"] = 8
        result["queued"] = otas.stats().get("queued")
        result["dropped"] = otas.stats().get("dropped")
        """,
        OTAS_QUEUE_MAX_BYTES=str(8 * 2**20),
        OTAS_SHUTDOWN_TIMEOUT="0.5",
    )
    h.collector.brain_up = True
    return Row("Brain down, 400 requests with 160 KB of headers", 400, 0, 0, _note(result))


def s_recovery(h: Harness) -> Row:
    h.reset()
    h.collector.fail_next(30, status=503, retry_after="0")
    result = h.script(
        """
        from werkzeug.test import Client
        otas = OtasMiddleware(hello)
        client = Client(otas)
        began = time.monotonic()
        for number in range(20):
            client.get(f"/{P}/{number}", headers=HEADERS).close()
        result["all_delivered"] = otas.flush(30.0)
        result["drain_s"] = round(time.monotonic() - began, 1)
        """
    )
    h.settle(20, 3)
    delivered, dupes = h.stored()
    return Row("30 x 503 Retry-After: 0, then healthy", 20, delivered, dupes, _note(result))


def s_double_wrap(h: Harness) -> Row:
    h.reset()
    h.script(
        """
        from werkzeug.test import Client
        otas = OtasMiddleware(OtasMiddleware(hello))
        client = Client(otas)
        for number in range(10):
            client.get(f"/{P}/{number}", headers=HEADERS).close()
        otas.flush(5.0)
        """
    )
    h.settle(20, 2)
    delivered, dupes = h.stored()
    return Row("OtasMiddleware(OtasMiddleware(app))", 10, delivered, dupes, "")


def s_close_at_64(h: Harness) -> Row:
    h.reset()
    h.collector.brain_hangs = True
    result = h.script(
        """
        from werkzeug.test import Client
        otas = OtasMiddleware(hello)
        client = Client(otas)
        for number in range(64):
            client.get(f"/{P}/{number}", headers=HEADERS).close()
        time.sleep(1.0)
        began = time.monotonic()
        otas.close(1.0)
        result["close(1.0)_s"] = round(time.monotonic() - began, 1)
        {QUIT}
        """,
        OTAS_CONCURRENCY="64",
    )
    h.collector.brain_hangs = False
    time.sleep(1.0)  # the released calls end before the next scenario
    return Row("Brain hangs, close(1.0), concurrency 64", 64, 0, 0, _note(result))


def s_flush_inf(h: Harness) -> Row:
    h.reset()
    result = h.script(
        """
        from werkzeug.test import Client
        otas = OtasMiddleware(hello)
        Client(otas).get(f"/{P}/0", headers=HEADERS).close()
        try:
            result["flush(inf)"] = otas.flush(math.inf)
        except Exception as exc:
            result["flush(inf)"] = type(exc).__name__
        """
    )
    h.settle(1, 2)
    delivered, dupes = h.stored()
    return Row("flush(math.inf)", 1, delivered, dupes, _note(result))


def s_idle_cpu(h: Harness) -> Row:
    h.reset()
    result = h.script(
        """
        from werkzeug.test import Client
        otas = OtasMiddleware(hello)
        client = Client(otas)
        for number in range(32):
            client.get(f"/{P}/{number}", headers=HEADERS).close()
        otas.flush(5.0)
        time.sleep(0.5)
        cpu, wall = time.process_time(), time.monotonic()
        time.sleep(3.0)
        share = (time.process_time() - cpu) / (time.monotonic() - wall)
        result["idle_cpu_%"] = round(100 * share, 2)
        result["threads"] = threading.active_count()
        """,
        OTAS_CONCURRENCY="16",
        OTAS_FLUSH_INTERVAL="0.01",
    )
    h.settle(32, 2)
    delivered, dupes = h.stored()
    return Row("idle, 16 threads, flush_interval 0.01", 32, delivered, dupes, _note(result))


def s_annotation_cycle(h: Harness) -> Row:
    h.reset()
    result = h.script(
        """
        from werkzeug.test import Client
        shared = [1, 2, 3]
        def app(environ, start_response):
            loop = {"name": "loop"}
            loop["self"] = loop
            tree = [shared] * 2
            for _ in range(24):
                tree = [tree, tree]
            annotate(environ, loop=loop, tree=tree)
            return hello(environ, start_response)
        otas = OtasMiddleware(app)
        Client(otas).get(f"/{P}/0", headers=HEADERS).close()
        result["flush"] = otas.flush(5.0)
        cpu = time.process_time()
        time.sleep(2.0)
        result["cpu_%_after"] = round(50 * (time.process_time() - cpu), 1)
        {QUIT}
        """,
        timeout=30,
    )
    h.settle(1, 2)
    delivered, dupes = h.stored()
    return Row("annotate() with a cycle and shared refs", 1, delivered, dupes, _note(result))


def s_after_close(h: Harness) -> Row:
    h.reset()
    result = h.script(
        """
        import logging
        from werkzeug.test import Client
        otas = OtasMiddleware(hello)
        client = Client(otas)
        otas.close(1.0)
        for number in range(5):
            client.get(f"/{P}/{number}", headers=HEADERS).close()
        result["captured_after_close"] = otas.stats().get("captured")
        """
    )
    h.settle(5, 1)
    delivered, dupes = h.stored()
    return Row("5 requests after close()", 0, delivered, dupes, _note(result))


def s_spool(h: Harness) -> Row:
    h.reset()
    spool = h.work / "spool"
    h.collector.brain_down(503)
    (h.work / "agentapp.py").write_text(WSGI_APP)
    waitress = str(Path(sys.executable).with_name("waitress-serve"))
    port = free_port()
    env = {"OTAS_SPOOL_DIR": str(spool), "OTAS_SHUTDOWN_TIMEOUT": "0.5"}
    first = h.start_server([waitress, f"--listen=127.0.0.1:{port}", "agentapp:app"], port, **env)
    sent, _ = burst(port, h.token, 30, h.prefix)
    h.stop(first)
    h.collector.brain_up = True
    spooled = len(list(spool.glob("*.spool"))) if spool.exists() else 0
    # Three workers start at once on the same spool, as pre-forked workers do.
    workers = []
    for _ in range(3):
        worker_port = free_port()
        command = [waitress, f"--listen=127.0.0.1:{worker_port}", "agentapp:app"]
        workers.append((h.start_server(command, worker_port, **env), worker_port))
    for _, worker_port in workers:
        burst(worker_port, h.token, 1, f"w{worker_port}")  # starts its sender
    time.sleep(4.0)
    for process, _ in workers:
        h.stop(process)
    h.settle(sent + 3, 2)
    delivered, dupes = h.stored()
    note = f"{spooled} spool files after the first stop; 3 workers share the spool"
    return Row("spool: stop with Brain down, restart 3 workers", sent, delivered, dupes, note)


def s_uasam_key(h: Harness) -> Row:
    h.reset()
    while True:
        key = f"otas_{secrets.token_urlsafe(8)}_{secrets.token_urlsafe(32)}"
        first, second = key[5:].split("_", 1)[0], key[5:].rsplit("_", 1)[-1]
        if key.count("_") >= 4 and "_" in key[5:16] and "_" in key[17:]:
            break
    del first, second
    h.collector.add_sdk_key(key, DEMO_PROJECT_ID)
    (h.work / "agentapp.py").write_text(WSGI_APP)
    waitress = str(Path(sys.executable).with_name("waitress-serve"))
    port = free_port()
    command = [waitress, f"--listen=127.0.0.1:{port}", "agentapp:app"]
    process = h.start_server(command, port, OTAS_SDK_KEY=key, OTAS_PROJECT_ID="")
    sent, _ = burst(port, h.token, 3, h.prefix)
    time.sleep(2.0)
    stderr = h.stop(process)
    h.settle(3, 2)
    delivered, dupes = h.stored()
    started = "app started" if sent else f"app did not start: {stderr.strip()[-60:]}"
    return Row("UASAM key, '_' in both random parts (env)", 3, delivered, dupes, started)


def s_long_path(h: Harness) -> Row:
    h.reset()
    result = h.script(
        """
        from werkzeug.test import Client
        otas = OtasMiddleware(hello)
        client = Client(otas)
        client.get(f"/{P}/long/" + "p" * 3005, headers=HEADERS).close()
        for number in range(5):
            client.get(f"/{P}/{number}", headers=HEADERS).close()
        result["flush"] = otas.flush(20.0)
        stats = otas.stats()
        result["failed"] = stats.get("failed")
        """,
        OTAS_RETRY_BACKOFF="0.1",
    )
    h.settle(6, 2)
    events = h.collector.events()
    long = [e for e in events if e["path"].startswith(f"/{h.prefix}/long/")]
    note = f"long path stored: {bool(long)}"
    if long:
        meta = long[0].get("metadata") or {}
        note += f" (path {len(long[0]['path'])} chars, metadata keeps {meta.get('path_bytes')})"
    note += "; " + _note(result)
    delivered, dupes = h.stored()
    return Row("3,011-char path + 5 ordinary requests", 6, delivered, dupes, note)


def s_unread_body(h: Harness) -> Row:
    h.reset()
    h.script(
        """
        from werkzeug.test import Client
        otas = OtasMiddleware(hello)
        Client(otas).post(f"/{P}/0", data=b"x" * 4096, headers=HEADERS).close()
        otas.flush(5.0)
        """
    )
    h.settle(1, 2)
    events = [e for e in h.collector.events() if e["path"].startswith(f"/{h.prefix}/")]
    note = ""
    if events:
        meta = events[0].get("metadata") or {}
        unread = {k: v for k, v in meta.items() if "read" in k}
        note = f"request_size_bytes {events[0].get('request_size_bytes')}, {unread or 'no mark'}"
    delivered, dupes = h.stored()
    return Row("POST 4,096 bytes the app never reads", 1, delivered, dupes, note)


SCENARIOS: list[tuple[str, Callable[[Harness], Row]]] = [
    ("flask-test-client", s_flask_test_client),
    ("werkzeug-client", s_werkzeug_client),
    (
        "sigterm-waitress-1",
        lambda h: server_sigterm(h, "SIGTERM waitress-serve, 1 request", "waitress-serve", 1),
    ),
    (
        "sigterm-waitress-200",
        lambda h: server_sigterm(h, "SIGTERM waitress-serve, 200", "waitress-serve", 200),
    ),
    (
        "sigterm-python-app",
        lambda h: server_sigterm(h, "SIGTERM python app.py, 200", "python app.py", 200),
    ),
    ("sigterm-flask-run", lambda h: server_sigterm(h, "SIGTERM flask run, 200", "flask run", 200)),
    (
        "gunicorn-slow-sigterm",
        lambda h: server_sigterm(
            h, "gunicorn -w 2, Brain 0.5 s/call, SIGTERM after 200", "gunicorn", 200, 0.5
        ),
    ),
    (
        "gunicorn-slow-max-requests",
        lambda h: server_sigterm(
            h,
            "gunicorn -w 2 --max-requests 50, Brain 0.5 s/call, 200",
            "gunicorn:--max-requests 50",
            200,
            0.5,
        ),
    ),
    ("slow-brain-default-timeout", lambda h: slow_brain(h, 6.0, None)),
    ("slow-brain-short-timeout", lambda h: slow_brain(h, 1.5, "1")),
    ("trickle", s_trickle),
    ("memory-headers", s_memory),
    ("recovery-503", s_recovery),
    ("double-wrap", s_double_wrap),
    ("close-64", s_close_at_64),
    ("flush-inf", s_flush_inf),
    ("idle-cpu", s_idle_cpu),
    ("annotation-cycle", s_annotation_cycle),
    ("after-close", s_after_close),
    ("spool", s_spool),
    ("uasam-key", s_uasam_key),
    ("long-path", s_long_path),
    ("unread-body", s_unread_body),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=HERE, help="checkout holding the SDK")
    parser.add_argument("--only", default="", help="run scenarios whose name contains this")
    args = parser.parse_args()
    src = args.src.resolve()
    print(f"SDK under test: {src}", flush=True)
    print("| scenario | sent | delivered | dupes | note |")
    print("|---|---:|---:|---:|---|", flush=True)
    with tempfile.TemporaryDirectory() as work:
        harness = Harness(src, Path(work))
        try:
            for name, scenario in SCENARIOS:
                if args.only and args.only not in name:
                    continue
                try:
                    row = scenario(harness)
                except Exception as exc:  # one broken scenario must not hide the others
                    row = Row(name, 0, 0, 0, f"scenario error: {exc!r}"[:120])
                note = row.note.replace("|", "/")
                print(
                    f"| {row.name} | {row.sent} | {row.delivered} | {row.dupes} | {note} |",
                    flush=True,
                )
        finally:
            harness.close()


if __name__ == "__main__":
    main()
