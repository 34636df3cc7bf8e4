"""The per-worker seen cache: an entry is served only under the version it was read at, the
budget in index slots holds whatever is put, and the least recently used entries go first."""
from __future__ import annotations

import numpy as np
import pytest

from ratingctr.serving.seen_cache import ENTRY_OVERHEAD, SeenCache, entry_cost


def _indices(n: int, start: int = 1) -> np.ndarray:
    return np.arange(start, start + n, dtype=np.int64)


def test_an_entry_is_served_only_under_its_version_and_bundle() -> None:
    cache = SeenCache(10_000)
    cache.put("v1", "alice", b"5-0", _indices(3))
    assert cache.version("v1", "alice") == b"5-0"
    assert cache.get("v1", "alice", b"5-0").tolist() == [1, 2, 3]
    assert cache.get("v1", "alice", b"6-0") is None  # the set changed in Redis
    assert cache.version("v2", "alice") is None and cache.get("v2", "alice", b"5-0") is None  # another vocabulary
    assert cache.version("v1", "bob") is None


def test_a_cached_array_cannot_be_changed_by_a_request() -> None:
    cache = SeenCache(10_000)
    cache.put("v1", "alice", b"1-0", _indices(4))
    with pytest.raises(ValueError):
        cache.get("v1", "alice", b"1-0")[0] = 99


def test_the_budget_evicts_the_least_recently_used_and_accounts_exactly() -> None:
    per_entry = 10 + ENTRY_OVERHEAD
    cache = SeenCache(3 * per_entry)
    for user in ("a", "b", "c"):
        cache.put("v", user, b"1-0", _indices(10))
    assert len(cache) == 3 and cache.used == 3 * per_entry
    cache.get("v", "a", b"1-0")  # "a" is now the most recently used: "b" goes first
    cache.put("v", "d", b"1-0", _indices(10))
    assert [cache.version("v", u) for u in "abcd"] == [b"1-0", None, b"1-0", b"1-0"]
    assert cache.used == 3 * per_entry
    # replacing an entry frees its old cost before charging the new one
    cache.put("v", "a", b"2-0", _indices(5))
    assert cache.used == 2 * per_entry + 5 + ENTRY_OVERHEAD and len(cache) == 3
    # one big entry pushes out as many as it needs, oldest first
    cache.put("v", "e", b"1-0", _indices(2 * per_entry - ENTRY_OVERHEAD))
    assert cache.used <= cache.budget and cache.version("v", "e") == b"1-0"
    assert cache.used == sum(len(cache.get("v", u, cache.version("v", u))) + ENTRY_OVERHEAD
                             for u in "abcde" if cache.version("v", u) is not None)


def test_an_entry_larger_than_the_budget_and_a_zero_budget_cache_nothing() -> None:
    cache = SeenCache(100)
    cache.put("v", "small", b"1-0", _indices(10))
    cache.put("v", "huge", b"1-0", _indices(100))
    assert cache.version("v", "huge") is None and cache.version("v", "small") == b"1-0"
    off = SeenCache(0)
    off.put("v", "a", b"1-0", np.zeros(0, np.int64))
    assert len(off) == 0 and off.used == 0


def test_drop_forgets_an_entry_and_its_cost() -> None:
    cache = SeenCache(1_000)
    cache.put("v", "a", b"1-0", _indices(7))
    cache.drop("v", "a")
    cache.drop("v", "never-cached")
    assert len(cache) == 0 and cache.used == 0


def test_a_long_user_id_is_charged_for_its_bytes() -> None:
    """Ids may be up to the request limit long: the budget must see them, not only the indices."""
    long_id = "ü" * 200  # 400 bytes in UTF-8
    assert entry_cost(long_id, b"1700000000000-0|12", _indices(3)) == 3 + ENTRY_OVERHEAD + (400 + 18) // 8
    cache = SeenCache(3 * (ENTRY_OVERHEAD + 52))
    for i in range(5):
        cache.put("v", long_id + str(i), b"1700000000000-0|12", _indices(0))
    assert cache.used <= cache.budget and len(cache) == 3
