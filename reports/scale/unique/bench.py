"""Distinct interaction keys: ``np.unique`` (numpy's hash table since 2.3) against ``sorted_unique``.

The keys are what uni100 sampling and the graph build make of a dataset's (user, item) pairs,
``user * (n_items + 1) + item`` over every interaction, from ``data synth`` draws of
MovieLens-25M's shape.  Alternating rounds (the order flips each round; round 0 warms up and
is dropped), median of the rest, both on the same array in one process.

    .venv/bin/ratingctr data synth --users 6493 --items 2364 --ratings 1000000 --seed 0 --out /tmp/s1m
    .venv/bin/ratingctr data synth --users 32467 --items 11820 --ratings 5000000 --seed 0 --out /tmp/s5m
    .venv/bin/ratingctr data synth --users 162337 --items 59101 --ratings 25000000 --seed 0 --out /tmp/s25m
    .venv/bin/python reports/scale/unique/bench.py /tmp/s1m /tmp/s5m /tmp/s25m > reports/scale/unique/results.json
"""
from __future__ import annotations

import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ratingctr.report_files import short_commit
from ratingctr.unique import reference_sorted_unique, sorted_unique

ROUNDS = 6


def keys(folder: Path) -> np.ndarray:
    inter = pd.read_csv(next(folder.glob("*.inter")), sep="\t", usecols=[0, 1])
    user = pd.factorize(inter.iloc[:, 0])[0].astype(np.int64) + 1
    item = pd.factorize(inter.iloc[:, 1])[0].astype(np.int64) + 1
    return user * (int(item.max()) + 1) + item


def timed(fn, values: np.ndarray) -> float:
    start = time.perf_counter()
    fn(values)
    return time.perf_counter() - start


def main() -> None:
    out = {"commit": short_commit(), "numpy": np.__version__, "machine": platform.processor() or platform.machine(),
           "rounds": ROUNDS, "points": []}
    for folder in map(Path, sys.argv[1:]):
        values = keys(folder)
        assert np.array_equal(sorted_unique(values), reference_sorted_unique(values))
        times: dict[str, list[float]] = {"np.unique": [], "sorted_unique": []}
        for r in range(ROUNDS):
            order = [("np.unique", reference_sorted_unique), ("sorted_unique", sorted_unique)]
            for name, fn in order if r % 2 == 0 else order[::-1]:
                seconds = timed(fn, values)
                if r:
                    times[name].append(seconds)
        median = {name: statistics.median(t) for name, t in times.items()}
        out["points"].append({"data": str(folder), "keys": int(values.size),
                              "distinct": int(sorted_unique(values).size),
                              "seconds": times, "median_seconds": median,
                              "speedup": median["np.unique"] / median["sorted_unique"]})
        print(f"{values.size:>12,} keys: np.unique {median['np.unique']:.3f} s, sorted_unique "
              f"{median['sorted_unique']:.3f} s", file=sys.stderr)
    json.dump(out, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
