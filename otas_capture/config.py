"""Configuration: every setting, its environment variable, default and check.

Each setting can be given as a keyword option (``OtasMiddleware(app, sample_rate=0.5)``)
or as the upper-case environment variable ``OTAS_<NAME>``. An option given in code wins
over the environment, which wins over the default. Everything is checked once, when the
middleware is built, for what it will have to go through later (the SDK key travels as an
HTTP header value, the URLs are dialled), so that nothing fails silently afterwards.

A bad value is handled according to who gave it:

- **in code**: :class:`ConfigError` naming the option and what it accepts. The developer
  sees it at once, and the fix is in their hands.
- **in the environment**: never an exception. A monitoring SDK must not stop the host app
  from booting (a gunicorn worker that raises at import is a service down). One error is
  logged on the ``otas_capture`` logger naming the variable and what it accepts (never the
  value of a secret); the setting then takes its default, except where a default could
  send data somewhere the user did not mean (the key, the URLs, ``OTAS_ENABLED``,
  ``OTAS_BEFORE_SEND``): then nothing is shipped and requests pass through.

Names are normalised the way they will be compared: header names as HTTP compares them
(any case, ``_`` and ``-`` alike), skip paths as decoded text (percent-escapes undone, as
the server undoes them in the request path).
"""

from __future__ import annotations

import importlib
import logging
import math
import os
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any, Callable
from urllib.parse import quote, unquote, urlsplit

from .contract import (
    DEFAULT_BRAIN_URL,
    DEFAULT_UASAM_URL,
    LOGGER_NAME,
    SDK_KEY_HEADER,
    SESSION_TOKEN_HEADER,
    is_sdk_key,
)

logger = logging.getLogger(LOGGER_NAME)

# A hook run on each finished event: returns the event (edited or not), or None to drop it.
BeforeSend = Callable[[dict[str, Any]], "dict[str, Any] | None"]

# Headers whose values never leave the process, whatever the user configures.
BUILTIN_SENSITIVE_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
        "x-api-key",
        SDK_KEY_HEADER.lower(),
        SESSION_TOKEN_HEADER.lower(),
    }
)

# Keys whose values are masked in JSON bodies, form data and query strings.
BUILTIN_SENSITIVE_FIELDS = frozenset(
    {
        "password",
        "passwd",
        "secret",
        "token",
        "api_key",
        "apikey",
        "access_token",
        "refresh_token",
        "authorization",
        "client_secret",
        "card_number",
        "cvv",
        "ssn",
    }
)

# Brain refuses request bodies over 2.5 MiB; two captured bodies plus headers and
# JSON escaping must stay well under that, so one body may not exceed 1 MiB.
MAX_BODY_BYTES_LIMIT = 1024 * 1024


class ConfigError(ValueError):
    """An option passed in code has a value the SDK cannot use. Raised when the middleware
    is built.

    The message names the option (and its environment variable) and the values it
    accepts. It never repeats the value of a secret setting. ``option`` and ``detail``
    (what is wrong, without the name) are kept for callers that word it themselves.
    """

    def __init__(self, message: str, *, option: str | None = None, detail: str = "") -> None:
        super().__init__(message)
        self.option = option
        self.detail = detail or message


def _env_name(option: str) -> str:
    return "OTAS_" + option.upper()


def _fail(
    option: str, accepts: str, value: Any = None, *, secret: bool = False, why: str = ""
) -> ConfigError:
    got = "" if secret or value is None else f", got {value!r}"
    detail = f"must be {accepts}{got}{f'; {why}' if why else ''}"
    message = f"option {option}= (environment {_env_name(option)}) {detail}"
    return ConfigError(message, option=option, detail=detail)


def header_key(name: str) -> str:
    """A header name as HTTP compares it: any case, and ``_`` the same as ``-``.

    WSGI servers turn both ``X-Custom-Secret`` and ``X_Custom_Secret`` into the same
    ``HTTP_X_CUSTOM_SECRET``, so a setting written either way must match either.
    """
    return name.strip().lower().replace("_", "-")


def _unsendable_character(text: str) -> str:
    """Why ``text`` cannot travel as an HTTP header value or a URL, or "" if it can."""
    for char in text:
        if char.isspace():
            return "this one contains a space or line break"
        if unicodedata.category(char) == "Cc":
            return "this one contains a control character"
    return ""


def as_bool(value: Any) -> bool | None:
    """``value`` as a switch (a bool, or true/false, 1/0, yes/no, on/off in any case);
    None when it is none of those."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    return None


def _parse_bool(option: str, value: Any) -> bool:
    parsed = as_bool(value)
    if parsed is None:
        raise _fail(option, "one of true/false, 1/0, yes/no, on/off", value)
    return parsed


def _parse_int(option: str, value: Any, low: int, high: int | None = None) -> int:
    if isinstance(value, bool):
        raise _fail(option, "a whole number", value)
    try:
        number = int(str(value).strip()) if isinstance(value, str) else int(value)
        if not isinstance(value, (int, str)) and number != value:
            raise ValueError
    except (TypeError, ValueError):
        raise _fail(option, _range_text("a whole number", low, high), value) from None
    if number < low or (high is not None and number > high):
        raise _fail(option, _range_text("a whole number", low, high), value)
    return number


def _parse_float(
    option: str, value: Any, low: float, high: float | None = None, *, above_low: bool = False
) -> float:
    if isinstance(value, bool):
        raise _fail(option, "a number", value)
    try:
        number = float(value.strip()) if isinstance(value, str) else float(value)
    except (TypeError, ValueError):
        number = math.nan
    too_low = number <= low if above_low else number < low
    if not math.isfinite(number) or too_low or (high is not None and number > high):
        kind = f"a number above {_number(low)}" if above_low else "a number"
        raise _fail(option, _range_text(kind, None if above_low else low, high), value)
    return number


def _range_text(kind: str, low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f"{kind} from {_number(low)} to {_number(high)}"
    if low is not None:
        return f"{kind} of at least {_number(low)}"
    if high is not None:
        return f"{kind} of at most {_number(high)}"
    return kind


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _parse_list(option: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    items: Iterable[Any] = value.split(",") if isinstance(value, str) else value
    try:
        return tuple(str(item).strip() for item in items if str(item).strip())
    except TypeError:
        raise _fail(option, "a comma-separated string or a list of strings", value) from None


def _parse_skip_paths(option: str, value: Any) -> tuple[str, ...]:
    """Path prefixes as decoded text: servers undo percent-escapes in the request path,
    so ``/caf%C3%A9`` and ``/café`` both mean the path a browser shows as ``/café``."""
    return tuple(unquote(path) for path in _parse_list(option, value))


def _parse_path(option: str, value: Any) -> str | None:
    text = os.fspath(value).strip() if value is not None else ""
    return text or None


def _parse_ca_bundle(option: str, value: Any) -> str | None:
    path = _parse_path(option, value)
    if path is not None and not os.path.exists(path):
        raise _fail(option, "a file or directory of CA certificates (PEM)", path)
    return path


def _parse_callable(option: str, value: Any) -> Any:
    """A callable, or a dotted path ``package.module:function`` / ``package.module.function``."""
    if callable(value):
        return value
    text = str(value).strip()
    module_name, sep, attr = text.partition(":") if ":" in text else text.rpartition(".")
    try:
        if not module_name or not attr:
            raise ValueError(text)
        found = getattr(importlib.import_module(module_name), attr)
    except Exception:
        raise _fail(
            option, "a callable or the dotted path of one (package.module:function)", value
        ) from None
    if not callable(found):
        raise _fail(option, "a callable or the dotted path of one (package.module:function)", value)
    return found


_URL_ACCEPTS = (
    f"an http:// or https:// URL such as {DEFAULT_BRAIN_URL}: a host, a port from 1 to "
    "65535 if any, no spaces"
)


def _parse_url(option: str, value: Any) -> str:
    text = str(value).strip()
    # user:password@ would be a credential in our logs, and OTAS does not use it.
    secret = "@" in text
    why = _unsendable_character(text)
    if why:
        raise _fail(option, _URL_ACCEPTS, value, secret=secret, why=why)
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _fail(option, _URL_ACCEPTS, value, secret=secret)
    if "@" in parts.netloc:
        raise _fail(option, _URL_ACCEPTS, secret=True, why="this one has a user name or password")
    try:
        port = parts.port  # raises for a port that is not a number from 0 to 65535
    except ValueError:
        port = 0
    if port == 0:
        raise _fail(option, _URL_ACCEPTS, value, why="its port is not a number from 1 to 65535")
    if parts.query or parts.fragment:
        raise _fail(option, "a base URL without query or fragment", value)
    try:
        parts.hostname.encode("idna")  # how http.client sends a non-ASCII host
    except UnicodeError:
        raise _fail(option, _URL_ACCEPTS, value, why="its host is not a valid name")
    # http.client sends the request line as ASCII: percent-encode any other path text.
    try:
        path = quote(parts.path, safe="/%!$&'()*+,;=:@-._~")
    except UnicodeError:  # a lone surrogate, from an environment that is not UTF-8
        raise _fail(option, _URL_ACCEPTS, why="its path is not valid text") from None
    return parts._replace(path=path).geturl().rstrip("/")


_KEY_ACCEPTS = (
    "a backend SDK key of the form otas_<prefix>_<secret>, made of Latin-1 characters "
    "without spaces or control characters, as an HTTP header requires"
)


def _parse_sdk_key(option: str, value: Any) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    text = str(value).strip()
    why = _unsendable_character(text)
    if not why and not is_sdk_key(text):
        why = "this one has fewer than two underscores"
    if not why:
        try:
            text.encode("latin-1")
        except UnicodeEncodeError:
            why = "this one has a character outside Latin-1"
    if why:
        # Never the value: this is a credential, and it ends up in logs.
        raise _fail(option, _KEY_ACCEPTS, secret=True, why=why)
    return text


def _parse_project_id(option: str, value: Any) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    import uuid  # here: a few milliseconds of `import otas_capture` otherwise

    try:
        return str(uuid.UUID(str(value).strip()))
    except ValueError:
        raise _fail(
            option, "a project UUID such as 123e4567-e89b-12d3-a456-426614174000", value
        ) from None


@dataclass(frozen=True)
class Config:
    """The checked settings of one middleware. Build it with :meth:`Config.load`."""

    # Not a setting: the OTAS_* variables whose values were refused (each logged once,
    # then replaced as the module docstring says), so the caller can tell why it is off.
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

        A bad option raises :class:`ConfigError`; a bad variable is logged and replaced
        (see the module docstring), so that loading from the environment never raises.
        """
        environ = os.environ if environ is None else environ
        check_names(options)
        values: dict[str, Any] = {}
        refused: list[str] = []
        for name, parse in _PARSERS.items():
            if name in options and options[name] is not None:
                values[name] = parse(name, options[name])
            elif environ.get(_env_name(name), "").strip():
                # An empty variable counts as unset (``OTAS_X=${X}`` with X unset).
                try:
                    values[name] = parse(name, environ[_env_name(name)])
                except Exception as error:  # whatever it is, the host app must start
                    refused.append(name)
                    _log_refused(name, error, getattr(cls, name))
        if any(name in _SHIP_NOTHING_WHEN_REFUSED for name in refused):
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
        return cls(env_refused=tuple(_env_name(name) for name in refused), **values)


def check_names(options: Mapping[str, Any]) -> None:
    """Raise :class:`ConfigError` naming the first of ``options`` that is not a setting.

    Keywords in code are checked by Python (``OtasMiddleware``'s signature); options that
    come as a mapping (Django's ``settings.OTAS``) are checked here.
    """
    unknown = sorted(set(options) - set(_PARSERS))
    if unknown:
        raise ConfigError(
            f"unknown option {unknown[0]!r}; the options are: {', '.join(sorted(_PARSERS))}"
        )


# Settings whose default, taken in place of a refused value, could send data where the
# user did not mean it to go (or unfiltered): refusing one of them ships nothing.
_SHIP_NOTHING_WHEN_REFUSED = frozenset(
    {"sdk_key", "brain_url", "uasam_url", "enabled", "before_send"}
)


def _log_refused(name: str, error: Exception, default: Any) -> None:
    if name in _SHIP_NOTHING_WHEN_REFUSED:
        outcome = "nothing is sent to OTAS until it is fixed; requests pass through untouched"
    else:
        outcome = f"using the default ({'none' if default is None else default!r}) instead"
    if isinstance(error, ConfigError):
        problem = error.detail
    else:
        # Not one of our checks: name the kind of error only, the value may be a secret.
        problem = f"could not be read ({type(error).__name__})"
    logger.error("otas-capture: %s %s; %s", _env_name(name), problem, outcome)


_PARSERS: dict[str, Callable[[str, Any], Any]] = {
    "sdk_key": _parse_sdk_key,
    "project_id": _parse_project_id,
    "brain_url": _parse_url,
    "uasam_url": _parse_url,
    "enabled": _parse_bool,
    "max_body_bytes": lambda o, v: _parse_int(o, v, 0, MAX_BODY_BYTES_LIMIT),
    "sensitive_headers": _parse_list,
    "sensitive_fields": _parse_list,
    "skip_paths": _parse_skip_paths,
    "sample_rate": lambda o, v: _parse_float(o, v, 0.0, 1.0),
    "queue_size": lambda o, v: _parse_int(o, v, 1),
    "queue_max_bytes": lambda o, v: _parse_int(o, v, 1024),
    "batch_size": lambda o, v: _parse_int(o, v, 1),
    "flush_interval": lambda o, v: _parse_float(o, v, 0.0, 3600.0, above_low=True),
    "concurrency": lambda o, v: _parse_int(o, v, 1, 64),
    "timeout": lambda o, v: _parse_float(o, v, 0.0, 600.0, above_low=True),
    "answer_timeout": lambda o, v: _parse_float(o, v, 0.0, 3600.0, above_low=True),
    "max_retries": lambda o, v: _parse_int(o, v, 0, 100),
    "retry_backoff": lambda o, v: _parse_float(o, v, 0.0, 60.0, above_low=True),
    "shutdown_timeout": lambda o, v: _parse_float(o, v, 0.0, 600.0),
    "spool_dir": lambda o, v: _parse_path(o, v),
    "ca_bundle": _parse_ca_bundle,
    "safe_fields": lambda o, v: frozenset(_parse_list(o, v)),
    "before_send": lambda o, v: _parse_callable(o, v),
}
