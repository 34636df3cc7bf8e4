"""``ratingctr events pull`` against a real Redis, with real processes killed where it hurts.

The promise under test: every event XADDed ends up in the event log exactly once as
``read_event_log`` reads it, whatever moment the consumer dies at; Redis counts as
acknowledged only what a partition on disk holds; ``--trim`` never removes an entry some
consumer group has not acknowledged.
"""
from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import redis
from helpers import RATINGCTR, in_process, run_cli

from ratingctr.online.pull import CRASH_ENV, EventPuller, PullConfig, pull_events
from ratingctr.serving.embedded_redis import URL_FILE, EmbeddedRedis
from ratingctr.training.data.event_log import latest_side_fields, partitions, read_event_log

pytestmark = pytest.mark.integration

SUMMARY = re.compile(r"events pull: ([\d,]+) events written in (\d+) partition\(s\), ([\d,]+) acknowledged, "
                     r"([\d,]+) pending")


def add_events(client: redis.Redis, prefix: str, n: int, start: int = 0, event_ids: bool = True) -> list[str]:
    """``n`` events XADDed the way the gateway stores them; their stream ids, in order."""
    pipe = client.pipeline(transaction=False)
    for i in range(start, start + n):
        fields = {"user_id": f"u{i % 50}", "item_id": f"i{i % 70}", "rating": repr(float(1 + i % 5)),
                  "ts": repr(1.7e9 + i), "received": repr(1.7e9 + i + 0.25)}
        if event_ids:
            fields["event_id"] = f"e{i}"
        pipe.xadd(f"{prefix}:events", fields)
    return pipe.execute()


def pull(redis_server: EmbeddedRedis, prefix: str, out: Path, *flags: str, crash: str | None = None,
         ) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != CRASH_ENV}
    if crash:
        env[CRASH_ENV] = crash
    return run_cli("events", "pull", "--redis-dir", str(redis_server.data_dir), "--prefix", prefix,
                   "--out", str(out), *flags, env=env, timeout=120)


def summary(result: subprocess.CompletedProcess) -> tuple[int, int, int, int]:
    assert result.returncode == 0, result.stderr
    match = SUMMARY.search(result.stdout)
    assert match, result.stdout
    return tuple(int(g.replace(",", "")) for g in match.groups())


def raw_rows(out: Path) -> pd.DataFrame:
    """Every row of every partition, duplicates included (what is on disk, not what is read)."""
    return pd.concat([pq.read_table(f).to_pandas() for f in partitions(out)], ignore_index=True)


def pending(client: redis.Redis, prefix: str, group: str = "ratingctr-log") -> int:
    return int(client.xpending(f"{prefix}:events", group)["pending"])


# ---- draining, and the two crash windows ----------------------------------------------
def test_once_writes_every_event_once_and_acknowledges_it(redis_server, redis_client, prefix, out) -> None:
    sent = add_events(redis_client, prefix, 1200) + add_events(redis_client, prefix, 300, 1200, event_ids=False)
    assert summary(pull(redis_server, prefix, out, "--once", "--batch", "500")) == (1500, 3, 1500, 0)
    log = read_event_log(out)
    assert log["stream_id"].tolist() == sent  # stream order, each once
    assert log["event_id"].notna().sum() == 1200 and log["event_id"].iloc[-300:].isna().all()
    assert log["rating"].tolist() == [float(1 + i % 5) for i in range(1500)]
    assert log["ts"].iloc[7] == 1.7e9 + 7 and log["received"].iloc[7] == 1.7e9 + 7.25
    assert log["user_fields"].isna().all() and log["item_fields"].isna().all()
    assert pending(redis_client, prefix) == 0
    # nothing new: a second run writes nothing, acknowledges nothing
    assert summary(pull(redis_server, prefix, out, "--once")) == (0, 0, 0, 0)
    assert len(partitions(out)) == 3


def test_killed_before_the_rename_leaves_only_a_temporary_file_and_the_restart_writes_it(
        redis_server, redis_client, prefix, out) -> None:
    sent = add_events(redis_client, prefix, 2500)
    crashed = pull(redis_server, prefix, out, "--batch", "1000", crash="before-rename")
    assert crashed.returncode == 137, crashed.stderr
    assert partitions(out) == [] and len(list(out.glob(".tmp-events-*.parquet"))) == 1
    assert read_event_log(out).empty
    assert pending(redis_client, prefix) == 1000  # delivered, never acknowledged
    restarted = pull(redis_server, prefix, out, "--batch", "1000")
    assert summary(restarted) == (2500, 3, 2500, 0)
    assert "1 stale temporary file(s) removed" in restarted.stdout
    assert list(out.glob(".tmp-*")) == []
    assert len(raw_rows(out)) == 2500  # nothing was on disk twice
    assert read_event_log(out)["stream_id"].tolist() == sent


def test_pending_entries_deleted_from_the_stream_are_acknowledged_not_written(redis_server, redis_client, prefix,
                                                                             out) -> None:
    sent = add_events(redis_client, prefix, 10)
    assert pull(redis_server, prefix, out, crash="before-rename").returncode == 137
    redis_client.xdel(f"{prefix}:events", *sent[2:5])  # gone while pending (by hand: --trim never does this)
    result = pull_events(PullConfig(redis_server.url, out, prefix=prefix))
    assert (result.written, result.vanished, result.acked, result.pending, result.stale_tmp) == (7, 3, 10, 0, 1)
    assert read_event_log(out)["stream_id"].tolist() == sent[:2] + sent[5:]


@pytest.mark.parametrize("restart_batch", [1000, 400])
def test_killed_after_the_rename_writes_the_batch_again_and_the_reader_keeps_one_copy(
        redis_server, redis_client, prefix, out, restart_batch: int) -> None:
    sent = add_events(redis_client, prefix, 2500)
    crashed = pull(redis_server, prefix, out, "--batch", "1000", crash="after-rename")
    assert crashed.returncode == 137, crashed.stderr
    assert len(partitions(out)) == 1 and len(raw_rows(out)) == 1000
    assert pending(redis_client, prefix) == 1000  # on disk, but Redis was never told
    written, _, acked, left = summary(pull(redis_server, prefix, out, "--batch", str(restart_batch)))
    assert (written, acked, left) == (2500, 2500, 0)  # the pending 1000 again, then the 1500 new
    raw = raw_rows(out)
    assert len(raw) == 3500 and set(raw["stream_id"]) == set(sent)
    assert raw["stream_id"].duplicated().sum() == 1000 and set(raw.loc[raw["stream_id"].duplicated(), "stream_id"]) \
        == set(sent[:1000])  # only the crashed batch is there twice
    if restart_batch == 1000:  # same ids, same name: kept beside the first copy, never renamed over it
        assert any(p.name.endswith(".1.parquet") for p in partitions(out))
    log = read_event_log(out)
    assert log["stream_id"].tolist() == sent and not log["event_id"].duplicated().any()


def test_sigkill_of_a_follower_while_events_keep_arriving_loses_and_repeats_nothing(
        redis_server, redis_client, prefix, out) -> None:
    seed = time.time_ns() % 10_000
    rng = random.Random(seed)
    sent: list[str] = []
    producing = threading.Event()
    producing.set()

    def produce() -> None:
        client = redis.Redis.from_url(redis_server.url, decode_responses=True)
        i = 0
        while producing.is_set():
            sent.extend(add_events(client, prefix, 37, i))
            i += 37
            time.sleep(0.004)
        client.close()

    producer = threading.Thread(target=produce)
    producer.start()
    follow = [*RATINGCTR, "events", "pull", "--redis-dir", str(redis_server.data_dir), "--prefix", prefix,
              "--out", str(out), "--follow", "--batch", "300", "--block-ms", "50"]
    try:
        for _ in range(3):
            written_before = len(partitions(out))
            proc = subprocess.Popen(follow, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            deadline = time.monotonic() + 30
            while len(partitions(out)) == written_before and time.monotonic() < deadline:  # it is consuming
                time.sleep(0.01)
            time.sleep(rng.uniform(0, 0.4))
            proc.kill()
            _, err = proc.communicate(timeout=30)
            assert proc.returncode == -signal.SIGKILL, err
    finally:
        producing.clear()
        producer.join()
    # a last follower catches up, then stops on SIGTERM after the batch in hand
    proc = subprocess.Popen(follow, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        groups = {g["name"]: g for g in redis_client.xinfo_groups(f"{prefix}:events")}
        if groups["ratingctr-log"]["last-delivered-id"] == sent[-1] and pending(redis_client, prefix) == 0:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert SUMMARY.search(stdout), stdout
    assert pending(redis_client, prefix) == 0
    log = read_event_log(out)
    assert log["stream_id"].tolist() == sent, f"seed {seed}"  # every event, once, in stream order
    assert len(log) == len(sent) > 1000 and not log["event_id"].duplicated().any()
    raw = raw_rows(out)
    assert set(raw["stream_id"]) == set(sent), f"seed {seed}"
    assert raw["stream_id"].duplicated().sum() <= 3 * 300  # at most the batch in hand at each kill
    assert list(out.glob(".tmp-*")) == []  # a killed writer's temporary file is removed by the next start


# ---- trimming ---------------------------------------------------------------------------
def _still_needed(client: redis.Redis, stream: str) -> set[str]:
    """Every entry some group has not acknowledged: its pending ones and everything after its cursor."""
    needed: set[str] = set()
    all_ids = [i for i, _ in client.xrange(stream)]
    for group in client.xinfo_groups(stream):
        needed |= {p["message_id"] for p in client.xpending_range(stream, group["name"], "-", "+", 100_000)}
        last = tuple(map(int, group["last-delivered-id"].split("-")))
        needed |= {i for i in all_ids if tuple(map(int, i.split("-"))) > last}
    return needed


def test_trim_never_drops_what_a_lagging_group_has_not_acknowledged(redis_server, redis_client, prefix, out) -> None:
    stream = f"{prefix}:events"
    sent = add_events(redis_client, prefix, 3000)
    redis_client.xgroup_create(stream, "lagging", id="0")
    delivered = redis_client.xreadgroup("lagging", "slow", {stream: ">"}, count=1000)[0][1]
    redis_client.xack(stream, "lagging", *[i for i, _ in delivered[:500]])  # 500 acked, 500 pending
    needed = _still_needed(redis_client, stream)

    written, _, acked, _ = summary(pull(redis_server, prefix, out, "--batch", "700", "--trim"))
    assert (written, acked) == (3000, 3000)
    assert [i for i, _ in redis_client.xrange(stream)] == sent[500:]  # from the lagger's oldest pending entry
    assert needed - {i for i, _ in redis_client.xrange(stream)} == set()

    puller = EventPuller(PullConfig(redis_server.url, out, prefix=prefix), redis_client)
    redis_client.xack(stream, "lagging", *[i for i, _ in delivered[500:]])  # nothing pending; cursor at 999
    assert puller.trim() == 500
    assert redis_client.xrange(stream, count=1)[0][0] == sent[1000]  # the entry after its last-delivered id
    redis_client.xgroup_create(stream, "fresh", id=sent[1500])  # a new reader that starts later
    assert puller.trim() == 0  # nothing more: the lagger has not read past 999
    rest = redis_client.xreadgroup("lagging", "slow", {stream: ">"}, count=10_000)[0][1]
    assert puller.trim() == 0  # delivered but unacknowledged: kept
    redis_client.xack(stream, "lagging", *[i for i, _ in rest])
    assert puller.trim() == 501  # up to "fresh"'s cursor (it has read nothing after sent[1500])
    assert redis_client.xrange(stream, count=1)[0][0] == sent[1501]
    assert read_event_log(out)["stream_id"].tolist() == sent  # trimming never touches the log


def test_trim_with_a_group_that_has_read_nothing_keeps_the_whole_stream(redis_server, redis_client, prefix,
                                                                       out) -> None:
    stream = f"{prefix}:events"
    add_events(redis_client, prefix, 400)
    redis_client.xgroup_create(stream, "idle", id="0", mkstream=True)
    assert summary(pull(redis_server, prefix, out, "--trim"))[:3] == (400, 1, 400)
    assert redis_client.xlen(stream) == 400


# ---- the reader's dedupe, side fields ---------------------------------------------------
def test_an_event_id_stored_twice_is_read_once_across_partitions(redis_server, redis_client, prefix, out) -> None:
    stream = f"{prefix}:events"
    sent = add_events(redis_client, prefix, 10)
    # a client retry after its event_id expired in Redis: stored again, later, in another partition
    retry = redis_client.xadd(stream, {"user_id": "u3", "item_id": "i3", "rating": "5.0", "ts": "1.0",
                                       "received": "2.0", "event_id": "e3"})
    anonymous = [redis_client.xadd(stream, {"user_id": "u1", "item_id": "i1", "rating": "2.0", "ts": "1.0",
                                            "received": "2.0"}) for _ in range(2)]  # no event_id: never deduped
    assert summary(pull(redis_server, prefix, out, "--batch", "5"))[:2] == (13, 3)
    log = read_event_log(out)
    assert retry not in set(log["stream_id"])
    assert log["stream_id"].tolist() == [*sent, *anonymous]
    assert (log["event_id"] == "e3").sum() == 1 and log.loc[log["event_id"] == "e3", "rating"].item() == 4.0


@pytest.mark.anyio
async def test_side_fields_sent_with_events_come_back_latest_per_id(tiny_bundles, redis_server, prefix, out) -> None:
    batches = [
        [{"user_id": "new-user", "item_id": "new-item", "rating": 4, "user_fields": {"age": "25", "gender": "F"},
          "item_fields": {"genre": ["Comedy", "Drama"]}},
         {"user_id": "u1", "item_id": "other-item", "rating": 3, "item_fields": {"genre": "Horror"}}],
        [{"user_id": "new-user", "item_id": "i1", "rating": 5, "user_fields": {"age": "26"}},  # the whole record
         {"user_id": "u2", "item_id": "new-item", "rating": 2}],  # no fields: changes nothing
        [{"user_id": "new-user", "item_id": "i2", "rating": 1}],
    ]
    async with in_process(bundles=f"rating={tiny_bundles['rating']}", redis_url=redis_server.url,
                          redis_prefix=prefix) as (client, _):
        for events in batches:
            r = await client.post("/v1/events", json={"events": events})
            assert r.status_code == 202, r.text
    result = pull_events(PullConfig(redis_server.url, out, prefix=prefix, batch=2))
    assert (result.written, result.partitions, result.acked, result.pending) == (5, 3, 5, 0)
    log = read_event_log(out)
    assert latest_side_fields(log, "user") == {"new-user": {"age": "26"}}
    assert latest_side_fields(log, "item") == {"new-item": {"genre": ["Comedy", "Drama"]},
                                               "other-item": {"genre": "Horror"}}


# ---- finding Redis ----------------------------------------------------------------------
def test_the_embedded_redis_publishes_its_url_to_its_owner_only(tmp_path: Path, out: Path) -> None:
    directory = tmp_path / "redis"
    with EmbeddedRedis(directory, fsync="no") as server:
        url_file = directory / URL_FILE
        assert url_file.read_text().strip() == server.url
        assert url_file.stat().st_mode & 0o777 == 0o600
        result = run_cli("events", "pull", "--redis-dir", str(directory), "--out", str(out), timeout=60)
        assert summary(result) == (0, 0, 0, 0)
    assert not url_file.exists()  # removed on stop
    missing = run_cli("events", "pull", "--redis-dir", str(directory), "--out", str(out), timeout=60)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "no embedded Redis" in missing.stderr


def test_a_second_puller_on_one_directory_is_refused(redis_server, redis_client, prefix, out) -> None:
    add_events(redis_client, prefix, 10)
    follow = subprocess.Popen([*RATINGCTR, "events", "pull", "--redis-dir", str(redis_server.data_dir),
                               "--prefix", prefix, "--out", str(out), "--follow", "--block-ms", "50"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not partitions(out) and time.monotonic() < deadline:
            time.sleep(0.02)
        second = pull(redis_server, prefix, out, "--once")
        assert second.returncode == 2 and "another `events pull`" in second.stderr
    finally:
        follow.send_signal(signal.SIGTERM)
        stdout, stderr = follow.communicate(timeout=30)
    assert follow.returncode == 0, stderr
    assert SUMMARY.search(stdout).groups()[:3] == ("10", "1", "10")
