"""The one call to UASAM: which project the SDK key belongs to."""

from __future__ import annotations

import uuid

from .._version import __version__
from ..config import Config
from ..contract import AUTHENTICATE_PATH, SDK_KEY_HEADER
from .answers import parse_answer
from .route import Routes

__all__ = ["USER_AGENT", "authenticate"]

USER_AGENT = f"otas-capture/{__version__}"


def authenticate(config: Config, routes: Routes) -> uuid.UUID | str:
    """The project UUID for the SDK key, or a sentence saying why UASAM did not give it."""
    fixed = {SDK_KEY_HEADER: config.sdk_key or "", "User-Agent": USER_AGENT}
    try:
        conn = routes.connection(config.uasam_url, AUTHENTICATE_PATH, fixed, config.timeout)
        try:
            response = conn.post(b"")
        finally:
            conn.close()
    except (OSError, ValueError) as exc:  # ValueError: a URL or key that cannot be sent
        return f"UASAM is unreachable ({type(exc).__name__})"
    answer = parse_answer(response.body)
    if response.status != 200:
        why = answer.get("error") or answer.get("status_description") or "no reason given"
        return f"UASAM answered HTTP {response.status} ({why})"
    try:
        return uuid.UUID(str(answer["response"]["project"]["id"]))
    except (KeyError, TypeError, ValueError):
        return "UASAM's answer has no project id"
