"""``python -m otas_capture.collector``: see :mod:`otas_capture.collector.cli`."""

from __future__ import annotations

import sys

from .cli import main

sys.exit(main())
