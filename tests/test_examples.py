"""The README's demo keeps working: it is the first thing a new user runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_demo_ships_every_agent_call_to_the_local_collector():
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTAS_")}
    # The package under test, whether or not it is installed in this interpreter.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "demo.py"), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK: 7 agent calls, 7 events" in result.stdout
    # The table says what was masked on the login: the password and the token it returned.
    assert "form password" in result.stdout
    assert "response body access_token" in result.stdout
    assert "correct horse battery staple" not in result.stdout + result.stderr
