"""Makes the example importable and sets Django up for its tests (``pytest`` from here).

The ``otas`` fixture the tests use comes with otas-capture itself (a pytest plugin).
With pytest-django you would set ``DJANGO_SETTINGS_MODULE`` in pytest.ini instead.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import django

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop.settings")
django.setup()
