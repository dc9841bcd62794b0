"""The live viewer: a page at ``/`` and the JSON endpoints it reads, mounted on a Collector.

A developer trying the SDK wants to see what their backend would send to OTAS: which
calls, in which order, with which headers and bodies, masked how. :func:`mount_viewer`
adds to a :class:`~otas_capture.collector.Collector`:

=====================================  ==================================================
``GET /``                              the page (``static/index.html``)
``GET /viewer/app.js``, ``util.js``   its scripts and style (``app.css``); no build
                                       step, no CDN
``GET /viewer/api/events``             summaries, newest first; filters ``session``,
                                       ``agent``, ``status`` (``4xx``), ``q`` (text in
                                       path, query, headers, bodies), ``path``, ``env``;
                                       ``after`` (an id: only newer ones), ``limit``;
                                       with the store's counts (``evicted``...)
``GET /viewer/api/event?id=N``         one event in full
``GET /viewer/api/curl?id=N``          the event as a curl command line
``GET /viewer/api/har?FILTERS``        a HAR file of the events the filters list
``GET /viewer/api/sessions``           agent sessions, latest first
``GET /viewer/api/session?id=S``       one session's calls in order, on a timeline
=====================================  ==================================================

The page's "clear" button uses the collector's own ``DELETE /collector/events``.

The page polls ``/viewer/api/events?after=<newest id it has>`` every second, so it
updates by itself without holding a server thread per open tab. Event content is
untrusted: the page only ever puts it in the document as text, and the page is served
with a Content-Security-Policy that allows no inline script, as a second line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from . import browse, export
from .answers import json_response
from .app import Collector
from .web import Request, Response, int_arg

STATIC = Path(__file__).resolve().parent / "static"

API = "/viewer/api"
EVENTS_API = API + "/events"
EVENT_API = API + "/event"
SESSIONS_API = API + "/sessions"
SESSION_API = API + "/session"
CURL_API = API + "/curl"
HAR_API = API + "/har"

DEFAULT_LIMIT = 500
MAX_LIMIT = 5000
# Events read for one answer: summaries are small, but events each up to 2.5 MiB.
READ_BYTES = 32 * 1024 * 1024
HAR_LIMIT = 1000

# No inline script or style, nothing from elsewhere: even if some event text were ever
# put in the page as markup, the browser would refuse to run it.
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

_STATIC_FILES = {
    "/": ("index.html", "text/html"),
    "/viewer/util.js": ("util.js", "text/javascript"),
    "/viewer/app.js": ("app.js", "text/javascript"),
    "/viewer/app.css": ("app.css", "text/css"),
}


def _static(name: str, mimetype: str) -> Callable[[Request], Response]:
    def handler(request: Request) -> Response:
        # Read on each request: cheap, and an edited file shows on reload.
        body = (STATIC / name).read_bytes()
        return Response(body, mimetype=mimetype, headers=_PAGE_HEADERS)

    return handler


def _bad_request(message: str) -> Response:
    return json_response(400, {"error": message})


def filters_from(request: Request) -> browse.Filters | None:
    """The filters in a request's query string, or None if one is not understood."""
    status = request.args.get("status", "")
    if status and status not in browse.STATUS_CLASSES:
        return None
    return browse.Filters(
        session=request.args.get("session", "").strip(),
        agent=request.args.get("agent", "").strip(),
        status=status,
        text=request.args.get("q", "").strip(),
        path=request.args.get("path", "").strip(),
        environment=request.args.get("env", "").strip(),
    )


class Viewer:
    """The viewer's handlers, reading the store of one collector."""

    def __init__(self, collector: Collector) -> None:
        self.collector = collector

    def events(self, request: Request) -> Response:
        filters = filters_from(request)
        if filters is None:
            return _bad_request(f"status must be one of {', '.join(browse.STATUS_CLASSES)}")
        after = int_arg(request, "after", 0, 0, 2**63)
        limit = int_arg(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        if after is None or limit is None:
            return _bad_request(f"after must be an id, limit a number from 1 to {MAX_LIMIT}")
        store = self.collector.store
        # Read the newest id first: an event stored in between is then listed now or
        # on the next poll, never skipped.
        latest = store.last_id()
        found = store.list_events(
            **filters.query(), after_id=after or None, limit=limit, max_bytes=READ_BYTES
        )
        rows = [browse.summary(event) for event in found if event["_id"] <= latest]
        stats = store.stats()
        # ``latest`` lets the page ask only for newer events next time, and notice a
        # collector restarted without its database (latest below what it has seen).
        return json_response(
            200,
            {
                "events": rows,
                "latest": latest,
                "total": stats["events"],
                "evicted": stats["evicted"],
                "max_events": stats["max_events"],
                "max_bytes": stats["max_bytes"],
            },
        )

    def event(self, request: Request) -> Response:
        event_id = int_arg(request, "id", 0, 1, 2**63)
        if not event_id:
            return _bad_request("id must be an event id")
        event = self.collector.store.get_event(event_id)
        if event is None:
            return json_response(404, {"error": f"no event {event_id}"})
        return json_response(200, browse.detail(event))

    def curl(self, request: Request) -> Response:
        event_id = int_arg(request, "id", 0, 1, 2**63)
        event = self.collector.store.get_event(event_id) if event_id else None
        if event is None:
            return json_response(404, {"error": "no such event"})
        return json_response(
            200, {"curl": export.curl_command(event), "masked": browse.masked_fields(event)}
        )

    def har(self, request: Request) -> Response:
        filters = filters_from(request)
        if filters is None:
            return _bad_request(f"status must be one of {', '.join(browse.STATUS_CLASSES)}")
        found = self.collector.store.list_events(
            **filters.query(), limit=HAR_LIMIT, max_bytes=READ_BYTES
        )
        found.reverse()  # a HAR lists calls in the order they were made
        name = f"session-{filters.session[:36]}" if filters.session else "events"
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
        return json_response(
            200,
            export.har_log(found),
            {"Content-Disposition": f'attachment; filename="otas-capture-{safe}.har"'},
        )

    def sessions(self, request: Request) -> Response:
        limit = int_arg(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        if limit is None:
            return _bad_request(f"limit must be a number from 1 to {MAX_LIMIT}")
        agent = request.args.get("agent", "").strip() or None
        sessions = self.collector.store.sessions(agent_id=agent, limit=limit)
        for session in sessions:
            session["session_label"] = browse.short_id(str(session["agent_session_id"]))
            session["agent_label"] = browse.short_id(str(session["agent_id"] or ""))
        return json_response(200, {"sessions": sessions})

    def session(self, request: Request) -> Response:
        session_id = request.args.get("id", "")
        timeline = browse.session_timeline(self.collector.store.session_events(session_id))
        if timeline is None:
            return json_response(404, {"error": "no events in that session"})
        return json_response(200, timeline)


def mount_viewer(collector: Collector) -> Viewer:
    """Serve the viewer page and its JSON endpoints from ``collector``; returns the Viewer."""
    viewer = Viewer(collector)
    for path, (name, mimetype) in _STATIC_FILES.items():
        collector.add_route(path, "GET", _static(name, mimetype))
    collector.add_route(EVENTS_API, "GET", viewer.events)
    collector.add_route(EVENT_API, "GET", viewer.event)
    collector.add_route(SESSIONS_API, "GET", viewer.sessions)
    collector.add_route(SESSION_API, "GET", viewer.session)
    collector.add_route(CURL_API, "GET", viewer.curl)
    collector.add_route(HAR_API, "GET", viewer.har)
    return viewer
