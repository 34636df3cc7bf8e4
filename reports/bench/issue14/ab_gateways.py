"""Two commits' gateways up at the same time, one-client `/v1/recommend` load alternating between
them in short rounds (order flipped every round), so the host's slow drift — which on this shared
2-core machine moves a one-client p50 between 1.3 and 4 ms within minutes — hits both alike.

    .venv/bin/python reports/bench/issue14/ab_gateways.py BASE_REV NEW_REV BUNDLE [--rounds 20]
        [--seconds 4] [--users 256] [--out FILE]

Why not `compare.sh`: it runs whole `bench gateway` invocations one after another, so a drift
lasting one invocation (~30 s) lands on one side; three runs of it on the same two commits gave
new/base p50 0.97, 1.25 and 1.89.  Each side runs from a clean git worktree with this
checkout's .venv; each gateway has its own embedded Redis; both serve BUNDLE to the same known
users (no events).  Prints per-round p50s and the median of the per-round ratios; writes JSON.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import orjson

from ratingctr.bundle import load_bundle
from ratingctr.loadtest.http_load import encode_post, run_load
from ratingctr.serving.process import running_gateway

ROOT = Path(__file__).resolve().parents[3]
ROOMS = ("training", "export", "serving", "loadtest", "online")


@contextlib.contextmanager
def worktree(rev: str):
    """A clean detached worktree of ``rev`` whose rooms resolve under its own ``ratingctr/``."""
    tree = Path(tempfile.mkdtemp(prefix="ratingctr-ab-"))
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(tree), rev], check=True)
    try:
        for room in ROOMS:
            if (tree / room).is_dir():
                (tree / "ratingctr" / room).symlink_to(tree / room)
        check = subprocess.run([sys.executable, "-c", "import ratingctr.serving.gateway as g; print(g.__file__)"],
                               cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)}, capture_output=True, text=True)
        if not check.stdout.strip().startswith(str(tree)):
            raise SystemExit(f"{rev}: the gateway does not resolve inside its worktree ({check.stdout.strip()})")
        yield tree
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base")
    parser.add_argument("new")
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--users", type=int, default=256)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    bundle = args.bundle.resolve()
    vocab = load_bundle(bundle).vocab["user_id"]
    users = [vocab[u] for u in np.random.default_rng(0).integers(1, len(vocab), args.users).tolist()]
    bodies = [encode_post("127.0.0.1", "/v1/recommend", orjson.dumps({"user_id": u, "k": 10})) for u in users]
    sides = {"base": args.base, "new": args.new}
    p50: dict[str, list[float]] = {"base": [], "new": []}
    p99: dict[str, list[float]] = {"base": [], "new": []}
    here = os.getcwd()
    with contextlib.ExitStack() as stack:
        ports = {}
        for side, rev in sides.items():
            tree = stack.enter_context(worktree(rev))
            os.chdir(tree)  # `python -m` puts the working directory first on sys.path
            try:
                gateway = stack.enter_context(running_gateway({"main": bundle}, env={"PYTHONPATH": str(tree)}))
            finally:
                os.chdir(here)
            ports[side] = int(gateway.url.rsplit(":", 1)[1])
        for r in range(args.rounds):
            for side in (("base", "new") if r % 2 == 0 else ("new", "base")):
                summary = run_load("127.0.0.1", ports[side], bodies, 1, args.seconds).summary()
                if summary["failed"]:
                    raise SystemExit(f"{side}: {summary['failed']} failed requests")
                p50[side].append(summary["p50_ms"])
                p99[side].append(summary["p99_ms"])
    ratios = [n / b for b, n in zip(p50["base"], p50["new"])]
    result = {"base": args.base, "new": args.new, "bundle": str(bundle), "rounds": args.rounds,
              "seconds": args.seconds, "users": args.users,
              "p50_ms_median": {s: statistics.median(v) for s, v in p50.items()},
              "p99_ms_median": {s: statistics.median(v) for s, v in p99.items()},
              "new_over_base_p50_median_of_rounds": statistics.median(ratios),
              "new_over_base_p50_rounds": ratios, "p50_ms_rounds": p50, "p99_ms_rounds": p99}
    result["new_over_base_p50_median"] = result.pop("new_over_base_p50_median_of_rounds")
    print(json.dumps({k: v for k, v in result.items() if not k.endswith("_rounds")}, indent=2))
    print("per-round new/base p50:", " ".join(f"{r:.3f}" for r in ratios))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
