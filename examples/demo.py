"""The README demo, runnable from a checkout: the same as ``otas-capture demo``.

    python examples/demo.py [--keep] [--port N]

See :mod:`otas_capture.cli.demo` for what it does. The app it drives is the demo shop in
``otas_capture/cli/demo_app.py``, with the endpoints of ``examples/flask_app.py``
(except the crash endpoint).
"""

from __future__ import annotations

import sys

from otas_capture.cli import main

if __name__ == "__main__":
    sys.exit(main(["demo", *sys.argv[1:]]))
