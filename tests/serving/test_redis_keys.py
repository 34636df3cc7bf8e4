"""The key layout: what must be atomic together hashes to one cluster slot, the single-Redis
names stay those earlier versions wrote, ids stay unique across shards, and a layout change is refused."""
from __future__ import annotations

import pytest
from redis.crc import key_slot

from ratingctr.serving.redis_connection import BadRedisUrl, ClusterUrl, is_cluster_url
from ratingctr.serving.redis_keys import KeyLayout, LayoutConflict

USERS = [f"user-{i}" for i in range(500)] + ["ünïcode", "with{brace}", "a:b:c", ""]


def slot(key: str) -> int:
    return key_slot(key.encode())


def test_one_events_keys_share_the_slot_of_its_shards_stream_and_field_rows() -> None:
    layout = KeyLayout.for_redis("rc", None, cluster=True)
    assert layout.shards == 64 and layout.tagged
    for user in USERS:
        shard = layout.shard_of(user)
        keys = [layout.events(shard), layout.seen(user), layout.state(user), layout.event_id(user, "e/1"),
                layout.event_id(user, None), layout.fields("v1", shard)]
        assert len({slot(k) for k in keys}) == 1, keys


def test_shards_spread_users_evenly_and_over_distinct_slots() -> None:
    layout = KeyLayout("rc", shards=64, tagged=True)
    counts = [0] * 64
    for i in range(64_000):
        counts[layout.shard_of(f"u{i}")] += 1
    assert min(counts) > 850 and max(counts) < 1150  # 1,000 expected per shard
    assert len({slot(layout.events(k)) for k in range(64)}) == 64


def test_version_markers_and_admin_keys_each_share_one_slot() -> None:
    layout = KeyLayout("rc", shards=8, tagged=True)
    version_keys = [layout.version_key("abc", part) for part in ("served", "loaded", "loading")]
    assert len({slot(k) for k in [*version_keys, layout.versions(), layout.versions_collecting()]}) == 1
    assert slot(layout.admin("bundles")) == slot(layout.admin("generation"))


def test_a_plain_redis_with_one_shard_keeps_the_names_earlier_versions_wrote() -> None:
    layout = KeyLayout.for_redis("rc", None, cluster=False)
    assert (layout.events(), layout.seen("u1"), layout.state("u1"), layout.event_id("u1", "x"),
            layout.event_id("u1", None), layout.fields("v"), layout.version_key("v", "loaded"), layout.versions(),
            layout.admin("bundles"), layout.admin("generation")) == (
        "rc:events", "rc:seen:u1", "rc:user:u1", "rc:eid:x", "rc:eid", "rc:b:v:fields", "rc:b:v:loaded",
        "rc:b:versions", "rc:admin:bundles", "rc:admin:generation")
    assert layout.global_id("1700000000000-5", 0) == "1700000000000-5"


def test_cross_shard_ids_are_unique_ordered_by_time_and_invertible() -> None:
    layout = KeyLayout("rc", shards=16, tagged=True)
    ids = {layout.global_id(f"{ms}-{seq}", shard) for ms in (1, 2) for seq in range(5) for shard in range(16)}
    assert len(ids) == 2 * 5 * 16
    assert layout.raw_id(layout.global_id("1700000000123-7", 11)) == ("1700000000123-7", 11)
    # within a shard, stream order is kept: a later sequence number in the same ms sorts later
    a, b = layout.global_id("5-1", 15), layout.global_id("5-2", 0)
    assert int(a.split("-")[1]) < int(b.split("-")[1])


def test_a_different_recorded_layout_is_a_conflict() -> None:
    recorded = KeyLayout("rc", shards=64, tagged=True).record()
    KeyLayout("rc", shards=64, tagged=True).check_record(recorded)
    KeyLayout("rc", shards=64, tagged=True).check_record(None)
    with pytest.raises(LayoutConflict, match="64 shard"):
        KeyLayout("rc", shards=8, tagged=True).check_record(recorded)
    with pytest.raises(LayoutConflict, match="not a key layout record"):
        KeyLayout("rc").check_record(b"junk")
    assert KeyLayout.from_record("rc", recorded) == KeyLayout("rc", shards=64, tagged=True)
    assert KeyLayout.from_record("rc", None) == KeyLayout("rc")


def test_cluster_urls_name_every_start_up_node_and_the_credentials() -> None:
    assert is_cluster_url("redis+cluster://h:1") and not is_cluster_url("redis://h:1")
    spec = ClusterUrl.parse("redis+cluster://app:s%40cret@10.0.0.1:7000,10.0.0.2:7001,node3/0")
    assert spec.nodes == (("10.0.0.1", 7000), ("10.0.0.2", 7001), ("node3", 6379))
    assert (spec.username, spec.password, spec.ssl) == ("app", "s@cret", False)
    assert ClusterUrl.parse("rediss+cluster://:pw@h:1").password == "pw"
    assert ClusterUrl.parse("rediss+cluster://:pw@h:1").ssl
    with pytest.raises(BadRedisUrl, match="bad port"):
        ClusterUrl.parse("redis+cluster://h:notaport")
