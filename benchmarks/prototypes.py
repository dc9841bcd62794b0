"""Prototypes of issue 20's smaller build savings, measured against the package's code.

Nothing here is used by the package: each prototype is checked to give what the
package's function gives, then both are timed (CPU, best of 7 runs) on the realistic
event of ``apps.py`` (about 3 KB each way, five secrets):

* *known-secret check*: ``Scrubber.absent_from_json`` searches the encoded event for
  the spellings of the known secrets. A spelling that contains another one (every
  spelling of ``Bearer <token>`` contains the token) can only be in the text when the
  shorter one is, so for "is any there?" only the spellings that contain no other
  need searching. The package does so since issue 20; the row compares it with
  searching every spelling, as it did before.
* *timestamps*: ``utc_iso`` makes a ``datetime`` per event. The date, hour and minute
  change once a minute: format them once and add the seconds and microseconds.
* *event ids*: ``_event_id`` makes a UUID 4 from 16 bytes of ``os.urandom``, one system
  call each. Reading 4 KiB of it at a time serves 256 ids per call.

    python benchmarks/prototypes.py
"""

from __future__ import annotations

import math
import os
import random
import sys
import threading
import time
import timeit
from datetime import datetime, timezone
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


# -- the known-secret check ---------------------------------------------------------------


def absent_all(spellings: list[bytes], encoded: bytes) -> bool:
    """The check as it was: every spelling searched."""
    for spelling in spellings:
        if spelling in encoded:
            return False
    return True


# -- timestamps -----------------------------------------------------------------------------


def utc_iso_reference(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="microseconds")


class MinuteCache:
    """``utc_iso`` with the date, hour and minute formatted once a minute."""

    def __init__(self) -> None:
        self._minute = -1
        self._prefix = ""

    def __call__(self, timestamp: float) -> str:
        # As datetime does it: the fraction (taken apart first, so that big timestamps
        # keep their precision) rounded to microseconds half to even.
        fraction, whole = math.modf(timestamp)
        micro = round(fraction * 1_000_000)
        if micro >= 1_000_000:
            whole, micro = whole + 1, micro - 1_000_000
        elif micro < 0:
            whole, micro = whole - 1, micro + 1_000_000
        seconds = int(whole)
        minute, second = divmod(seconds, 60)
        if minute != self._minute:  # a race only formats the same prefix twice
            prefix = datetime.fromtimestamp(minute * 60, timezone.utc).isoformat()[:17]
            self._minute, self._prefix = minute, prefix
        return f"{self._prefix}{second:02d}.{micro:06d}+00:00"


# -- event ids ------------------------------------------------------------------------------


class BufferedIds:
    """UUID 4 text from ``os.urandom`` read 4 KiB at a time (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool = b""
        self._next = 0
        self._pid = os.getpid()

    def __call__(self) -> str:
        with self._lock:
            start = self._next
            if start >= len(self._pool) or self._pid != os.getpid():  # never share after fork
                self._pool, self._pid, start = os.urandom(4096), os.getpid(), 0
            self._next = start + 16
        # The version (4) and variant (RFC 4122) bits set on the 128-bit number.
        number = int.from_bytes(self._pool[start : start + 16], "big") & _CLEAR | _SET
        h = f"{number:032x}"
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_CLEAR = ~((0xF000 << 64) | (0xC000 << 48)) & ((1 << 128) - 1)
_SET = (0x4000 << 64) | (0x8000 << 48)


def getrandbits_id() -> str:
    """UUID 4 text from ``random.getrandbits`` (Mersenne Twister, reseeded after fork):
    unique, but predictable from earlier ids, unlike ``os.urandom``."""
    h = f"{random.getrandbits(128) & _CLEAR | _SET:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


# -- measuring --------------------------------------------------------------------------------


def cpu_us(function: Callable[[], Any], number: int = 5000) -> float:
    runs = [
        timeit.Timer(function, timer=time.process_time).timeit(number=number) / number
        for _ in range(7)
    ]
    return min(runs) * 1e6


def main() -> None:
    import uuid

    from apps import REALISTIC_REQUEST, REALISTIC_RESPONSE
    from event_build import PROJECT, exchange

    from otas_capture.config import Config
    from otas_capture.event import build

    builder = build.EventBuilder(Config.load({"sdk_key": "otas_abc_defghijkl"}, {}))
    parts = builder._parts(exchange(True, (REALISTIC_REQUEST, REALISTIC_RESPONSE)), PROJECT)
    scrub = parts.scrub
    payload = build.dumps(parts.assemble(scrub=False))
    spellings = [v.encode("utf-8", "surrogatepass") for v in scrub._variants]
    for _ in range(3):  # the spellings are narrowed from the second event on
        scrub.absent_from_json(payload)
    needles = scrub._needles
    rows = []

    # The same verdict on the payload, with each spelling planted, and on each alone.
    for text in [payload] + [payload + b" " + s for s in spellings] + spellings:
        assert absent_all(spellings, text) == scrub.absent_from_json(text)
    rows.append(
        (
            f"known-secret check, {len(payload)} B event "
            f"(all {len(spellings)} spellings before, {len(needles)} now)",
            cpu_us(lambda: absent_all(spellings, payload)),
            cpu_us(lambda: scrub.absent_from_json(payload)),
        )
    )

    cached = MinuteCache()
    rng = random.Random(20)
    stamps = [rng.uniform(0, 4e9) for _ in range(100_000)] + [
        time.time() + i / 7 for i in range(1000)
    ]
    stamps += [1e9 + k / 1e6 + 5e-7 for k in range(2000)]  # exact half microseconds
    for stamp in stamps:
        assert cached(stamp) == utc_iso_reference(stamp), stamp
    now = time.time()
    rows.append(
        ("UTC timestamp text", cpu_us(lambda: build.utc_iso(now)), cpu_us(lambda: cached(now)))
    )

    ids = BufferedIds()
    for make in (ids, getrandbits_id):
        made = [uuid.UUID(make()) for _ in range(1000)]
        assert all(u.version == 4 and u.variant == uuid.RFC_4122 for u in made)
        assert len(set(made)) == len(made)
    base = cpu_us(build._event_id)
    rows.append(("event id (UUID 4 text), os.urandom 4 KiB at a time", base, cpu_us(ids)))
    rows.append(("event id (UUID 4 text), random.getrandbits", base, cpu_us(getrandbits_id)))

    print("| piece | package (before) µs | prototype (package now) µs | saved µs |")
    print("|---|---:|---:|---:|")
    for name, before, after in rows:
        print(f"| {name} | {before:.2f} | {after:.2f} | {before - after:.2f} |")


if __name__ == "__main__":
    main()
