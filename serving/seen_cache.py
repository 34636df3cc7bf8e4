"""A bounded per-worker cache of users' seen item indices, valid while Redis says the set is unchanged.

Why: the seen set is the one per-user read whose size a client controls (it posts the events),
so without a cache every ``/v1/recommend`` re-reads up to ``RATINGCTR_MAX_SEEN_PER_USER`` members
and maps them to item indices — a junk-flooded user then cost ~2× an ordinary one
(``reports/bench/issue14/junk_seen.md``).  Entries are keyed by (bundle version, user), since
indices belong to one bundle's vocabulary, and hold the set's version (``seen_version`` in Redis);
``UserStore.read_user`` sends only a changed set back, so a stale entry is never served.

Memory is bounded by a budget in index slots: an entry costs its length, plus ``ENTRY_OVERHEAD``
(a rough equivalent of a dict entry, key tuple and array header in int64 slots), plus its user
id and version in 8-byte slots (an id may be long), and the least recently used entries go first.
With the default budget (1,000,000 slots) that is about 8 MB per worker.
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

# per-entry overhead in int64 slots: the OrderedDict entry, the key tuple and the array header
ENTRY_OVERHEAD = 32


def entry_cost(user_id: str, seen_version: bytes, indices: np.ndarray) -> int:
    """What one entry charges against the budget, in 8-byte slots."""
    return len(indices) + ENTRY_OVERHEAD + (len(user_id.encode("utf-8", "surrogatepass")) + len(seen_version)) // 8


class SeenCache:
    """Least-recently-used (bundle version, user) → (seen version, seen item indices)."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.used = 0
        self._entries: OrderedDict[tuple[str, str], tuple[bytes, np.ndarray]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def version(self, bundle_version: str, user_id: str) -> bytes | None:
        """The seen version cached for this user under this bundle, or ``None``."""
        entry = self._entries.get((bundle_version, user_id))
        return entry[0] if entry is not None else None

    def get(self, bundle_version: str, user_id: str, seen_version: bytes) -> np.ndarray | None:
        """The cached indices when they are of ``seen_version``; marks the entry recently used."""
        key = (bundle_version, user_id)
        entry = self._entries.get(key)
        if entry is None or entry[0] != seen_version:
            return None
        self._entries.move_to_end(key)
        return entry[1]

    def put(self, bundle_version: str, user_id: str, seen_version: bytes, indices: np.ndarray) -> None:
        """Cache ``indices`` (read-only from now on) and evict the least recently used past the budget."""
        key = (bundle_version, user_id)
        self.drop(bundle_version, user_id)
        cost = entry_cost(user_id, seen_version, indices)
        if cost > self.budget:
            return  # larger than the whole cache: never worth holding
        indices.flags.writeable = False  # shared by every later request of this user
        self._entries[key] = (seen_version, indices)
        self.used += cost
        while self.used > self.budget:
            (_, evicted_user), (evicted_version, evicted) = self._entries.popitem(last=False)
            self.used -= entry_cost(evicted_user, evicted_version, evicted)

    def drop(self, bundle_version: str, user_id: str) -> None:
        """Forget one entry (its set is known to have changed, or has no version)."""
        old = self._entries.pop((bundle_version, user_id), None)
        if old is not None:
            self.used -= entry_cost(user_id, old[0], old[1])
