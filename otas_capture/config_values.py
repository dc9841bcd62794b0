"""How each kind of setting value is checked and normalised, whoever gave it.

Every parser takes the option's name and the value as given (a Python object in code, a
string from the environment or a framework's settings) and returns the value the SDK uses,
or raises :class:`ConfigError` saying what the option accepts. What happens to that error
(raised, or logged and replaced) depends on who gave the value: see :mod:`otas_capture.config`.
"""

from __future__ import annotations

import importlib
import math
import os
import unicodedata
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from .contract import DEFAULT_BRAIN_URL, is_sdk_key


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


def env_name(option: str) -> str:
    return "OTAS_" + option.upper()


def refuse(
    option: str, accepts: str, value: Any = None, *, secret: bool = False, why: str = ""
) -> ConfigError:
    got = "" if secret or value is None else f", got {value!r}"
    detail = f"must be {accepts}{got}{f'; {why}' if why else ''}"
    message = f"option {option}= (environment {env_name(option)}) {detail}"
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


def parse_bool(option: str, value: Any) -> bool:
    parsed = as_bool(value)
    if parsed is None:
        raise refuse(option, "one of true/false, 1/0, yes/no, on/off", value)
    return parsed


def parse_int(option: str, value: Any, low: int, high: int | None = None) -> int:
    if isinstance(value, bool):
        raise refuse(option, "a whole number", value)
    try:
        number = int(str(value).strip()) if isinstance(value, str) else int(value)
        if not isinstance(value, (int, str)) and number != value:
            raise ValueError
    except (TypeError, ValueError):
        raise refuse(option, _range_text("a whole number", low, high), value) from None
    if number < low or (high is not None and number > high):
        raise refuse(option, _range_text("a whole number", low, high), value)
    return number


def parse_float(
    option: str, value: Any, low: float, high: float | None = None, *, above_low: bool = False
) -> float:
    if isinstance(value, bool):
        raise refuse(option, "a number", value)
    try:
        number = float(value.strip()) if isinstance(value, str) else float(value)
    except (TypeError, ValueError):
        number = math.nan
    too_low = number <= low if above_low else number < low
    if not math.isfinite(number) or too_low or (high is not None and number > high):
        kind = f"a number above {_number(low)}" if above_low else "a number"
        raise refuse(option, _range_text(kind, None if above_low else low, high), value)
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


def parse_list(option: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    items: Iterable[Any] = value.split(",") if isinstance(value, str) else value
    try:
        return tuple(str(item).strip() for item in items if str(item).strip())
    except TypeError:
        raise refuse(option, "a comma-separated string or a list of strings", value) from None


def parse_skip_paths(option: str, value: Any) -> tuple[str, ...]:
    """Path prefixes as decoded text: servers undo percent-escapes in the request path,
    so ``/caf%C3%A9`` and ``/café`` both mean the path a browser shows as ``/café``."""
    return tuple(unquote(path) for path in parse_list(option, value))


def parse_path(option: str, value: Any) -> str | None:
    text = os.fspath(value).strip() if value is not None else ""
    return text or None


_CALLABLE_ACCEPTS = "a callable or the dotted path of one (package.module:function)"


def parse_callable(option: str, value: Any) -> Any:
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
        raise refuse(
            option, "a callable or the dotted path of one (package.module:function)", value
        ) from None
    if not callable(found):
        raise refuse(
            option, "a callable or the dotted path of one (package.module:function)", value
        )
    return found


_URL_ACCEPTS = (
    f"an http:// or https:// URL such as {DEFAULT_BRAIN_URL}: a host, a port from 1 to "
    "65535 if any, no spaces"
)


def parse_url(option: str, value: Any) -> str:
    text = str(value).strip()
    # user:password@ would be a credential in our logs, and OTAS does not use it.
    secret = "@" in text
    why = _unsendable_character(text)
    if why:
        raise refuse(option, _URL_ACCEPTS, value, secret=secret, why=why)
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise refuse(option, _URL_ACCEPTS, value, secret=secret)
    if "@" in parts.netloc:
        raise refuse(option, _URL_ACCEPTS, secret=True, why="this one has a user name or password")
    try:
        port = parts.port  # raises for a port that is not a number from 0 to 65535
    except ValueError:
        port = 0
    if port == 0:
        raise refuse(option, _URL_ACCEPTS, value, why="its port is not a number from 1 to 65535")
    if parts.query or parts.fragment:
        raise refuse(option, "a base URL without query or fragment", value)
    try:
        parts.hostname.encode("idna")  # how http.client sends a non-ASCII host
    except UnicodeError:
        raise refuse(option, _URL_ACCEPTS, value, why="its host is not a valid name")
    # http.client sends the request line as ASCII: percent-encode any other path text.
    try:
        path = quote(parts.path, safe="/%!$&'()*+,;=:@-._~")
    except UnicodeError:  # a lone surrogate, from an environment that is not UTF-8
        raise refuse(option, _URL_ACCEPTS, why="its path is not valid text") from None
    return parts._replace(path=path).geturl().rstrip("/")


_KEY_ACCEPTS = (
    "a backend SDK key of the form otas_<prefix>_<secret>, made of Latin-1 characters "
    "without spaces or control characters, as an HTTP header requires"
)


def parse_sdk_key(option: str, value: Any) -> str | None:
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
        raise refuse(option, _KEY_ACCEPTS, secret=True, why=why)
    return text


def parse_project_id(option: str, value: Any) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    import uuid  # here: a few milliseconds of `import otas_capture` otherwise

    try:
        return str(uuid.UUID(str(value).strip()))
    except ValueError:
        raise refuse(
            option, "a project UUID such as 123e4567-e89b-12d3-a456-426614174000", value
        ) from None


def parse_label(option: str, value: Any) -> str | None:
    """A short name recorded in each event (``production``, ``v1.4.2``); empty is unset."""
    accepts = "a text of at most 200 characters, without control characters"
    if not isinstance(value, str):
        raise refuse(option, accepts, value)
    text = value.strip()
    if len(text) > 200 or any(unicodedata.category(char) == "Cc" for char in text):
        raise refuse(option, accepts, value)
    return text or None


def parse_ca_bundle(option: str, value: Any) -> str | None:
    path = parse_path(option, value)
    if path is not None and not os.path.exists(path):
        raise refuse(option, "a file or directory of CA certificates (PEM)", path)
    return path
