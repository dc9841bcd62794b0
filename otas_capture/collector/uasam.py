"""The emulated UASAM: SDK-key authentication and agent-session creation.

Answers as the public UASAM does (status codes, bodies, the order of its checks), as
written down in the OTAS contract; hangs while the ``uasam_hang`` switch is on and
answers 503 while ``Keys.uasam_up`` is False.
"""

from __future__ import annotations

import json

from ..contract import (
    AGENT_KEY_HEADER,
    INVALID_JSON,
    MAX_REQUEST_BYTES,
    SDK_KEY_HEADER,
    SESSION_TOKEN_HEADER,
    is_sdk_key,
)
from .answers import SERVICE_UNAVAILABLE, failure, html_error, json_response
from .emulation import BrainConditions
from .keys import Keys
from .web import Request, Response


class Uasam:
    """UASAM's two endpoints the SDK and agents use, over one key registry."""

    def __init__(self, keys: Keys, conditions: BrainConditions) -> None:
        self._keys = keys
        self._conditions = conditions

    def authenticate(self, request: Request) -> Response:
        self._conditions.uasam_hang.wait()
        if not self._keys.uasam_up:
            return failure(503, SERVICE_UNAVAILABLE)
        key = request.headers.get(SDK_KEY_HEADER)
        if not key:
            return json_response(401, {"error": "SDK Key missing"})
        if not is_sdk_key(key):
            return json_response(403, {"error": "Invalid Key Format"})
        project_id = self._keys.project_of(key)
        if project_id is None:
            return json_response(403, {"error": "Invalid SDK Key"})
        project = {
            "id": project_id,
            "name": "Local collector project",
            "description": "Served by otas_capture.collector for local testing.",
        }
        return json_response(
            200,
            {"status": 1, "status_description": "authenticated", "response": {"project": project}},
        )

    def create_session(self, request: Request) -> Response:
        self._conditions.uasam_hang.wait()
        if not self._keys.uasam_up:
            return failure(503, SERVICE_UNAVAILABLE)
        agent_key = request.headers.get(AGENT_KEY_HEADER)
        if not agent_key:
            return failure(401, "missing_agent_key")
        agent_id = self._keys.agent_of(agent_key)
        if agent_id is None:
            return failure(401, "invalid_agent_key")
        raw = request.get_data(MAX_REQUEST_BYTES)
        if raw is None:
            return html_error(400)
        try:
            json.loads(raw.decode("utf-8"))
        except (ValueError, RecursionError):
            return failure(400, INVALID_JSON)
        token = self._keys.issue_token(agent_id=agent_id)
        return json_response(
            200,
            {
                "status": 1,
                "status_description": "agent_session_created",
                "response": {"Header_value": SESSION_TOKEN_HEADER, "jwt_token": token},
            },
        )
