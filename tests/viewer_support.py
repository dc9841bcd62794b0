"""Helpers for the viewer, CLI and browser tests: a collector with the viewer mounted,
and events shipped to it over HTTP exactly as the SDK ships them."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import requests

from otas_capture.collector import DEMO_PROJECT_ID, DEMO_SDK_KEY, Collector, CollectorServer
from otas_capture.collector.viewer import mount_viewer
from otas_capture.contract import SDK_KEY_HEADER, SDK_LOG_PATH, SESSION_TOKEN_HEADER

AGENT_A = "aaaaaaaa-0000-4000-8000-000000000001"
AGENT_B = "bbbbbbbb-0000-4000-8000-000000000002"
T0 = datetime(2026, 11, 26, 12, 0, 0, tzinfo=timezone.utc)


def start_viewer_server() -> CollectorServer:
    collector = Collector()
    mount_viewer(collector)
    return CollectorServer(collector).start()


class Agent:
    """One agent session: ships events to the collector's Brain endpoint with its token."""

    def __init__(self, server: CollectorServer, agent_id: str = AGENT_A) -> None:
        self.server = server
        self.agent_id = agent_id
        self.session_id = str(uuid.uuid4())
        self.token = server.collector.issue_token(
            agent_id=agent_id, agent_session_id=self.session_id
        )
        self.calls = 0

    def ship(
        self,
        method: str = "GET",
        path: str = "/api/items",
        status: int = 200,
        *,
        latency_ms: float = 12.5,
        at_ms: float | None = None,
        **fields: Any,
    ) -> None:
        """Ship one event as the SDK does; ``at_ms`` is when it started after T0."""
        started = T0 + timedelta(milliseconds=at_ms if at_ms is not None else self.calls * 100)
        self.calls += 1
        body: dict[str, Any] = {
            "project_id": DEMO_PROJECT_ID,
            "path": path,
            "method": method,
            "status_code": status,
            "latency_ms": latency_ms,
            "request_size_bytes": 10,
            "response_size_bytes": 20,
            "request_headers": json.dumps({"Host": "shop", SESSION_TOKEN_HEADER: "[REDACTED]"}),
            "response_headers": json.dumps({"Content-Type": "application/json"}),
            "request_body": "",
            "response_body": "",
            "custom_properties": {},
            "error": "" if status < 400 else f"{status} error",
            "metadata": {"sdk": "otas-capture", "started_at": started.isoformat()},
        }
        body.update(fields)
        response = requests.post(
            self.server.url + SDK_LOG_PATH,
            headers={SDK_KEY_HEADER: DEMO_SDK_KEY, SESSION_TOKEN_HEADER: self.token},
            json=body,
            timeout=5,
        )
        assert response.status_code == 201, response.text
