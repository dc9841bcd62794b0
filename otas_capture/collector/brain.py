"""The emulated Brain's log endpoint: the conditions it meets, its checks, what it stores.

A log call first meets the emulated conditions (:class:`~.emulation.BrainConditions`:
faults, hang, outage, capacity, latency), then the checks of the public Brain in its
order, then the rules of its database (:mod:`.rules`); an accepted event goes to the
:class:`~.store.EventStore` with the fields the collector adds. Every answer is
recorded in the store's list of calls.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone

from ..contract import (
    EVENT_CAPTURE_FAILED,
    EVENT_CAPTURED,
    INVALID_JSON,
    INVALID_SDK_KEY,
    INVALID_SESSION_TOKEN,
    MAX_REQUEST_BYTES,
    MISSING_REQUIRED_FIELDS,
    MISSING_SDK_KEY,
    MISSING_SESSION_TOKEN,
    REQUIRED_FIELDS,
    SDK_KEY_HEADER,
    SESSION_TOKEN_HEADER,
)
from .answers import answer_response, description_of, failure, html_error, json_response
from .emulation import BrainConditions
from .keys import Keys
from .rules import database_refuses, stored_form
from .store import EventStore
from .web import Request, Response


class Brain:
    """Brain's log endpoint over a key registry, the emulated conditions and a store."""

    def __init__(self, keys: Keys, conditions: BrainConditions, store: EventStore) -> None:
        self._keys = keys
        self._conditions = conditions
        self.store = store

    def _record(self, response: Response) -> Response:
        self.store.record_call(response.status_code, description_of(response))
        return response

    def log_event(self, request: Request) -> Response:
        conditions = self._conditions
        with conditions.call():
            fault = conditions.next_fault()
            if fault is not None:
                # Sleep outside any lock so other requests and the test thread carry on.
                time.sleep(fault.delay)
                if fault.answer is not None:
                    return self._record(answer_response(fault.answer))
            conditions.brain_hang.wait()
            outage = conditions.outage
            if outage is not None:
                response = self._record(answer_response(outage))
            else:
                with conditions.worker():
                    conditions.uasam_hang.wait()  # Brain's key check asks UASAM
                    response = self._record(self._ingest(request))
            latency = conditions.latency
            if latency > 0:
                time.sleep(latency)
            return response

    def log_without_slash(self, request: Request) -> Response:
        # Django's APPEND_SLASH cannot redirect a POST and fails with a 500 page.
        return self._record(html_error(500))

    def _ingest(self, request: Request) -> Response:
        """The checks of the public Brain, in its order."""
        sdk_key = request.headers.get(SDK_KEY_HEADER)
        if not sdk_key:
            return failure(401, MISSING_SDK_KEY)
        project_id = self._keys.project_of(sdk_key)
        if project_id is None or not self._keys.uasam_up:
            return failure(401, INVALID_SDK_KEY)
        token = request.headers.get(SESSION_TOKEN_HEADER)
        if not token:
            return failure(401, MISSING_SESSION_TOKEN)
        claims = self._keys.verify_token(token.strip())
        if claims is None:
            return failure(401, INVALID_SESSION_TOKEN)

        # Never holds more than MAX_REQUEST_BYTES + 1 bytes: a declared length is
        # refused unread, and a chunked body is read only until it proves too big.
        raw = request.get_data(MAX_REQUEST_BYTES)
        if raw is None:
            return html_error(400)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return html_error(500)
        try:
            body = json.loads(text)
        except ValueError:
            return failure(400, INVALID_JSON)
        except RecursionError:
            return html_error(500)
        if not isinstance(body, (dict, list)):
            return html_error(500)
        missing = [f for f in REQUIRED_FIELDS if not isinstance(body, dict) or f not in body]
        if missing or not isinstance(body, dict):
            return failure(400, MISSING_REQUIRED_FIELDS, missing_fields=missing)

        try:
            stored = stored_form(body)
            if database_refuses(body, stored):
                return failure(500, EVENT_CAPTURE_FAILED)
        except RecursionError:  # str() of absurdly nested values
            return failure(500, EVENT_CAPTURE_FAILED)
        stored.update(
            {
                "_project_id": project_id,  # the key's project, not the body's
                "_agent_session_id": claims["agent_session_id"],
                "_agent_id": claims["agent_id"],
                "_received_at": datetime.now(timezone.utc).isoformat(),
                # Which client connection carried it: shows whether keep-alive is used.
                "_connection": f"{request.remote_addr}:{request.environ.get('REMOTE_PORT', '')}",
            }
        )
        self.store.add_event(stored)
        return json_response(
            201, {"status": 1, "status_description": EVENT_CAPTURED, "response": {}}
        )
