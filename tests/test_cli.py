"""The ``otas-capture`` command: help, exit codes, output, and doctor against real servers.

``doctor`` is checked against a live collector, a closed port, a wrong key and a server
that accepts connections and never answers; ``collector`` and ``tail`` run as real
processes, as a person runs them.
"""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from otas_capture.cli import _output, main
from otas_capture.cli import tail as tail_command
from otas_capture.collector import DEMO_AGENT_KEY, DEMO_PROJECT_ID, DEMO_SDK_KEY, CollectorServer
from otas_capture.collector.viewer import EVENTS_API
from otas_capture.contract import (
    AGENT_KEY_HEADER,
    INVALID_SDK_KEY,
    SDK_KEY_HEADER,
    SDK_LOG_PATH,
    SESSION_CREATE_PATH,
)

from .conftest import default_sigint
from .viewer_support import Agent, start_viewer_server

pytestmark = pytest.mark.filterwarnings("ignore:The HMAC key is:UserWarning")

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = ["demo", "collector", "tail", "doctor"]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTAS_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "otas_capture", *args]


@pytest.fixture
def otas_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """This process's environment without the OTAS_* settings of whoever runs the tests."""
    for name in [name for name in os.environ if name.startswith("OTAS_")]:
        monkeypatch.delenv(name)
    return monkeypatch


def point_at(monkeypatch: pytest.MonkeyPatch, url: str, key: str = DEMO_SDK_KEY) -> None:
    monkeypatch.setenv("OTAS_SDK_KEY", key)
    monkeypatch.setenv("OTAS_BRAIN_URL", url)
    monkeypatch.setenv("OTAS_UASAM_URL", url)


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A server that accepts connections (the kernel completes them) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


# -- help and exit codes --------------------------------------------------------------


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_examples_and_exit_codes(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and f"otas-capture {command}" in out
    assert "exit codes:" in out


def test_without_a_command_it_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    err = capsys.readouterr().err
    assert all(command in err for command in COMMANDS)


def test_a_bad_argument_exits_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["tail", "--status", "teapot"])
    assert exit_info.value.code == 2


def test_python_dash_m_otas_capture_is_the_same_command():
    result = subprocess.run(
        cli("--help"), capture_output=True, text=True, timeout=60, env=clean_env()
    )
    assert result.returncode == 0
    assert "otas-capture demo" in result.stdout


# -- doctor ---------------------------------------------------------------------------


def test_doctor_passes_against_a_working_collector_and_stores_nothing(
    otas_env, collector_server, collector, capsys
):
    point_at(otas_env, collector_server.url)
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "FAIL" not in out
    assert out.count("PASS") == 3
    assert DEMO_PROJECT_ID in out  # the project UASAM names for the key
    assert " ms)" in out  # round-trip times
    assert "All checks passed." in out
    # The secret part of the key is never shown; the test log call stored nothing.
    assert DEMO_SDK_KEY not in out and "otas_demo_" in out
    assert collector.events() == []


def test_doctor_fails_in_plain_words_when_nothing_listens(otas_env, closed_port, capsys):
    point_at(otas_env, f"http://127.0.0.1:{closed_port}")
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert out.count("connection refused") == 2  # UASAM and Brain
    assert "Traceback" not in out
    assert "2 check(s) failed." in out


def test_doctor_fails_on_a_key_the_servers_do_not_know(otas_env, collector_server, capsys):
    point_at(otas_env, collector_server.url, key="otas_wrong_notakey")
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "UASAM refuses the key: 403 Invalid SDK Key" in out
    assert f"Brain refuses the key: 401 {INVALID_SDK_KEY}" in out
    assert "notakey" not in out


def test_doctor_gives_up_on_a_server_that_never_answers(otas_env, silent_server, capsys):
    point_at(otas_env, silent_server)
    started = time.monotonic()
    assert main(["doctor", "--timeout", "0.3"]) == 1
    out = capsys.readouterr().out
    assert out.count("did not answer within 0.3 s") == 2
    assert time.monotonic() - started < 30  # bounded, whatever the machine's load


def test_doctor_says_when_a_url_is_not_the_service_it_should_be(otas_env, collector_server, capsys):
    point_at(otas_env, collector_server.url)
    otas_env.setenv("OTAS_BRAIN_URL", collector_server.url + "/not-brain")
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "PASS  UASAM authenticates the key" in out
    assert "Brain answered 404" in out and "is OTAS_BRAIN_URL the Brain service?" in out


def test_doctor_warns_that_capture_is_turned_off(otas_env, collector_server, capsys):
    point_at(otas_env, collector_server.url)
    otas_env.setenv("OTAS_ENABLED", "false")
    assert main(["doctor"]) == 0
    assert "WARN  OTAS_ENABLED is false" in capsys.readouterr().out


def test_doctor_reports_settings_that_do_not_parse(otas_env, capsys):
    otas_env.setenv("OTAS_TIMEOUT", "soon")
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  settings do not parse" in out and "OTAS_TIMEOUT" in out


def check_lines(out: str) -> list[str]:
    return [line.strip() for line in out.split("Checks:")[1].splitlines() if line.strip()]


def test_doctor_says_once_that_the_key_is_refused(otas_env, collector_server, capsys):
    point_at(otas_env, collector_server.url, key="notakey")
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    lines = check_lines(out)
    assert lines[0].startswith("FAIL  settings do not parse: OTAS_SDK_KEY must be")
    assert lines[1:] == [
        "SKIP  UASAM and Brain not checked: there is no usable key (OTAS_SDK_KEY above)",
        "1 check(s) failed.",
    ]
    assert "(REFUSED: nothing is sent until it is fixed)" in out
    assert "notakey" not in out


def test_doctor_checks_no_default_url_in_place_of_a_refused_one(otas_env, collector_server, capsys):
    point_at(otas_env, collector_server.url)
    otas_env.setenv("OTAS_BRAIN_URL", "htp://brain.internal:8002")
    assert main(["doctor"]) == 1
    lines = check_lines(capsys.readouterr().out)
    assert lines[0].startswith("FAIL  settings do not parse: OTAS_BRAIN_URL must be")
    assert lines[1].startswith("PASS  UASAM authenticates the key")
    assert lines[2:] == [
        "SKIP  Brain not checked: OTAS_BRAIN_URL above is refused, and the default is not "
        "used in its place",
        "1 check(s) failed.",
    ]


def test_doctor_fails_without_a_key(otas_env, capsys):
    assert main(["doctor"]) == 1
    assert "OTAS_SDK_KEY is not set" in capsys.readouterr().out


# -- collector --------------------------------------------------------------------------


def read_until(process: subprocess.Popen[str], marker: str, limit: int = 80) -> str:
    assert process.stdout is not None
    lines = []
    for _ in range(limit):
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if marker in line:
            break
    return "".join(lines)


def test_the_collector_command_prints_how_to_use_it_and_serves_the_viewer():
    process = subprocess.Popen(
        cli("collector", "--port", "0"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
        preexec_fn=default_sigint,
    )
    try:
        banner = read_until(process, "Press Ctrl-C")
        url = banner.split("on ", 1)[1].split()[0]
        assert f"export OTAS_SDK_KEY={DEMO_SDK_KEY}" in banner
        assert f"export OTAS_BRAIN_URL={url}" in banner
        assert f"export OTAS_UASAM_URL={url}" in banner
        assert DEMO_PROJECT_ID in banner
        assert "curl" in banner  # how an agent gets a session token
        assert requests.get(url + "/", timeout=5).headers["Content-Type"].startswith("text/html")
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
    finally:
        process.kill()
        process.wait()


def test_the_collector_command_exits_1_when_its_port_is_taken(collector_server):
    result = subprocess.run(
        cli("collector", "--port", str(collector_server.port)),
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(),
    )
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{collector_server.port}" in result.stderr


# -- demo -------------------------------------------------------------------------------


def test_the_demo_picks_another_port_when_its_own_is_busy(collector_server):
    busy = collector_server.port
    result = subprocess.run(
        cli("demo", "--port", str(busy)),
        capture_output=True,
        text=True,
        timeout=120,
        env=clean_env(),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Port {busy} is busy; the collector uses port" in result.stdout
    assert "Live viewer: http://127.0.0.1:" in result.stdout
    assert "closes when the demo exits; run `otas-capture demo --keep` to keep it open" in (
        result.stdout
    )
    for column in ("method", "path", "status", "latency", "request", "response", "masked"):
        assert column in result.stdout
    assert "/api/export" in result.stdout and "404" in result.stdout


# -- tail -------------------------------------------------------------------------------


@pytest.fixture
def viewer_server() -> Iterator[CollectorServer]:
    server = start_viewer_server()
    yield server
    server.stop()


def test_tail_prints_each_new_event_on_one_line_as_it_arrives(viewer_server):
    agent = Agent(viewer_server)
    agent.ship(path="/before-tail")  # shown first, as the latest event
    process = subprocess.Popen(
        cli(
            "tail",
            "--url",
            viewer_server.url,
            "--last",
            "1",
            "--interval",
            "0.1",
            "--max-events",
            "3",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
    )
    try:
        assert "/before-tail" in read_until(process, "/before-tail")
        agent.ship("POST", "/api/orders", 201)
        agent.ship("GET", "/api/missing", 404)
        out, err = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0, err
    lines = [line for line in out.splitlines() if "/api/" in line]
    assert [line.split()[1:4] for line in lines] == [
        ["POST", "/api/orders", "201"],
        ["GET", "/api/missing", "404"],
    ]
    assert "\x1b[" not in out  # not a terminal: no colour
    assert f"session …{agent.session_id[-8:]}" in lines[0]


def test_tail_asks_the_collector_to_filter(viewer_server, capsys):
    agent = Agent(viewer_server)
    agent.ship(path="/ok", status=200)
    agent.ship(path="/broken", status=500)
    code = main(["tail", "--url", viewer_server.url, "--status", "5xx", "--max-events", "1"])
    assert code == 0
    out = capsys.readouterr().out
    assert "/broken" in out and "/ok" not in out


def test_tail_exits_1_when_no_collector_answers(closed_port, capsys):
    assert main(["tail", "--url", f"http://127.0.0.1:{closed_port}"]) == 1
    assert "no collector answers" in capsys.readouterr().err


def test_tail_reads_the_endpoint_the_viewer_serves():
    assert tail_command.EVENTS_API == EVENTS_API


def start_collector_process(*args: str) -> tuple[subprocess.Popen[str], str, str]:
    """``otas-capture collector`` as a process; returns it, its URL and its banner."""
    process = subprocess.Popen(
        cli("collector", "--port", "0", *args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
        preexec_fn=default_sigint,
    )
    banner = read_until(process, "Press Ctrl-C")
    assert "Press Ctrl-C" in banner, banner
    return process, banner.split("on ", 1)[1].split()[0], banner


def stop_process(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGINT)
    try:
        assert process.wait(timeout=30) == 0
    finally:
        process.kill()
        process.wait()


def test_events_survive_a_collector_restart_with_a_database(tmp_path):
    db = str(tmp_path / "events.db")
    process, url, banner = start_collector_process("--db", db)
    try:
        assert f"kept in {db} (0 so far)" in banner
        session = requests.post(
            url + SESSION_CREATE_PATH,
            headers={AGENT_KEY_HEADER: DEMO_AGENT_KEY},
            json={},
            timeout=5,
        ).json()["response"]
        shipped = requests.post(
            url + SDK_LOG_PATH,
            headers={SDK_KEY_HEADER: DEMO_SDK_KEY, session["Header_value"]: session["jwt_token"]},
            json={
                "project_id": DEMO_PROJECT_ID,
                "path": "/api/kept",
                "method": "GET",
                "status_code": 200,
                "latency_ms": 1.5,
            },
            timeout=5,
        )
        assert shipped.status_code == 201
    finally:
        stop_process(process)

    process, url, banner = start_collector_process("--db", db)
    try:
        assert f"kept in {db} (1 so far)" in banner
        rows = requests.get(url + EVENTS_API, timeout=5).json()["events"]
        assert [row["path"] for row in rows] == ["/api/kept"]
    finally:
        stop_process(process)


def test_the_collector_command_exits_1_when_its_database_cannot_be_opened(tmp_path):
    result = subprocess.run(
        cli("collector", "--port", "0", "--db", str(tmp_path / "missing-dir" / "events.db")),
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(),
    )
    assert result.returncode == 1
    assert "cannot open the database" in result.stderr


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_tail_colours_the_status_by_class_only_on_a_terminal(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    row = {
        "started_at": "2026-11-26T12:00:00.123456+00:00",
        "method": "GET",
        "path": "/api/missing",
        "status_code": 404,
        "status_class": "4xx",
        "latency_ms": 2.5,
        "request_size_bytes": 0,
        "response_size_bytes": 44,
        "agent_id": "00000000-0000-4000-8000-000000000002",
        "agent_session_id": "0b6a4c1e-2f0d-4c8e-9a51-5e3f2d1c0a9b",
        "error": "404 NOT FOUND",
        "masked": ["request_headers.Authorization"],
    }
    coloured = _output.Painter(_output.wants_colour(_Terminal()))
    assert "\x1b[33m404\x1b[0m" in tail_command.format_line(row, coloured)  # yellow 4xx
    plain = tail_command.format_line(row, _output.Painter(_output.wants_colour(io.StringIO())))
    assert (
        plain.split()
        == (
            "12:00:00.123 GET /api/missing 404 2.5 ms req 0 B resp 44 B agent …00000002 "
            "session …2d1c0a9b masked: request_headers.Authorization error: 404 NOT FOUND"
        ).split()
    )
    monkeypatch.setenv("NO_COLOR", "1")
    assert not _output.wants_colour(_Terminal())


def test_tail_shows_control_characters_in_event_text_instead_of_obeying_them():
    row = {
        "started_at": "2026-11-26T12:00:00.123456+00:00",
        "method": "GET",
        "path": "/x\x1b[2J\x1b[1A\r",
        "status_code": 200,
        "status_class": "2xx",
        "latency_ms": 1.0,
        "request_size_bytes": 0,
        "response_size_bytes": 0,
        "agent_id": "\x1b]0;title\x07",
        "agent_session_id": "s",
        "error": "bad\nline",
        "masked": [],
    }
    line = tail_command.format_line(row, _output.Painter(True))
    assert "/x\\x1b[2J\\x1b[1A\\r" in line
    assert "bad\\nline" in line
    assert "\n" not in line and "\r" not in line and "\x07" not in line
    # The only escapes left are tail's own colours.
    assert (
        line.replace("\x1b[2m", "").replace("\x1b[32m", "").replace("\x1b[0m", "").count("\x1b")
        == 0
    )
