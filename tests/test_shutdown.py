"""Process exit: a real server process stopped with SIGTERM delivers what it captured.

The app runs in a real ``waitress-serve`` process (and as ``python app.py`` with Flask's
development server), ships to the test collector over loopback, and is stopped with
SIGTERM right after its last answer, as a container runtime or systemd would stop it.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import requests

from otas_capture.collector import DEMO_SDK_KEY
from otas_capture.contract import INVALID_JSON, LOGGER_NAME

from .conftest import TOKEN_HEADER

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="POSIX signals")

WSGI_APP = """
from otas_capture import OtasMiddleware

def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]

app = OtasMiddleware(hello)
"""

FLASK_SCRIPT = """
import sys
from flask import Flask
from otas_capture.flask import init_app

app = Flask(__name__)
init_app(app)

@app.get("/<path:name>")
def hello(name):
    return "hello"

if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(sys.argv[1]))
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_listening(port: int, process: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("the server did not start")


def start(command: list[str], cwd: Path, brain_url: str, **env: str) -> subprocess.Popen:
    environment = dict(os.environ)
    environment.update(
        OTAS_SDK_KEY=DEMO_SDK_KEY,
        OTAS_BRAIN_URL=brain_url,
        OTAS_UASAM_URL=brain_url,
        PYTHONPATH=os.pathsep.join([str(cwd), *sys.path]),
        PYTHONUNBUFFERED="1",
    )
    environment.update(env)
    return subprocess.Popen(
        command,
        cwd=cwd,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def serve_and_stop(command, port, tmp_path, brain_url, token, requests_count, **env):
    """Start the server, answer ``requests_count`` agent requests, SIGTERM it at once."""
    process = start(command, tmp_path, brain_url, **env)
    try:
        wait_until_listening(port, process)
        with requests.Session() as session:
            for number in range(requests_count):
                response = session.get(
                    f"http://127.0.0.1:{port}/r/{number}", headers={TOKEN_HEADER: token}
                )
                assert response.content == b"hello"
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return process.returncode, stderr


def waitress_command(tmp_path: Path, port: int) -> list[str]:
    (tmp_path / "agentapp.py").write_text(textwrap.dedent(WSGI_APP))
    waitress = Path(sys.executable).with_name("waitress-serve")
    return [str(waitress), f"--listen=127.0.0.1:{port}", "agentapp:app"]


def flask_command(tmp_path: Path, port: int) -> list[str]:
    (tmp_path / "app.py").write_text(textwrap.dedent(FLASK_SCRIPT))
    return [sys.executable, "app.py", str(port)]


def flask_run_command(tmp_path: Path, port: int) -> list[str]:
    (tmp_path / "app.py").write_text(textwrap.dedent(FLASK_SCRIPT))
    flask = Path(sys.executable).with_name("flask")
    return [str(flask), "--app", "app", "run", "--port", str(port)]


COMMANDS = {
    "waitress-serve": waitress_command,
    "python app.py": flask_command,
    "flask run": flask_run_command,
}


@pytest.mark.parametrize("requests_count", [1, 200])
@pytest.mark.parametrize("server", sorted(COMMANDS))
def test_sigterm_right_after_the_last_answer_delivers_every_event(
    server, requests_count, tmp_path, collector_server, collector, token
):
    port = free_port()
    make = COMMANDS[server]
    returncode, stderr = serve_and_stop(
        make(tmp_path, port), port, tmp_path, collector_server.url, token, requests_count
    )
    # Ended exactly as SIGTERM's default would have ended it.
    assert returncode == -signal.SIGTERM, stderr
    assert len(collector.events()) == requests_count, stderr
    assert "not delivered" not in stderr


def test_what_could_not_be_delivered_by_the_shutdown_timeout_is_said_in_one_line(tmp_path, token):
    port = free_port()
    brain_down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    returncode, stderr = serve_and_stop(
        waitress_command(tmp_path, port),
        port,
        tmp_path,
        brain_down,
        token,
        3,
        OTAS_SHUTDOWN_TIMEOUT="0.5",
        OTAS_PROJECT_ID="123e4567-e89b-12d3-a456-426614174000",
    )
    assert returncode == -signal.SIGTERM, stderr
    summary = [line for line in stderr.splitlines() if "not delivered" in line]
    assert len(summary) == 1, stderr
    assert "3 of 3 captured events were not delivered" in summary[0]
    assert "shutdown" in summary[0]


CHECK_HANDLER = """
import signal, sys, threading
from otas_capture import OtasMiddleware

def app(environ, start_response):
    return []

mode = sys.argv[1]
if mode == "own_handler":
    def own(signum, frame):
        pass
    signal.signal(signal.SIGTERM, own)
    OtasMiddleware(app)
    print(signal.getsignal(signal.SIGTERM) is own)
elif mode == "thread":
    thread = threading.Thread(target=OtasMiddleware, args=(app,))
    thread.start()
    thread.join()
    print(signal.getsignal(signal.SIGTERM) is signal.SIG_DFL)
elif mode == "default":
    OtasMiddleware(app)
    print(signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL)
"""


@pytest.mark.parametrize("mode", ["own_handler", "thread", "default"])
def test_a_sigterm_handler_is_installed_only_over_the_default_and_from_the_main_thread(
    mode, tmp_path, collector_server
):
    (tmp_path / "check.py").write_text(CHECK_HANDLER)
    process = start(
        [sys.executable, "check.py", mode],
        tmp_path,
        collector_server.url,
        OTAS_SHUTDOWN_TIMEOUT="0",
    )
    stdout, stderr = process.communicate(timeout=30)
    assert stdout.strip() == "True", stderr


EXITING_SCRIPT = """
from flask import Flask
from otas_capture.contract import SESSION_TOKEN_HEADER
from otas_capture.flask import init_app

app = Flask(__name__)
init_app(app)

@app.get("/once")
def once():
    return "once"

# A test-suite style call: the response is neither read nor closed, then the script ends.
app.test_client().get("/once", headers={SESSION_TOKEN_HEADER: TOKEN})
"""


def test_an_unclosed_test_client_response_is_delivered_at_a_normal_exit(
    tmp_path, collector_server, collector, token
):
    (tmp_path / "script.py").write_text(f"TOKEN = {token!r}\n" + EXITING_SCRIPT)
    process = start([sys.executable, "script.py"], tmp_path, collector_server.url)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert [event["path"] for event in collector.events()] == ["/once"]


def test_the_summary_names_each_loss_with_its_reasons(caplog):
    from otas_capture.capture.shutdown import log_summary

    caplog.set_level("WARNING", logger=LOGGER_NAME)
    stats = {
        "captured": 10,
        "sent": 6,
        "failed": 1,
        "dropped": 3,
        "skipped": 4,
        "reasons": {
            "failed": {INVALID_JSON: 1},
            "dropped": {"shutdown": 2, "queue_full": 1},
            "skipped": {"no_token": 4},
        },
    }
    log_summary(stats)
    (record,) = caplog.records
    assert record.getMessage() == (
        "otas-capture: 4 of 10 captured events were not delivered to OTAS: "
        f"failed 1 ({INVALID_JSON}: 1); dropped 3 (queue_full: 1, shutdown: 2)"
    )
    caplog.clear()
    log_summary({"captured": 3, "sent": 3, "skipped": 1, "reasons": {"skipped": {"x": 1}}})
    assert caplog.records == []


def test_the_summary_counts_events_restored_from_the_spool_in_its_total(caplog):
    from otas_capture.capture.shutdown import log_summary

    caplog.set_level("WARNING", logger=LOGGER_NAME)
    # One request captured, 20 events restored: 2 lost, 18 back on disk. The line
    # once read "2 of 1 captured events".
    stats = {
        "captured": 1,
        "restored": 20,
        "sent": 1,
        "failed": 2,
        "spooled": 18,
        "reasons": {"failed": {INVALID_JSON: 2}},
    }
    log_summary(stats)
    (record,) = caplog.records
    assert record.getMessage() == (
        "otas-capture: 2 of 21 captured events were not delivered to OTAS: "
        f"failed 2 ({INVALID_JSON}: 2); the 21 include 20 restored from OTAS_SPOOL_DIR; "
        "18 more kept in OTAS_SPOOL_DIR for the next process"
    )


GUNICORN = Path(sys.executable).with_name("gunicorn")
needs_gunicorn = pytest.mark.skipif(not GUNICORN.exists(), reason="gunicorn is not installed")
NOT_DELIVERED = re.compile(r"(\d+) of (\d+) captured events were not delivered")


def gunicorn_command(tmp_path: Path, port: int, *extra: str) -> list[str]:
    (tmp_path / "agentapp.py").write_text(textwrap.dedent(WSGI_APP))
    return [str(GUNICORN), "-b", f"127.0.0.1:{port}", "-w", "2", *extra, "agentapp:app"]


def not_delivered(stderr: str) -> int:
    """Events the workers' exit summaries say were not delivered, all workers together."""
    return sum(int(match.group(1)) for match in NOT_DELIVERED.finditer(stderr))


@needs_gunicorn
def test_gunicorn_stopped_while_brain_is_slow_exits_in_time_and_accounts_for_every_event(
    tmp_path, collector_server, collector, token
):
    collector.set_latency(0.5)  # every call answered half a second after its event is stored
    port = free_port()
    process = start(
        gunicorn_command(tmp_path, port), tmp_path, collector_server.url, OTAS_SHUTDOWN_TIMEOUT="1"
    )
    try:
        wait_until_listening(port, process)
        with requests.Session() as session:
            for number in range(60):
                url = f"http://127.0.0.1:{port}/r/{number}"
                assert session.get(url, headers={TOKEN_HEADER: token}).content == b"hello"
        began = time.monotonic()
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
        stopping = time.monotonic() - began
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr
    # The exit flush is bounded by OTAS_SHUTDOWN_TIMEOUT, not by the calls in flight.
    assert stopping < 1 + 4, stderr
    collector.wait_for_events(60, timeout=3)
    paths = [event["path"] for event in collector.events()]
    assert len(paths) == len(set(paths))
    # Whatever was not stored is in a summary line; events counted unknown may be stored.
    assert len(paths) + not_delivered(stderr) >= 60, stderr


@needs_gunicorn
def test_gunicorn_recycling_workers_with_a_slow_brain_stalls_no_request_beyond_the_timeout(
    tmp_path, collector_server, collector, token
):
    collector.set_latency(0.5)
    port = free_port()
    command = gunicorn_command(tmp_path, port, "--max-requests", "20")
    process = start(command, tmp_path, collector_server.url, OTAS_SHUTDOWN_TIMEOUT="0.5")
    slowest = 0.0
    try:
        wait_until_listening(port, process)
        with requests.Session() as session:
            for number in range(60):
                began = time.monotonic()
                url = f"http://127.0.0.1:{port}/r/{number}"
                assert session.get(url, headers={TOKEN_HEADER: token}).content == b"hello"
                slowest = max(slowest, time.monotonic() - began)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    # A recycled worker flushes at most OTAS_SHUTDOWN_TIMEOUT; a request waiting for a
    # worker meanwhile waits that plus a new worker's start, never the calls in flight.
    assert slowest < 0.5 + 3, stderr
    collector.wait_for_events(60, timeout=3)
    paths = [event["path"] for event in collector.events()]
    assert len(paths) == len(set(paths))
    assert len(paths) + not_delivered(stderr) >= 60, stderr


def test_a_spool_left_by_a_stopped_server_is_shipped_once_by_workers_sharing_it(
    tmp_path, collector_server, collector, token
):
    spool = str(tmp_path / "spool")
    env = {"OTAS_SPOOL_DIR": spool, "OTAS_SHUTDOWN_TIMEOUT": "0.5"}
    collector.brain_down(503)
    port = free_port()
    returncode, stderr = serve_and_stop(
        waitress_command(tmp_path, port), port, tmp_path, collector_server.url, token, 20, **env
    )
    assert returncode == -signal.SIGTERM, stderr
    assert collector.events() == []
    collector.brain_up = True

    # Three servers restart at once on the same spool, as pre-forked workers would.
    workers = []
    try:
        for _ in range(3):
            port = free_port()
            process = start(waitress_command(tmp_path, port), tmp_path, collector_server.url, **env)
            workers.append((process, port))
        for process, port in workers:
            wait_until_listening(port, process)
            url = f"http://127.0.0.1:{port}/started/{port}"  # the first capture restores
            assert requests.get(url, headers={TOKEN_HEADER: token}).content == b"hello"
        collector.wait_for_events(23, timeout=20)
    finally:
        for process, _ in workers:
            process.send_signal(signal.SIGTERM)
            process.communicate(timeout=30)
    restored = [e["path"] for e in collector.events() if e["path"].startswith("/r/")]
    assert sorted(restored) == sorted(f"/r/{number}" for number in range(20))


LINGERING_SCRIPT = """
import sys, time
from flask import Flask, Response
from otas_capture.flask import init_app

app = Flask(__name__)
init_app(app)

@app.get("/linger")
def linger():
    def body():
        yield b"hello"
        time.sleep(0.1)  # the client has its whole answer; the server iterates once more
    return Response(body(), headers={"Content-Length": "5"})

if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(sys.argv[1]))
"""


def test_sigterm_while_a_sent_response_is_being_finished_still_delivers_it(
    tmp_path, collector_server, collector, token
):
    (tmp_path / "app.py").write_text(textwrap.dedent(LINGERING_SCRIPT))
    port = free_port()
    process = start([sys.executable, "app.py", str(port)], tmp_path, collector_server.url)
    try:
        wait_until_listening(port, process)
        url = f"http://127.0.0.1:{port}/linger"
        assert requests.get(url, headers={TOKEN_HEADER: token}).content == b"hello"
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == -signal.SIGTERM, stderr
    assert [event["path"] for event in collector.events()] == ["/linger"], stderr


@needs_gunicorn
def test_gunicorn_preload_ships_a_spool_after_its_first_request_of_any_kind(
    tmp_path, collector_server, collector, token
):
    spool = str(tmp_path / "spool")
    env = {"OTAS_SPOOL_DIR": spool, "OTAS_SHUTDOWN_TIMEOUT": "0.5"}
    collector.brain_down(503)
    port = free_port()
    returncode, stderr = serve_and_stop(
        waitress_command(tmp_path, port), port, tmp_path, collector_server.url, token, 10, **env
    )
    assert returncode == -signal.SIGTERM, stderr
    collector.brain_up = True

    # The app (and its middleware) is loaded in gunicorn's master, before the fork: no
    # thread may start there. A health check, with no agent token, is the first request.
    port = free_port()
    command = gunicorn_command(tmp_path, port, "--preload")
    process = start(command, tmp_path, collector_server.url, **env)
    try:
        wait_until_listening(port, process)
        assert requests.get(f"http://127.0.0.1:{port}/health").content == b"hello"
        collector.wait_for_events(10, timeout=10)
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    restored = [e["path"] for e in collector.events() if e["path"].startswith("/r/")]
    assert sorted(restored) == sorted(f"/r/{number}" for number in range(10)), stderr
