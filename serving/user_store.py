"""User state in Redis: field rows, seen sets, the event stream, and bundle bulk loads.

Key names come from ``serving.redis_keys.KeyLayout`` (one place, so the layout can run on a
Redis Cluster); on a plain Redis with one shard they are (``P`` is the configured prefix):

* ``P:seen:{user}``          ZSET of raw item ids the user has rated through ``/v1/events``,
  scored by event time, trimmed to the newest ``max_seen`` in the same atomic write, so
  neither Redis memory nor the request path's read grows with a client's junk events.
  Training history is *not* copied here: the request path unions this set with the
  bundle's own history (``Ranker.history``), so a copy would only cost Redis memory (a
  whole ratings table at scale) and bulk-load time on every new bundle version.
  Seen is a fact about the user, so it is shared by every loaded bundle.  (A plain SET left
  by an older gateway is converted by the next write; until then it is read bounded.)
* ``P:user:{user}``          HASH state record: first_seen, last_ts, events, seen_version (the stream
  id of the newest event, which names the seen set's current contents).
* ``P:b:{version}:fields``   HASH user → int64 field row bytes, per bundle version (indices
  are the bundle's own encoding).  A copy of the bundle's own rows: a missing row costs nothing
  but a fall back to the bundle's.
* ``P:b:{version}:loaded``   marker set once the bundle's bulk load has completed.
* ``P:events``               STREAM of every accepted event (user_id, item_id, rating, ts, received,
  and when sent event_id, user_fields / item_fields as compact JSON).  The gateway never trims
  it; ``ratingctr events pull --trim`` does, never below what a consumer group has not acknowledged.
* ``P:eid:{event_id}``       stream id of an event stored with an ``event_id``, kept
  ``event_id_ttl_s``: a retry of the same id within that window stores nothing again.
* ``P:admin:bundles`` / ``P:admin:generation``  the reloads other workers must follow.
* ``P:layout``               the layout in force (shard count), checked at start-up.

On a cluster (or with more than one shard) the same keys carry hash tags and the per-user
keys, field rows and the stream are split into shards (``serving.redis_keys``): an event batch
is then one atomic script per shard it touches, and a down master degrades only the users of
its shards (the circuit below is per shard).

The request path reads the seen set only when its version (``seen_version`` in the state
record, the stream id of the user's newest event) differs from the one the caller has cached
(``serving.seen_cache``): a user flooded with junk events then costs one small reply until the
set changes again (``reports/bench/issue14/junk_seen.md``).
It reads with a *blocking* client on the event loop: its pipeline round trip
costs a fraction of redis.asyncio's (no task switches per reply; measured when this was
chosen: commit 8cf1299), and the socket timeout bounds the stall if Redis
hangs.  Writes (events with their fsync, bulk loads, reload notices) stay asynchronous.

Writes of events run as a Lua script (``serving.redis_scripts``): one atomic
step each, which is what makes a retried event batch idempotent.

A failing Redis never fails a request: reads report ``None`` (the caller serves degraded)
and, for ``retry_s`` after a failure, are not even attempted, so a dead Redis costs no
connect timeouts; the first read after that window probes it again.  A *timeout* of a
healthy Redis opens that window only at the ``timeouts_to_open``-th in a row (3): a single
slow reply (Redis stalled behind an append-only-file fsync while a saturated machine
queues work) then degrades that one request, not the next second of traffic — the load
test lost 5,113 answers so at a one-strike rule (``reports/loadtest``, commit f1d6066).  A
hung Redis still costs at most that many timeouts before the window opens, and a failed
probe reopens it at once.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field

import anyio
import numpy as np
import redis
from redis.exceptions import RedisClusterException

from ratingctr.serving.redis_connection import async_client, is_cluster_url, sync_client
from ratingctr.serving.redis_keys import KeyLayout
from ratingctr.serving.redis_scripts import APPEND_EVENTS, PUBLISH_RELOAD, READ_SEEN

log = logging.getLogger("ratingctr.redis")

BULK_CHUNK_USERS = 2_000  # field rows per HSET: one round trip each, Redis never blocked long
# what a Redis call can raise when the server or a cluster node is away (the cluster client's
# own errors, e.g. a slot no live node serves, are not RedisError subclasses)
REDIS_ERRORS = (redis.RedisError, OSError, RedisClusterException)


class StoreUnavailable(Exception):
    """Redis could not take a write; the caller must not acknowledge what was not stored.

    ``stored`` maps the index of each event that *was* stored (its shard answered) to its id:
    on a sharded layout one batch is one atomic write per shard, so a batch can be split.
    """

    def __init__(self, message: str, stored: dict[int, str] | None = None) -> None:
        super().__init__(message)
        self.stored = stored or {}


@dataclass
class UserRecord:
    """One request's user state. ``seen`` is ``None`` when the caller's cached copy, named by the
    ``seen_version`` it passed, is still current; ``seen_version`` is ``None`` when the set has no
    version yet (nothing to cache it under)."""

    fields: bytes | None
    seen: list[bytes] | None
    seen_version: bytes | None = None


@dataclass
class _Circuit:
    """Per shard on a cluster (a down master degrades only its users), one for a plain Redis."""

    down_until: dict[int, float] = field(default_factory=dict)

    def open_(self, key: int) -> bool:
        return time.monotonic() < self.down_until.get(key, 0.0)


class UserStore:
    def __init__(self, url: str, prefix: str = "rc", timeout_s: float = 0.25, retry_s: float = 1.0,
                 write_timeout_s: float = 2.0, event_id_ttl_s: int = 86400, max_seen: int = 1_000,
                 shards: int | None = None, timeouts_to_open: int = 3) -> None:
        self.url = url
        self.timeouts_to_open = timeouts_to_open
        self._timeouts: dict[int, int] = {}  # consecutive read timeouts per circuit, while it is closed
        self.cluster = is_cluster_url(url)
        self.layout = KeyLayout.for_redis(prefix, shards, self.cluster)
        self.prefix = prefix
        self.retry_s = retry_s
        self.timeout_s = timeout_s
        self.write_timeout_s = write_timeout_s
        self.event_id_ttl_s = event_id_ttl_s
        self.max_seen = max_seen
        # writes wait for the append-only file's fsync: their own, longer timeout, off the event loop
        self.client = async_client(url, write_timeout_s, timeout_s)
        # the request-path reader and the bulk loader are blocking clients, made on first use:
        # a cluster client learns the topology when it is made, which must not fail start-up
        self._reader: redis.Redis | None = None
        self._loader: redis.Redis | None = None
        self._append_events = self.client.register_script(APPEND_EVENTS)
        self._publish_reload = self.client.register_script(PUBLISH_RELOAD)
        self._read_seen_script = None  # on the blocking reader, made on first use
        self._circuit = _Circuit()
        self._whole = -1 if self.cluster else 0  # the circuit a failed ping opens
        self._was_down: set[int] = set()

    @property
    def reader(self) -> redis.Redis:
        if self._reader is None:
            self._reader = sync_client(self.url, self.timeout_s, self.timeout_s)
        return self._reader

    @property
    def loader(self) -> redis.Redis:
        # bulk loads run in a worker thread on their own blocking client: packing a whole user
        # table into commands is pure Python and would otherwise stall the event loop (every
        # request) for as long as it takes - the first reload to a new version, every promotion
        if self._loader is None:
            self._loader = sync_client(self.url, self.write_timeout_s, self.timeout_s)
        return self._loader

    # ---- circuit -------------------------------------------------------------------
    def _circuit_key(self, shard: int) -> int:
        return shard if self.cluster else 0

    @property
    def available(self) -> bool:
        """Redis as a whole answered its last ping (a plain Redis: and its last read)."""
        return not self._circuit.open_(self._whole)

    def shard_available(self, shard: int) -> bool:
        return not self._circuit.open_(self._circuit_key(shard)) and (self.cluster or self.available)

    def _failed(self, exc: BaseException, key: int) -> None:
        self._circuit.down_until[key] = time.monotonic() + self.retry_s
        if key not in self._was_down:
            where = "" if key == self._whole else f" (shard {key})"
            log.warning("Redis unavailable%s (%s); serving degraded, retrying every %.1f s", where, exc, self.retry_s)
        self._was_down.add(key)

    def _read_failed(self, exc: BaseException, key: int) -> None:
        """A request-path read failed: open the circuit, unless it is a timeout of a healthy Redis
        that has not yet timed out ``timeouts_to_open`` times in a row (see the module docstring)."""
        if isinstance(exc, (redis.TimeoutError, TimeoutError)) and key not in self._was_down:
            self._timeouts[key] = self._timeouts.get(key, 0) + 1
            if self._timeouts[key] < self.timeouts_to_open:
                return
        self._timeouts.pop(key, None)
        self._failed(exc, key)

    def _succeeded(self, key: int) -> None:
        self._timeouts.pop(key, None)
        if key in self._was_down:
            where = "" if key == self._whole else f" (shard {key})"
            log.warning("Redis is back%s; leaving degraded mode", where)
            self._was_down.discard(key)

    async def ping(self) -> bool:
        """Redis answers; on a cluster, every master."""
        try:
            if self.cluster:
                await self.client.ping(target_nodes=self.client.PRIMARIES)
            else:
                await self.client.ping()
        except REDIS_ERRORS as exc:
            self._failed(exc, self._whole)
            return False
        self._succeeded(self._whole)
        return True

    async def ensure_layout(self) -> None:
        """Record the key layout on first use; raise LayoutConflict if Redis holds another one."""
        key, record = self.layout.layout_key(), self.layout.record()
        if not await self.client.set(key, record, nx=True):
            self.layout.check_record(await self.client.get(key))

    # ---- request path --------------------------------------------------------------
    def read_user(self, user_id: str, bundle_version: str, seen_version: bytes | None = None) -> UserRecord | None:
        """Field row and seen state; ``None`` when Redis is unavailable for this user.

        One pipelined round trip (one node: the keys share the user's shard tag).  The newest
        ``max_seen`` seen members come back only when the caller holds no version, or a version
        other than the set's (then a second round trip reads them).  The version is read before
        the members, so an event landing in between leaves the caller an older version with newer
        members: its next request re-reads, never serves a stale set.  On a cluster the members
        and their version are read by one script instead (``READ_SEEN``: a cluster pipeline may
        reorder redirected commands).  Pipelined commands elsewhere: a script's Lua reply
        conversion cost ~25 µs more per read (read_path.py).

        The version is the state record's ``seen_version`` *and* ``events`` counter: a worker of
        an older release (rolling deploy, rollback) appends events without ``seen_version`` but
        still counts them, so its writes change the version too."""
        shard = self.layout.shard_of(user_id)
        if not self.shard_available(shard):
            return None
        circuit = self._circuit_key(shard)
        seen_key, state_key = self.layout.seen(user_id), self.layout.state(user_id)
        try:
            pipe = self.reader.pipeline(transaction=False)
            pipe.hget(self.layout.fields(bundle_version, shard), user_id)
            pipe.hmget(state_key, ["seen_version", "events"])
            read_members = seen_version is None and not self.cluster
            if read_members:
                pipe.zrange(seen_key, -self.max_seen, -1)
            replies = pipe.execute(raise_on_error=False)
            if isinstance(replies[0], Exception):
                raise replies[0]
            fields, version = replies[0], _state_version(replies[1])
            if seen_version is not None and version == seen_version:
                self._succeeded(circuit)
                return UserRecord(fields, None, version)
            if read_members:
                seen = replies[2]
            else:
                version, seen = self._members_with_version(seen_key, state_key)
            if isinstance(seen, redis.ResponseError) and "WRONGTYPE" in str(seen):
                seen = self.reader.srandmember(seen_key, self.max_seen)  # a legacy SET not yet converted
                version = None  # an unconverted set has no version of its own
            elif isinstance(seen, Exception):
                raise seen
        except REDIS_ERRORS as exc:
            self._read_failed(exc, circuit)
            return None
        self._succeeded(circuit)
        return UserRecord(fields, list(seen), version)

    def _members_with_version(self, seen_key: str, state_key: str) -> tuple[bytes | None, object]:
        """(version, the newest members or the error reading them) in one round trip, the version
        read first: one script on a cluster (``READ_SEEN``), a pipeline on a plain Redis."""
        if self.cluster:
            if self._read_seen_script is None:
                self._read_seen_script = self.reader.register_script(READ_SEEN)
            raw_version, events, seen = self._read_seen_script(keys=[seen_key, state_key], args=[self.max_seen],
                                                                client=self.reader)
            return _version(raw_version, events), seen
        pipe = self.reader.pipeline(transaction=False)
        pipe.hmget(state_key, ["seen_version", "events"])
        pipe.zrange(seen_key, -self.max_seen, -1)
        raw, seen = pipe.execute(raise_on_error=False)
        return _state_version(raw), seen

    async def append_events(self, events: list[dict]) -> list[str]:
        """Append to the stream, seen sets and state records, one atomic script per shard; returns ids.

        An event with an ``event_id`` already stored (within ``event_id_ttl_s``) adds nothing
        and reports the id it was stored under, so a client may retry a batch whose answer it
        never got.  Raises StoreUnavailable when Redis cannot take them: the caller answers 503
        and the client retries, so nothing is acknowledged and then lost.  On a sharded layout
        the batch's shards are written concurrently; the exception then says which were stored.
        """
        now = repr(time.time())
        by_shard: dict[int, list[int]] = {}
        for i, event in enumerate(events):
            by_shard.setdefault(self.layout.shard_of(event["user_id"]), []).append(i)
        shards = list(by_shard)
        results = await asyncio.gather(*(self._append_shard(shard, [events[i] for i in by_shard[shard]], now)
                                         for shard in shards), return_exceptions=True)
        ids: dict[int, str] = {}
        failures = []
        for shard, result in zip(shards, results):
            if isinstance(result, BaseException):
                if not isinstance(result, Exception):
                    raise result  # cancellation and the like
                if not isinstance(result, REDIS_ERRORS):
                    # the cluster client can surface a node dying mid-command as other errors;
                    # the write's fate is unknown either way, so it is not acknowledged
                    log.warning("event write to shard %d failed with %s", shard, type(result).__name__,
                                exc_info=result)
                self._failed(result, self._circuit_key(shard))
                failures.append(result)
                continue
            self._succeeded(self._circuit_key(shard))
            ids.update(zip(by_shard[shard], result))
        if failures:
            raise StoreUnavailable(str(failures[0]), ids)
        return [ids[i] for i in range(len(events))]

    async def _append_shard(self, shard: int, events: list[dict], now: str) -> list[str]:
        layout = self.layout
        keys, args = [layout.events(shard)], [now, str(self.event_id_ttl_s), str(self.max_seen)]
        for event in events:
            user, event_id = event["user_id"], event.get("event_id")
            keys += [layout.seen(user), layout.state(user), layout.event_id(user, event_id)]
            ts = event.get("ts")
            args += [user, event["item_id"], repr(event["rating"]), repr(ts) if ts is not None else now,
                     "0" if event_id is None else "1", event_id or "",
                     side_fields_json(event.get("user_fields")), side_fields_json(event.get("item_fields"))]
        results = await self._append_events(keys=keys, args=args)
        return [layout.global_id(r.decode() if isinstance(r, bytes) else str(r), shard) for r in results]

    async def durability(self) -> dict[str, str]:
        """The server's persistence settings in force (CONFIG GET), or why they are unknown.

        On a cluster, every master's: a setting the masters disagree on is reported as
        ``mixed: node=value, …`` (and counts as weak).  Managed Redis services often disable or
        rename CONFIG: that is reported, not fatal.
        """
        settings: dict[str, str] = {}
        try:
            for name in ("appendonly", "appendfsync", "save"):
                if self.cluster:
                    per_node = await self.client.config_get(name, target_nodes=self.client.PRIMARIES)
                    values = {node: _text(v) for node, reply in per_node.items() for k, v in reply.items()}
                    distinct = set(values.values())
                    settings[name] = distinct.pop() if len(distinct) == 1 else "mixed: " + ", ".join(
                        f"{node}={value}" for node, value in sorted(values.items()))
                else:
                    settings.update({_text(k): _text(v) for k, v in (await self.client.config_get(name)).items()})
        except redis.ResponseError as exc:
            return {"unknown": f"CONFIG GET refused: {exc}"}
        return settings

    # ---- bundle bulk load ----------------------------------------------------------
    async def is_loaded(self, version: str) -> bool:
        return bool(await self.client.exists(self.layout.version_key(version, "loaded")))

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
        version, client, layout = ranker.version, self.loader, self.layout
        lock = layout.version_key(version, "loading")
        if not client.set(lock, "1", nx=True, ex=120):
            return False  # another worker is loading it; the sync loop will look again
        try:
            start = time.perf_counter()
            users, rows = ranker.user_ids, ranker.user_fields
            shard_of = np.fromiter((layout.shard_of(u) for u in users[1:]), np.int64, len(users) - 1)
            for shard in range(layout.shards):
                members = np.flatnonzero(shard_of == shard) + 1
                fields_key = layout.fields(version, shard)
                for lo in range(0, len(members), BULK_CHUNK_USERS):
                    chunk = members[lo:lo + BULK_CHUNK_USERS].tolist()
                    client.hset(fields_key, mapping={users[i]: rows[i].tobytes() for i in chunk})
            client.set(layout.version_key(version, "loaded"), json.dumps(
                {"bundle": ranker.name, "users": len(users) - 1, "at": time.time()}))
            log.info("bulk-loaded %s (%s): %d users' field rows in %.2f s", ranker.name, version,
                     len(users) - 1, time.perf_counter() - start)
            return True
        finally:
            client.delete(lock)

    # ---- reloads across workers ----------------------------------------------------
    async def publish_reload(self, name: str, path: str, version: str) -> None:
        """The entry and the generation bump in one script (one slot on a cluster: ``{admin}``)."""
        await self._publish_reload(keys=[self.layout.admin("bundles"), self.layout.admin("generation")],
                                   args=[name, json.dumps({"path": path, "version": version})])

    async def reload_generation(self) -> int:
        value = await self.client.get(self.layout.admin("generation"))
        return int(value or 0)

    async def published_bundles(self) -> dict[str, dict]:
        raw = await self.client.hgetall(self.layout.admin("bundles"))
        return {_text(k): json.loads(v) for k, v in raw.items()}

    async def close(self) -> None:
        await self.client.aclose()
        for client in (self._reader, self._loader):
            if client is not None:
                client.close()


def _version(seen_version: bytes | None, events: bytes | None) -> bytes | None:
    """The seen set's version token: ``None`` until the current event script has written one."""
    return None if seen_version is None else seen_version + b"|" + (events or b"")


def _state_version(reply: object) -> bytes | None:
    """The version from an ``HMGET state seen_version events`` reply.  A state key of another type
    (written by hand or by a foreign tool) means "no version": the set is then read every time,
    instead of one corrupt key failing every read of its shard and opening the circuit."""
    if isinstance(reply, redis.ResponseError) and "WRONGTYPE" in str(reply):
        return None
    if isinstance(reply, Exception):
        raise reply
    return _version(*reply)


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


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
