"""Specification of the session-token check: foresee what Brain would refuse, nothing more."""

from __future__ import annotations

import base64
import threading
import time

import jwt
import pytest

from otas_capture.otas.tokens import REQUIRED_CLAIMS, TokenChecker, inspect_token

SECRET = "x" * 32
NOW = 1_700_000_000


def make_token(secret: str = SECRET, **claims) -> str:
    return jwt.encode(claims, secret, algorithm="HS256")


def session_token(**overrides) -> str:
    claims = {
        "agent_session_id": "sess-1",
        "agent_id": "agent-1",
        "iat": NOW,
        "exp": NOW + 30 * 24 * 3600,
    }
    claims.update(overrides)
    claims = {k: v for k, v in claims.items() if v is not None}
    return make_token(**claims)


@pytest.fixture
def checker() -> TokenChecker:
    return TokenChecker()


def test_the_required_claims_are_the_session_and_the_agent():
    assert set(REQUIRED_CLAIMS) == {"agent_session_id", "agent_id"}


def test_a_valid_token_has_no_problem(checker):
    assert checker.problem(session_token(), now=NOW) is None


def test_a_valid_token_checked_against_the_real_clock_has_no_problem(checker):
    token = session_token(iat=int(time.time()), exp=int(time.time()) + 3600)
    assert checker.problem(token) is None


def test_a_token_without_an_expiry_has_no_problem(checker):
    assert checker.problem(session_token(exp=None), now=NOW) is None


def test_a_token_signed_with_an_unknown_secret_is_still_accepted(checker):
    # Only OTAS holds the signing secret: the SDK cannot verify signatures, so it must not try.
    token = jwt.encode(
        {"agent_session_id": "s", "agent_id": "a", "exp": NOW + 60}, "y" * 32, algorithm="HS256"
    )
    assert checker.problem(token, now=NOW) is None


def test_an_expired_token_is_refused_as_expired(checker):
    assert checker.problem(session_token(exp=NOW - 1), now=NOW) == "token_expired"


def test_a_token_expires_at_exactly_its_exp(checker):
    assert checker.problem(session_token(exp=NOW), now=NOW) == "token_expired"


def test_a_token_expired_by_the_real_clock_is_refused(checker):
    assert checker.problem(session_token(exp=int(time.time()) - 10)) == "token_expired"


def test_a_cached_token_is_refused_once_it_expires(checker):
    token = session_token(exp=NOW + 60)
    assert checker.problem(token, now=NOW) is None
    assert checker.problem(token, now=NOW + 59) is None
    assert checker.problem(token, now=NOW + 60) == "token_expired"
    assert checker.problem(token, now=NOW + 3600) == "token_expired"


def test_a_float_expiry_is_honoured(checker):
    token = session_token(exp=NOW + 0.5)
    assert checker.problem(token, now=NOW) is None
    assert checker.problem(token, now=NOW + 1) == "token_expired"


@pytest.mark.parametrize("missing", ["agent_session_id", "agent_id"])
def test_a_token_missing_a_required_claim_is_refused(checker, missing):
    assert checker.problem(session_token(**{missing: None}), now=NOW) == "token_missing_claims"


def test_a_token_missing_both_claims_is_refused(checker):
    assert checker.problem(make_token(exp=NOW + 60), now=NOW) == "token_missing_claims"


@pytest.mark.parametrize("missing", ["agent_session_id", "agent_id"])
def test_a_missing_claim_is_reported_even_on_an_expired_token(checker, missing):
    token = session_token(exp=NOW - 60, **{missing: None})
    assert checker.problem(token, now=NOW) == "token_missing_claims"


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        "",
        "a.b.c",
        "not.a.jwt.at.all",
        "eyJhbGciOiJIUzI1NiJ9.bm90IGpzb24.sig",
        "Bearer " + jwt.encode({"agent_session_id": "s", "agent_id": "a"}, SECRET, "HS256"),
    ],
)
def test_a_token_that_is_not_a_jwt_is_malformed(checker, token):
    assert checker.problem(token, now=NOW) == "token_malformed"


@pytest.mark.parametrize("exp", ["tomorrow", "", [1], {"at": 1}, True])
def test_a_token_with_a_non_numeric_expiry_is_malformed(checker, exp):
    assert checker.problem(session_token(exp=exp), now=NOW) == "token_malformed"


def test_a_malformed_answer_is_cached_and_stable(checker):
    assert checker.problem("garbage", now=NOW) == "token_malformed"
    assert checker.problem("garbage", now=NOW + 10**9) == "token_malformed"


def test_inspect_token_gives_the_problem_and_the_expiry():
    assert inspect_token(session_token(exp=NOW + 5)) == (None, float(NOW + 5))
    assert inspect_token(session_token(exp=None)) == (None, None)
    assert inspect_token("garbage") == ("token_malformed", None)
    assert inspect_token(session_token(agent_id=None)) == ("token_missing_claims", None)


def test_inspect_token_does_not_judge_expiry_itself():
    # Expiry depends on when the token is used, so it is left to TokenChecker.problem.
    assert inspect_token(session_token(exp=1)) == (None, 1.0)


def test_many_distinct_tokens_are_all_still_judged_correctly(checker):
    tokens = [session_token(agent_session_id=f"s{i}") for i in range(1100)]
    assert all(checker.problem(token, now=NOW) is None for token in tokens)
    assert checker.problem(session_token(exp=NOW - 1), now=NOW) == "token_expired"
    assert checker.problem(tokens[0], now=NOW) is None


def raw_token(payload: bytes) -> str:
    """A token whose claims segment is exactly ``payload``, signed with any key."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(b'{"alg":"HS256","typ":"JWT"}')
    return f"{header}.{b64(payload)}.{b64(b'sig')}"


@pytest.mark.parametrize(
    "payload",
    [
        b'{"agent_session_id": "s", "agent_id": "a", "exp": 1e400}',
        b'{"agent_session_id": "s", "agent_id": "a", "exp": -1e400}',
        b'{"agent_session_id": "s", "agent_id": "a", "exp": NaN}',
        b'{"agent_session_id": "s", "agent_id": "a", "exp": 1' + b"0" * 400 + b"}",
        b'{"agent_session_id": "s", "agent_id": "a", "exp": 1' + b"0" * 5000 + b"}",
        b'["agent_session_id", "agent_id"]',
        b'"a string"',
        b"12",
        b"null",
        b"[" * 100_000 + b"]" * 100_000,
    ],
)
def test_hostile_claims_are_a_reason_to_skip_never_an_error(checker, payload):
    assert checker.problem(raw_token(payload), now=NOW) == "token_malformed"


def test_the_cache_is_bounded_in_bytes_whatever_the_tokens_weigh():
    checker = TokenChecker(max_bytes=64 * 1024)
    for i in range(100):
        junk = session_token(agent_session_id=f"s{i}", padding="x" * 2000)
        assert checker.problem(junk, now=NOW) is None
        huge = session_token(agent_session_id=f"h{i}", padding="x" * 100_000)
        assert checker.problem(huge, now=NOW) is None
    assert 0 < checker.cached_bytes <= 64 * 1024


def test_one_checker_is_shared_safely_by_threads():
    checker = TokenChecker(max_bytes=16 * 1024)
    tokens = [session_token(agent_session_id=f"s{i}") for i in range(200)]
    expired = session_token(exp=NOW - 1)
    wrong: list[str] = []

    def use() -> None:
        for token in tokens:
            if checker.problem(token, now=NOW) is not None:
                wrong.append(token)
            if checker.problem(expired, now=NOW) != "token_expired":
                wrong.append(expired)

    threads = [threading.Thread(target=use) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == []
    assert checker.cached_bytes <= 16 * 1024
