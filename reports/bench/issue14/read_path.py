"""The request path's Redis read, before and after the seen cache, in one process against one
real Redis: the old two-command pipeline (HGET field row + ZRANGE newest N seen) against
``UserStore.read_user`` with no cached version (one trip, the version read as well), with the
current version (one trip, no members) and with an outdated one (a second trip for the members),
for a user with a small seen set and for one flooded to the bound with junk.  Calls are interleaved in blocks, so host noise
hits every arm alike; prints medians per call in microseconds and writes JSON.

    .venv/bin/python reports/bench/issue14/read_path.py [--calls 20000] [--blocks 20] [--out FILE]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import redis

from ratingctr.report_files import short_commit
from ratingctr.serving.embedded_redis import EmbeddedRedis
from ratingctr.serving.user_store import UserRecord, UserStore


def old_read(store: UserStore, user_id: str, bundle_version: str) -> UserRecord | None:
    """``UserStore.read_user`` as it was before the cache (b8d316c), line for line: one pipeline of
    HGET (field row) and ZRANGE (the newest ``max_seen`` seen members), every time."""
    shard = store.layout.shard_of(user_id)
    if not store.shard_available(shard):
        return None
    circuit = store._circuit_key(shard)
    seen_key = store.layout.seen(user_id)
    try:
        pipe = store.reader.pipeline(transaction=False)
        pipe.hget(store.layout.fields(bundle_version, shard), user_id)
        pipe.zrange(seen_key, -store.max_seen, -1)
        fields, seen = pipe.execute(raise_on_error=False)
        if isinstance(fields, Exception):
            raise fields
        if isinstance(seen, redis.ResponseError) and "WRONGTYPE" in str(seen):
            seen = store.reader.srandmember(seen_key, store.max_seen)
        elif isinstance(seen, Exception):
            raise seen
    except redis.RedisError as exc:
        store._read_failed(exc, circuit)
        return None
    store._succeeded(circuit)
    return UserRecord(fields, list(seen))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000, help="calls per arm and user, over all blocks")
    parser.add_argument("--blocks", type=int, default=20)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp)) as server:
        store = UserStore(server.url, prefix="bench")
        rng = np.random.default_rng(0)

        async def fill() -> None:
            await store.append_events([{"user_id": "ordinary", "item_id": str(i), "rating": 4} for i in (1, 2)])
            for _ in range(2):  # 2,000 junk events: the set is at its bound of 1,000
                await store.append_events([{"user_id": "junk", "item_id": "junk-" + "".join(
                    rng.choice(list("abcdefghij"), 32)), "rating": 1} for _ in range(1000)])
            await store.client.aclose()

        asyncio.run(fill())
        store.reader.hset(store.layout.fields("v", 0), mapping={"ordinary": b"\0" * 64, "junk": b"\0" * 64})
        versions = {u: store.read_user(u, "v").seen_version for u in ("ordinary", "junk")}
        arms = {
            "read_user before the cache": lambda u: old_read(store, u, "v"),
            "read_user, no cached version": lambda u: store.read_user(u, "v"),
            "read_user, cached version current": lambda u: store.read_user(u, "v", versions[u]),
            "read_user, cached version outdated": lambda u: store.read_user(u, "v", b"0-0"),
        }
        per_block = args.calls // args.blocks
        times: dict[str, dict[str, list[float]]] = {a: {"ordinary": [], "junk": []} for a in arms}
        for _ in range(args.blocks):
            for arm, call in arms.items():
                for user in ("ordinary", "junk"):
                    start = time.perf_counter()
                    for _ in range(per_block):
                        call(user)
                    times[arm][user].append((time.perf_counter() - start) / per_block * 1e6)
        store.reader.close()
    result = {"commit": short_commit(),
              "calls_per_arm_and_user": per_block * args.blocks, "blocks": args.blocks,
              "median_us": {a: {u: statistics.median(v) for u, v in by.items()} for a, by in times.items()},
              "block_means_us": times}
    for arm, by in result["median_us"].items():
        print(f"{arm:<32} ordinary {by['ordinary']:7.1f} us   junk (1,000 members) {by['junk']:7.1f} us")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
