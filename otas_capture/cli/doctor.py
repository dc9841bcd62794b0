"""``otas-capture doctor``: is this machine's OTAS configuration going to work?

Reads the settings exactly as the middleware does (:meth:`otas_capture.config.Config.load`
over the ``OTAS_*`` environment), prints them with secrets masked, then checks, with one
pass/fail line each and the round-trip time of every call:

1. the settings parse;
2. UASAM authenticates the SDK key, and says which project it belongs to;
3. Brain is reachable and accepts the key. The check is a log call *without* a session
   token: Brain checks the key first, so ``401 missing_agent_session_token`` proves the
   key works, and nothing is stored.

Each problem is reported once: a refused key is not reported again as "not set", and a
refused URL is not replaced by the default, which the middleware would never use either
(the check that needs it is shown as SKIP).

Network failures are told in plain words (refused, unresolvable, timed out), never as
a traceback. The exit status is non-zero when any check fails.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from typing import Any

import requests

from ..config import SHIP_NOTHING_WHEN_REFUSED, Config, ConfigError
from ..contract import (
    AUTHENTICATE_PATH,
    INVALID_SDK_KEY,
    LOGGER_NAME,
    MISSING_SDK_KEY,
    MISSING_SESSION_TOKEN,
    SDK_KEY_HEADER,
    SDK_LOG_PATH,
)
from . import _output

EPILOG = """\
examples:
  otas-capture doctor                       # check the settings in this shell's environment
  OTAS_SDK_KEY=otas_x_y otas-capture doctor
  otas-capture doctor --timeout 2           # give up on a silent server sooner

exit codes: 0 every check passed; 1 a check failed; 2 bad arguments.
"""

_SECRET_SETTINGS = ("sdk_key",)


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "doctor",
        help="check the OTAS settings: key, UASAM, Brain, round-trip times",
        description=(
            "Read the OTAS_* settings as the middleware does, print them with secrets "
            "masked, and check that UASAM authenticates the SDK key and that Brain "
            "accepts it (without storing anything)."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="seconds to wait for each server (default: OTAS_TIMEOUT, else 5)",
    )
    parser.set_defaults(run=run)


def mask_key(key: str) -> str:
    """``otas_<prefix>_…`` : the prefix names the key; the secret part is hidden."""
    parts = key.split("_", 2)
    if len(parts) == 3:
        return f"{parts[0]}_{parts[1]}_… (secret hidden)"
    return "… (hidden)"


def _shown(name: str, value: Any) -> str:
    if value is None:
        return "(not set)"
    if name in _SECRET_SETTINGS:
        return mask_key(str(value))
    if callable(value):
        return getattr(value, "__qualname__", type(value).__name__)
    if isinstance(value, frozenset):
        return ", ".join(sorted(value)) or "(none)"
    if isinstance(value, tuple):
        return ", ".join(value) or "(none)"
    return str(value)


def _refused(config: Config) -> set[str]:
    """The settings whose variables were refused, by option name (``brain_url``)."""
    return {where.removeprefix("OTAS_").lower() for where in config.env_refused}


def describe(config: Config, environ: Mapping[str, str]) -> str:
    """The effective settings, one a line, each saying where it came from."""
    refused = _refused(config)
    lines = []
    for field in fields(config):
        env = "OTAS_" + field.name.upper()
        if field.name == "env_refused":  # not a setting
            continue
        if field.name in refused & SHIP_NOTHING_WHEN_REFUSED:
            source = "REFUSED: nothing is sent until it is fixed"
        elif field.name in refused:
            source = "REFUSED, default used"
        elif field.name == "enabled" and refused & SHIP_NOTHING_WHEN_REFUSED:
            source = "off: a setting is refused"
        else:
            source = "from environment" if environ.get(env, "").strip() else "default"
        value = _shown(field.name, getattr(config, field.name))
        if field.name in refused & SHIP_NOTHING_WHEN_REFUSED:
            value = "(refused)"  # no default stands in for it
        lines.append(f"  {env:24} {_output.clip(value, 48):48}  ({source})")
    return "\n".join(lines)


@dataclass
class Check:
    ok: bool
    text: str
    warning: bool = False
    skipped: bool = False  # not checked, for a reason already reported


def _plain_error(service: str, url: str, exc: requests.RequestException, timeout: float) -> str:
    """A network failure in words a person can act on."""
    if isinstance(exc, requests.Timeout):
        return f"{service} at {url} did not answer within {timeout:g} s (it hangs, or is slow)"
    if isinstance(exc, requests.exceptions.SSLError):
        return f"{service} at {url}: the TLS handshake failed ({type(exc).__name__})"
    if isinstance(exc, requests.ConnectionError):
        text = str(exc)
        if (
            "Name or service not known" in text
            or "nodename nor servname" in text
            or ("getaddrinfo failed" in text or "Temporary failure in name resolution" in text)
        ):
            return f"{service} at {url}: the host name cannot be resolved"
        if "Connection refused" in text or "actively refused" in text:
            return f"{service} at {url}: connection refused (nothing listens there: is it running?)"
        if "RemoteDisconnected" in text or "Connection aborted" in text:
            return f"{service} at {url}: the server closed the connection without answering"
        return f"{service} at {url}: cannot connect"
    return f"{service} at {url}: the request failed ({type(exc).__name__})"


def _post(url: str, key: str, timeout: float, **kwargs: Any) -> tuple[requests.Response, float]:
    started = time.perf_counter()
    response = requests.post(url, headers={SDK_KEY_HEADER: key}, timeout=timeout, **kwargs)
    return response, (time.perf_counter() - started) * 1000.0


def _json(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def check_uasam(config: Config, key: str, timeout: float) -> tuple[Check, str | None]:
    """Authenticate the key at UASAM; the check and the project id it names."""
    url = config.uasam_url.rstrip("/") + AUTHENTICATE_PATH
    try:
        response, elapsed = _post(url, key, timeout)
    except requests.RequestException as exc:
        return Check(False, _plain_error("UASAM", config.uasam_url, exc, timeout)), None
    body = _json(response)
    took = f"({elapsed:.0f} ms)"
    if response.status_code == 200:
        project = body.get("response", {}).get("project", {}) if body else {}
        project_id = project.get("id") if isinstance(project, dict) else None
        name = project.get("name", "?") if isinstance(project, dict) else "?"
        return (
            Check(True, f"UASAM authenticates the key: project {name!r} ({project_id}) {took}"),
            project_id if isinstance(project_id, str) else None,
        )
    reason = body.get("error") or body.get("status_description") or "no reason given"
    if response.status_code in (401, 403):
        return Check(
            False,
            f"UASAM refuses the key: {response.status_code} {reason} {took}; check OTAS_SDK_KEY",
        ), None
    if response.status_code == 404:
        hint = "is OTAS_UASAM_URL the UASAM service?"
        return Check(False, f"UASAM answered 404 at {url} {took}: {hint}"), None
    return Check(False, f"UASAM answered {response.status_code} ({reason}) {took}"), None


def check_brain(config: Config, key: str, timeout: float) -> Check:
    """A log call without a session token: Brain checks the key first and stores nothing."""
    url = config.brain_url.rstrip("/") + SDK_LOG_PATH
    try:
        response, elapsed = _post(url, key, timeout, json={})
    except requests.RequestException as exc:
        return Check(False, _plain_error("Brain", config.brain_url, exc, timeout))
    took = f"({elapsed:.0f} ms)"
    reason = _json(response).get("status_description", "")
    if response.status_code == 401 and reason == MISSING_SESSION_TOKEN:
        return Check(True, f"Brain accepts the key (test call stored nothing) {took}")
    if reason == INVALID_SDK_KEY:
        return Check(
            False,
            f"Brain refuses the key: 401 {INVALID_SDK_KEY} {took}; the key is wrong, "
            "or Brain cannot reach UASAM (it says the same then)",
        )
    if reason == MISSING_SDK_KEY:
        return Check(False, f"Brain did not receive the key header {took}: a proxy drops it?")
    if response.status_code == 404:
        return Check(
            False, f"Brain answered 404 at {url} {took}: is OTAS_BRAIN_URL the Brain service?"
        )
    shown = reason or (response.headers.get("Content-Type") or "no body").split(";")[0]
    return Check(False, f"Brain answered {response.status_code} ({shown}) {took}")


class _Refusals(logging.Handler):
    """Collects what the settings loader logs about refused variables."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage().removeprefix("otas-capture: "))


def load(environ: Mapping[str, str]) -> tuple[Config | None, list[Check]]:
    """The settings as the middleware reads them, and whether they parse.

    The middleware never fails on a bad variable: it logs it and falls back. Doctor
    catches those log lines and turns each into a failed check.
    """
    logger = logging.getLogger(LOGGER_NAME)
    refusals = _Refusals()
    logger.addHandler(refusals)
    try:
        config = Config.load({}, environ)
    except ConfigError as exc:  # older loaders raised on a bad variable
        return None, [Check(False, f"settings do not parse: {exc}")]
    finally:
        logger.removeHandler(refusals)
    if not refusals.messages and not config.env_refused:
        return config, [Check(True, "settings parse")]
    messages = refusals.messages or [f"{name} was refused" for name in config.env_refused]
    return config, [Check(False, f"settings do not parse: {message}") for message in messages]


def network_checks(config: Config, timeout: float | None) -> Iterator[Check]:
    """The checks that talk to OTAS, each yielded as soon as it is done.

    Only what the middleware would use is checked: a refused URL is not replaced by the
    default here either, and a refusal already reported is not reported again as "not
    set" or "turned off".
    """
    refused = _refused(config)
    if not config.enabled and not refused & SHIP_NOTHING_WHEN_REFUSED:
        yield Check(True, "OTAS_ENABLED is false: the middleware captures nothing", True)
    if "sdk_key" in refused:
        yield _skip("UASAM and Brain not checked: there is no usable key (OTAS_SDK_KEY above)")
        return
    if config.sdk_key is None:
        yield Check(False, "OTAS_SDK_KEY is not set: the middleware captures nothing")
        return
    wait = timeout if timeout is not None else config.timeout
    if "uasam_url" in refused:
        yield _skip_url("UASAM", "OTAS_UASAM_URL")
    else:
        uasam, project_id = check_uasam(config, config.sdk_key, wait)
        yield uasam
        if project_id and config.project_id and project_id != config.project_id:
            yield Check(
                True,
                f"OTAS_PROJECT_ID is {config.project_id} but the key belongs to {project_id}; "
                "Brain files events under the key's project",
                True,
            )
    if "brain_url" in refused:
        yield _skip_url("Brain", "OTAS_BRAIN_URL")
    else:
        yield check_brain(config, config.sdk_key, wait)


def _skip(text: str) -> Check:
    return Check(True, text, skipped=True)


def _skip_url(service: str, variable: str) -> Check:
    return _skip(
        f"{service} not checked: {variable} above is refused, and the default is not used "
        "in its place"
    )


def run(args: argparse.Namespace) -> int:
    if args.timeout is not None and not 0 < args.timeout <= 600:
        print("error: --timeout must be more than 0 and at most 600 seconds", file=sys.stderr)
        return 2
    paint = _output.Painter(_output.wants_colour(sys.stdout))

    def show(check: Check) -> None:
        if check.skipped:
            mark = paint("SKIP", "dim")
        elif check.warning:
            mark = paint("WARN", "yellow")
        else:
            mark = paint("PASS", "green") if check.ok else paint("FAIL", "red")
        # Servers' answers (a project name, an error) are shown as text, not obeyed.
        print(f"  {mark}  {_output.printable(check.text)}", flush=True)

    config, parsed = load(os.environ)
    if config is not None:
        print("Effective configuration (secrets masked):")
        print(describe(config, os.environ))
    print("\nChecks:")
    failed = 0
    for check in parsed:
        show(check)
        failed += not check.ok
    if config is not None:
        for check in network_checks(config, args.timeout):
            show(check)
            failed += not check.ok
    print("\nAll checks passed." if not failed else f"\n{failed} check(s) failed.")
    return 1 if failed else 0
