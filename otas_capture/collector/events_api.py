"""``/collector/events``: the accepted events for scripts and tests, one page at a time.

``GET /collector/events`` answers a JSON list of events, oldest first, at most
``limit`` of them (:data:`DEFAULT_PAGE`, up to :data:`MAX_PAGE`) and at most
:data:`PAGE_BYTES` of JSON (but at least one event), starting after the id given as
``after``. When more follow, a ``Link: <...>; rel="next"`` header gives the next page's
address, as GitHub's API does; ``X-Total-Count`` is how many events are stored and
``X-Evicted-Count`` how many of the oldest the bounded store dropped.
``DELETE /collector/events`` forgets them all.
"""

from __future__ import annotations

from typing import Callable
from urllib.parse import urlencode

from .answers import json_response
from .store import EventStore
from .web import Request, Response, int_arg

EVENTS_PATH = "/collector/events"

DEFAULT_PAGE = 100
MAX_PAGE = 1000
PAGE_BYTES = 16 * 1024 * 1024


def list_events(store: EventStore) -> Callable[[Request], Response]:
    """The ``GET`` handler over ``store``."""

    def handler(request: Request) -> Response:
        after = int_arg(request, "after", 0, 0, 2**63)
        limit = int_arg(request, "limit", DEFAULT_PAGE, 1, MAX_PAGE)
        if after is None or limit is None:
            return json_response(
                400, {"error": f"after must be an event id, limit a number from 1 to {MAX_PAGE}"}
            )
        events = store.page(after, limit, PAGE_BYTES)
        stats = store.stats()
        headers = {
            "X-Total-Count": str(stats["events"]),
            "X-Evicted-Count": str(stats["evicted"]),
        }
        if events and events[-1]["_id"] < store.last_id():
            query = urlencode({"after": events[-1]["_id"], "limit": limit})
            headers["Link"] = f'<{EVENTS_PATH}?{query}>; rel="next"'
        return json_response(200, events, headers)

    return handler


def clear_events(clear: Callable[[], None]) -> Callable[[Request], Response]:
    """The ``DELETE`` handler: calls ``clear``."""

    def handler(request: Request) -> Response:
        clear()
        return Response(status=204, mimetype=None)

    return handler
