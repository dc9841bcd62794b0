"""The bounded cache the hot paths share: answers kept, memory bounded whatever the keys."""

from __future__ import annotations

from otas_capture._cache import BoundedCache


def test_an_answer_is_computed_once_then_kept():
    calls: list[str] = []

    def compute(key: str) -> str:
        calls.append(key)
        return key.upper()

    cache: BoundedCache[str, str] = BoundedCache(8)
    assert cache.lookup("a", compute) == "A"
    assert cache.lookup("a", compute) == "A"
    assert calls == ["a"] and cache.get("a") == "A"


def test_a_full_cache_is_emptied_before_the_next_answer_is_kept():
    cache: BoundedCache[int, int] = BoundedCache(3)
    for key in range(3):
        cache.put(key, key)
    cache.put(99, 99)
    assert len(cache) == 1 and cache.get(99) == 99 and cache.get(0) is None


def test_endless_distinct_keys_never_grow_it_past_its_bound():
    cache: BoundedCache[str, bool] = BoundedCache(100)
    for number in range(10_000):
        cache.lookup(f"key-{number}", lambda key: True)
        assert len(cache) <= 100


def test_long_keys_are_answered_but_not_kept():
    cache: BoundedCache[str, int] = BoundedCache(8, max_key_length=4)
    assert cache.lookup("short", len) == 5
    assert cache.lookup("tiny", len) == 4
    assert cache.get("short") is None and cache.get("tiny") == 4
