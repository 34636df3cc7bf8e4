"""User state in Redis: field rows, seen sets, the event stream, and bundle bulk loads.

Keys (``P`` is the configured prefix, so deployments can share a Redis):

* ``P:seen:{user}``          SET of raw item ids the user has seen (training history + events).
  Seen is a fact about the user, so it is shared by every loaded bundle.
* ``P:user:{user}``          HASH state record: first_seen, last_ts, events.
* ``P:b:{version}:fields``   HASH user → int64 field row bytes, per bundle version (indices
  are the bundle's own encoding).
* ``P:b:{version}:loaded``   marker set once the bundle's bulk load has completed.
* ``P:events``               STREAM of every accepted event, never trimmed.
* ``P:admin:bundles`` / ``P:admin:generation``  the reloads other workers must follow.

The request path reads with a *blocking* client on the event loop: its pipeline round trip
costs a fraction of redis.asyncio's (no task switches per reply; measured when this was
chosen: commit 8cf1299), and the socket timeout bounds the stall if Redis
hangs.  Writes (events with their fsync, bulk loads, reload notices) stay asynchronous.

A failing Redis never fails a request: reads report ``None`` (the caller serves degraded)
and, for ``retry_s`` after a failure, are not even attempted, so a dead Redis costs no
connect timeouts; the first read after that window probes it again.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

import numpy as np
import redis
import redis.asyncio as aioredis

log = logging.getLogger("ratingctr.redis")

BULK_CHUNK_USERS = 500


class StoreUnavailable(Exception):
    """Redis could not take a write; the caller must not acknowledge it."""


@dataclass
class UserRecord:
    fields: bytes | None
    seen: list[bytes]


class UserStore:
    def __init__(self, url: str, prefix: str = "rc", timeout_s: float = 0.25, retry_s: float = 1.0,
                 write_timeout_s: float = 2.0) -> None:
        self.url = url
        self.prefix = prefix
        self.retry_s = retry_s
        # writes wait for the append-only file's fsync: their own, longer timeout, off the event loop
        self.client = aioredis.Redis.from_url(url, socket_timeout=write_timeout_s, socket_connect_timeout=timeout_s,
                                              retry_on_timeout=False, health_check_interval=0)
        self.reader = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
                                           retry_on_timeout=False, health_check_interval=0)
        self._down_until = 0.0
        self._was_down = False

    # ---- circuit -------------------------------------------------------------------
    @property
    def available(self) -> bool:
        return time.monotonic() >= self._down_until

    def _failed(self, exc: Exception) -> None:
        self._down_until = time.monotonic() + self.retry_s
        if not self._was_down:
            log.warning("Redis unavailable (%s); serving degraded, retrying every %.1f s", exc, self.retry_s)
        self._was_down = True

    def _succeeded(self) -> None:
        if self._was_down:
            log.warning("Redis is back; leaving degraded mode")
        self._was_down = False

    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    async def ping(self) -> bool:
        try:
            await self.client.ping()
        except (redis.RedisError, OSError) as exc:
            self._failed(exc)
            return False
        self._succeeded()
        return True

    # ---- request path --------------------------------------------------------------
    def read_user(self, user_id: str, bundle_version: str) -> UserRecord | None:
        """Field row and seen set in one round trip; ``None`` when Redis is unavailable."""
        if not self.available:
            return None
        try:
            pipe = self.reader.pipeline(transaction=False)
            pipe.hget(self.key("b", bundle_version, "fields"), user_id)
            pipe.smembers(self.key("seen", user_id))
            fields, seen = pipe.execute()
        except (redis.RedisError, OSError) as exc:
            self._failed(exc)
            return None
        self._succeeded()
        return UserRecord(fields, list(seen))

    async def append_events(self, events: list[dict]) -> list[str]:
        """Append to the stream, seen sets and state records in one MULTI/EXEC; returns stream ids.

        Raises StoreUnavailable when Redis cannot take them: the caller answers 503 and the
        client retries, so nothing is acknowledged and then lost.
        """
        now = time.time()
        stream = self.key("events")
        try:
            pipe = self.client.pipeline(transaction=True)
            for event in events:
                user, item = event["user_id"], event["item_id"]
                pipe.xadd(stream, {"user_id": user, "item_id": item, "rating": repr(event["rating"]),
                                   "ts": repr(event["ts"] if event.get("ts") is not None else now),
                                   "received": repr(now)})
                pipe.sadd(self.key("seen", user), item)
                state = self.key("user", user)
                pipe.hsetnx(state, "first_seen", repr(now))
                pipe.hset(state, "last_ts", repr(event["ts"] if event.get("ts") is not None else now))
                pipe.hincrby(state, "events", 1)
            results = await pipe.execute()
        except (redis.RedisError, OSError) as exc:
            self._failed(exc)
            raise StoreUnavailable(str(exc)) from exc
        self._succeeded()
        return [r.decode() if isinstance(r, bytes) else str(r) for r in results[::5]]

    # ---- bundle bulk load ----------------------------------------------------------
    async def is_loaded(self, version: str) -> bool:
        return bool(await self.client.exists(self.key("b", version, "loaded")))

    async def bulk_load(self, ranker) -> bool:
        """Field rows and training-history seen sets of a bundle, once per bundle version.

        Idempotent (HSET and SADD of the same values), guarded by a short lock so that
        several workers starting together load it once.  Returns True once loaded.
        """
        version = ranker.version
        if await self.is_loaded(version):
            return True
        lock = self.key("b", version, "loading")
        if not await self.client.set(lock, "1", nx=True, ex=120):
            return False  # another worker is loading it; the sync loop will look again
        try:
            start = time.perf_counter()
            users = ranker.user_ids
            indptr, history = ranker.history_indptr, ranker.history_items
            item_ids = ranker.item_ids_array
            fields_key = self.key("b", version, "fields")
            for lo in range(1, len(users), BULK_CHUNK_USERS):
                hi = min(len(users), lo + BULK_CHUNK_USERS)
                pipe = self.client.pipeline(transaction=False)
                pipe.hset(fields_key, mapping={users[u]: ranker.user_fields[u].tobytes() for u in range(lo, hi)})
                for u in range(lo, hi):
                    seen = item_ids[history[indptr[u]:indptr[u + 1]]]
                    if len(seen):
                        pipe.sadd(self.key("seen", users[u]), *seen.tolist())
                await pipe.execute()
            await self.client.set(self.key("b", version, "loaded"), json.dumps(
                {"bundle": ranker.name, "users": len(users) - 1, "seen": int(len(history)), "at": time.time()}))
            log.info("bulk-loaded %s (%s): %d users, %d seen items in %.2f s", ranker.name, version,
                     len(users) - 1, len(history), time.perf_counter() - start)
            return True
        finally:
            await self.client.delete(lock)

    # ---- reloads across workers ----------------------------------------------------
    async def publish_reload(self, name: str, path: str, version: str) -> None:
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(self.key("admin", "bundles"), name, json.dumps({"path": path, "version": version}))
        pipe.incr(self.key("admin", "generation"))
        await pipe.execute()

    async def reload_generation(self) -> int:
        value = await self.client.get(self.key("admin", "generation"))
        return int(value or 0)

    async def published_bundles(self) -> dict[str, dict]:
        raw = await self.client.hgetall(self.key("admin", "bundles"))
        return {k.decode(): json.loads(v) for k, v in raw.items()}

    async def close(self) -> None:
        await self.client.aclose()
        self.reader.close()


def decode_row(raw: bytes | None, width: int) -> np.ndarray | None:
    """A stored field row, or None if absent or of another width (stale data)."""
    if raw is None or len(raw) != width * 8:
        return None
    return np.frombuffer(raw, dtype=np.int64)
