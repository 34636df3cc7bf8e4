"""State and durability of the gateway against a real Redis, in process (httpx ASGI transport):
idempotent events, the bounded seen state, field rows checked before scoring, the Redis
persistence report, the embedded Redis's password and a follower's backoff."""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import anyio
import numpy as np
import pytest
import redis
from helpers import bundle_history, in_process

from ratingctr.bundle import load_bundle
from ratingctr.serving.embedded_redis import EmbeddedRedis
from ratingctr.serving.seen_cache import ENTRY_OVERHEAD, entry_cost

pytestmark = [pytest.mark.integration, pytest.mark.anyio]






def _items(bundle: Path) -> list[str]:
    return load_bundle(bundle).vocab["item_id"][1:]


# ---- idempotent events --------------------------------------------------------------
async def test_a_batch_with_event_ids_written_twice_is_stored_once(tiny_bundles, redis_server, redis_client) -> None:
    items = _items(tiny_bundles["rating"])
    events = [{"user_id": "idem-user", "item_id": items[i], "rating": 1 + i % 5, "ts": 1700000000 + i,
               "event_id": f"batch-1/{i}"} for i in range(4)]
    async with in_process(bundles=f"main={tiny_bundles['rating']}", redis_url=redis_server.url,
                          redis_prefix="idem") as (c, _):
        first = await c.post("/v1/events", json={"events": events})
        assert first.status_code == 202, first.text
        retry = await c.post("/v1/events", json={"events": events})
        assert retry.status_code == 202, retry.text
        assert retry.json()["ids"] == first.json()["ids"]  # the retry learns where its events were stored
        # a fresh event after the retry, and a batch repeating one id inside itself
        extra = {"user_id": "idem-user", "item_id": items[5], "rating": 3, "event_id": "batch-2/0"}
        twice = await c.post("/v1/events", json={"events": [extra, extra]})
        assert twice.status_code == 202 and len(set(twice.json()["ids"])) == 1
    stream = redis_client.xrange("idem:events")
    assert sorted(fields["event_id"] for _, fields in stream) == sorted([e["event_id"] for e in events] + ["batch-2/0"])
    assert [entry_id for entry_id, _ in stream[:4]] == first.json()["ids"]
    assert redis_client.hget("idem:user:idem-user", "events") == "5"  # the state record did not count retries
    assert redis_client.zcard("idem:seen:idem-user") == 5
    assert 0 < redis_client.ttl("idem:eid:batch-1/0") <= 86400
    # events without ids keep at-least-once semantics: two posts, two entries
    async with in_process(bundles=f"main={tiny_bundles['rating']}", redis_url=redis_server.url,
                          redis_prefix="idem", event_id_ttl_s=60) as (c, _):
        plain = {"user_id": "idem-user", "item_id": items[6], "rating": 2}
        for _ in range(2):
            assert (await c.post("/v1/events", json={"events": [plain]})).status_code == 202
        with_id = {**plain, "event_id": "short-lived"}
        assert (await c.post("/v1/events", json={"events": [with_id]})).status_code == 202
    assert redis_client.xlen("idem:events") == 5 + 3
    assert 0 < redis_client.ttl("idem:eid:short-lived") <= 60


@pytest.mark.parametrize("event_id", ["", "x" * 129, 17])
async def test_a_bad_event_id_is_a_422(tiny_bundles, redis_server, event_id) -> None:
    async with in_process(bundles=f"main={tiny_bundles['rating']}", redis_url=redis_server.url,
                          redis_prefix="idem-bad") as (c, _):
        r = await c.post("/v1/events", json={"events": [{"user_id": "u1", "item_id": "i1", "rating": 5,
                                                         "event_id": event_id}]})
        assert r.status_code == 422 and "event_id" in r.json()["error"]


# ---- bounded seen state --------------------------------------------------------------
async def test_the_seen_state_keeps_the_newest_n_and_recommend_excludes_them(tiny_bundles, redis_server,
                                                                             redis_client) -> None:
    items = _items(tiny_bundles["rating"])
    bound = 5
    # out of order in time, over two requests: the newest by event time stay
    events = [{"user_id": "bounded", "item_id": items[i], "rating": 4, "ts": 1700000000 + (i * 7) % 12}
              for i in range(12)]
    newest = {e["item_id"] for e in sorted(events, key=lambda e: e["ts"])[-bound:]}
    async with in_process(bundles=f"main={tiny_bundles['rating']}", redis_url=redis_server.url,
                          redis_prefix="bounds", max_seen_per_user=bound) as (c, _):
        for half in (events[:6], events[6:]):
            assert (await c.post("/v1/events", json={"events": half})).status_code == 202
        stored = redis_client.zrange("bounds:seen:bounded", 0, -1)
        assert len(stored) == bound and set(stored) == newest
        body = (await c.post("/v1/recommend", json={"user_id": "bounded", "k": 1000})).json()
        returned = {i["item_id"] for i in body["items"]}
        assert body["fallback"] == "cold_start" and not returned & newest
        assert len(returned) == len(items) - bound  # the trimmed, older items are recommendable again
        # a known user: the bulk load copies no history into Redis (the bundle's own history
        # applies to every request), so the bound is left to the events
        history = bundle_history(tiny_bundles["rating"], "u1")
        assert history and redis_client.exists("bounds:seen:u1") == 0
        body = (await c.post("/v1/recommend", json={"user_id": "u1", "k": 1000})).json()
        assert body["fallback"] is None and not {i["item_id"] for i in body["items"]} & history


async def test_a_legacy_seen_set_is_read_bounded_and_converted_by_the_next_write(tiny_bundles, redis_server,
                                                                                 redis_client) -> None:
    items = _items(tiny_bundles["rating"])
    redis_client.delete("legacy:seen:old-user")
    redis_client.sadd("legacy:seen:old-user", *items[:3])
    async with in_process(bundles=f"main={tiny_bundles['rating']}", redis_url=redis_server.url,
                          redis_prefix="legacy", max_seen_per_user=10) as (c, _):
        body = (await c.post("/v1/recommend", json={"user_id": "old-user", "k": 1000})).json()
        assert body["fallback"] == "cold_start" and not {i["item_id"] for i in body["items"]} & set(items[:3])
        r = await c.post("/v1/events", json={"events": [{"user_id": "old-user", "item_id": items[3], "rating": 5}]})
        assert r.status_code == 202
    assert redis_client.type("legacy:seen:old-user") == "zset"
    assert set(redis_client.zrange("legacy:seen:old-user", 0, -1)) == set(items[:4])
    assert redis_client.zrange("legacy:seen:old-user", -1, -1) == [items[3]]  # the event is the newest


# ---- the per-worker seen cache ---------------------------------------------------------
def _zrange_calls(client: redis.Redis) -> int:
    """ZRANGE commands the server has run, those inside scripts included."""
    return int(client.info("commandstats").get("cmdstat_zrange", {}).get("calls", 0))


async def test_a_flooded_users_seen_set_is_read_once_until_any_worker_changes_it(tiny_bundles, redis_server,
                                                                                redis_client) -> None:
    items = _items(tiny_bundles["rating"])
    junk = [{"user_id": "flooded", "item_id": f"junk-{i:04d}", "rating": 1, "ts": 1700000000 + i} for i in range(50)]
    settings = dict(bundles=f"main={tiny_bundles['rating']}", redis_url=redis_server.url, redis_prefix="cache",
                    max_seen_per_user=40)
    async with in_process(**settings) as (first, gateway), in_process(**settings) as (second, _):
        rated = {"user_id": "flooded", "item_id": items[0], "rating": 5, "ts": 1800000000}
        assert (await first.post("/v1/events", json={"events": junk + [rated]})).status_code == 202
        before = _zrange_calls(redis_client)
        bodies = [(await first.post("/v1/recommend", json={"user_id": "flooded", "k": 1000})).json()
                  for _ in range(5)]
        assert _zrange_calls(redis_client) - before == 1  # read once, then served from the cache
        assert all({i["item_id"] for i in b["items"]} == set(items) - {items[0]} for b in bodies)
        # the cached entry holds only the known item: 40 junk ids cost it nothing
        version = gateway.seen_cache.version(gateway.models["main"].version, "flooded")
        assert gateway.seen_cache.used == entry_cost("flooded", version, np.zeros(1)) == 1 + ENTRY_OVERHEAD + (7 + len(version)) // 8
        # another worker writes an event for this user: the first worker's next answer must see it
        other = {"user_id": "flooded", "item_id": items[1], "rating": 4, "ts": 1800000001}
        assert (await second.post("/v1/events", json={"events": [other]})).status_code == 202
        after = (await first.post("/v1/recommend", json={"user_id": "flooded", "k": 1000})).json()
        assert {i["item_id"] for i in after["items"]} == set(items) - {items[0], items[1]}
        assert _zrange_calls(redis_client) - before == 2
        # the state record deleted behind the gateway's back: no version, so no stale answer
        redis_client.zrem("cache:seen:flooded", items[1])
        redis_client.delete("cache:user:flooded")
        restored = (await first.post("/v1/recommend", json={"user_id": "flooded", "k": 1000})).json()
        assert {i["item_id"] for i in restored["items"]} == set(items) - {items[0]}


async def test_with_the_cache_off_every_request_reads_the_seen_set(tiny_bundles, redis_server, redis_client) -> None:
    async with in_process(bundles=f"main={tiny_bundles['rating']}", redis_url=redis_server.url,
                          redis_prefix="nocache", seen_cache_items=0) as (c, gateway):
        item = _items(tiny_bundles["rating"])[2]
        event = {"user_id": "plain", "item_id": item, "rating": 5}
        assert (await c.post("/v1/events", json={"events": [event]})).status_code == 202
        before = _zrange_calls(redis_client)
        for _ in range(3):
            body = (await c.post("/v1/recommend", json={"user_id": "plain", "k": 1000})).json()
            assert item not in {i["item_id"] for i in body["items"]}
        assert _zrange_calls(redis_client) - before == 3 and len(gateway.seen_cache) == 0


# ---- field rows from Redis are range-checked ------------------------------------------
def _bad_rows(metrics_text: str, model: str) -> float:
    for line in metrics_text.splitlines():
        if line.startswith(f'ratingctr_bad_rows_total{{model="{model}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_an_out_of_vocabulary_row_in_redis_is_served_from_the_bundle_and_counted(tiny_bundles, redis_server,
                                                                                      redis_client) -> None:
    version = load_bundle(tiny_bundles["rating"]).version
    async with in_process(bundles=f"rowcheck={tiny_bundles['rating']}", redis_url=redis_server.url,
                          redis_prefix="rows") as (c, gateway):
        ranker = gateway.models["rowcheck"]
        good = (await c.post("/v1/recommend", json={"user_id": "u1", "k": 5})).json()
        before = _bad_rows((await c.get("/metrics")).text, "rowcheck")
        raw = redis.Redis.from_url(redis_server.url)
        for bad in (ranker.user_row_limits, -np.ones_like(ranker.user_row_limits)):  # one past the end; negative
            raw.hset(f"rows:b:{version}:fields", "u1", np.asarray(bad, dtype=np.int64).tobytes())
            r = await c.post("/v1/recommend", json={"user_id": "u1", "k": 5})
            assert r.status_code == 200 and r.json()["items"] == good["items"]
        raw.close()
        assert _bad_rows((await c.get("/metrics")).text, "rowcheck") == before + 2


# ---- durability reported ---------------------------------------------------------------
async def test_readyz_reports_the_persistence_redis_really_has(tiny_bundles, redis_server, tmp_path, caplog) -> None:
    async with in_process(bundles=f"main={tiny_bundles['rating']}", redis_url=redis_server.url,
                          redis_prefix="durable") as (c, _):
        durability = (await c.get("/readyz")).json()["durability"]
        assert durability == {"appendonly": "yes", "appendfsync": "always", "save": ""}
    with EmbeddedRedis(tmp_path / "weak", fsync="everysec") as weak, caplog.at_level(logging.WARNING, "ratingctr"):
        async with in_process(bundles=f"main={tiny_bundles['rating']}", redis_url=weak.url) as (c, _):
            assert (await c.get("/readyz")).json()["durability"]["appendfsync"] == "everysec"
    assert any("weaker than fsync-always" in r.getMessage() for r in caplog.records)


# ---- the embedded Redis's password --------------------------------------------------------
def test_the_embedded_redis_refuses_clients_without_its_password(tmp_path) -> None:
    with EmbeddedRedis(tmp_path / "locked") as server:
        assert server.password and f":{server.password}@" in server.url
        assert redis.Redis.from_url(server.url).ping()
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=server.port).set("rc:admin:bundles", "x")
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=server.port, password="guess").ping()
        assert not (tmp_path / "locked" / "redis.conf").exists()  # the password is not left on disk
        second = EmbeddedRedis(tmp_path / "other")
        assert second.password != server.password  # one per start


# ---- a follower that cannot follow ------------------------------------------------------------
async def test_a_follower_backs_off_and_readyz_names_the_model_behind(tiny_bundles, redis_server, redis_client,
                                                                      tmp_path) -> None:
    """A published bundle this worker cannot load (a manifest entry without 'bytes'): it keeps
    serving, retries with backoff instead of every sync pass, and says so in /readyz."""
    broken = tmp_path / "no-bytes"
    shutil.copytree(tiny_bundles["binary"], broken)
    manifest = json.loads((broken / "manifest.json").read_text())
    next(iter(manifest["files"].values())).pop("bytes")
    (broken / "manifest.json").write_text(json.dumps(manifest))
    version = load_bundle(tiny_bundles["rating"]).version
    async with in_process(bundles=f"main={tiny_bundles['rating']}", redis_url=redis_server.url,
                          redis_prefix="behind", sync_interval_s=0.05, follow_backoff_max_s=0.4) as (c, gateway):
        redis_client.hset("behind:admin:bundles", "main", json.dumps({"path": str(broken), "version": "v-broken"}))
        redis_client.incr("behind:admin:generation")
        with anyio.fail_after(10):
            while "main" not in gateway.behind:
                await anyio.sleep(0.02)
        await anyio.sleep(1.5)  # 30 sync passes
        ready = await c.get("/readyz")
        behind = ready.json()["behind"]["main"]
        assert behind["wanted_version"] == "v-broken" and behind["path"] == str(broken) and behind["error"]
        assert 2 <= behind["attempts"] <= 6  # backoff 0.1, 0.2, 0.4 (cap), 0.4 ...: not one per pass
        body = (await c.post("/v1/recommend", json={"user_id": "u1", "k": 2})).json()
        assert body["model"]["version"] == version  # still serving what it had
        # the operator publishes a good bundle: the worker follows and is no longer behind
        good = load_bundle(tiny_bundles["binary"]).version
        redis_client.hset("behind:admin:bundles", "main",
                          json.dumps({"path": str(tiny_bundles["binary"]), "version": good}))
        redis_client.incr("behind:admin:generation")
        with anyio.fail_after(10):
            while gateway.models["main"].version != good:
                await anyio.sleep(0.02)
        assert (await c.get("/readyz")).json()["behind"] == {}


# ---- start-up survives a failing bulk load ---------------------------------------------------
async def test_a_bulk_load_failing_at_start_up_leaves_the_server_serving_and_is_retried(tiny_bundles, redis_server,
                                                                                       redis_client) -> None:
    """Before, any error of the start-up bulk load (a timeout while Redis is slow, here a key of
    the wrong type) escaped the lifespan and killed the server: a crash loop."""
    version = load_bundle(tiny_bundles["rating"]).version
    redis_client.delete(f"start:b:{version}:loaded")
    redis_client.set(f"start:b:{version}:fields", "not a hash")
    async with in_process(bundles=f"main={tiny_bundles['rating']}", redis_url=redis_server.url,
                          redis_prefix="start", sync_interval_s=0.05) as (c, _):
        assert (await c.get("/readyz")).status_code == 200
        assert not redis_client.exists(f"start:b:{version}:loaded")
        body = (await c.post("/v1/recommend", json={"user_id": "u2", "k": 3}))
        assert body.status_code == 200 and len(body.json()["items"]) == 3
        redis_client.delete(f"start:b:{version}:fields")  # the operator fixes Redis: the sync loop finishes the load
        with anyio.fail_after(10):
            while not redis_client.exists(f"start:b:{version}:loaded"):
                await anyio.sleep(0.05)
        assert redis_client.type(f"start:b:{version}:fields") == "hash"
