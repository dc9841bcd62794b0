"""Configuration: every setting, its environment variable, default and check.

Each setting can be given as a keyword option (``OtasMiddleware(app, sample_rate=0.5)``),
in a framework's settings (Django's ``settings.OTAS``, Flask's ``app.config``: the
integrations hand those over as :class:`Setting` values), or as the upper-case environment
variable ``OTAS_<NAME>``. Code wins over framework settings, which win over the
environment, which wins over the default. Everything is checked once, when the middleware
is built, for what it will have to go through later (the SDK key travels as an HTTP header
value, the URLs are dialled), so that nothing fails silently afterwards.

A bad value is handled according to who gave it:

- **in code**: :class:`ConfigError` naming the option and what it accepts. The developer
  sees it at once, and the fix is in their hands.
- **in framework settings or the environment**: never an exception. A monitoring SDK must
  not stop the host app from booting (a gunicorn worker that raises at import is a service
  down, and so is ``runserver`` stopped by a setting). One error is logged on the
  ``otas_capture`` logger naming where the value was set (``settings.OTAS["SAMPLE_RATE"]``,
  ``app.config["OTAS_SAMPLE_RATE"]``, ``OTAS_SAMPLE_RATE``) and what it accepts (never the
  value of a secret); the setting then takes its default, except where a default could
  send data somewhere the user did not mean (the key, the URLs, ``enabled``,
  ``before_send``): then nothing is shipped and requests pass through.

Names are normalised the way they will be compared: header names as HTTP compares them
(any case, ``_`` and ``-`` alike), skip paths as decoded text (percent-escapes undone, as
the server undoes them in the request path).
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Callable

from .config_values import (
    ConfigError,
    env_name,
    header_key,
    parse_bool,
    parse_ca_bundle,
    parse_callable,
    parse_float,
    parse_int,
    parse_label,
    parse_list,
    parse_path,
    parse_project_id,
    parse_sdk_key,
    parse_skip_paths,
    parse_url,
)
from .contract import (
    DEFAULT_BRAIN_URL,
    DEFAULT_UASAM_URL,
    LOGGER_NAME,
)
from .event.masking.names import BUILTIN_SENSITIVE_FIELDS, BUILTIN_SENSITIVE_HEADERS

__all__ = [
    "BUILTIN_SENSITIVE_FIELDS",
    "BUILTIN_SENSITIVE_HEADERS",
    "MAX_BODY_BYTES_LIMIT",
    "OPTION_NAMES",
    "BeforeSend",
    "Config",
    "ConfigError",
    "SHIP_NOTHING_WHEN_REFUSED",
    "Setting",
    "check_names",
    "header_key",
]

logger = logging.getLogger(LOGGER_NAME)

# A hook run on each finished event: returns the event (edited or not), or None to drop it.
BeforeSend = Callable[[dict[str, Any]], "dict[str, Any] | None"]

# Brain refuses request bodies over 2.5 MiB; two captured bodies plus headers and
# JSON escaping must stay well under that, so one body may not exceed 1 MiB.
MAX_BODY_BYTES_LIMIT = 1024 * 1024


@dataclass(frozen=True)
class Setting:
    """A value from a framework's settings, and where it was set (for the error message).

    Given as an option, it is checked as any option, but a bad one is handled as a bad
    environment variable is (see the module docstring) instead of raising.
    """

    value: Any
    where: str  # as the user would look for it: settings.OTAS["SAMPLE_RATE"]

    def __repr__(self) -> str:
        return f"Setting(where={self.where!r})"  # the value may be a secret


@dataclass(frozen=True)
class Config:
    """The checked settings of one middleware. Build it with :meth:`Config.load`."""

    # Not a setting: where the values given outside code that were refused were set
    # (OTAS_* variables, framework settings), each logged once then replaced as the
    # module docstring says, so the caller can tell why it is off.
    env_refused: tuple[str, ...] = ()

    sdk_key: str | None = None
    project_id: str | None = None
    brain_url: str = DEFAULT_BRAIN_URL
    uasam_url: str = DEFAULT_UASAM_URL
    enabled: bool = True
    max_body_bytes: int = 102_400
    sensitive_headers: frozenset[str] = BUILTIN_SENSITIVE_HEADERS
    sensitive_fields: frozenset[str] = BUILTIN_SENSITIVE_FIELDS
    skip_paths: tuple[str, ...] = ()
    sample_rate: float = 1.0
    queue_size: int = 10_000
    queue_max_bytes: int = 64 * 1024 * 1024
    batch_size: int = 100
    flush_interval: float = 1.0
    concurrency: int = 16
    timeout: float = 10.0
    answer_timeout: float | None = None
    max_retries: int = 5
    retry_backoff: float = 0.5
    shutdown_timeout: float = 2.0
    spool_dir: str | None = None
    ca_bundle: str | None = None
    safe_fields: frozenset[str] = frozenset()
    before_send: BeforeSend | None = None
    environment: str | None = None
    release: str | None = None

    def __repr__(self) -> str:
        # The SDK key is a credential: a repr ends up in logs and tracebacks.
        shown = []
        for field in fields(self):
            value = getattr(self, field.name)
            if field.name == "sdk_key" and value is not None:
                value = "<set>"
            shown.append(f"{field.name}={value!r}")
        return f"Config({', '.join(shown)})"

    @property
    def shipping(self) -> bool:
        """Whether events are captured and shipped at all."""
        return self.enabled and self.sdk_key is not None

    @classmethod
    def load(cls, options: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Config:
        """Merge ``options`` over ``OTAS_*`` variables of ``environ`` over the defaults.

        A bad option raises :class:`ConfigError`; a bad :class:`Setting` or variable is
        logged and replaced (see the module docstring), so that loading what was not
        given in code never raises.
        """
        environ = os.environ if environ is None else environ
        check_names(options)
        values: dict[str, Any] = {}
        refused: list[str] = []
        ship_nothing = False
        for name, parse in _PARSERS.items():
            given = options.get(name)
            if given is not None and not isinstance(given, Setting):
                values[name] = parse(name, given)
                continue
            if given is not None:
                value, where = given.value, given.where
            else:
                where = env_name(name)
                value = environ.get(where, "")
                if not value.strip():  # empty counts as unset (OTAS_X=${X}, X unset)
                    continue
            try:
                values[name] = parse(name, value)
            except Exception as error:  # whatever it is, the host app must start
                refused.append(where)
                ship_nothing = ship_nothing or name in SHIP_NOTHING_WHEN_REFUSED
                _log_refused(name, where, error, getattr(cls, name))
        if ship_nothing:
            values["enabled"] = False
        for name in ("sensitive_headers", "sensitive_fields"):
            builtin = getattr(cls, name)
            extra = {item.lower() for item in values.get(name, ())}
            if name == "sensitive_headers":
                extra = {header_key(item) for item in extra}
            else:
                # Field names match with - and _ alike (see redaction.normalize_name).
                extra = {item.replace("-", "_") for item in extra}
            values[name] = frozenset(builtin | extra)
        for name in sorted(_DEPRECATED.intersection(values)):
            warnings.warn(
                f"otas-capture: {name} ({env_name(name)}) is deprecated and has no effect: "
                "events are sent as soon as a call slot is free",
                DeprecationWarning,
                stacklevel=3,  # the caller of OtasMiddleware(...)
            )
        return cls(env_refused=tuple(refused), **values)


def check_names(options: Mapping[str, Any]) -> None:
    """Raise :class:`ConfigError` naming the first of ``options`` that is not a setting.

    Keywords in code are checked by Python (``OtasMiddleware``'s signature); options that
    come as a mapping are checked here.
    """
    unknown = sorted(set(options) - set(_PARSERS))
    if unknown:
        raise ConfigError(
            f"unknown option {unknown[0]!r}; the options are: {', '.join(sorted(_PARSERS))}"
        )


# Settings still parsed so that old configurations keep working, and otherwise ignored.
_DEPRECATED = frozenset({"batch_size", "flush_interval"})

# Settings whose default, taken in place of a refused value, could send data where the
# user did not mean it to go (or unfiltered): refusing one of them ships nothing.
SHIP_NOTHING_WHEN_REFUSED = frozenset(
    {"sdk_key", "brain_url", "uasam_url", "enabled", "before_send"}
)


def _log_refused(name: str, where: str, error: Exception, default: Any) -> None:
    if name in SHIP_NOTHING_WHEN_REFUSED:
        outcome = "nothing is sent to OTAS until it is fixed; requests pass through untouched"
    else:
        outcome = f"using the default ({'none' if default is None else default!r}) instead"
    if isinstance(error, ConfigError):
        problem = error.detail
    else:
        # Not one of our checks: name the kind of error only, the value may be a secret.
        problem = f"could not be read ({type(error).__name__})"
    logger.error("otas-capture: %s %s; %s", where, problem, outcome)


_PARSERS: dict[str, Callable[[str, Any], Any]] = {
    "sdk_key": parse_sdk_key,
    "project_id": parse_project_id,
    "brain_url": parse_url,
    "uasam_url": parse_url,
    "enabled": parse_bool,
    "max_body_bytes": lambda o, v: parse_int(o, v, 0, MAX_BODY_BYTES_LIMIT),
    "sensitive_headers": parse_list,
    "sensitive_fields": parse_list,
    "skip_paths": parse_skip_paths,
    "sample_rate": lambda o, v: parse_float(o, v, 0.0, 1.0),
    "queue_size": lambda o, v: parse_int(o, v, 1),
    "queue_max_bytes": lambda o, v: parse_int(o, v, 1024),
    "batch_size": lambda o, v: parse_int(o, v, 1),
    "flush_interval": lambda o, v: parse_float(o, v, 0.0, 3600.0, above_low=True),
    "concurrency": lambda o, v: parse_int(o, v, 1, 64),
    "timeout": lambda o, v: parse_float(o, v, 0.0, 600.0, above_low=True),
    "answer_timeout": lambda o, v: parse_float(o, v, 0.0, 3600.0, above_low=True),
    "max_retries": lambda o, v: parse_int(o, v, 0, 100),
    "retry_backoff": lambda o, v: parse_float(o, v, 0.0, 60.0, above_low=True),
    "shutdown_timeout": lambda o, v: parse_float(o, v, 0.0, 600.0),
    "spool_dir": lambda o, v: parse_path(o, v),
    "ca_bundle": parse_ca_bundle,
    "safe_fields": lambda o, v: frozenset(parse_list(o, v)),
    "before_send": lambda o, v: parse_callable(o, v),
    "environment": parse_label,
    "release": parse_label,
}

# The names of the settings, as options (``sample_rate``); OTAS_ + upper case in the
# environment and in framework settings.
OPTION_NAMES: tuple[str, ...] = tuple(_PARSERS)
