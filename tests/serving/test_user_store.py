"""The request path's Redis reads against a real Redis: the seen set comes back only when its
version changed; a slow reply of a healthy Redis degrades its own request only; timeouts in a
row, or a failed probe, open the circuit."""
from __future__ import annotations

import threading
import time

import pytest
import redis

from ratingctr.serving.user_store import UserStore

pytestmark = pytest.mark.integration


@pytest.mark.anyio
async def test_the_seen_set_is_sent_only_when_its_version_changed(redis_server) -> None:
    store = UserStore(redis_server.url, prefix="version-test", max_seen=3)

    async def append(item: str, ts: float) -> None:
        await store.append_events([{"user_id": "alice", "item_id": item, "rating": 4, "ts": ts}])

    nobody = store.read_user("nobody", "v1")
    assert nobody.seen == [] and nobody.seen_version is None  # no state record: nothing to cache under
    await append("i1", 100.0)
    first = store.read_user("alice", "v1")
    assert first.seen == [b"i1"] and first.seen_version is not None
    same = store.read_user("alice", "v1", first.seen_version)
    assert same.seen is None and same.seen_version == first.seen_version  # unchanged: no members sent
    for i, item in enumerate(["i2", "i3", "i4"]):
        await append(item, 101.0 + i)
    changed = store.read_user("alice", "v1", first.seen_version)
    assert changed.seen == [b"i2", b"i3", b"i4"] and changed.seen_version != first.seen_version  # newest 3
    # an event that changes no member (an older time for a held item) still makes a new version:
    # a version is never reused, so a cache can only be conservative
    await append("i3", 50.0)
    again = store.read_user("alice", "v1", changed.seen_version)
    assert again.seen == [b"i2", b"i3", b"i4"] and again.seen_version != changed.seen_version
    raw = redis.Redis.from_url(redis_server.url)
    # a worker of the release before versions (a rolling deploy) writes the set without
    # seen_version, but still counts the event: the version changes all the same
    raw.zadd("version-test:seen:alice", {"i5": 200.0})
    raw.zremrangebyrank("version-test:seen:alice", 0, -4)
    raw.hincrby("version-test:user:alice", "events", 1)
    old_release = store.read_user("alice", "v1", again.seen_version)
    assert old_release.seen == [b"i3", b"i4", b"i5"] and old_release.seen_version != again.seen_version
    again = old_release
    # the state record lost (an operator's DEL): no version, so the set is read every time
    raw.delete("version-test:user:alice")
    lost = store.read_user("alice", "v1", again.seen_version)
    assert lost.seen == [b"i3", b"i4", b"i5"] and lost.seen_version is None
    # a legacy SET (no version) is read bounded, every time
    raw.sadd("version-test:seen:legacy", "a", "b", "c", "d")
    legacy = store.read_user("legacy", "v1", b"anything")
    assert len(legacy.seen) == 3 and set(legacy.seen) <= {b"a", b"b", b"c", b"d"} and legacy.seen_version is None
    raw.close()
    await store.close()


def test_a_state_key_of_another_type_is_no_version_not_a_failed_read(redis_server) -> None:
    """One corrupt key must not fail every read of its shard (and so open the circuit for all)."""
    store = UserStore(redis_server.url, prefix="corrupt-test", timeouts_to_open=1)
    raw = redis.Redis.from_url(redis_server.url)
    raw.set("corrupt-test:user:mallory", "not a hash")
    raw.zadd("corrupt-test:seen:mallory", {"i1": 1.0})
    for cached in (None, b"1-0|1"):
        record = store.read_user("mallory", "v1", cached)
        assert record is not None and record.seen == [b"i1"] and record.seen_version is None
    assert store.shard_available(0)
    raw.close()


def _stall(url: str, seconds: float) -> threading.Thread:
    """Redis busy for ``seconds`` (DEBUG SLEEP blocks its one thread), from another client."""
    client = redis.Redis.from_url(url)
    thread = threading.Thread(target=lambda: (client.execute_command("DEBUG", "SLEEP", seconds), client.close()))
    thread.start()
    time.sleep(0.05)  # the SLEEP is running before the read is sent
    return thread


def test_one_slow_reply_degrades_one_read_and_timeouts_in_a_row_open_the_circuit(redis_server) -> None:
    store = UserStore(redis_server.url, prefix="circuit-test", timeout_s=0.1, retry_s=30.0, timeouts_to_open=3)
    assert store.read_user("u1", "v1") is not None
    # one stall longer than the read timeout: this read is degraded, the circuit stays closed
    stall = _stall(redis_server.url, 0.3)
    assert store.read_user("u1", "v1") is None
    stall.join()
    assert store.shard_available(0) and store.read_user("u1", "v1") is not None
    # three timeouts in a row (a hung Redis): the third opens the circuit for retry_s
    stall = _stall(redis_server.url, 0.6)
    assert [store.read_user("u1", "v1") for _ in range(2)] == [None, None]
    assert store.shard_available(0)
    assert store.read_user("u1", "v1") is None
    assert not store.shard_available(0)
    stall.join()
    assert store.read_user("u1", "v1") is None  # open: not even attempted, although Redis is back
    # a probe after the window that fails again reopens it at the first timeout
    store._circuit.down_until[0] = 0.0  # the retry window has passed
    stall = _stall(redis_server.url, 0.3)
    assert store.read_user("u1", "v1") is None and not store.shard_available(0)
    stall.join()
    store._circuit.down_until[0] = 0.0
    assert store.read_user("u1", "v1") is not None and store.shard_available(0)


def test_a_refused_connection_opens_the_circuit_at_once() -> None:
    from ratingctr.processes import free_port

    store = UserStore(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.1, retry_s=30.0, timeouts_to_open=3)
    assert store.read_user("u1", "v1") is None
    assert not store.shard_available(0)


def test_the_timeout_count_setting_is_bounded(monkeypatch) -> None:
    from pydantic import ValidationError

    from ratingctr.serving.settings import GatewaySettings

    assert GatewaySettings().redis_timeouts_to_open == 3
    for bad in ("0", "-1", "101", "three"):
        monkeypatch.setenv("RATINGCTR_REDIS_TIMEOUTS_TO_OPEN", bad)
        with pytest.raises(ValidationError, match="redis_timeouts_to_open"):
            GatewaySettings()
