"""The OTAS contract: every name, path and limit the SDK shares with the OTAS servers.

One home for the facts in ``otas-contract.md`` that code depends on, so that the
middleware, the event builder, the sender, the local collector and the tests all read
them from the same place. Nothing here does anything; it only names things.
"""

from __future__ import annotations

# -- HTTP names -------------------------------------------------------------------------

SDK_KEY_HEADER = "X-OTAS-SDK-KEY"
SESSION_TOKEN_HEADER = "X-OTAS-AGENT-SESSION-TOKEN"
AGENT_KEY_HEADER = "X-OTAS-AGENT-KEY"
# The session token as a PEP 3333 environ key.
SESSION_TOKEN_ENVIRON = "HTTP_" + SESSION_TOKEN_HEADER.upper().replace("-", "_")

# -- endpoints (relative to a service's base URL) ---------------------------------------

SDK_LOG_PATH = "/api/v1/backend/log/sdk/"  # Brain; the trailing slash is required
AUTHENTICATE_PATH = "/api/project/v1/sdk/backend/key/authenticate/"  # UASAM
SESSION_CREATE_PATH = "/api/agent/v1/session/create/"  # UASAM

DEFAULT_BRAIN_URL = "http://localhost:8002"
DEFAULT_UASAM_URL = "http://localhost:8000"

# -- the SDK key ------------------------------------------------------------------------

SDK_KEY_PREFIX = "otas"


def is_sdk_key(key: str) -> bool:
    """Whether UASAM accepts the format of ``key``.

    UASAM's only check is that ``key.split("_", 2)`` gives three parts. Its random
    prefix and secret come from ``secrets.token_urlsafe`` and may themselves contain
    ``_``, so nothing stricter may be asked of a key.
    """
    return len(key.split("_", 2)) == 3


# -- the session token ------------------------------------------------------------------

REQUIRED_TOKEN_CLAIMS = ("agent_session_id", "agent_id")

# -- the log event ----------------------------------------------------------------------

REQUIRED_FIELDS = ("project_id", "path", "method", "status_code", "latency_ms")
# Fields Brain stores in text columns (as ``str()`` of whatever is sent).
TEXT_FIELDS = (
    "path",
    "method",
    "request_headers",
    "request_body",
    "query_params",
    "post_data",
    "response_headers",
    "response_body",
    "request_content_type",
    "response_content_type",
    "error",
)
SIZE_FIELDS = ("request_size_bytes", "response_size_bytes")
JSON_OBJECT_FIELDS = ("custom_properties", "metadata")
METHOD_LIMIT = 20  # characters
CONTENT_TYPE_LIMIT = 255  # characters
# Brain's btree index on path holds about 2,700 bytes after compression; longer paths
# fail with 500 event_capture_failed on every retry. 2,048 bytes is safe.
PATH_LIMIT = 2048  # bytes of UTF-8
PATH_INDEX_BYTES = 2700  # about where Brain's index refuses a path (bytes of UTF-8)
MAX_REQUEST_BYTES = 2_621_440  # Brain refuses larger bodies with an HTML 400
MAX_INTEGER = 2**63 - 1  # no integer column holds more

# -- Brain's answers --------------------------------------------------------------------

EVENT_CAPTURED = "event_captured"
MISSING_SDK_KEY = "missing_sdk_key"
INVALID_SDK_KEY = "invalid_sdk_key"
MISSING_SESSION_TOKEN = "missing_agent_session_token"
INVALID_SESSION_TOKEN = "invalid_or_expired_token"
INVALID_JSON = "invalid_json"
MISSING_REQUIRED_FIELDS = "missing_required_fields"
EVENT_CAPTURE_FAILED = "event_capture_failed"

# -- logging ----------------------------------------------------------------------------

LOGGER_NAME = "otas_capture"
