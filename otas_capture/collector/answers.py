"""How the emulated OTAS services word their answers: JSON bodies and Django's HTML pages.

Shared by the UASAM and Brain endpoints (:mod:`.uasam`, :mod:`.brain`) and the
collector's own routes, so that every answer of one kind is built in one place.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..contract import EVENT_CAPTURE_FAILED, INVALID_JSON, INVALID_SDK_KEY
from .emulation import Answer
from .web import Response, status_phrase

# What an overloaded OTAS service answers (emulated when a service is down).
SERVICE_UNAVAILABLE = "service_unavailable"

# fail_next() statuses whose natural description is not just the HTTP phrase.
_FAULT_DESCRIPTIONS = {400: INVALID_JSON, 401: INVALID_SDK_KEY, 500: EVENT_CAPTURE_FAILED}


def json_response(status: int, payload: Any, headers: Mapping[str, str] | None = None) -> Response:
    """A JSON response, as both OTAS services send them."""
    return Response(json.dumps(payload), status, mimetype="application/json", headers=headers)


def failure(status: int, description: str, **extra: Any) -> Response:
    """The services' failure body: ``status`` 0 and a ``status_description``."""
    return json_response(status, {"status": 0, "status_description": description, **extra})


def html_error(status: int) -> Response:
    """Django's production error page: SDKs must cope with a body that is not JSON."""
    title = f"{status_phrase(status, 'Error')} ({status})"
    page = (
        f'<!doctype html>\n<html lang="en">\n<head>\n  <title>{title}</title>\n</head>\n'
        f"<body>\n  <h1>{title}</h1><p></p>\n</body>\n</html>\n"
    )
    return Response(page, status, mimetype="text/html")


def canned(status: int, body: dict[str, Any] | None, retry_after: str | None) -> Answer:
    """The answer a ``fail_next`` fault or an outage gives; a body named after the status
    when none is given."""
    if body is None:
        phrase = status_phrase(status, "error").lower().replace(" ", "_")
        body = {"status": 0, "status_description": _FAULT_DESCRIPTIONS.get(status, phrase)}
    return Answer(status, body, retry_after)


def answer_response(answer: Answer) -> Response:
    """A canned answer as a response."""
    headers = {"Retry-After": answer.retry_after} if answer.retry_after else None
    return json_response(answer.status, answer.body, headers)


def description_of(response: Response) -> str:
    """What a log call's answer said: its ``status_description``, or ``"html"``."""
    if response.mimetype != "application/json":
        return "html"
    payload = json.loads(response.get_data())
    return str(payload.get("status_description", "")) if isinstance(payload, dict) else ""
