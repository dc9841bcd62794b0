"""The example apps under real servers, end to end: the same events under every server.

Each case starts a server as a real subprocess on a free loopback port (gunicorn sync,
gthread and ``--preload``, uWSGI when it is installed, waitress, werkzeug's server),
serving ``examples/flask_app.py`` or the Django project in ``examples/django_project``,
configured only through ``OTAS_*`` environment variables to ship to the in-process
collector. An agent makes the same calls with ``requests`` (JSON, a form, a chunked
upload, a multipart upload, a crash, streamed downloads), the test waits for the events,
stops the server with the signal its documentation says stops it, and compares each
event with what the client saw.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from otas_capture.collector import DEMO_PROJECT_ID, DEMO_SDK_KEY
from otas_capture.contract import SESSION_TOKEN_HEADER

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
DJANGO_PROJECT = EXAMPLES / "django_project"
TIMEOUT = 10.0

WERKZEUG_RUNNER = (
    "import importlib, sys\n"
    "from werkzeug.serving import run_simple\n"
    "module, name = sys.argv[2].split(':')\n"
    "app = getattr(importlib.import_module(module), name)\n"
    "run_simple('127.0.0.1', int(sys.argv[1]), app, threaded=True)\n"
)


@dataclass(frozen=True)
class Server:
    name: str
    command: list[str]  # with {port} and {app} to fill in
    stop: int = signal.SIGTERM
    needs: str = ""  # a module or executable that must be installed
    # uWSGI's HTTP socket resets a request sent with Transfer-Encoding: chunked before
    # the app sees it (its --http-chunked-input needs the app to call uwsgi.chunked_read).
    chunked_uploads: bool = True


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


SERVERS = [
    Server("gunicorn-sync", [_bin("gunicorn"), "-b", "127.0.0.1:{port}", "-w", "1", "{app}"]),
    Server(
        "gunicorn-gthread",
        [_bin("gunicorn"), "-b", "127.0.0.1:{port}", "-k", "gthread", "--threads", "4", "{app}"],
    ),
    Server(
        "gunicorn-preload",
        [_bin("gunicorn"), "-b", "127.0.0.1:{port}", "-w", "2", "--preload", "{app}"],
    ),
    # uWSGI stops on SIGINT; SIGTERM means "reload" unless --die-on-term. No
    # --enable-threads: the sender's threads must work without it.
    Server(
        "uwsgi",
        [
            _bin("uwsgi"),
            "--http11-socket",
            "127.0.0.1:{port}",
            "--module",
            "{app}",
            "--master",
            "--processes",
            "2",
            "--need-app",
            "--disable-logging",
        ],
        stop=signal.SIGINT,
        needs="uwsgi",
        chunked_uploads=False,
    ),
    Server(
        "waitress",
        [sys.executable, "-m", "waitress", "--listen", "127.0.0.1:{port}", "{app}"],
    ),
    Server("werkzeug", [sys.executable, "-c", WERKZEUG_RUNNER, "{port}", "{app}"]),
]


@dataclass
class Call:
    """One agent call and what the client saw of it."""

    method: str
    path: str
    status: int = 0
    request_size: int = 0
    response_size: int = 0
    expect: dict[str, Any] = field(default_factory=dict)  # more fields the event must have


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_listening(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"server exited with {process.returncode}:\n{log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"server did not listen on {port}:\n{log.read_text()}")


@pytest.fixture
def run_server(collector_server, tmp_path) -> Iterator[Any]:
    """Start ``server`` once per (app, directory), all at once; returns their base URLs.

    Stopped afterwards with the server's signal.
    """
    started: list[tuple[Server, subprocess.Popen[bytes], Path]] = []

    def run(server: Server, apps: list[tuple[str, Path]]) -> list[str]:
        if server.needs and shutil.which(_bin(server.needs)) is None:
            pytest.skip(f"{server.needs} is not installed")
        waiting = []
        for app, cwd in apps:
            port = free_port()
            env = {k: v for k, v in os.environ.items() if not k.startswith("OTAS_")}
            env.update(
                OTAS_SDK_KEY=DEMO_SDK_KEY,
                OTAS_PROJECT_ID=DEMO_PROJECT_ID,
                OTAS_BRAIN_URL=collector_server.url,
                OTAS_UASAM_URL=collector_server.url,
                PYTHONPATH=os.pathsep.join([str(ROOT), str(cwd)]),
            )
            log = tmp_path / f"{server.name}-{cwd.name}.log"
            command = [part.format(port=port, app=app) for part in server.command]
            with log.open("wb") as out:
                process = subprocess.Popen(
                    command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT
                )
            started.append((server, process, log))
            waiting.append((port, process, log))
        # Started together, so that the servers' start-ups overlap.
        for port, process, log in waiting:
            wait_until_listening(port, process, log)
        return [f"http://127.0.0.1:{port}" for port, _, _ in waiting]

    yield run
    for server, process, log in started:
        if process.poll() is None:
            process.send_signal(server.stop)
        try:
            process.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            pytest.fail(f"{server.name} did not stop on {server.stop!r}:\n{log.read_text()}")
        text = log.read_text()
        # Our code in a traceback, or an event reported lost, fails the case (the
        # apps' deliberate crash is logged by the frameworks, below our frames).
        assert "otas_capture/" not in text and "otas-capture: event" not in text, text


def send(session: requests.Session, base: str, call: Call, **kwargs: Any) -> Call:
    stream = kwargs.pop("stream", False)
    response = session.request(
        call.method, base + call.path, timeout=TIMEOUT, stream=stream, **kwargs
    )
    body = b"".join(response.iter_content(4096)) if stream else response.content
    response.close()
    call.status = response.status_code
    call.response_size = len(body)
    return call


def check_events(events: list[dict[str, Any]], calls: list[Call]) -> None:
    assert len(events) == len(calls), events
    by_call = {(e["method"], e["path"].rstrip("/"), e["request_size_bytes"]): e for e in events}
    for call in calls:
        event = by_call[(call.method, call.path.split("?")[0].rstrip("/"), call.request_size)]
        seen = {
            "status_code": event["status_code"],
            "response_size_bytes": event["response_size_bytes"],
        }
        assert seen == {"status_code": call.status, "response_size_bytes": call.response_size}
        for name, value in call.expect.items():
            got = event["metadata"].get(name) if name in ("route", "endpoint") else event[name]
            matches = value.match(got) if isinstance(value, re.Pattern) else got == value
            assert matches, (call, name, event)


def flask_calls(base: str, agent: requests.Session, chunked_uploads: bool) -> list[Call]:
    item = json.dumps({"name": "pen", "price": 1.5, "tags": ["ink"]}).encode()
    chunked = json.dumps({"name": "chunked pen", "price": 2}).encode()
    form = b"username=agent&password=correct+horse+battery+staple"
    calls = [
        send(
            agent,
            base,
            Call("POST", "/api/items", request_size=len(item)),
            data=item,
            headers={"Content-Type": "application/json"},
        ),
    ]
    if chunked_uploads:
        # A generator body: requests sends it with Transfer-Encoding: chunked.
        chunked_call = Call("POST", "/api/items", request_size=len(chunked))
        calls.append(
            send(
                agent,
                base,
                chunked_call,
                data=iter([chunked[:10], chunked[10:]]),
                headers={"Content-Type": "application/json"},
            )
        )
    # Each worker process keeps its own items: under several workers only calls that
    # answer the same in every worker can be compared (a list, an id never created).
    calls += [
        send(agent, base, Call("GET", "/api/items?limit=5", expect={"route": "/api/items"})),
        send(
            agent,
            base,
            Call("GET", "/api/items/999", expect={"route": "/api/items/<int:item_id>"}),
        ),
        send(agent, base, Call("GET", "/api/boom", expect={"error": FLASK_BOOM})),
        send(agent, base, Call("GET", "/api/export"), stream=True),
        send(
            agent,
            base,
            Call("POST", "/api/login", request_size=len(form)),
            data=form,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        ),
    ]
    return calls


def django_calls(base: str, agent: requests.Session) -> list[Call]:
    item = json.dumps({"name": "pen", "price": 1.5}).encode()
    upload = bytes(range(256)) * 100
    prepared = requests.Request(
        "POST", base + "/api/upload/", files={"file": ("blob.bin", upload)}
    ).prepare()
    multipart = prepared.body
    assert isinstance(multipart, bytes)
    calls = [
        send(
            agent,
            base,
            Call("POST", "/api/items/", request_size=len(item)),
            data=item,
            headers={"Content-Type": "application/json"},
        ),
        send(agent, base, Call("GET", "/api/items/1/", expect={"route": "api/items/<int:pk>/"})),
        send(
            agent,
            base,
            Call("GET", "/api/boom/", expect={"error": "ZeroDivisionError: division by zero"}),
        ),
        send(
            agent,
            base,
            Call("POST", "/api/upload/", request_size=len(multipart)),
            data=multipart,
            headers={"Content-Type": prepared.headers["Content-Type"]},
        ),
        send(agent, base, Call("GET", "/api/export/"), stream=True),
        send(agent, base, Call("GET", "/api/download/"), stream=True),
    ]
    return calls


# Statuses every server must give: the apps' answers, whatever serves them.
# The example divides a sum of prices by zero: an int or a float sum, depending on
# whether the worker that answers holds any item.
FLASK_BOOM = re.compile(r"ZeroDivisionError: (float )?division by zero$")
FLASK_STATUSES = [201, 201, 200, 404, 500, 200, 200]  # the second: the chunked upload
DJANGO_STATUSES = [201, 200, 500, 200, 200, 200]


def agent_session(collector, session_id: str) -> requests.Session:
    agent = requests.Session()
    agent.headers[SESSION_TOKEN_HEADER] = collector.issue_token(agent_session_id=session_id)
    return agent


@pytest.mark.parametrize("server", SERVERS, ids=[s.name for s in SERVERS])
def test_both_examples_ship_the_same_events_under(server, run_server, collector):
    pytest.importorskip("django")
    flask_base, django_base = run_server(
        server, [("flask_app:app", EXAMPLES), ("shop.wsgi:application", DJANGO_PROJECT)]
    )
    # Calls without a token first, so that they would be among the events awaited if
    # they were shipped.
    assert requests.get(flask_base + "/api/items", timeout=TIMEOUT).status_code == 200
    assert requests.get(django_base + "/api/items/1/", timeout=TIMEOUT).status_code == 200

    flask = flask_calls(
        flask_base, agent_session(collector, "flask-session"), server.chunked_uploads
    )
    expected = FLASK_STATUSES if server.chunked_uploads else FLASK_STATUSES[:1] + FLASK_STATUSES[2:]
    assert [c.status for c in flask] == expected
    django = django_calls(django_base, agent_session(collector, "django-session"))
    assert [c.status for c in django] == DJANGO_STATUSES

    events = collector.wait_for_events(len(flask) + len(django), timeout=TIMEOUT)
    sessions = [e["_agent_session_id"] for e in events]  # the collector notes each token's
    check_events([e for e, s in zip(events, sessions) if s == "flask-session"], flask)
    check_events([e for e, s in zip(events, sessions) if s == "django-session"], django)
