"""``bench scale`` on two small points: every stage measured through the real verbs, cached, resumable."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import run_cli

from ratingctr.loadtest.scale_bench import fitted_exponent, memory_fit, retriever_breakdown, shape


def test_points_have_movielens_25m_proportions_and_small_ones_stay_sparse() -> None:
    assert shape(25_000_000) == (162_337, 59_101)
    users, items = shape(20_000)
    assert 20_000 / (users * items) <= 0.26


def test_fitted_exponent_skips_missing_values() -> None:
    assert abs(fitted_exponent([1e6, 5e6, 25e6], [1.0, 5.0, 25.0]) - 1.0) < 1e-9
    assert fitted_exponent([1e6, 5e6], [1.0, None]) is None


def _point(users: int, items: int, rss: float) -> dict:
    return {"stages": {"train-DCNV2-binary": {"dataset": {"users": users, "items": items}},
                       "serve": {"gateway_rss_bytes": rss}}}


def test_retriever_breakdown_splits_the_epoch_into_steps_and_reads_old_runs() -> None:
    metrics = {"epoch_seconds": [36.58], "graph_edges": 799_970, "batch_size": 2048,
               "test": {"recall@20": 0.11}, "popular": {"recall@20": 0.05}}
    old = retriever_breakdown(metrics)  # a run written before set-up and evaluation were timed
    assert old["steps_per_epoch"] == 391 and old["step_ms"] == pytest.approx(93.55, abs=0.01)
    assert "setup_seconds" not in old and "eval_seconds" not in old
    new = retriever_breakdown({**metrics, "steps_per_epoch": 391, "setup_seconds": 4.0,
                               "valid_seconds": [1.5, 2.5], "final_eval_seconds": 3.0})
    assert new["setup_seconds"] == 4.0 and new["eval_seconds"] == 7.0


def test_memory_fit_recovers_a_linear_model_and_shows_a_point_off_it() -> None:
    shapes = [(6_000, 2_000), (30_000, 12_000), (160_000, 59_000), (6_000, 1_000_000)]
    exact = [_point(u, i, 200e6 + 700.0 * i + 300.0 * u) for u, i in shapes]
    fit = memory_fit(exact)
    assert abs(fit["base_bytes"] - 200e6) < 1e3 and abs(fit["bytes_per_item"] - 700.0) < 1e-3
    assert abs(fit["bytes_per_user"] - 300.0) < 1e-2
    assert max(abs(q["relative_residual"]) for q in fit["points"]) < 1e-9
    bent = exact[:3] + [_point(6_000, 1_000_000, 2 * (200e6 + 700.0 * 1_000_000 + 300.0 * 6_000))]
    bent.append(_point(60_000, 500_000, 200e6 + 700.0 * 500_000 + 300.0 * 60_000))
    assert max(abs(q["relative_residual"]) for q in memory_fit(bent)["points"]) > 0.1
    assert memory_fit(exact[:3]) is None  # three coefficients, three points: nothing left to test them


def test_bench_scale_measures_every_stage_and_reuses_its_cache(tmp_path: Path) -> None:
    work, out = tmp_path / "work", tmp_path / "out"
    args = ["bench", "scale", "--ratings", "20k,40k", "--eval-users", "40", "--requests", "20",
            "--work", str(work), "--out", str(out)]
    first = run_cli(*args, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert [p["ratings"] for p in results["points"]] == [20_000, 40_000]
    for point in results["points"]:
        stages = point["stages"]
        assert set(stages) == {"synth", "train-DCNV2-binary", "retriever", "export", "serve"}
        train = stages["train-DCNV2-binary"]
        assert train["peak_rss_bytes"] > 100 * 2**20 and train["epoch_seconds"] > 0 and train["rows_per_s"] > 0
        assert 0.5 < train["test_auc"] < 1.0  # synthetic data has learnable structure
        assert train["dataset"]["interactions"] > 0.8 * point["ratings"]
        assert stages["export"]["index"] == "flat" and stages["export"]["bundle_bytes"] > 0
        # the retriever's stage split into set-up, steps × per-step cost and evaluation
        retriever = stages["retriever"]
        assert retriever["steps_per_epoch"] == -(-retriever["graph_edges"] // retriever["batch_size"])
        assert retriever["step_ms"] == pytest.approx(1e3 * retriever["epoch_seconds"] / retriever["steps_per_epoch"])
        assert retriever["setup_seconds"] > 0 and retriever["eval_seconds"] > 0
        assert retriever["setup_seconds"] + retriever["epoch_seconds"] + retriever["eval_seconds"] < retriever["seconds"]
        serve = stages["serve"]
        assert serve["recommend_p50_ms"] > 0 and serve["redis_bytes_per_user"] > 0 and serve["gateway_rss_bytes"] > 0
        # the gateway's own stage histogram: every request read Redis, searched FAISS and scored
        assert {"redis", "faiss", "onnx"} <= set(serve["stage_mean_ms"])
        assert 0 < sum(serve["stage_mean_ms"].values()) < serve["recommend_p99_ms"] * 2
    labels = {row["label"] for row in results["costs"]}
    assert "train-DCNV2-binary: 1 epoch (s)" in labels and "/v1/recommend p50 (ms)" in labels
    assert "| train-DCNV2-binary: 1 epoch (s) |" in (out / "report.md").read_text()
    cached = {p.name: p.stat().st_mtime_ns for p in work.rglob("*.json") if p.parent.name in ("20000", "40000")}
    again = run_cli(*args, timeout=120)  # every stage cached: nothing is measured again
    assert again.returncode == 0, again.stderr[-2000:]
    assert {p.name: p.stat().st_mtime_ns for p in work.rglob("*.json")
            if p.parent.name in ("20000", "40000")} == cached
    # --precision fp32 adds its own training stage beside the cached one (evaluation's precision)
    fp32 = run_cli("bench", "scale", "--ratings", "20k", "--eval-users", "40", "--requests", "20", "--precision",
                   "fp32", "--work", str(work), "--out", str(out), timeout=300)
    assert fp32.returncode == 0, fp32.stderr[-2000:]
    stages = json.loads((out / "results.json").read_text())["points"][0]["stages"]
    assert stages["train-DCNV2-binary-fp32"]["precision"] == "float32"
    assert "train-DCNV2-binary" in stages  # the auto stage stays in the report
    assert (work / "20000" / "runs" / "DCNV2-binary-fp32" / "metrics.json").is_file()
