"""The built-in sensitive names: the one list of them, read by the rule and by the settings.

Headers on this list are redacted whatever their name's words say (not all of them are
compounds the rule reads as credentials: "Cookie" is, "Ocp-Apim-Subscription-Key" is not;
keeping the list explicit documents it and guards it). The field names are what the
``sensitive_fields`` setting starts from; the rule masks each of them by its words
already (``tests/test_redaction.py`` checks it), so they are examples, not a limit.
"""

from __future__ import annotations

from ...contract import AGENT_KEY_HEADER, SDK_KEY_HEADER, SESSION_TOKEN_HEADER

__all__ = ["BUILTIN_SENSITIVE_FIELDS", "BUILTIN_SENSITIVE_HEADERS", "REDACTED", "TOO_DEEP"]

REDACTED = "[REDACTED]"
TOO_DEEP = "[REDACTED: nested too deep to inspect]"

BUILTIN_SENSITIVE_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "authentication",
        "cookie",
        "set-cookie",
        "x-api-key",
        "api-key",
        "x-auth-token",
        "x-access-token",
        "x-csrf-token",
        "x-xsrf-token",
        "x-amz-security-token",
        "x-goog-api-key",
        "ocp-apim-subscription-key",
        SDK_KEY_HEADER.lower(),
        SESSION_TOKEN_HEADER.lower(),
        AGENT_KEY_HEADER.lower(),
    }
)

BUILTIN_SENSITIVE_FIELDS = frozenset(
    {
        "password",
        "passwd",
        "secret",
        "token",
        "api_key",
        "apikey",
        "access_token",
        "refresh_token",
        "authorization",
        "client_secret",
        "card_number",
        "cvv",
        "ssn",
    }
)
