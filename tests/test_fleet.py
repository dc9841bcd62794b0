"""Processes of a host that ship to one Brain share one in-flight limit (slots.py).

Real child processes, each with its own middleware and sender, ship to the collector
on loopback; the collector counts the calls in flight at once. Each test gives the
children a private ``XDG_RUNTIME_DIR``, the host the slot files belong to.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from otas_capture.collector import DEMO_PROJECT_ID, DEMO_SDK_KEY, Collector, CollectorServer
from otas_capture.delivery.slots import STALE, HostLimit, host_limit, slot_directory

pytestmark = pytest.mark.skipif(os.name != "posix", reason="flock is POSIX")

ROOT = Path(__file__).resolve().parent.parent

# A process of the fleet: captures COUNT agent requests, waits until they are shipped,
# and prints what its sender counted.
SHIPPER = """
import json, os, sys
from werkzeug.test import Client
from otas_capture import OtasMiddleware
from otas_capture.contract import SESSION_TOKEN_HEADER

def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]

middleware = OtasMiddleware(hello)
client = Client(middleware)
print("ready", flush=True)
sys.stdin.readline()  # all start together
for number in range(int(os.environ["COUNT"])):
    client.get(f"/{os.getpid()}/{number}", headers={SESSION_TOKEN_HEADER: sys.argv[1]})
middleware.flush(60)
print(json.dumps(middleware.stats()), flush=True)
"""

# Holds one slot of the host's limit for calls to URL until killed.
HOLDER = """
import sys, time
from otas_capture.delivery.slots import host_limit
limit = host_limit(sys.argv[1], 4, 10.0)
assert limit.acquire(lambda: False)
print("holding", flush=True)
time.sleep(60)
"""


def child_env(runtime: Path, url: str, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("OTAS_")}
    env.update(
        OTAS_SDK_KEY=DEMO_SDK_KEY,
        OTAS_PROJECT_ID=DEMO_PROJECT_ID,
        OTAS_BRAIN_URL=url,
        OTAS_UASAM_URL=url,
        PYTHONPATH=str(ROOT),
        XDG_RUNTIME_DIR=str(runtime),
    )
    env.update(extra)
    return env


@pytest.fixture
def runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "run"
    path.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(path))
    return path


@pytest.fixture
def brain() -> Iterator[CollectorServer]:
    server = CollectorServer(Collector(), threads=64).start()
    yield server
    server.stop()


def test_four_processes_never_have_more_calls_in_flight_than_the_shared_limit(brain, runtime):
    collector = brain.collector
    collector.set_latency(0.6)  # slower than capturing: each process has calls waiting
    token = collector.issue_token()
    env = child_env(runtime, brain.url, OTAS_CONCURRENCY="3", COUNT="12")
    shippers = [
        subprocess.Popen(
            [sys.executable, "-c", SHIPPER, token],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    for shipper in shippers:
        assert shipper.stdout is not None and shipper.stdout.readline() == "ready\n"
    for shipper in shippers:
        assert shipper.stdin is not None
        shipper.stdin.write("go\n")
        shipper.stdin.close()
    outputs = []
    for shipper in shippers:
        assert shipper.stdout is not None
        outputs.append(shipper.stdout.read())  # until it exits
        shipper.wait(90)
    assert all('"sent": 12' in output for output in outputs), outputs
    assert len(collector.events()) == 48
    # Each alone would open 3 calls, 12 in all; together they hold 3 slots.
    assert collector.peak_in_flight == 3


def test_a_process_killed_while_holding_a_slot_frees_it_at_once(runtime):
    url = "http://brain.invalid/"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, url],
        env=child_env(runtime, url),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "holding\n"
        mine = host_limit(url, 4, 10.0)
        assert isinstance(mine, HostLimit) and mine.limit == 1  # a fresh host: one call
        assert mine.acquire(lambda: True) is False  # the holder has it
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
    began = time.monotonic()
    assert mine.acquire(lambda: time.monotonic() - began > 1.0) is True
    assert time.monotonic() - began < 0.1  # the kernel dropped the dead process's lock
    mine.release()


def test_a_process_that_stops_asking_leaves_the_wait_list_after_a_moment(runtime):
    url = "http://brain.invalid/"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, url], env=child_env(runtime, url), stdout=subprocess.PIPE
    )
    # A waiter that dies: it joins the wait list, ahead of this process, then is killed.
    waiter_code = textwrap.dedent(
        """
        import sys
        from otas_capture.delivery.slots import host_limit
        limit = host_limit(sys.argv[1], 4, 10.0)
        limit.acquire(lambda: False)
        """
    )
    waiter = None
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"holding\n"
        waiter = subprocess.Popen(
            [sys.executable, "-c", waiter_code, url], env=child_env(runtime, url)
        )
        mine = host_limit(url, 4, 10.0)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not _waiting(runtime):
            time.sleep(0.01)
        assert _waiting(runtime)
        waiter.send_signal(signal.SIGKILL)
        waiter.wait(10)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        if waiter is not None and waiter.poll() is None:
            waiter.kill()
    # The slot is free, but the dead waiter was first in line until it goes stale.
    began = time.monotonic()
    assert mine.acquire(lambda: time.monotonic() - began > 5.0) is True
    assert time.monotonic() - began < STALE + 0.2
    mine.release()


def _waiting(runtime: Path) -> bool:
    states = list((runtime / "otas-capture").glob("*.state"))
    return bool(states) and '"waiting": [[' in states[0].read_text()


def test_a_freed_slot_goes_to_the_process_that_waited_longest(runtime):
    url = "http://brain.invalid/"
    env = child_env(runtime, url)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, url], env=env, stdout=subprocess.PIPE)
    waiter = None
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"holding\n"
        waiter = subprocess.Popen(
            [sys.executable, "-c", HOLDER, url], env=env, stdout=subprocess.PIPE
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not _waiting(runtime):
            time.sleep(0.01)
        mine = host_limit(url, 4, 10.0)
        assert mine.acquire(lambda: True) is False  # in line behind the waiter
        holder.send_signal(signal.SIGKILL)
        # This process looks again and again; the slot still goes to the first in line.
        began = time.monotonic()
        assert mine.acquire(lambda: time.monotonic() - began > 0.5) is False
        assert waiter.stdout is not None and waiter.stdout.readline() == b"holding\n"
    finally:
        for process in (holder, waiter):
            if process is not None:
                process.kill()
                process.wait(10)


def test_the_directory_is_private_to_the_user(runtime):
    directory = slot_directory()
    assert directory == runtime / "otas-capture"
    assert directory.stat().st_mode & 0o777 == 0o700


def test_a_directory_others_may_write_is_not_used(runtime):
    (runtime / "otas-capture").mkdir(mode=0o777)
    os.chmod(runtime / "otas-capture", 0o777)
    assert slot_directory() is None
    # Then each process keeps its own limit.
    assert not isinstance(host_limit("http://brain.invalid/", 4, 10.0), HostLimit)
