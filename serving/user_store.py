"""User state in Redis: field rows, seen sets, the event stream, and bundle bulk loads.

Keys (``P`` is the configured prefix, so deployments can share a Redis):

* ``P:seen:{user}``          ZSET of raw item ids the user has rated through ``/v1/events``,
  scored by event time, trimmed to the newest ``max_seen`` in the same atomic write, so
  neither Redis memory nor the request path's read grows with a client's junk events.
  Training history is *not* copied here: the request path unions this set with the
  bundle's own history (``Ranker.history``), so a copy would only cost Redis memory (a
  whole ratings table at scale) and bulk-load time on every new bundle version.
  Seen is a fact about the user, so it is shared by every loaded bundle.  (A plain SET left
  by an older gateway is converted by the next write; until then it is read bounded.)
* ``P:user:{user}``          HASH state record: first_seen, last_ts, events.
* ``P:b:{version}:fields``   HASH user → int64 field row bytes, per bundle version (indices
  are the bundle's own encoding).
* ``P:b:{version}:loaded``   marker set once the bundle's bulk load has completed.
* ``P:events``               STREAM of every accepted event (user_id, item_id, rating, ts, received,
  and when sent event_id, user_fields / item_fields as compact JSON).  The gateway never trims
  it; ``ratingctr events pull --trim`` does, never below what a consumer group has not acknowledged.
* ``P:eid:{event_id}``       stream id of an event stored with an ``event_id``, kept
  ``event_id_ttl_s``: a retry of the same id within that window stores nothing again.
* ``P:admin:bundles`` / ``P:admin:generation``  the reloads other workers must follow.

The request path reads with a *blocking* client on the event loop: its pipeline round trip
costs a fraction of redis.asyncio's (no task switches per reply; measured when this was
chosen: commit 8cf1299), and the socket timeout bounds the stall if Redis
hangs.  Writes (events with their fsync, bulk loads, reload notices) stay asynchronous.

Writes of events run as a Lua script (``serving.redis_scripts``): one atomic
step each, which is what makes a retried event batch idempotent.

A failing Redis never fails a request: reads report ``None`` (the caller serves degraded)
and, for ``retry_s`` after a failure, are not even attempted, so a dead Redis costs no
connect timeouts; the first read after that window probes it again.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

import anyio
import numpy as np
import redis
import redis.asyncio as aioredis

from ratingctr.serving.redis_scripts import APPEND_EVENTS

log = logging.getLogger("ratingctr.redis")

BULK_CHUNK_USERS = 2_000  # field rows per HSET: one round trip each, Redis never blocked long


class StoreUnavailable(Exception):
    """Redis could not take a write; the caller must not acknowledge it."""


@dataclass
class UserRecord:
    fields: bytes | None
    seen: list[bytes]


class UserStore:
    def __init__(self, url: str, prefix: str = "rc", timeout_s: float = 0.25, retry_s: float = 1.0,
                 write_timeout_s: float = 2.0, event_id_ttl_s: int = 86400, max_seen: int = 1_000) -> None:
        self.url = url
        self.prefix = prefix
        self.retry_s = retry_s
        self.event_id_ttl_s = event_id_ttl_s
        self.max_seen = max_seen
        # writes wait for the append-only file's fsync: their own, longer timeout, off the event loop
        self.client = aioredis.Redis.from_url(url, socket_timeout=write_timeout_s, socket_connect_timeout=timeout_s,
                                              retry_on_timeout=False, health_check_interval=0)
        self.reader = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
                                           retry_on_timeout=False, health_check_interval=0)
        # bulk loads run in a worker thread on their own blocking client: packing a whole user
        # table into commands is pure Python and would otherwise stall the event loop (every
        # request) for as long as it takes - the first reload to a new version, every promotion
        self.loader = redis.Redis.from_url(url, socket_timeout=write_timeout_s, socket_connect_timeout=timeout_s,
                                           retry_on_timeout=False, health_check_interval=0)
        self._append_events = self.client.register_script(APPEND_EVENTS)
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
        """Field row and the newest ``max_seen`` seen items in one round trip; ``None`` when
        Redis is unavailable."""
        if not self.available:
            return None
        seen_key = self.key("seen", user_id)
        try:
            pipe = self.reader.pipeline(transaction=False)
            pipe.hget(self.key("b", bundle_version, "fields"), user_id)
            pipe.zrange(seen_key, -self.max_seen, -1)
            fields, seen = pipe.execute(raise_on_error=False)
            if isinstance(fields, Exception):
                raise fields
            if isinstance(seen, redis.ResponseError):  # a legacy SET not yet converted: read it bounded too
                seen = self.reader.srandmember(seen_key, self.max_seen)
            elif isinstance(seen, Exception):
                raise seen
        except (redis.RedisError, OSError) as exc:
            self._failed(exc)
            return None
        self._succeeded()
        return UserRecord(fields, list(seen))

    async def append_events(self, events: list[dict]) -> list[str]:
        """Append to the stream, seen sets and state records in one atomic script; returns stream ids.

        An event with an ``event_id`` already stored (within ``event_id_ttl_s``) adds nothing
        and reports the stream id it was stored under, so a client may retry a batch whose
        answer it never got.  Raises StoreUnavailable when Redis cannot take them: the caller
        answers 503 and the client retries, so nothing is acknowledged and then lost.
        """
        now = repr(time.time())
        keys, args = [self.key("events")], [now, str(self.event_id_ttl_s), str(self.max_seen)]
        for event in events:
            user, event_id = event["user_id"], event.get("event_id")
            keys += [self.key("seen", user), self.key("user", user),
                     self.key("eid", event_id) if event_id is not None else self.key("eid")]
            ts = event.get("ts")
            args += [user, event["item_id"], repr(event["rating"]), repr(ts) if ts is not None else now,
                     "0" if event_id is None else "1", event_id or "",
                     side_fields_json(event.get("user_fields")), side_fields_json(event.get("item_fields"))]
        try:
            results = await self._append_events(keys=keys, args=args)
        except (redis.RedisError, OSError) as exc:
            self._failed(exc)
            raise StoreUnavailable(str(exc)) from exc
        self._succeeded()
        return [r.decode() if isinstance(r, bytes) else str(r) for r in results]

    async def durability(self) -> dict[str, str]:
        """The server's persistence settings in force (CONFIG GET), or why they are unknown.

        Managed Redis services often disable or rename CONFIG: that is reported, not fatal.
        """
        settings: dict[str, str] = {}
        try:
            for name in ("appendonly", "appendfsync", "save"):
                settings.update({k if isinstance(k, str) else k.decode(): v if isinstance(v, str) else v.decode()
                                 for k, v in (await self.client.config_get(name)).items()})
        except redis.ResponseError as exc:
            return {"unknown": f"CONFIG GET refused: {exc}"}
        return settings

    # ---- bundle bulk load ----------------------------------------------------------
    async def is_loaded(self, version: str) -> bool:
        return bool(await self.client.exists(self.key("b", version, "loaded")))

    async def bulk_load(self, ranker) -> bool:
        """Field rows of a bundle's users, once per bundle version.

        Idempotent (HSET of the same values), guarded by a short lock so that several workers
        starting together load it once.
        Returns True once loaded.  Runs in a worker thread (see ``loader``); requests keep
        being served between its chunks.
        """
        if await self.is_loaded(ranker.version):
            return True
        return await anyio.to_thread.run_sync(self._bulk_load_blocking, ranker)

    def _bulk_load_blocking(self, ranker) -> bool:
        version, client = ranker.version, self.loader
        lock = self.key("b", version, "loading")
        if not client.set(lock, "1", nx=True, ex=120):
            return False  # another worker is loading it; the sync loop will look again
        try:
            start = time.perf_counter()
            users, rows = ranker.user_ids, ranker.user_fields
            fields_key = self.key("b", version, "fields")
            for lo in range(1, len(users), BULK_CHUNK_USERS):
                hi = min(len(users), lo + BULK_CHUNK_USERS)
                client.hset(fields_key, mapping=dict(zip(users[lo:hi], (row.tobytes() for row in rows[lo:hi]))))
            client.set(self.key("b", version, "loaded"), json.dumps(
                {"bundle": ranker.name, "users": len(users) - 1, "at": time.time()}))
            log.info("bulk-loaded %s (%s): %d users' field rows in %.2f s", ranker.name, version,
                     len(users) - 1, time.perf_counter() - start)
            return True
        finally:
            client.delete(lock)

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
        self.loader.close()


def side_fields_json(fields: dict | None) -> str:
    """An event's side fields as the stream stores them: compact JSON, keys sorted (the same
    object is the same bytes), non-ASCII kept as is; ``''`` for none, so no stream field is written."""
    if fields is None:
        return ""
    return json.dumps(fields, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def decode_row(raw: bytes | None, width: int) -> np.ndarray | None:
    """A stored field row, or None if absent or of another width (stale data)."""
    if raw is None or len(raw) != width * 8:
        return None
    return np.frombuffer(raw, dtype=np.int64)
