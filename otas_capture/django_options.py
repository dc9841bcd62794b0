"""What the Django integration reads from Django's settings and the environment.

Settings, highest first: the ``OTAS`` dict (``{"SDK_KEY": ...}`` or ``{"sdk_key": ...}``),
then ``OTAS_<NAME>`` settings (``OTAS_SDK_KEY = ...``); the core middleware reads what they
leave out from the environment. Each value is handed over as a
:class:`~otas_capture.config.Setting` naming where it was set, so that a bad one is logged
and replaced as a bad environment variable is: a setting never stops ``runserver`` or a
worker from starting.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from django.conf import settings

from .config import OPTION_NAMES, Setting
from .config_values import as_bool
from .contract import LOGGER_NAME

__all__ = ["DJANGO_OPTIONS", "load_options"]

logger = logging.getLogger(LOGGER_NAME)

# Options that belong to this integration, not to the core middleware.
DJANGO_OPTIONS = ("capture_user",)


def load_options() -> tuple[dict[str, Any], bool]:
    """(core middleware options, capture_user) from Django's settings.

    Values come as :class:`~otas_capture.config.Setting`, so that a bad one is logged
    naming where it was set (``settings.OTAS["SAMPLE_RATE"]``) and replaced, as a bad
    environment variable is: a setting must not stop ``runserver`` or a worker from
    starting. What the settings leave out, the core reads from the environment.
    """
    names = set(OPTION_NAMES) | set(DJANGO_OPTIONS)
    found: dict[str, Any] = {}
    for name in sorted(names):
        where = "settings.OTAS_" + name.upper()
        value = getattr(settings, where.removeprefix("settings."), None)
        if value is not None:
            found[name] = Setting(value, where)
    block = getattr(settings, "OTAS", None)
    if block is not None and not isinstance(block, Mapping):
        _report("settings.OTAS must be a dict of options, such as {'SDK_KEY': ...}; ignored")
        block = None
    for key, value in (block or {}).items():
        where = f'settings.OTAS["{key}"]'
        name = str(key).lower()
        if name not in names:
            options = ", ".join(sorted(names))
            _report(f"{where} is not an option, so it is ignored; the options are: {options}")
        elif value is not None:
            found[name] = Setting(value, where)
    capture_user = _capture_user(found.pop("capture_user", None))
    return found, capture_user


def _capture_user(given: Any) -> bool:
    if isinstance(given, Setting):
        value, where = given.value, given.where
    elif given is not None:  # imposed by the pytest plugin's overrides
        value, where = given, "capture_user"
    else:
        value, where = os.environ.get("OTAS_CAPTURE_USER"), "OTAS_CAPTURE_USER"
        if value is None:
            return False
    parsed = as_bool(value)
    if parsed is None:
        _report(f"{where} must be true or false, got {value!r}; using false")
        return False
    return parsed


_reported: set[str] = set()


def _report(problem: str) -> None:
    """Log a problem with the settings once: they are read for every handler Django
    builds (one per test client) and by ``stats()``."""
    if problem not in _reported:
        _reported.add(problem)
        logger.error("otas-capture: %s", problem)
