"""``python -m otas_capture``: the ``otas-capture`` command; see :mod:`otas_capture.cli`."""

from __future__ import annotations

import sys

from .cli import main

sys.exit(main())
