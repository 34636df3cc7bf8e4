"""Every Redis key the system uses, in one layout object, so that it can run on a Redis Cluster.

A cluster runs a Lua script or a MULTI/EXEC only when all its keys hash to one slot, and
Redis hashes only the part of a key inside the first ``{…}`` (the hash tag) when there is one.
So the layout puts what must change together behind one tag:

* **Shards.** Users are split into ``shards`` groups by ``crc32(user_id) % shards``.  Shard
  ``k``'s keys all carry the tag ``{k}``: its event stream, and each of its users' seen set,
  state record, event-id dedupe keys and bundle field rows.  One event's write (stream entry,
  seen set, state, dedupe key) is therefore one script on one slot, atomic as on a single
  Redis; a request reads the user's field row and seen set from one node in one round trip.
  The event log is ``shards`` streams; ``ratingctr events pull`` reads every one of them.
  Why shard-tagged and not user-tagged keys: the stream must sit in the same slot as the
  user's keys for the write to be atomic (deduplication reads and writes in one step), and
  a few dozen shards still spread load over many masters (each shard is one slot, so
  ``shards`` bounds how many masters share the user state; 64 by default on a cluster).
* **Bundle versions.** Loaded/served markers, load locks and the version registry share the
  tag ``{b}``, so the stale-version collector's check-and-delete is one script.
* **Admin.** The published reloads and their generation counter share ``{admin}``.

With ``shards == 1`` on a plain Redis (the default there) the layout keeps the untagged names
earlier versions wrote (``P:events``, ``P:seen:<user>``, …), so an existing deployment's data
stays where it is.  The layout in force is recorded in Redis (``P:layout``): a gateway started
with another shard count refuses to start rather than split users' state in two, and the event
consumer learns from it which streams to read.

Stream ids are per stream, so two shards can hand out the same ``<ms>-<seq>``.  Outside Redis
(the ``ids`` a ``/v1/events`` answer returns, the event log's ``stream_id``) an event of shard
``k`` is named ``<ms>-<seq * shards + k>``: unique across shards, ordered by time, and equal to
the raw id when there is one shard.
"""
from __future__ import annotations

import json
import zlib
from dataclasses import dataclass

LAYOUT_VERSION = 1


class LayoutConflict(RuntimeError):
    """Redis already holds data written under another key layout (shard count)."""


@dataclass(frozen=True)
class KeyLayout:
    prefix: str = "rc"
    shards: int = 1
    tagged: bool = False  # hash tags (always on a cluster, and whenever shards > 1)

    def __post_init__(self) -> None:
        if self.shards < 1:
            raise ValueError("the shard count must be at least 1")
        if self.shards > 1 and not self.tagged:
            object.__setattr__(self, "tagged", True)

    @classmethod
    def for_redis(cls, prefix: str, shards: int | None, cluster: bool) -> "KeyLayout":
        """The layout a deployment uses: ``shards`` as configured, else 64 on a cluster and 1 otherwise."""
        return cls(prefix, shards if shards is not None else (64 if cluster else 1), tagged=cluster)

    # ---- shards ----------------------------------------------------------------------
    def shard_of(self, user_id: str) -> int:
        if self.shards == 1:
            return 0
        return zlib.crc32(user_id.encode("utf-8", "surrogatepass")) % self.shards

    def _shard(self, shard: int) -> str:
        return f"{self.prefix}:{{{shard}}}" if self.tagged else self.prefix

    def events(self, shard: int = 0) -> str:
        return f"{self._shard(shard)}:events"

    def all_events(self) -> list[str]:
        return [self.events(k) for k in range(self.shards)]

    def seen(self, user_id: str) -> str:
        return f"{self._shard(self.shard_of(user_id))}:seen:{user_id}"

    def state(self, user_id: str) -> str:
        return f"{self._shard(self.shard_of(user_id))}:user:{user_id}"

    def event_id(self, user_id: str, event_id: str | None) -> str:
        """Dedupe key of an event id; on a sharded layout scoped to the user's shard (a retry
        carries the same user, so it lands on the same key)."""
        base = f"{self._shard(self.shard_of(user_id))}:eid"
        return base if event_id is None else f"{base}:{event_id}"

    def fields(self, version: str, shard: int = 0) -> str:
        """Field rows of one bundle version (of one shard's users when sharded)."""
        if self.tagged:
            return f"{self._shard(shard)}:b:{version}:fields"
        return f"{self.prefix}:b:{version}:fields"

    def all_fields(self, version: str) -> list[str]:
        return [self.fields(version, k) for k in range(self.shards)] if self.tagged else [self.fields(version)]

    # ---- bundle versions and admin -----------------------------------------------------
    def _group(self, name: str) -> str:
        return f"{self.prefix}:{{{name}}}" if self.tagged else self.prefix

    def version_key(self, version: str, part: str) -> str:
        """``loaded`` / ``served`` / ``loading`` of a bundle version."""
        return f"{self._group('b')}:b:{version}:{part}"

    def versions(self) -> str:
        return f"{self._group('b')}:b:versions"

    def versions_collecting(self) -> str:
        """Versions whose field rows are being deleted (``serving.stale_versions``)."""
        return f"{self.versions()}:collecting"

    def admin(self, part: str) -> str:
        """``bundles`` / ``generation``: the reloads other workers follow."""
        return f"{self._group('admin')}:admin:{part}"

    # ---- the record of the layout in force ---------------------------------------------
    def layout_key(self) -> str:
        return f"{self.prefix}:layout"

    def record(self) -> str:
        return json.dumps({"version": LAYOUT_VERSION, "shards": self.shards, "tagged": self.tagged},
                          sort_keys=True)

    def check_record(self, stored: str | bytes | None) -> None:
        """Raise LayoutConflict when Redis holds another layout's record."""
        if stored is None:
            return
        stored = stored.decode() if isinstance(stored, bytes) else stored
        try:
            found = json.loads(stored)
        except ValueError:
            raise LayoutConflict(f"{self.layout_key()} holds {stored[:100]!r}, not a key layout record") from None
        if (found.get("shards"), found.get("tagged")) != (self.shards, self.tagged):
            raise LayoutConflict(
                f"this Redis holds data under {found.get('shards')} shard(s) (tagged={found.get('tagged')}), "
                f"this gateway is configured for {self.shards} (tagged={self.tagged}); set RATINGCTR_REDIS_SHARDS "
                f"to match (changing it needs a migration: users' seen state would be split)")

    @classmethod
    def from_record(cls, prefix: str, stored: str | bytes | None) -> "KeyLayout":
        """The layout a consumer must read: the recorded one, else the single untagged stream."""
        if stored is None:
            return cls(prefix)
        found = json.loads(stored.decode() if isinstance(stored, bytes) else stored)
        return cls(prefix, int(found["shards"]), bool(found["tagged"]))

    # ---- ids outside Redis -------------------------------------------------------------
    def global_id(self, raw_id: str, shard: int) -> str:
        """A stream id unique across shards (see the module docstring)."""
        if self.shards == 1:
            return raw_id
        ms, _, seq = raw_id.partition("-")
        return f"{ms}-{int(seq) * self.shards + shard}"

    def raw_id(self, global_id: str) -> tuple[str, int]:
        """Inverse of :meth:`global_id`: (the id in its stream, the shard)."""
        if self.shards == 1:
            return global_id, 0
        ms, _, seq = global_id.partition("-")
        number = int(seq)
        return f"{ms}-{number // self.shards}", number % self.shards
