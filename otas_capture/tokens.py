"""Checking agent session tokens before an event is shipped.

Brain refuses an event whose session JWT is malformed, expired, or lacks the
``agent_session_id`` or ``agent_id`` claim, and retrying cannot help. Only OTAS holds
the signing secret, so the SDK cannot verify the signature; it decodes the claims
without verification to catch the refusals it can foresee, saving Brain a round trip
and the user a confusing failure count. Results are cached per token because an agent
sends the same token on every request of its session.
"""

from __future__ import annotations

import time

import jwt

from .contract import REQUIRED_TOKEN_CLAIMS as REQUIRED_CLAIMS

_CACHE_LIMIT = 1024


class TokenChecker:
    """``problem(token)`` says why Brain would refuse ``token``, or ``None`` if it would not.

    Not thread-safe by design: each sender thread owns one.
    """

    def __init__(self) -> None:
        # token -> (problem, expiry); expiry is re-checked on every use.
        self._cache: dict[str, tuple[str | None, float | None]] = {}

    def problem(self, token: str, now: float | None = None) -> str | None:
        cached = self._cache.get(token)
        if cached is None:
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            cached = self._cache[token] = inspect_token(token)
        problem, expires = cached
        if problem is None and expires is not None:
            if (time.time() if now is None else now) >= expires:
                return "token_expired"
        return problem


def inspect_token(token: str) -> tuple[str | None, float | None]:
    """(problem, expiry) of a token, from its unverified claims."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False, "verify_exp": False})
    except jwt.PyJWTError:
        return "token_malformed", None
    if not isinstance(claims, dict) or any(not claims.get(c) for c in REQUIRED_CLAIMS):
        return "token_missing_claims", None
    expires = claims.get("exp")
    if expires is None:
        return None, None
    if isinstance(expires, bool) or not isinstance(expires, (int, float)):
        return "token_malformed", None
    return None, float(expires)
