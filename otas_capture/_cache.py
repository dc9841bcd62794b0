"""A small bounded cache: answers worth keeping, emptied at once when full.

Several hot paths ask the same few questions again and again (which header name an
environ key is, whether a content type is text, whether a field name is sensitive). A
dict keeps the answers; one that an attacker could fill with endless distinct keys is
bounded by emptying it when full, which costs nothing per hit (no LRU bookkeeping) and
is refilled by the next few requests. Long keys are answered but not kept: they are
rare, and would make the bound one of entries, not of memory.
"""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

__all__ = ["BoundedCache"]

K = TypeVar("K")
V = TypeVar("V")


class BoundedCache(Generic[K, V]):
    """At most ``max_entries`` answers; keys longer than ``max_key_length`` (when given,
    for keys with a length) are not kept. Thread-safe as a dict is: two threads may
    both compute an answer, never corrupt the cache."""

    __slots__ = ("_data", "_max_entries", "_max_key_length", "get")

    def __init__(self, max_entries: int, max_key_length: int | None = None) -> None:
        self._data: dict[K, V] = {}
        self._max_entries = max_entries
        self._max_key_length = max_key_length
        self.get: Callable[[K], V | None] = self._data.get  # the hot path: no Python frame

    def put(self, key: K, value: V) -> None:
        """Keep ``value`` for ``key``, emptying the cache first if it is full."""
        limit = self._max_key_length
        if limit is not None and len(key) > limit:  # type: ignore[arg-type]
            return
        if len(self._data) >= self._max_entries:
            self._data.clear()
        self._data[key] = value

    def lookup(self, key: K, compute: Callable[[K], V]) -> V:
        """The answer for ``key``: kept, or computed by ``compute`` and kept."""
        value = self._data.get(key)
        if value is None:
            value = compute(key)
            self.put(key, value)
        return value

    def __len__(self) -> int:
        return len(self._data)
