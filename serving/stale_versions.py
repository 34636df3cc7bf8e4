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

On a cluster the field rows of a version are one hash per shard, in the shards' slots, so the
script (markers and registry: one ``{b}`` slot) cannot delete them itself: it deletes the
``loaded`` marker and moves the version from the registry to ``versions:collecting``
atomically; the rows are unlinked next and the version then leaves ``collecting``.  A collector
killed in between leaves the version in ``collecting``, and the next pass (any worker's)
finishes it, so no copy is ever orphaned.  A worker that starts serving the version in between
re-loads it and may lose rows to that unlink: a missing row only makes the request path use
the bundle's own row (the same values).  One code path for a plain Redis and a cluster.
"""
from __future__ import annotations

import time
from collections.abc import Iterable

# KEYS: served, loaded, versions set, loading lock, collecting set; ARGV: version, now, grace.
_COLLECT = """
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[4]) == 1 then return 0 end
local marker = redis.call('GET', KEYS[2])
if marker then
  local ok, decoded = pcall(cjson.decode, marker)
  local at = ok and type(decoded) == 'table' and tonumber(decoded['at']) or nil
  if at == nil or tonumber(ARGV[2]) - at < tonumber(ARGV[3]) then return 0 end
end
redis.call('UNLINK', KEYS[2])
redis.call('SREM', KEYS[3], ARGV[1])
redis.call('SADD', KEYS[5], ARGV[1])
return 1
"""


async def mark_served(store, versions: Iterable[str], grace_s: float) -> None:
    """Refresh this worker's claim on every version it serves (one pipeline)."""
    versions = sorted(set(versions))
    if not versions:
        return
    layout = store.layout
    pipe = store.client.pipeline(transaction=False)
    pipe.sadd(layout.versions(), *versions)
    for version in versions:
        pipe.set(layout.version_key(version, "served"), "1", px=max(1, int(grace_s * 1000)))
    await pipe.execute()


async def collect_stale(store, serving: Iterable[str], grace_s: float, now: float | None = None) -> list[str]:
    """Delete the field copies of registered versions nobody has served for ``grace_s``; returns them.

    A registered version whose load has not finished (no marker yet) is only dropped from the
    registry once its ``served`` claim expired and no bulk load of it is under way (its lock).
    """
    serving = set(serving)
    now = time.time() if now is None else now
    layout, deleted = store.layout, []
    for raw in await store.client.smembers(layout.versions()):
        version = raw.decode() if isinstance(raw, bytes) else str(raw)
        if version in serving:
            continue
        keys = [layout.version_key(version, "served"), layout.version_key(version, "loaded"), layout.versions(),
                layout.version_key(version, "loading"), layout.versions_collecting()]
        if await store.client.eval(_COLLECT, len(keys), *keys, version, repr(now), repr(grace_s)):
            deleted.append(version)
    for raw in await store.client.smembers(layout.versions_collecting()):  # this pass's and any left by a crash
        version = raw.decode() if isinstance(raw, bytes) else str(raw)
        for fields in layout.all_fields(version):  # UNLINK frees a large hash off Redis's main thread
            await store.client.unlink(fields)
        await store.client.srem(layout.versions_collecting(), version)
    return deleted
