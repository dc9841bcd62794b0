"""Who the emulated OTAS knows: SDK keys, agent keys, and the secret that signs sessions.

UASAM issues agent-session tokens and checks SDK keys; Brain asks it about the key of
every log call. Both endpoints (:mod:`.uasam`, :mod:`.brain`) read this one registry,
which tests change while requests are in flight, hence the lock.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Mapping
from typing import Any

import jwt

from ..contract import REQUIRED_TOKEN_CLAIMS

DEMO_SECRET = "otas-local-collector-demo-signing-secret"
DEMO_SDK_KEY = "otas_demo_localcollectorkey"
DEMO_PROJECT_ID = "00000000-0000-4000-8000-000000000001"
DEMO_AGENT_KEY = "otas_agent_localcollectoragentkey"
DEMO_AGENT_ID = "00000000-0000-4000-8000-000000000002"

TOKEN_LIFETIME = 30 * 24 * 3600.0  # what the public UASAM issues


class Keys:
    """SDK key -> project id, agent key -> agent id, and the session-token secret.

    ``uasam_up`` False makes every SDK key unknown to Brain, as while UASAM is down.
    """

    def __init__(
        self,
        secret: str,
        sdk_keys: Mapping[str, str] | None,
        agent_keys: Mapping[str, str] | None,
    ) -> None:
        self._secret = secret
        self._lock = threading.Lock()
        self._initial_sdk_keys = (
            dict(sdk_keys) if sdk_keys is not None else {DEMO_SDK_KEY: DEMO_PROJECT_ID}
        )
        self._sdk_keys = dict(self._initial_sdk_keys)
        self._agent_keys = (
            dict(agent_keys) if agent_keys is not None else {DEMO_AGENT_KEY: DEMO_AGENT_ID}
        )
        self.uasam_up = True

    def add_sdk_key(self, key: str, project_id: str) -> None:
        with self._lock:
            self._sdk_keys[key] = project_id

    def remove_sdk_key(self, key: str) -> None:
        with self._lock:
            self._sdk_keys.pop(key, None)

    def reset(self) -> None:
        """Back to the SDK keys given at construction."""
        with self._lock:
            self._sdk_keys = dict(self._initial_sdk_keys)

    def project_of(self, sdk_key: str) -> str | None:
        """The project an SDK key belongs to; None if UASAM does not know it."""
        with self._lock:
            return self._sdk_keys.get(sdk_key)

    def agent_of(self, agent_key: str) -> str | None:
        with self._lock:
            return self._agent_keys.get(agent_key)

    def issue_token(
        self,
        *,
        agent_id: str = DEMO_AGENT_ID,
        agent_session_id: str | None = None,
        expires_in: float = TOKEN_LIFETIME,
        **extra_claims: Any,
    ) -> str:
        """Mint a session JWT as UASAM would; a negative ``expires_in`` gives an expired one."""
        now = time.time()
        claims: dict[str, Any] = {
            "agent_session_id": str(uuid.uuid4()) if agent_session_id is None else agent_session_id,
            "agent_id": agent_id,
            "iat": int(now),
            "exp": int(now + expires_in),
        }
        claims.update(extra_claims)
        return jwt.encode(claims, self._secret, algorithm="HS256")

    def verify_token(self, token: str) -> dict[str, Any] | None:
        """The claims of a valid session token; None for any other."""
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._secret,
                algorithms=["HS256"],
                options={"require": list(REQUIRED_TOKEN_CLAIMS)},
            )
        except (jwt.PyJWTError, ValueError):
            return None
        return claims
