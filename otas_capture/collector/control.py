"""``/collector/conditions``: how the emulated Brain performs, read and set over HTTP.

For a collector in another process (``otas-capture collector``, a benchmark's), what
``Collector.set_load``, ``set_capacity`` and ``set_latency`` do in-process:

- ``GET`` answers ``{"load": {...} | null, "capacity": [workers | null, seconds],
  "latency": seconds}``.
- ``PUT`` with a JSON object holding any of those keys sets them: ``load`` is a
  shape's name (``"real-brain"``, ``"saturated"``), an object of
  :class:`~.load.LoadShape`'s fields, or null. It answers as ``GET`` does, or 400
  naming what it could not use (then nothing is changed).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any, Callable

from .answers import json_response
from .emulation import BrainConditions, checked_capacity, checked_latency
from .load import LoadShape, shape_named
from .web import Request, Response

CONDITIONS_PATH = "/collector/conditions"
_MAX_BODY = 64 * 1024


def _current(conditions: BrainConditions) -> dict[str, Any]:
    shape = conditions.load.shape
    workers, service_time = conditions.capacity
    return {
        "load": asdict(shape) if shape is not None else None,
        "capacity": [workers, service_time],
        "latency": conditions.latency,
    }


def _apply(conditions: BrainConditions, asked: dict[str, Any]) -> None:
    """Set what ``asked`` names; raises ValueError or TypeError before changing anything
    it cannot use."""
    unknown = set(asked) - {"load", "capacity", "latency"}
    if unknown:
        raise ValueError(f"unknown keys: {', '.join(sorted(unknown))}")
    load = asked.get("load")
    if isinstance(load, dict):
        load = LoadShape(**load)
    elif load is not None and not isinstance(load, str):
        raise ValueError("load must be a shape's name, an object or null")
    shape = shape_named(load)
    # Everything is checked before anything is set: a refusal changes nothing.
    capacity = asked.get("capacity")
    if capacity is not None:
        if not (isinstance(capacity, list) and len(capacity) == 2):
            raise ValueError("capacity must be [workers or null, seconds]")
        capacity = checked_capacity(*capacity)
    latency = asked.get("latency")
    if latency is not None:
        latency = checked_latency(latency)
    if "load" in asked:
        conditions.load.shape = shape
    if capacity is not None:
        conditions.capacity = capacity
    if latency is not None:
        conditions.latency = latency


def conditions_handlers(
    conditions: BrainConditions,
) -> tuple[Callable[[Request], Response], Callable[[Request], Response]]:
    """The ``GET`` and ``PUT`` handlers over a collector's ``conditions``."""

    def read(request: Request) -> Response:
        return json_response(200, _current(conditions))

    def change(request: Request) -> Response:
        raw = request.get_data(_MAX_BODY)
        try:
            asked = json.loads(raw or b"")
            if not isinstance(asked, dict):
                raise ValueError("the body must be a JSON object")
            _apply(conditions, asked)
        except (ValueError, TypeError) as exc:
            return json_response(400, {"error": str(exc)})
        return json_response(200, _current(conditions))

    return read, change
