"""``bench ann`` on small catalogues: every kind measured, recall against exact search, a report."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from helpers import run_cli

from ratingctr.export.ann_bench import fitted_exponent, synthetic_catalogue


def test_the_synthetic_catalogue_is_seeded_and_has_spread_norms() -> None:
    items, users = synthetic_catalogue(5000, 16, 50, seed=1)
    again, _ = synthetic_catalogue(5000, 16, 50, seed=1)
    assert items.shape == (5001, 16) and users.shape == (50, 16) and np.array_equal(items, again)
    assert not items[0].any()  # the unknown row
    norms = np.linalg.norm(items[1:], axis=1)
    assert norms.std() / norms.mean() > 0.2  # inner-product retrieval's popularity proxy


def test_fitted_exponent_recovers_a_power_law() -> None:
    assert abs(fitted_exponent([1e3, 1e4, 1e5], [2.0, 20.0, 200.0]) - 1.0) < 1e-9
    assert fitted_exponent([10.0], [1.0]) is None


def test_bench_ann_writes_a_report_with_every_kind_and_size(tmp_path: Path) -> None:
    out = tmp_path / "ann"
    result = run_cli("bench", "ann", "--items", "1000,3000", "--queries", "40", "--passes", "2", "--k", "50",
                     "--out", str(out), timeout=300)
    assert result.returncode == 0, result.stderr
    results = json.loads((out / "results.json").read_text())
    points = {(p["items"], p["kind"]): p for p in results["points"]}
    assert set(points) == {(n, k) for n in (1000, 3000) for k in ("flat", "ivf", "hnsw")}
    assert all(points[(n, "flat")]["recall"] == 1.0 and points[(n, "flat")]["params"] == {} for n in (1000, 3000))
    assert points[(3000, "ivf")]["recall"] > 0.9 and "nprobe" in points[(3000, "ivf")]["params"]
    assert all(p["p50_ms"] > 0 and p["p99_ms"] >= p["p50_ms"] and p["index_bytes"] > 0 for p in points.values())
    report = (out / "report.md").read_text()
    assert "| 3,000 | ivf |" in report and (out / "ann.png").stat().st_size > 1000
    bad = run_cli("bench", "ann", "--items", "10", "--out", str(out))
    assert bad.returncode == 2 and "at least --k" in bad.stderr
