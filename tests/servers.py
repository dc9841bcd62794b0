"""Real loopback servers for the stand-in and differential tests: waitress, run in-process.

Each waitress server gets a socket map of its own: waitress's default is one map shared
by the whole process, which servers started and stopped side by side would trample.
"""

from __future__ import annotations

import threading
from typing import Any

from waitress import create_server, wasyncore


class WaitressServer:
    """One waitress server on an ephemeral loopback port, in a thread; ``stop()`` ends it."""

    def __init__(self, app: Any, threads: int = 2) -> None:
        self._map: dict[int, Any] = {}
        self._stopping = threading.Event()
        self._server = create_server(app, host="127.0.0.1", port=0, threads=threads, map=self._map)
        self.url = f"http://127.0.0.1:{self._server.effective_port}"  # type: ignore[union-attr]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            while not self._stopping.is_set():
                wasyncore.loop(timeout=30.0, use_poll=True, map=self._map, count=1)
        finally:
            wasyncore.close_all(self._map)
            self._server.task_dispatcher.set_thread_count(0)

    def stop(self) -> None:
        self._stopping.set()
        try:
            self._server.pull_trigger()
        except OSError:  # the serve loop saw the flag first and closed the trigger
            pass
        self._thread.join(timeout=5)
