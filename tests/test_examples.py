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
        [sys.executable, str(ROOT / "examples" / "demo.py")],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK: 8 agent calls, 8 events" in result.stdout
    assert "[REDACTED]" in result.stdout
    assert "correct horse battery staple" not in result.stdout + result.stderr
