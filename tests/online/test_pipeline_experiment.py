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
    # the weight study: the chosen w is the validation argmax, its test value that seed's test NDCG at w
    valid = [json.loads((config.runs / "evaluations" / f"DCNV2-s{s}-valid" / "results.json").read_text())
             for s in (1, 2)]
    assert all(v["split"] == "valid" for v in valid)
    study = results["weights"]["DCNV2"]["rating"]
    assert study["chosen"] == study["weights"][max(range(len(study["weights"])),
                                                   key=lambda i: (study["valid"][i], -study["weights"][i]))]
    at = [next(r for r in e["weights"] if r["weight"] == study["chosen"])
          [f"ndcg@10 {next(b['name'] for b in e['bundles'] if b['head'] == 'rating')}"] for e in (first, evaluation)]
    assert study["test_at_chosen"]["mean"] == pytest.approx(sum(at) / 2)
    over = {r["candidates"]: r for r in results["sweep_over_runs"]}
    assert set(over) == {20, 40} and over[40]["runs"] == 2
    assert over[40]["retriever_recall"]["mean"] == pytest.approx(
        sum(next(r for r in e["sweep"] if r["candidates"] == 40)["retriever_recall"] for e in (first, evaluation)) / 2)
    served = json.loads((config.runs / "bundles" / "dcnv2-rating-s1" / "manifest.json").read_text())
    assert served["ranking"] == {"retriever_weight": 1.0, "fresh_from": 0, "fresh_slots": 0}
    mtimes = {p: p.stat().st_mtime_ns for p in config.runs.rglob("metrics.json")}
    again = run_pipeline(config)  # everything cached: no run is retrained
    assert {p: p.stat().st_mtime_ns for p in config.runs.rglob("metrics.json")} == mtimes
    assert again["table"] == results["table"]
    report = render(results)
    assert "## DCNV2" in report and "rating − binary" in report and "chosen w (valid)" in report
    assert (config.out / "ndcg_vs_k.png").is_file() and (config.out / "ndcg_vs_candidates.png").is_file()
