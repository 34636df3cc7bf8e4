"""Field copies of bundle versions no worker serves any more are deleted after a grace period.

Every bulk load leaves ``P:b:{version}:fields`` (one row per user) in Redis; without this, every
reload to a new version would add a full copy of the user table that nothing ever removes.

How it stays safe with many workers and no coordinator:

* each worker, every sync pass, refreshes ``P:b:{version}:served`` (expiring after the grace
  period) for each version it serves, and registers the version in the set ``P:b:versions``;
* any worker may then delete a registered version whose ``served`` key has expired *and* whose
  bulk-load marker is older than the grace period (so a version loaded a moment ago, before
  its first refresh, is never taken) - checked and deleted in one Lua script, atomically;
* if a stalled worker still served a deleted version, its next sync pass finds the marker
  gone and bulk-loads the version again (the same self-repair as for a Redis that lost data).

Versions loaded by a gateway older than this module were never registered and are left alone.
"""
from __future__ import annotations

import time
from collections.abc import Iterable

VERSIONS = "versions"

# KEYS: served, loaded, fields, versions set, loading lock; ARGV: version, now, grace.  UNLINK
# frees the (possibly large) hash in the background instead of blocking Redis for it.
_COLLECT = """
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[5]) == 1 then return 0 end
local marker = redis.call('GET', KEYS[2])
if marker then
  local ok, decoded = pcall(cjson.decode, marker)
  local at = ok and type(decoded) == 'table' and tonumber(decoded['at']) or nil
  if at == nil or tonumber(ARGV[2]) - at < tonumber(ARGV[3]) then return 0 end
end
redis.call('UNLINK', KEYS[2], KEYS[3])
redis.call('SREM', KEYS[4], ARGV[1])
return 1
"""


async def mark_served(store, versions: Iterable[str], grace_s: float) -> None:
    """Refresh this worker's claim on every version it serves (one pipeline)."""
    versions = sorted(set(versions))
    if not versions:
        return
    pipe = store.client.pipeline(transaction=False)
    pipe.sadd(store.key("b", VERSIONS), *versions)
    for version in versions:
        pipe.set(store.key("b", version, "served"), "1", px=max(1, int(grace_s * 1000)))
    await pipe.execute()


async def collect_stale(store, serving: Iterable[str], grace_s: float, now: float | None = None) -> list[str]:
    """Delete the field copies of registered versions nobody has served for ``grace_s``; returns them.

    A registered version whose load has not finished (no marker yet) is only dropped from the
    registry once its ``served`` claim expired and no bulk load of it is under way (its lock).
    """
    serving = set(serving)
    now = time.time() if now is None else now
    deleted = []
    for raw in await store.client.smembers(store.key("b", VERSIONS)):
        version = raw.decode() if isinstance(raw, bytes) else str(raw)
        if version in serving:
            continue
        keys = [store.key("b", version, part) for part in ("served", "loaded", "fields")]
        if await store.client.eval(_COLLECT, 5, *keys, store.key("b", VERSIONS), store.key("b", version, "loading"),
                                   version, repr(now), repr(grace_s)):
            deleted.append(version)
    return deleted
