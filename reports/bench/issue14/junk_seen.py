"""Bounded per-user state under junk events: one user posts N random item ids through
/v1/events; afterwards that user's /v1/recommend p50 is compared with an ordinary user's.

    .venv/bin/python reports/bench/issue14/junk_seen.py BUNDLE [--events 1000000] [--rounds 5] [--seconds 5]
        [--max-seen N] [--cache-ab]

Starts a real gateway (its own embedded Redis) on loopback, writes the junk in batches of
the gateway's maximum, then measures both users' /v1/recommend with one closed-loop client
in interleaved rounds (ordinary, junk, ordinary, junk, ...). Prints and writes JSON.

``--cache-ab`` runs two gateways side by side, the per-worker seen cache on (the default
RATINGCTR_SEEN_CACHE_ITEMS) and off (0), both flooded the same way, and interleaves all four
(gateway, user) pairs in every round, so the cache's effect is measured on the same host
minutes, not across runs.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import orjson

from ratingctr.bundle import load_bundle
from ratingctr.report_files import short_commit
from ratingctr.loadtest.http_load import encode_post, run_load
from ratingctr.serving.process import running_gateway

BATCH = 1000  # RATINGCTR_MAX_EVENTS' default


def junk_batches(user: str, total: int, seed: int):
    """Batches of events with random 32-character item ids no bundle knows."""
    rng = np.random.default_rng(seed)
    alphabet = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz0123456789", dtype=np.uint8)
    for start in range(0, total, BATCH):
        n = min(BATCH, total - start)
        ids = alphabet[rng.integers(0, alphabet.size, size=(n, 32))].view("S32").ravel().astype(str)
        yield orjson.dumps({"events": [{"user_id": user, "item_id": f"junk-{i}", "rating": 1} for i in ids]})


def flood(url: str, user: str, events: int) -> float:
    """Post ``events`` junk events for ``user``; seconds taken."""
    start = time.perf_counter()
    with httpx.Client(base_url=url, timeout=60) as client:
        for body in junk_batches(user, events, seed=0):
            r = client.post("/v1/events", content=body, headers={"Content-Type": "application/json"})
            if r.status_code != 202:
                raise SystemExit(f"events: {r.status_code} {r.text[:200]}")
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--max-seen", type=int, default=None, help="RATINGCTR_MAX_SEEN_PER_USER (default: the gateway's)")
    parser.add_argument("--cache-ab", action="store_true", help="also run a gateway with the seen cache off")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    users = load_bundle(args.bundle).vocab["user_id"]
    ordinary, junk = users[1], users[2]
    env = {"RATINGCTR_MAX_SEEN_PER_USER": str(args.max_seen)} if args.max_seen else {}
    configs = {"cache": env} | ({"no-cache": env | {"RATINGCTR_SEEN_CACHE_ITEMS": "0"}} if args.cache_ab else {})
    with contextlib.ExitStack() as stack:
        gateways = {name: stack.enter_context(running_gateway({"main": args.bundle}, env=config))
                    for name, config in configs.items()}
        write_s = {name: flood(gw.url, junk, args.events) for name, gw in gateways.items()}
        bodies = {name: [encode_post("127.0.0.1", "/v1/recommend", orjson.dumps({"user_id": u, "k": 10}))]
                  for name, u in (("ordinary", ordinary), ("junk", junk))}
        rounds: dict[str, dict[str, list[float]]] = {g: {"ordinary": [], "junk": []} for g in gateways}
        for _ in range(args.rounds):
            for config, gw in gateways.items():
                port = int(gw.url.rsplit(":", 1)[1])
                for name in ("ordinary", "junk"):
                    summary = run_load("127.0.0.1", port, bodies[name], 1, args.seconds).summary()
                    if summary["failed"]:
                        print(f"{config} {name}: {summary['failed']} failed requests", file=sys.stderr)
                        return 1
                    rounds[config][name].append(summary["p50_ms"])
    result = {"bundle": str(args.bundle), "commit": short_commit(), "events": args.events,
              "max_seen": args.max_seen or "default", "write_seconds": write_s, "configs": {}}
    for config, by_user in rounds.items():
        p50 = {k: statistics.median(v) for k, v in by_user.items()}
        result["configs"][config] = {"p50_ms": p50, "rounds_p50_ms": by_user,
                                     "junk_over_ordinary_p50": p50["junk"] / p50["ordinary"],
                                     "rounds_junk_over_ordinary": [j / o for j, o in zip(by_user["junk"],
                                                                                         by_user["ordinary"])]}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
