"""A local stand-in for the OTAS servers, so the SDK can be tried without an account.

- :mod:`.app`: ``Collector``, the WSGI application answering like UASAM and Brain,
  with its control surface for tests (``fail_next``, ``uasam_up``, ``issue_token``).
  Extra routes and whole WSGI apps (a viewer) mount on it: ``add_route``, ``mount``.
- :mod:`.uasam`, :mod:`.brain`: the two emulated services' endpoints; :mod:`.keys`
  the keys and token secret they share; :mod:`.answers` how they word answers.
- :mod:`.hosts`: which ``Host`` names are answered (loopback, ``--allow-host``), so
  that no web page reaches the collector through DNS rebinding.
- :mod:`.events_api`: ``/collector/events``, the stored events one page at a time.
- :mod:`.rules`: what Brain's database makes of an event body (pure functions).
- :mod:`.emulation`: how the emulated Brain misbehaves right now (faults, outage,
  hangs, bounded capacity, latency), behind the switches ``Collector`` exposes;
  :mod:`.load` a Brain whose calls slow down as they pile up (``set_load``);
  :mod:`.control` the same switches over HTTP (``/collector/conditions``).
- :mod:`.store`: ``EventStore``, accepted events and answered calls in SQLite (in
  memory, or a file that survives restarts), bounded in count and bytes (oldest
  evicted), with the queries of :mod:`.queries` a viewer needs.
- :mod:`.server`: ``CollectorServer`` and ``serve()``, running it on loopback in a
  background thread (``AppServer`` for any WSGI app), with waitress when installed,
  else the standard library's ``wsgiref``.
- :mod:`.viewer`, :mod:`.browse`, :mod:`.export`: the live viewer's page and JSON,
  what it shows of an event, and an event as a cURL command or in a HAR file.
- :mod:`.web`: the request, response and error types the collector, its viewer and
  the demo app are written with, on the standard library.
- :mod:`.cli`: ``python -m otas_capture.collector`` for humans, with the options of
  :mod:`.options` and the allocator setting of :mod:`.memory`.

Runs on the package's own dependencies. The ``collector`` extra (waitress) gives the
server tests rely on: HTTP/1.1 keep-alive and chunked bodies. The standard-library
fallback, meant for the demo, closes the connection after each call.
"""

from __future__ import annotations

# Contract names re-exported for code written against the old single module.
from ..contract import (
    AUTHENTICATE_PATH,
    MAX_REQUEST_BYTES,
    REQUIRED_FIELDS,
    SDK_LOG_PATH,
    SESSION_CREATE_PATH,
)
from .app import (
    DEMO_AGENT_ID,
    DEMO_AGENT_KEY,
    DEMO_PROJECT_ID,
    DEMO_SDK_KEY,
    DEMO_SECRET,
    EVENTS_PATH,
    TOKEN_LIFETIME,
    Collector,
)
from .cli import main
from .server import CollectorServer, serve
from .store import EventStore

__all__ = [
    "AUTHENTICATE_PATH",
    "DEMO_AGENT_ID",
    "DEMO_AGENT_KEY",
    "DEMO_PROJECT_ID",
    "DEMO_SDK_KEY",
    "DEMO_SECRET",
    "EVENTS_PATH",
    "MAX_REQUEST_BYTES",
    "REQUIRED_FIELDS",
    "SDK_LOG_PATH",
    "SESSION_CREATE_PATH",
    "TOKEN_LIFETIME",
    "Collector",
    "CollectorServer",
    "EventStore",
    "main",
    "serve",
]
