"""ASGI servers as real processes: uvicorn (h11, httptools), hypercorn, gunicorn with
uvicorn workers, each serving an app of tests/asgi_apps.py on a free loopback port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from otas_capture.collector import DEMO_SDK_KEY

ROOT = Path(__file__).resolve().parent.parent

# How each server is started, given the app ("tests.asgi_apps:wrapped") and the port.
COMMANDS = {
    "uvicorn-h11": ["-m", "uvicorn", "--http", "h11", "--port", "{port}", "{app}"],
    "uvicorn-httptools": ["-m", "uvicorn", "--http", "httptools", "--port", "{port}", "{app}"],
    "hypercorn": ["-m", "hypercorn", "--bind", "127.0.0.1:{port}", "{app}"],
    "gunicorn-uvicorn": [
        "-m",
        "gunicorn",
        "--workers",
        "1",
        "--worker-class",
        "uvicorn_worker.UvicornWorker",
        "--bind",
        "127.0.0.1:{port}",
        "{app}",
    ],
}
QUIET = {
    "uvicorn-h11": ["--log-level", "warning"],
    "uvicorn-httptools": ["--log-level", "warning"],
    "hypercorn": [],
    "gunicorn-uvicorn": ["--log-level", "warning"],
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """One server process; ``url`` once it listens, ``stop()`` sends SIGTERM and waits."""

    def __init__(self, kind: str, app: str, brain_url: str, **env: str) -> None:
        self.kind = kind
        port = free_port()
        command = [sys.executable]
        command += [part.format(port=port, app=app) for part in COMMANDS[kind]]
        command += QUIET[kind]
        environment = dict(os.environ)
        for name in [n for n in environment if n.startswith("OTAS_")]:
            del environment[name]
        environment.update(
            OTAS_SDK_KEY=DEMO_SDK_KEY,
            OTAS_BRAIN_URL=brain_url,
            OTAS_UASAM_URL=brain_url,
            PYTHONPATH=os.pathsep.join([str(ROOT), *sys.path]),
            PYTHONUNBUFFERED="1",
        )
        environment.update(env)
        # Output goes to a file, not a pipe: a server logging the app's tracebacks into
        # a pipe nobody reads would block once the pipe is full, and hang its loop.
        self._output = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=environment, stdout=self._output, stderr=subprocess.STDOUT
        )
        self.url = f"http://127.0.0.1:{port}"
        self._wait_until_listening(port)

    def _wait_until_listening(self, port: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"{self.kind} ended: {self.output()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        self.kill()
        raise AssertionError(f"{self.kind} did not start")

    def output(self) -> str:
        """What the server wrote so far, standard output and error."""
        self._output.seek(0)
        return self._output.read().decode("utf-8", "replace")

    def stop(self, timeout: float = 30.0) -> tuple[int, str]:
        """SIGTERM, as a container runtime stops it; (exit status, its output)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        output = self.output()
        self._output.close()
        return self.process.returncode, output

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
