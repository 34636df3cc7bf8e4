"""``ratingctr bench train`` on MovieLens-100k: what it reports is what its worker processes measured."""
import json
import re
import time
from pathlib import Path

import pytest
from helpers import run_cli


def test_bench_train_interleaves_heads_and_reports_the_recorded_runs(ml100k_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    start = time.perf_counter()
    proc = run_cli("bench", "train", "--models", "WideDeep", "--runs", "2", "--epochs", "1",
                   "--data-dir", str(ml100k_root), "--out", str(out), timeout=900)
    wall = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr
    # Each worker process reports its epoch time as it finishes (3 decimals): the recorded samples.
    progress = re.findall(r"^\[(\d)/4\] WideDeep (binary|rating): (\d+\.\d{3}) s/epoch$", proc.stderr, re.M)
    assert [(int(i), head) for i, head, _ in progress] == [(1, "binary"), (2, "rating"), (3, "binary"), (4, "rating")]
    samples = {head: [float(s) for _, h, s in progress if h == head] for head in ("binary", "rating")}
    row = json.loads(out.read_text())["table"][0]
    for head, runs in samples.items():
        assert row[f"{head}_s_per_epoch_min"] == pytest.approx(min(runs), abs=5e-4)
        assert row[f"{head}_s_per_epoch_max"] == pytest.approx(max(runs), abs=5e-4)
        assert row[f"{head}_s_per_epoch"] == pytest.approx(sum(runs) / 2, abs=5e-4)  # median of two runs
        assert row[f"{head}_peak_rss_mb"] > 100  # torch and the data really were loaded
    # Every run trains a warm-up epoch and then the timed one, in its own process, within our wall clock:
    # an epoch time in the wrong unit, or made up, cannot fit.
    assert 0 < 2 * sum(sum(runs) for runs in samples.values()) < wall
    # The printed table is the JSON's.
    assert (f"| WideDeep | {row['binary_s_per_epoch']:.3f} | {row['rating_s_per_epoch']:.3f} | "
            f"{row['binary_peak_rss_mb']:.0f} | {row['rating_peak_rss_mb']:.0f} | {row['rating_over_binary']:.3f} |"
            ) in proc.stdout.splitlines()
