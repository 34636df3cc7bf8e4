"""The gateway's behaviour, independent of HTTP: model registry, request paths, reloads.

Requests read ``self.models`` once, so a reload (which replaces the whole dict) never
changes the bundle under a request in flight: it finishes on the old one.

A worker that cannot follow a reload another worker published keeps serving what it has,
retries with capped exponential backoff (loading a bundle hashes every file: retrying each
sync pass would burn a core forever) and names the model it is behind on in ``/readyz``.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import anyio
import numpy as np
import redis

from ratingctr.bundle import BundleError
from ratingctr.serving import metrics, stale_versions
from ratingctr.serving.bundle_root import OutsideBundleRoot, inside_bundle_root
from ratingctr.serving.embedded_redis import EmbeddedRedis, NoEmbeddedRedis, read_url_file
from ratingctr.serving.ranker import Ranked, Ranker, UnknownFieldError, load_ranker
from ratingctr.serving.redis_dir_lock import RedisDirBusy, RedisDirLock, is_sibling
from ratingctr.serving.redis_keys import LayoutConflict
from ratingctr.serving.settings import GatewaySettings
from ratingctr.serving.seen_cache import SeenCache
from ratingctr.serving.user_store import StoreUnavailable, UserRecord, UserStore, decode_row

log = logging.getLogger("ratingctr.gateway")

# Above this many rows an ONNX call moves off the event loop (ORT releases the GIL).
THREAD_SCORE_ROWS = 2000


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Behind:
    """A published reload this worker failed to follow, and when it tries again."""

    version: str
    path: str
    error: str
    attempts: int
    retry_at: float


# appendfsync values weaker than "always": an acknowledged event can be lost in a crash
_WEAK_FSYNC = ("everysec", "no")
SIBLING_REDIS_WAIT_S = 30.0  # how long a worker waits for a sibling's embedded Redis to come up


def redis_url_parts(url: str) -> tuple[str | None, int]:
    """(password, port) of a ``redis://:password@host:port/db`` URL."""
    parsed = urllib.parse.urlsplit(url)
    return parsed.password, parsed.port or 6379


def _start_embedded(directory: Path) -> EmbeddedRedis:
    """The embedded Redis on ``directory``, on the port and password of the previous one when
    its ``redis.url`` was left behind (its worker was killed): siblings that still hold that
    URL reconnect instead of being stranded on a server that no longer exists."""
    try:
        password, port = redis_url_parts(read_url_file(directory))
    except NoEmbeddedRedis:
        return EmbeddedRedis(directory).start()
    try:
        server = EmbeddedRedis(directory, port=port, password=password).start()
        log.warning("started the embedded Redis on %s on its previous URL (port %d): a worker that owned it died",
                    directory, port)
        return server
    except RuntimeError as exc:  # the old port is taken by something else now
        log.warning("could not restart the embedded Redis on its previous port %d (%s); using a new one", port, exc)
        return EmbeddedRedis(directory).start()


def _wait_for_sibling_redis(directory: Path, timeout: float) -> str:
    """The URL of the embedded Redis a sibling worker runs on ``directory``, once it answers."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            url = read_url_file(directory)
            client = redis.Redis.from_url(url, socket_connect_timeout=0.2, socket_timeout=0.5)
            try:
                if client.ping():
                    return url
            finally:
                client.close()
        except (NoEmbeddedRedis, redis.RedisError, OSError):
            pass  # not written yet, or a stale file of a server that is gone
        if time.monotonic() > deadline:
            raise RedisDirBusy(f"a sibling worker holds {directory} but its embedded Redis did not answer within "
                               f"{timeout:.0f} s; set REDIS_URL or use `ratingctr serve --workers N`")
        time.sleep(0.1)


class Gateway:
    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.models: dict[str, Ranker] = {}
        self.default_model = ""
        self.store: UserStore | None = None
        self.seen_cache = SeenCache(settings.seen_cache_items)
        self.embedded: EmbeddedRedis | None = None
        self._redis_dir_lock: RedisDirLock | None = None
        self._shared_redis_dir: Path | None = None  # set when a sibling worker's embedded Redis is used
        self._next_collect = 0.0  # monotonic time of the next stale-version pass
        self._reload_lock = asyncio.Lock()
        self._generation = 0
        self._sync_task: asyncio.Task | None = None
        self.behind: dict[str, Behind] = {}
        self.durability: dict[str, str] | None = None
        self._layout_checked = False
        self.layout_conflict: str | None = None  # Redis holds another key layout: events are refused

    # ---- lifecycle -----------------------------------------------------------------
    def _load(self, path: Path) -> Ranker:
        s = self.settings
        # every load (start-up, admin reload, following a Redis notice) goes through here, so a
        # configured bundle key is enforced on all three paths alike
        return load_ranker(path, s.candidates, s.ort_threads, s.device, s.warmup_calls, key=s.bundle_key_bytes())

    async def start(self) -> None:
        bundles = self.settings.bundle_map()
        url = self.settings.redis_url
        if not url:  # run directly under uvicorn without `ratingctr serve`: one embedded Redis per directory
            url = await self._embedded_or_sibling_url()
        s = self.settings
        self.store = UserStore(url, s.redis_prefix, s.redis_timeout_s, s.redis_retry_s, s.redis_write_timeout_s,
                               s.event_id_ttl_s, s.max_seen_per_user, s.redis_shards, s.redis_timeouts_to_open)
        # The reload generation is read *before* the (slow) bundle loads: a reload another worker
        # publishes while this one is still loading is then followed, not silently adopted.
        if await self.store.ping():
            try:
                await self.store.ensure_layout()
                self._layout_checked = True
            except LayoutConflict:
                await self.stop()  # refuse to start: writing under another layout splits users' state
                raise
            except Exception as exc:  # noqa: BLE001 - Redis vanished between calls: the sync loop checks it
                log.warning("checking the Redis key layout failed: %s", exc)
            try:
                self._generation = await self.store.reload_generation()
            except Exception as exc:  # noqa: BLE001 - Redis vanished between calls: serve degraded
                log.warning("reading the reload generation failed: %s", exc)
        models = {}
        try:
            for name, path in bundles.items():
                models[name] = await anyio.to_thread.run_sync(self._load, path)
                log.info("loaded bundle %s = %s (version %s)", name, path, models[name].version)
        except BaseException:
            await self.stop()  # no embedded Redis or connections left behind by a failed start
            raise
        self.models, self.default_model = models, next(iter(bundles))
        try:
            await self._sync_once()
        except Exception as exc:  # noqa: BLE001 - a slow Redis must not crash-loop the server: the sync loop retries
            log.warning("start-up bulk load / sync deferred, serving degraded until it succeeds: %s", exc)
        self._sync_task = asyncio.create_task(self._sync_loop())
        host = "127.0.0.1" if s.host in ("0.0.0.0", "::") else s.host
        example_user = self.models[self.default_model].user_ids[1:2] or ["new-user"]
        log.info("ready; try: curl -s -X POST http://%s:%d/v1/recommend -H 'Content-Type: application/json' "
                 "-d '{\"user_id\": \"%s\", \"k\": 10}'", host, s.port, example_user[0])

    async def _embedded_or_sibling_url(self) -> str:
        """Start the embedded Redis on ``redis_dir``, or share the one a sibling worker started.

        ``uvicorn --factory … --workers N``: the first worker takes the directory's lock and
        starts the server; the others find the lock held by a sibling and wait for its
        ``redis.url``.  An unrelated process holding the lock is refused (``RedisDirBusy``).
        """
        directory = Path(self.settings.redis_dir)
        try:
            self._redis_dir_lock = RedisDirLock(directory).acquire()
        except RedisDirBusy as busy:
            if not is_sibling(busy.holder):
                raise
            self._shared_redis_dir = directory
            url = await anyio.to_thread.run_sync(_wait_for_sibling_redis, directory, SIBLING_REDIS_WAIT_S)
            log.info("sharing the embedded Redis of sibling worker %s on %s", busy.holder, directory)
            return url
        try:
            self.embedded = await anyio.to_thread.run_sync(_start_embedded, directory)
        except BaseException:
            self._redis_dir_lock.release()
            raise
        return self.embedded.url

    async def _take_over_redis(self) -> None:
        """The sibling that owned the shared embedded Redis died (and the server with it):
        restart it here, on the same port and password, so every worker's client reconnects."""
        if self._shared_redis_dir is None or self.embedded is not None or self.store is None:
            return
        try:
            lock = RedisDirLock(self._shared_redis_dir).acquire()
        except RedisDirBusy:
            return  # its owner is alive (a slow Redis), or another sibling is taking over
        previous = redis_url_parts(self.store.url)
        try:
            self.embedded = await anyio.to_thread.run_sync(
                lambda: EmbeddedRedis(self._shared_redis_dir, port=previous[1], password=previous[0]).start())
            self._shared_redis_dir = None
        except Exception as exc:  # noqa: BLE001 - the port may be taken: stay degraded, try again next pass
            lock.release()
            log.warning("could not restart the shared embedded Redis on %s: %s", self._shared_redis_dir, exc)
            return
        self._redis_dir_lock = lock
        log.warning("the worker owning the embedded Redis on %s died; restarted it here (pid %d)",
                    self._shared_redis_dir, os.getpid())

    async def stop(self) -> None:
        if self._sync_task:
            self._sync_task.cancel()
            # Let the loop leave Redis before the store closes under it (a pass cut off mid-way
            # left a task that never finished cancelling); a bulk load running in a thread cannot
            # be interrupted, so the wait is bounded.
            await asyncio.wait({self._sync_task}, timeout=10)
        if self.store:
            await self.store.close()
        if self.embedded:
            self.embedded.stop()
        if self._redis_dir_lock:
            self._redis_dir_lock.release()

    async def _sync_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.sync_interval_s)
            try:
                await self._sync_once()
            except Exception as exc:  # noqa: BLE001 - the loop must survive anything Redis does
                log.debug("sync pass failed: %s", exc)

    async def _sync_once(self) -> None:
        """Bulk-load bundles Redis lacks (first start, or a Redis that came back empty) and
        follow reloads other workers published."""
        store = self.store
        if store is None or not store.available or not await store.ping():
            await self._take_over_redis()
            return
        if not self._layout_checked:
            try:
                await store.ensure_layout()
            except LayoutConflict as exc:
                if self.layout_conflict is None:
                    log.error("events are refused until this is fixed: %s", exc)
                self.layout_conflict = str(exc)
                return
            self._layout_checked, self.layout_conflict = True, None
        if self.durability is None:
            await self._read_durability()
        for ranker in list(self.models.values()):
            await store.bulk_load(ranker)
        await self._collect_stale_versions(store)
        generation = await store.reload_generation()
        if generation != self._generation or self.behind:
            published = await store.published_bundles()
            for name, entry in published.items():
                current = self.models.get(name)
                if current is None or current.version != entry.get("version"):
                    await self._follow(name, entry)
                else:
                    self.behind.pop(name, None)
            self._generation = generation

    async def _collect_stale_versions(self, store: UserStore) -> None:
        """Claim the versions served here, then drop field copies nobody claimed for the grace period.

        Every quarter grace period (at most once per sync pass), not every pass: claims last the
        whole grace period, so refreshing them more often would only add Redis round trips.
        """
        grace, served = self.settings.stale_version_grace_s, [r.version for r in self.models.values()]
        if time.monotonic() < self._next_collect:
            return
        self._next_collect = time.monotonic() + max(self.settings.sync_interval_s, grace / 4)
        try:
            await stale_versions.mark_served(store, served, grace)
            deleted = await stale_versions.collect_stale(store, served, grace)
        except Exception as exc:  # noqa: BLE001 - clean-up must never stop a worker from following reloads
            log.warning("stale bundle version clean-up failed: %s", exc)
            return
        for version in deleted:
            log.info("deleted the Redis field rows of bundle version %s (served by no worker for %.0f s)",
                     version, grace)

    async def _follow(self, name: str, entry: dict) -> None:
        """Load a reload another worker published; on failure, back off (doubling, capped)."""
        version, path = str(entry.get("version")), str(entry.get("path"))
        behind = self.behind.get(name)
        if behind is not None and behind.version == version and time.monotonic() < behind.retry_at:
            return
        try:
            await self.reload(name, path, publish=False)
        except Exception as exc:  # noqa: BLE001 - whatever the bundle does, this worker keeps serving
            message = exc.message if isinstance(exc, ApiError) else f"{type(exc).__name__}: {exc}"
            attempts = behind.attempts + 1 if behind is not None and behind.version == version else 1
            delay = min(self.settings.follow_backoff_max_s, self.settings.sync_interval_s * 2 ** attempts)
            self.behind[name] = Behind(version, path, message, attempts, time.monotonic() + delay)
            log.warning("could not follow the reload of %s to %s (attempt %d, next in %.0f s): %s",
                        name, path, attempts, delay, message)
            return
        self.behind.pop(name, None)

    async def _read_durability(self) -> None:
        """What the Redis server really persists, for /readyz, with a warning when it is weaker
        than an fsync per write (events acknowledged with 202 could be lost in a crash)."""
        try:
            self.durability = await self.store.durability()
        except Exception as exc:  # noqa: BLE001 - unknown now; the sync loop asks again
            log.debug("reading Redis persistence settings failed: %s", exc)
            return
        d = self.durability
        if (d.get("appendonly") != "yes" or d.get("appendfsync") in _WEAK_FSYNC or "unknown" in d
                or any(str(v).startswith("mixed:") for k, v in d.items() if k != "save")):
            log.warning("Redis durability is weaker than fsync-always, or unknown (%s): acknowledged events can "
                        "be lost if Redis crashes", ", ".join(f"{k}={v!r}" for k, v in d.items()))

    # ---- helpers -------------------------------------------------------------------
    def model(self, name: str | None) -> tuple[str, Ranker]:
        """(registry name, ranker) for a request; the default model when none is named."""
        models = self.models
        name = name or self.default_model
        ranker = models.get(name)
        if ranker is None:
            raise ApiError(404, f"unknown model {name!r}; loaded models: {', '.join(models)}")
        return name, ranker

    def _user_context(self, name: str, ranker: Ranker, user_id: str, user_fields: dict | None,
                      timings: dict[str, float]) -> tuple[int, np.ndarray, np.ndarray, str | None]:
        """(user index, field row, seen item indices, fallback) for one request."""
        user = ranker.user_index.get(user_id, 0)
        start = time.perf_counter()
        cached = self.seen_cache.version(ranker.version, user_id)
        record = self.store.read_user(user_id, ranker.version, cached) if self.store else None
        timings["redis"] = time.perf_counter() - start
        seen = self._seen_indices(ranker, user_id, record) if record is not None else None
        if seen is None:  # Redis unavailable (first read or re-read): the bundle's own row and history
            seen = ranker.history(user) if user else np.zeros(0, np.int64)
            row = ranker.user_fields[user] if user else self._cold_row(ranker, user_fields)
            return user, row, seen, "degraded"
        if user:
            # Redis holds the history once a bulk load has finished; until then (a worker that
            # lost the load lock to another, a Redis that came back empty) the bundle's own
            # history keeps training items out (a union of two short sorted index arrays).
            seen = np.union1d(seen, ranker.history(user)) if len(seen) else ranker.history(user)
            row = decode_row(record.fields, ranker.user_fields.shape[1])
            if row is not None and not ranker.valid_user_row(row):
                metrics.BAD_ROWS.labels(name).inc()
                row = None
            return user, (row if row is not None else ranker.user_fields[user]), seen, None
        return 0, self._cold_row(ranker, user_fields), seen, "cold_start"

    def _seen_indices(self, ranker: Ranker, user_id: str, record: UserRecord) -> np.ndarray | None:
        """The user's seen set as sorted, unique, known item indices: from the cache when Redis
        says it is unchanged, else mapped once and cached under its version.  Unknown ids (junk, or
        items newer than the bundle) are dropped: they could never be candidates, and each would
        widen the FAISS search by one (``Ranker.retrieve`` fetches ``n + len(seen)``)."""
        if record.seen is None:
            cached = self.seen_cache.get(ranker.version, user_id, record.seen_version)
            if cached is not None:
                return cached
            # unreachable while a request runs synchronously on one event loop (nothing evicts
            # between the version lookup and here); should that change, a full read stays correct
            record = self.store.read_user(user_id, ranker.version)
            if record is None:
                return None
        indices = ranker.item_indices(record.seen) if record.seen else np.zeros(0, np.int64)
        indices = np.unique(indices[indices > 0])
        if record.seen_version is not None:
            self.seen_cache.put(ranker.version, user_id, record.seen_version, indices)
        else:
            self.seen_cache.drop(ranker.version, user_id)
        return indices

    @staticmethod
    def _cold_row(ranker: Ranker, user_fields: dict | None) -> np.ndarray:
        try:
            return ranker.cold_start_row(user_fields)
        except UnknownFieldError as exc:
            raise ApiError(422, str(exc)) from exc

    @staticmethod
    def _observe(model: str, endpoint: str, started: float, timings: dict[str, float],
                 fallback: str | None) -> None:
        metrics.REQUEST_SECONDS.labels(endpoint, model).observe(time.perf_counter() - started)
        for stage, seconds in timings.items():
            metrics.STAGE_SECONDS.labels(stage, model).observe(seconds)
        if fallback:
            metrics.FALLBACKS.labels(fallback, model).inc()

    @staticmethod
    def _items(ranker: Ranker, ranked: Ranked) -> list[dict]:
        """One object per item; the scores stay numpy float32 (``serving.responses`` writes them)."""
        ids = ranker.item_ids_array[ranked.items].tolist()
        if ranked.rating_probs is None:
            return [{"item_id": i, "p_click": pc, "rating_probs": None, "expected_rating": None}
                    for i, pc in zip(ids, ranked.p_click)]
        return [{"item_id": i, "p_click": pc, "rating_probs": rp, "expected_rating": er}
                for i, pc, rp, er in zip(ids, ranked.p_click, ranked.rating_probs, ranked.expected_rating)]

    # ---- endpoints -----------------------------------------------------------------
    async def recommend(self, user_id: str, k: int, exclude_seen: bool, model: str | None,
                        user_fields: dict | None) -> dict:
        started = time.perf_counter()
        name, ranker = self.model(model)
        timings: dict[str, float] = {}
        user, row, seen, fallback = self._user_context(name, ranker, user_id, user_fields, timings)
        if not exclude_seen:
            seen = np.zeros(0, np.int64)
        n = max(ranker.candidates, k)
        start = time.perf_counter()
        items = ranker.retrieve(user, seen, n) if user else ranker.popular_items(seen, n)
        timings["faiss"] = time.perf_counter() - start
        ranked = ranker.rank(row, items, min(k, len(items)) if len(items) else 1, timings, user, seen)
        listed = self._items(ranker, ranked)
        body = {"user_id": user_id, "items": listed, "model": {"name": name, "version": ranker.version},
                "fallback": fallback, "fresh_item_ids": [i["item_id"] for i in listed[len(listed) - ranked.fresh:]]
                if ranked.fresh else []}
        self._observe(name, "recommend", started, timings, fallback)
        return body

    async def score(self, user_id: str, item_ids: list[str], model: str | None, user_fields: dict | None) -> dict:
        started = time.perf_counter()
        name, ranker = self.model(model)
        timings: dict[str, float] = {}
        _, row, _, fallback = self._user_context(name, ranker, user_id, user_fields, timings)
        indices = ranker.item_indices(item_ids)
        known = indices > 0
        items = indices[known]
        if len(items) > THREAD_SCORE_ROWS:
            ranked = await anyio.to_thread.run_sync(ranker.score_items, row, items)
        elif len(items):
            ranked = ranker.score_items(row, items)
        else:
            ranked = Ranked(items, np.zeros(0, np.float32), None, None, {})
        timings.update(ranked.timings)
        unknown = [item_ids[i] for i in np.flatnonzero(~known).tolist()]
        body = {"user_id": user_id, "items": self._items(ranker, ranked), "unknown_item_ids": unknown,
                "model": {"name": name, "version": ranker.version}, "fallback": fallback}
        self._observe(name, "score", started, timings, fallback)
        return body

    async def events(self, events: list[dict]) -> dict:
        levels = max((r.levels or 5) for r in self.models.values())
        bad = [i for i, e in enumerate(events) if not 1 <= e["rating"] <= levels]
        if bad:
            raise ApiError(422, f"events {bad[:10]} have a rating outside 1..{levels}")
        if self.store is None:
            raise ApiError(503, "Redis is not configured; events cannot be stored")
        if self.layout_conflict is not None:
            raise ApiError(503, f"events cannot be stored: {self.layout_conflict}")
        try:
            ids = await self.store.append_events(events)
        except StoreUnavailable as exc:
            if exc.stored:  # a sharded layout: the shards that answered stored their part
                metrics.EVENTS.inc(len(exc.stored))
                stored = sorted(exc.stored)
                raise ApiError(503, f"Redis cannot take events right now ({exc}); {len(stored)} of {len(events)} "
                               f"were stored (indices {stored[:20]}{' …' if len(stored) > 20 else ''}), the others "
                               "were not: retry the batch with event_ids and nothing is stored twice") from exc
            raise ApiError(503, f"Redis cannot take events right now ({exc}); nothing was stored, retry") from exc
        metrics.EVENTS.inc(len(events))
        return {"accepted": len(events), "ids": ids}

    async def reload(self, name: str, path: str, publish: bool = True, reason: str = "manual") -> dict:
        """Load, verify and warm up off the event loop, then swap the registry in one step."""
        try:  # before anything is opened: API reloads and Redis reload notices alike
            path = str(inside_bundle_root(path, self.settings.bundle_root))
        except OutsideBundleRoot as exc:
            metrics.RELOADS.labels("refused").inc()
            raise ApiError(403, f"bundle refused, {name!r} keeps serving its current version: {exc}") from exc
        async with self._reload_lock:
            started = time.perf_counter()
            try:
                ranker = await anyio.to_thread.run_sync(self._load, Path(path))
            except (BundleError, OSError, ValueError) as exc:
                metrics.RELOADS.labels("rejected").inc()
                raise ApiError(422, f"bundle rejected, {name!r} keeps serving its current version: {exc}") from exc
            current = self.models.get(name)
            if self.store is not None and self.store.available:
                try:
                    await self.store.bulk_load(ranker)
                except Exception as exc:  # noqa: BLE001 - the sync loop retries the bulk load
                    log.warning("bulk load of %s deferred: %s", name, exc)
            self.models = {**self.models, name: ranker}
            if publish and self.store is not None:
                try:
                    await self.store.publish_reload(name, str(Path(path).resolve()), ranker.version)
                    self._generation = await self.store.reload_generation()
                except Exception as exc:  # noqa: BLE001 - other workers follow once Redis is back
                    log.warning("could not publish the reload to other workers: %s", exc)
            metrics.RELOADS.labels("ok").inc()
            if reason == "promotion":
                metrics.PROMOTIONS.labels(name).inc()
            return {"name": name, "version": ranker.version, "path": str(path),
                    "previous_version": current.version if current else None,
                    "seconds": round(time.perf_counter() - started, 4)}

    async def readiness(self) -> dict:
        redis_ok = bool(self.store) and self.store.available and await self.store.ping()
        return {"status": "ready" if self.models else "loading",
                "redis": "ok" if redis_ok else "degraded",
                "models": {n: {"version": r.version, "path": str(r.path), "head": r.manifest.model.head}
                           for n, r in self.models.items()},
                "default_model": self.default_model,
                "durability": self.durability,
                "behind": {n: {"wanted_version": b.version, "path": b.path, "error": b.error, "attempts": b.attempts,
                               "retry_in_s": round(max(0.0, b.retry_at - time.monotonic()), 1)}
                           for n, b in self.behind.items()}}
