"""``experiment pipeline`` on the tiny dataset: every step cached, the report's numbers are the evaluations'."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from ratingctr.online.pipeline_experiment import PipelineConfig, render, run_pipeline, write


@pytest.mark.slow
def test_pipeline_trains_exports_evaluates_and_resumes(tiny_atomic: Path, tmp_path: Path) -> None:
    config = PipelineConfig(models=("DCNV2",), seeds=(1, 2), dataset="atomic", data_dir=str(tiny_atomic), k_core=3,
                            epochs=2, candidates=20, sweep=(20, 40), latency_seconds=0.0, runs=tmp_path / "runs",
                            out=tmp_path / "report")
    results = run_pipeline(config)
    write(results, config.out)
    evaluation = json.loads((config.runs / "evaluations" / "DCNV2-s2" / "results.json").read_text())
    rows = results["table"]["DCNV2"]
    assert set(rows) == {"most popular", "retriever order", "+ binary-head ranker", "+ rating-head ranker"}
    assert rows["retriever order"]["ndcg@10"]["n"] == 2
    # the seed-level mean is the mean of the two evaluations' user means
    first = json.loads((config.runs / "evaluations" / "DCNV2-s1" / "results.json").read_text())
    expected = (first["lists"]["retriever order"]["10"]["ndcg"]["mean"]
                + evaluation["lists"]["retriever order"]["10"]["ndcg"]["mean"]) / 2
    assert rows["retriever order"]["ndcg@10"]["mean"] == pytest.approx(expected)
    diff = results["differences"]["DCNV2"]
    assert [d["mean"] for d in diff["per_seed"]] == [first["comparisons"]["rating head − binary head"]["mean"],
                                                      evaluation["comparisons"]["rating head − binary head"]["mean"]]
    mtimes = {p: p.stat().st_mtime_ns for p in config.runs.rglob("metrics.json")}
    again = run_pipeline(config)  # everything cached: no run is retrained
    assert {p: p.stat().st_mtime_ns for p in config.runs.rglob("metrics.json")} == mtimes
    assert again["table"] == results["table"]
    report = render(results)
    assert "## DCNV2" in report and "rating − binary" in report
    assert (config.out / "ndcg_vs_k.png").is_file() and (config.out / "ndcg_vs_candidates.png").is_file()
