"""Checking agent session tokens before an event is shipped.

Brain refuses an event whose session JWT is malformed, expired, or lacks the
``agent_session_id`` or ``agent_id`` claim, and retrying cannot help. Only OTAS holds
the signing secret, so the SDK cannot verify the signature; it decodes the claims
without verification to catch the refusals it can foresee, saving Brain a round trip
and the user a confusing failure count.

Results are cached per token because an agent sends the same token on every request of
its session. The token comes from the agent, so it is hostile input: the cache is shared
by the sender threads and bounded in bytes (not in entries: one junk token may weigh
hundreds of kilobytes), oversized tokens are never cached, and claims of the wrong type
or absurd size are a reason to skip the event, never an exception.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict

import jwt

from ..contract import REQUIRED_TOKEN_CLAIMS as REQUIRED_CLAIMS

# A session JWT with the claims OTAS issues is about 250 bytes; one this large is junk,
# checked every time it comes rather than allowed to crowd the cache.
MAX_CACHED_TOKEN = 4096
DEFAULT_CACHE_BYTES = 1024 * 1024
# What a cache entry costs beside the token's characters: the str object, the result
# tuple and the OrderedDict's links, rounded up.
_ENTRY_OVERHEAD = 200


class TokenChecker:
    """``problem(token)`` says why Brain would refuse ``token``, or ``None`` if it would not.

    Thread-safe; one checker serves every sender thread. The cache keeps the most
    recently used results within ``max_bytes``.
    """

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self._max_bytes = max_bytes
        self._bytes = 0
        self._lock = threading.Lock()
        # token -> (problem, expiry); expiry is re-checked on every use.
        self._cache: OrderedDict[str, tuple[str | None, float | None]] = OrderedDict()

    @property
    def cached_bytes(self) -> int:
        """What the cache holds now, by its own accounting."""
        return self._bytes

    def problem(self, token: str, now: float | None = None) -> str | None:
        with self._lock:
            cached = self._cache.get(token)
            if cached is not None:
                self._cache.move_to_end(token)
        if cached is None:
            cached = inspect_token(token)  # outside the lock: decoding may take a while
            if len(token) <= MAX_CACHED_TOKEN:
                self._remember(token, cached)
        problem, expires = cached
        if problem is None and expires is not None:
            if (time.time() if now is None else now) >= expires:
                return "token_expired"
        return problem

    def _remember(self, token: str, result: tuple[str | None, float | None]) -> None:
        cost = len(token) + _ENTRY_OVERHEAD
        with self._lock:
            if token in self._cache:
                return
            self._cache[token] = result
            self._bytes += cost
            while self._bytes > self._max_bytes and self._cache:
                old, _ = self._cache.popitem(last=False)
                self._bytes -= len(old) + _ENTRY_OVERHEAD


def inspect_token(token: str) -> tuple[str | None, float | None]:
    """(problem, expiry) of a token, from its unverified claims. Never raises."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False, "verify_exp": False})
    except Exception:  # PyJWTError, and whatever a hostile payload makes json raise
        return "token_malformed", None
    if not isinstance(claims, dict) or any(not claims.get(c) for c in REQUIRED_CLAIMS):
        return "token_missing_claims", None
    expires = claims.get("exp")
    if expires is None:
        return None, None
    if isinstance(expires, bool) or not isinstance(expires, (int, float)):
        return "token_malformed", None
    try:
        expiry = float(expires)  # an int of 400 digits overflows a float
    except OverflowError:
        return "token_malformed", None
    if not math.isfinite(expiry):  # "exp": 1e400 decodes as infinity
        return "token_malformed", None
    return None, expiry
