"""The experiment plumbing on the tiny synthetic dataset: tables render, the cache skips, runs resume."""
from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from ratingctr.cli import main
from ratingctr.training.config import DataConfig, EncoderConfig, HeadConfig, ModelConfig, RunConfig, TrainConfig
from ratingctr.training.experiments.runner import Plan, run_key, run_plan, traced_train_run
from ratingctr.training.experiments.stats import mean_std, paired_p_value

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FAST_CONNECTIVITY = ["--epochs", "2", "--batch-size", "512", "--precision", "fp32", "--device", "cpu",
                     "--seeds", "2", "--mlp_hidden_size=[16]"]  # its k-cores come from --k-cores
FAST = FAST_CONNECTIVITY + ["--k-core", "3"]


def _supervision_args(tiny: Path, runs: Path, out: Path) -> list[str]:
    return ["experiment", "supervision", "--dataset", "atomic", "--data-dir", str(tiny), "--models", "WideDeep,DCNV2",
            "--trace-models", "DCNV2", "--ratio-models", "WideDeep,DCNV2", "--ratios", "0.3,0.5",
            "--noise-models", "DCNV2", "--noise-stds", "0.05,0.1", "--noise-relative", "0.5,1", "--select-ratio", "validation",
            "--binary-lr-grid", "0.5,1", "--runs-dir", str(runs), "--out", str(out)] + FAST


@pytest.fixture(scope="module")
def supervision(tiny_atomic: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], Path, Path]:
    root = tmp_path_factory.mktemp("supervision")
    args = _supervision_args(tiny_atomic, root / "runs", root / "report")
    assert main(args) == 0
    return args, root / "runs", root / "report"


def test_supervision_report_has_every_table_and_figure(supervision) -> None:
    _, runs, out = supervision
    report = (out / "report.md").read_text()
    for heading in ("Table 1", "Table 2", "Table 3", "Figure 2", "Figure 3", "Figure 4", "Hyper-parameters",
                    "Findings"):
        assert f"## {heading}" in report, heading
    results = json.loads((out / "results.json").read_text())
    row = results["table1"][0]
    assert {"model", "binary_auc_mean", "binary_auc_std", "rating_auc_mean", "rating_auc_std", "p_value",
            "seeds"} <= set(row)
    assert [r["model"] for r in results["table1"]] == ["WideDeep", "DCNV2"] and row["seeds"] == 2
    runs_of = _runs_by_label(runs)
    for head in ("binary", "rating"):  # the table holds the runs' own numbers
        assert row[f"{head}_auc_per_seed"] == [runs_of[f"WideDeep-{head}-s{s}"]["test"]["auc"] for s in (2020, 2021)]
    assert row["auc_diff"]["mean"] == pytest.approx(row["rating_auc_mean"] - row["binary_auc_mean"])
    assert "| WideDeep | " in report and "| DCNV2 | " in report
    assert all(h["identical_for_both_heads"] for h in results["hyperparameters"])
    fig2 = results["figure2"]["DCNV2"]["rating"]
    assert fig2["user_grad_norm"]["mean"] and all(v > 0 for v in fig2["user_grad_norm"]["mean"])
    assert [p["std"] for p in results["figure3"]["DCNV2"]["binary"]] == [0.0, 0.05, 0.1]
    assert [p["ratio"] for p in results["figure4"]["WideDeep"]["rating"]] == [0.3, 0.5]
    # Figure 3 scaled: each run perturbed at level × its own embedding RMS, recorded beside the metrics
    assert [p["std"] for p in results["figure3_scaled"]["DCNV2"]["rating"]] == [0.0, 0.5, 1.0]
    for head in ("binary", "rating"):
        noise = json.loads(next(runs.glob(f"DCNV2-{head}-s2020-*/noise.json")).read_text())
        assert noise["embedding_rms"] > 0 and noise["rel:1"]["std"] == pytest.approx(noise["embedding_rms"])
        assert noise["rel:0.5"]["std"] == pytest.approx(0.5 * noise["embedding_rms"])
        assert noise["0.1"]["std"] == 0.1  # the absolute grid is unchanged
        assert results["embedding_rms"]["DCNV2"][head][0] > 0
    assert "### Figure 3, noise scaled to each run's embeddings" in report
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["figure2_embedding_norms.png", "figure3_noise.png", "figure3_noise_scaled.png", "figure4_ratio.png"]
    assert all((out / p).read_bytes()[:8] == PNG_MAGIC for p in pngs)
    # λr = 0.5 of Figure 4 and of the selection grid is Table 1's rating run, lr × 1 its binary run: one run each.
    # Table 1: 2 models × 2 heads × 2 seeds; Figure 4 (and the selection's λr grid, the same runs): λr 0.3 of
    # both models; selection: both models lr × 0.5
    assert len(list(runs.iterdir())) == 8 + 2 + 2 + 4


def test_rerun_skips_finished_runs_and_report_only_rerenders(supervision, capsys: pytest.CaptureFixture) -> None:
    args, runs, out = supervision
    stamps = {p: p.stat().st_mtime_ns for p in runs.glob("*/metrics.json")}
    capsys.readouterr()
    assert main(args) == 0
    assert "16 runs: 16 cached, 0 to run" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in runs.glob("*/metrics.json")} == stamps
    (out / "discussion.md").write_text("Hand-written notes.")
    before = json.loads((out / "results.json").read_text())
    assert main(["experiment", "supervision", "--out", str(out), "--report-only"]) == 0
    assert "## Discussion\n\nHand-written notes." in (out / "report.md").read_text()
    assert json.loads((out / "results.json").read_text()) == before
    # --records: a fresh runs folder fills from the records and trains nothing but the checkpoints
    # the noise runs need (their scores are in the records: nothing at all)
    records = runs.parent / "records"
    assert main(args + ["--records", str(records)]) == 0
    assert len(list(records.glob("*/metrics.json"))) == 16
    capsys.readouterr()
    assert main([a if a != str(runs) else str(runs.parent / "elsewhere") for a in args] + ["--records", str(records)]) == 0
    assert "16 runs: 16 cached, 0 to run" in capsys.readouterr().err
    after = json.loads((out / "results.json").read_text())
    assert {k: v for k, v in after.items() if k not in ("command", "provenance")} == \
        {k: v for k, v in before.items() if k not in ("command", "provenance")}


def test_connectivity_parallel_jobs_render(tiny_atomic: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    args = ["experiment", "connectivity", "--dataset", "atomic", "--data-dir", str(tiny_atomic), "--models", "DCNV2",
            "--k-cores", "3", "--jobs", "2", "--runs-dir", str(tmp_path / "runs"), "--out", str(out)] + FAST_CONNECTIVITY
    assert main(args) == 0
    report = (out / "report.md").read_text()
    for heading in ("Table 2: EvalRM off", "Table 3: EvalRM on", "Table 4", "Figure 5", "Hyper-parameters"):
        assert f"## {heading}" in report, heading
    results = json.loads((out / "results.json").read_text())
    cell = results["cells"]["DCNV2|3"]
    runs = {mode: [json.loads(next((tmp_path / "runs").glob(f"DCNV2-rating-k3-s{s}-{tag}-*")).joinpath(
        "metrics.json").read_text()) for s in (2020, 2021)]
        for mode, tag in (("Base", "base"), ("Base+", "baseplus"), ("TS", "ts"), ("FT", "ft"))}
    for mode, metrics in runs.items():  # the cell holds the runs' own numbers
        assert cell[mode]["auc"][0] == pytest.approx(np.mean([m["test"]["auc"] for m in metrics]))
    # Base+ and FT both continue that seed's Base run; Base+ keeps the table encoder
    for mode, encoder in (("Base+", "table"), ("FT", "lightgcn")):
        config = runs[mode][0]["config"]
        assert config["encoder"]["kind"] == encoder and "DCNV2-rating-k3-s2020-base-" in config["encoder"]["init_from"]
        assert runs[mode][0]["mode"] == {"Base+": "base+", "FT": "FT"}[mode]
    mp = cell["message_passing"]["auc"]
    per_seed = [ft["test"]["auc"] - bp["test"]["auc"] for ft, bp in zip(runs["FT"], runs["Base+"])]
    assert mp["mean"] == pytest.approx(np.mean(per_seed)) and mp["pairs"] == 2
    assert mp["ci_low"] <= mp["mean"] <= mp["ci_high"]
    tests = [cell[m]["diff_vs_base"]["auc"] for m in ("Base+", "TS", "FT")] + [mp]
    ranked = sorted((t["p_value"], t["holm_p"]) for t in tests if t["p_value"] is not None)
    assert all(h >= p for p, h in ranked) and [h for _, h in ranked] == sorted(h for _, h in ranked)
    # 2 epochs under patience 5: every run ends at the cap, and the report says so
    assert all(c == {"capped": 2, "runs": 2, "unknown": 0} for c in cell["capped"].values())
    assert "**8 of 8**" in report and "| AUC Base+ |" in report and "FT − Base+ [95% CI]" in report
    assert set(cell["mci"]["FT−Base+"]) == {"low", "mid", "high"}
    assert (out / "figure5_mci.png").read_bytes()[:8] == PNG_MAGIC


def _tiny_config(tiny: Path, head: str = "rating", **train) -> RunConfig:
    return RunConfig(data=DataConfig(dataset="atomic", data_dir=str(tiny), k_core=3),
                     model=ModelConfig("WideDeep", 8, {"mlp_hidden_size": [16]}), head=HeadConfig(head, 0.5),
                     train=TrainConfig(**{"epochs": 2, "batch_size": 512, "lr": 3e-3, "progress": False,
                                          "precision": "fp32", "device": "cpu", **train}))


def test_interrupted_plan_resumes_where_it_stopped(tiny_atomic: Path, tmp_path: Path) -> None:
    def plan() -> Plan:
        p = Plan(tmp_path / "runs")
        for seed in (1, 2):
            cfg = replace(_tiny_config(tiny_atomic), data=replace(_tiny_config(tiny_atomic).data, seed=seed),
                          train=replace(_tiny_config(tiny_atomic).train, seed=seed))
            base = p.add(cfg, f"base-s{seed}", rm_eval=True)
            p.add(replace(cfg, encoder=EncoderConfig("lightgcn", 1)), f"ft-s{seed}", base=base)
        return p

    done: list[str] = []

    def interrupt_after_two(job, result) -> None:
        done.append(job.label)
        if len(done) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_plan(plan(), on_done=interrupt_after_two)
    assert done == ["base-s1", "ft-s1"]
    resumed: list[str] = []
    counts = run_plan(plan(), on_done=lambda job, result: resumed.append(job.label))
    assert resumed == ["base-s2", "ft-s2"] and counts == {"total": 4, "cached": 2, "executed": 2}
    # a run killed mid-way (no metrics.json yet) counts as not finished
    again = plan()
    victim = next(k for k, j in again.jobs.items() if j.label == "base-s1")
    (again.run_dir(victim) / "metrics.json").unlink()
    assert run_plan(again)["executed"] == 1


def test_records_let_a_study_resume_on_a_machine_that_lost_its_runs(tiny_atomic: Path, tmp_path: Path) -> None:
    """Records hold the results only; a lost runs folder re-runs nothing except the base whose
    checkpoint a still-missing FT run needs, and a record's missing noise score retrains its run."""
    records = tmp_path / "records"

    def plan(runs: str, with_ft: bool = True, noise: tuple[float, ...] = ()) -> Plan:
        p = Plan(tmp_path / runs, records=records)
        base = p.add(_tiny_config(tiny_atomic), "base", noise_stds=noise)
        p.add(_tiny_config(tiny_atomic, head="binary"), "binary")
        if with_ft:
            p.add(replace(_tiny_config(tiny_atomic), encoder=EncoderConfig("lightgcn", 1)), "ft", base=base)
        return p

    first = plan("runs-a", with_ft=False)
    assert run_plan(first)["executed"] == 2
    saved = {d.name: sorted(f.name for f in d.iterdir()) for d in records.iterdir()}
    assert saved == {first.run_dir(k).name: ["config.json", "metrics.json"] for k in first.jobs}
    # a machine without runs-a: both results come back from the records, nothing trains
    second = plan("runs-b", with_ft=False)
    assert run_plan(second) == {"total": 2, "cached": 2, "executed": 0}
    key = next(iter(second.jobs))
    assert second.metrics(key) == first.metrics(key) and not (second.run_dir(key) / "model.pt").exists()
    # an FT run on a restored base: the base is trained again for its checkpoint, the binary run is not
    executed: list[str] = []
    third = plan("runs-c")
    assert run_plan(third, on_done=lambda job, result: executed.append(job.label))["executed"] == 2
    assert executed == ["base", "ft"]
    base_key = next(k for k, j in third.jobs.items() if j.label == "base")
    assert third.metrics(base_key)["test"]["auc"] == pytest.approx(first.metrics(base_key)["test"]["auc"], abs=1e-6)
    # a noise score the record lacks needs the checkpoint: that run trains, and its record gains noise.json
    fourth = plan("runs-d", with_ft=False, noise=(0.1,))
    assert [fourth.jobs[k].label for k in fourth.pending()] == ["base"]
    assert run_plan(fourth)["executed"] == 1
    assert "0.1" in json.loads((records / fourth.run_dir(base_key).name / "noise.json").read_text())
    # a half-written record (no metrics.json) is ignored
    (records / fourth.run_dir(base_key).name / "metrics.json").unlink()
    assert "train" in plan("runs-e", with_ft=False, noise=(0.1,)).pending()[base_key]


def test_run_key_covers_the_configuration(tiny_atomic: Path) -> None:
    config = _tiny_config(tiny_atomic)
    assert run_key(config) == run_key(replace(config, train=replace(config.train, progress=True)))
    assert run_key(config) != run_key(replace(config, head=replace(config.head, ratio=0.3)))
    assert run_key(config) != run_key(replace(config, train=replace(config.train, seed=7)))
    ft = replace(config, encoder=EncoderConfig("lightgcn", 2, init_from="/somewhere"))
    assert run_key(ft, "aaa") != run_key(ft, "bbb")
    with pytest.raises(ValueError):
        run_key(ft)


def test_traced_run_matches_train_run(tiny_atomic: Path, tmp_path: Path) -> None:
    from ratingctr.training.data.encode import load_dataset
    from ratingctr.training.run import train_run

    config = _tiny_config(tiny_atomic)
    data = load_dataset(config.data)
    plain = train_run(config, tmp_path / "plain", data)
    traced = traced_train_run(config, tmp_path / "traced", data)
    assert set(traced) == set(plain)
    assert traced["test"]["auc"] == pytest.approx(plain["test"]["auc"], abs=1e-6)
    assert traced["history"][-1]["train_loss"] == pytest.approx(plain["history"][-1]["train_loss"], rel=1e-6)
    trace = json.loads((tmp_path / "traced" / "trace.json").read_text())
    steps = -(-data.stats["train"] // config.train.batch_size) * trace["epochs"]
    assert len(trace["user_grad_norm"]) == len(trace["item_grad_norm"]) == steps
    assert trace["user_weight_norm"] > 0 and trace["item_weight_norm"] > 0


def _runs_by_label(runs: Path) -> dict[str, dict]:
    """Every finished run's metrics.json by its label (the run folder minus the key)."""
    return {d.name.rsplit("-", 1)[0]: json.loads((d / "metrics.json").read_text()) for d in runs.iterdir()}


def test_selected_blocks_choose_on_validation_and_report_test(supervision) -> None:
    _, runs, out = supervision
    results = json.loads((out / "results.json").read_text())
    runs_of = _runs_by_label(runs)
    seeds = (2020, 2021)

    def label(model: str, head: str, point: str, seed: int) -> str:
        if head == "rating":
            return f"{model}-rating-s{seed}" if point == 0.5 else f"{model}-rating-r{point:g}-s{seed}"
        return f"{model}-binary-s{seed}" if point == 1.0 else f"{model}-binary-lr{point:g}x-s{seed}"

    for row in results["table1"]:
        model = row["model"]
        for block, head, grid, key in (("selected_ratio", "rating", (0.3, 0.5), "ratio"),
                                       ("selected_lr", "binary", (0.5, 1.0), "factor")):
            valid = {g: np.mean([runs_of[label(model, head, g, s)]["valid"]["auc"] for s in seeds]) for g in grid}
            chosen = row[block][key]
            assert chosen == max(grid, key=lambda g: (valid[g], -grid.index(g)))  # argmax of validation, read back
            assert {c: v for c, v in row[block]["valid_auc_means"]} == pytest.approx(valid)
            test = [runs_of[label(model, head, chosen, s)]["test"]["auc"] for s in seeds]
            assert row[block]["auc_per_seed"] == test  # the chosen setting's test numbers, nothing else
        assert row["tuning"] == {"binary": 2, "rating": 2}
        equal = [r - b for r, b in zip(row["selected_ratio"]["auc_per_seed"], row["selected_lr"]["auc_per_seed"])]
        assert row["selected_lr"]["auc_diff"]["mean"] == pytest.approx(np.mean(equal))
        lr = runs_of[label(model, "binary", row["selected_lr"]["factor"], 2020)]["config"]["train"]["lr"]
        assert row["selected_lr"]["lr"] == lr
    # Holm over every test in Table 1: adjusted ≥ raw, order kept
    tests = [d for r in results["table1"] for d in (r["auc_diff"], r["logloss_diff"], r["selected_ratio"]["auc_diff"],
                                                    r["selected_ratio"]["logloss_diff"], r["selected_lr"]["auc_diff"],
                                                    r["selected_lr"]["logloss_diff"]) if d["p_value"] is not None]
    ranked = sorted((d["p_value"], d["holm_p"]) for d in tests)
    assert all(h >= min(1.0, p) for p, h in ranked) and [h for _, h in ranked] == sorted(h for _, h in ranked)
    report = (out / "report.md").read_text()
    assert "### Rating head at λr selected on validation" in report and "### Binary head at lr selected" in report
    # 2 epochs under patience 5: every run stops at the cap, and each table says so
    assert results["capped"]["main"] == {"binary": {"capped": 4, "runs": 4, "unknown": 0},
                                         "rating": {"capped": 4, "runs": 4, "unknown": 0}}
    assert ("**24 of 24** (binary 4/4, rating 4/4, rating λr grid 8/8, binary lr grid 8/8)" in report)  # Table 1
    assert report.count("Runs stopped by the epoch cap") == 4  # Tables 1, 2, 3 and Figure 4


def test_selection_reads_validation_never_test(tmp_path: Path, tiny_atomic: Path) -> None:
    """Hand-written runs whose validation and test disagree: validation decides."""
    from ratingctr.training.experiments.selection import select_on_validation

    plan = Plan(tmp_path / "runs", fingerprint="f" * 64)
    scores = {0.1: ([0.70, 0.72], [0.90, 0.91]), 0.5: ([0.75, 0.74], [0.60, 0.61]), 0.9: ([0.75, 0.74], [0.5, 0.5])}
    keys: dict = {}
    for ratio, (valid, test) in scores.items():
        keys[ratio] = []
        for seed, (v, t) in enumerate(zip(valid, test)):
            config = replace(_tiny_config(tiny_atomic), train=replace(_tiny_config(tiny_atomic).train, seed=seed),
                             head=HeadConfig("rating", ratio))
            key = plan.add(config, f"r{ratio}-s{seed}")
            plan.run_dir(key).mkdir(parents=True)
            (plan.run_dir(key) / "metrics.json").write_text(json.dumps({"valid": {"auc": v}, "test": {"auc": t}}))
            keys[ratio].append(key)
    choice = select_on_validation(plan, keys)
    assert choice.chosen == 0.5  # best validation mean 0.745; a tie with 0.9 goes to the first in grid order
    assert choice.valid_means == pytest.approx({0.1: 0.71, 0.5: 0.745, 0.9: 0.745}) and choice.candidates == 3
    keys[0.7] = ["missing-run"]
    plan.jobs["missing-run"] = plan.jobs[keys[0.1][0]]  # a run that never finished cannot win
    assert select_on_validation(plan, {0.7: keys[0.7]}).chosen is None


def test_ratio_presets() -> None:
    from ratingctr.training.experiments.selection import ratio_grid

    sweep = (0.1, 0.3, 0.5, 0.7, 0.9)
    assert {m: ratio_grid(m, sweep, "authors") for m in ("EulerNet", "FiGNN", "AutoInt", "NFM", "WideDeep", "DCNV2",
                                                       "xDeepFM")} == {
        "EulerNet": (0.1,), "FiGNN": (0.1,), "AutoInt": (0.5,), "NFM": (0.5,), "WideDeep": sweep, "DCNV2": sweep,
        "xDeepFM": sweep}
    assert ratio_grid("FiGNN", sweep, "sweep") == sweep


def test_holm_paired_difference_and_cap_known_answers() -> None:
    from ratingctr.training.experiments.stats import hit_cap, holm, paired_difference

    # Holm by hand: sorted 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 → max(0.06, 0.04) = 0.06
    assert holm([0.01, 0.04, 0.03, 0.005, None]) == pytest.approx([0.03, 0.06, 0.06, 0.02, None])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    # differences 1, 2, 3: mean 2, s = 1, t = 2√3 with 2 df, whose CDF is closed-form:
    # p = 1 − t/√(2 + t²) = 1 − √(12/14); the 95% quantile of t(2) is 4.302652729911275
    diff = paired_difference([0.0, 0.0, 0.0, None], [1.0, 2.0, 3.0, 9.0])
    assert diff["mean"] == 2.0 and diff["pairs"] == 3
    assert diff["p_value"] == pytest.approx(1 - math.sqrt(12 / 14), rel=1e-9)
    half = 4.302652729911275 / math.sqrt(3)
    assert (diff["ci_low"], diff["ci_high"]) == pytest.approx((2 - half, 2 + half), rel=1e-9)
    assert paired_difference([0.5], [0.6])["ci_low"] is None
    # capped: trained all 5 epochs, best at epoch 3 (0-based), 1 stale epoch < patience 2
    run = {"config": {"train": {"epochs": 5, "patience": 2}}, "history": [{}] * 5, "best_epoch": 3}
    assert hit_cap(run) is True
    assert hit_cap({**run, "best_epoch": 2}) is False  # 2 stale epochs: patience stopped it at the cap
    assert hit_cap({**run, "history": [{}] * 4}) is False
    assert hit_cap({"history": [{}]}) is None


def test_paired_test_and_summaries() -> None:
    # differences 0.01, 0.02, 0.005, 0.01: mean 0.01125, s = 0.0062915, t = 3.5762 on 3 df;
    # p from the closed-form t(3) CDF: p = 1 − (2/π)(atan(t/√3) + (t/√3)/(1 + t²/3))
    a, b = [0.70, 0.72, 0.71, 0.69], [0.71, 0.74, 0.715, 0.70]
    d = np.subtract(b, a)
    t = d.mean() / (d.std(ddof=1) / 2)
    x = t / math.sqrt(3)
    assert paired_p_value(a, b) == pytest.approx(1 - (2 / math.pi) * (math.atan(x) + x / (1 + x * x)), rel=1e-9)
    assert paired_p_value([0.7], [0.8]) is None
    assert paired_p_value([0.7, 0.8], [0.71, 0.81]) is None  # constant difference: t undefined
    mean, std = mean_std([1.0, 2.0, None, 3.0])
    assert mean == 2.0 and std == pytest.approx(np.std([1, 2, 3], ddof=1))
    assert mean_std([None]) == (None, None)


def test_bad_arguments_are_one_line_errors(tiny_atomic: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    base = ["experiment", "supervision", "--dataset", "atomic", "--data-dir", str(tiny_atomic), "--models", "DCNV2",
            "--runs-dir", str(tmp_path), "--out", str(tmp_path / "o")]
    assert main(base + ["--trace-models", "AutoInt"]) == 2
    assert "not in --models" in capsys.readouterr().err
    assert main(base + ["--models", "Nope"]) == 2
    assert "unknown model" in capsys.readouterr().err
    assert main(["experiment", "connectivity", "--out", str(tmp_path / "none"), "--report-only"]) == 2
    assert "--report-only needs" in capsys.readouterr().err
    assert main(["experiment", "connectivity", "--k-core", "5", "--out", str(tmp_path / "none")]) == 2
    assert "--k-core does not apply" in capsys.readouterr().err


def test_code_fingerprint_follows_the_training_sources(tmp_path: Path) -> None:
    import shutil

    from ratingctr.training.experiments.provenance import code_fingerprint, fingerprint_of, training_root

    copy = tmp_path / "training"
    shutil.copytree(training_root(), copy, ignore=shutil.ignore_patterns("__pycache__"))
    versions = {"torch": "2.0", "numpy": "1.0"}
    before = fingerprint_of(copy, versions)
    assert fingerprint_of(copy, versions) == before  # stable
    (copy / "experiments" / "plots.py").write_text("# report code only\n")
    assert fingerprint_of(copy, versions) == before  # report code does not change a run
    assert fingerprint_of(copy, {**versions, "torch": "2.1"}) != before
    trainer = copy / "trainer.py"
    trainer.write_text(trainer.read_text() + "\n# a comment is a change too\n")
    assert fingerprint_of(copy, versions) != before
    import ratingctr

    shared = tmp_path / "root"
    shutil.copytree(Path(ratingctr.__file__).parent, shared, ignore=shutil.ignore_patterns("__pycache__"))
    with_root = fingerprint_of(copy, versions, shared)
    (shared / "bundle.py").write_text((shared / "bundle.py").read_text() + "\n# FieldSchema lives here\n")
    assert fingerprint_of(copy, versions, shared) != with_root
    assert code_fingerprint() == code_fingerprint()


def test_run_key_changes_with_the_code_fingerprint(tiny_atomic: Path) -> None:
    from ratingctr.training.experiments.provenance import code_fingerprint

    config = _tiny_config(tiny_atomic)
    assert run_key(config) == run_key(config, fingerprint=code_fingerprint())
    assert run_key(config, fingerprint="a" * 64) != run_key(config, fingerprint="b" * 64)
    assert Plan(Path("unused"), fingerprint="a" * 64).add(config, "x") == run_key(config, fingerprint="a" * 64)


def test_fingerprint_exclusions_are_never_imported_by_a_training_run() -> None:
    """The modules left out of the fingerprint must not execute in a run (train, trace, noise, EvalRM)."""
    import subprocess
    import sys

    from ratingctr.training.experiments.provenance import EXCLUDED

    modules = sorted("ratingctr.training." + p[:-3].replace("/", ".") for p in EXCLUDED)
    code = ("import sys; import ratingctr.training.run, ratingctr.training.evaluation, "
            "ratingctr.training.experiments.runner, ratingctr.training.data.encode; "
            f"print([m for m in {modules!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_every_root_module_a_training_run_imports_is_fingerprinted_or_cannot_change_a_number() -> None:
    """A root-package module (``ratingctr/X.py``) a run executes is in ``ROOT_SOURCES``, or is one
    of those that cannot change a number (errors, hashing): the list cannot silently go stale."""
    import subprocess
    import sys

    from ratingctr.training.experiments.provenance import ROOT_SOURCES

    code = ("import sys; import ratingctr.training.run, ratingctr.training.evaluation, "
            "ratingctr.training.experiments.runner, ratingctr.training.data.encode; "
            "print(' '.join(sorted(m for m in sys.modules if m.startswith('ratingctr.') and m.count('.') == 1)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    imported = {m.split(".")[1] + ".py" for m in out} - {"training.py"}
    assert "unique.py" in imported
    assert imported - set(ROOT_SOURCES) == {"errors.py", "hashing.py"}


def test_first_order_variant_reaches_only_the_rating_runs_it_changes() -> None:
    from ratingctr.cli import build_parser
    from ratingctr.training.experiments.commands import _config_factory

    args, extra = build_parser().parse_known_args(["experiment", "supervision", "--first-order", "broadcast",
                                                   "--out", "x"])
    make = _config_factory(args, extra)
    assert make("WideDeep", 1, head="rating").model.first_order == "broadcast"
    assert make("xDeepFM", 1, head="rating").model.first_order == "broadcast"
    # one logit, or no first-order term: the same model, so the run is shared with the default variant
    assert make("WideDeep", 1, head="binary") == make("WideDeep", 1, head="binary", first_order="wide")
    assert make("WideDeep", 1, head="binary").model.first_order == "wide"
    assert make("DCNV2", 1, head="rating").model.first_order == "wide"


def test_every_head_and_arm_gets_the_same_uncapped_budget() -> None:
    from ratingctr.cli import build_parser
    from ratingctr.training.experiments.commands import _config_factory

    for verb, changes in (("supervision", [{"head": "binary"}, {"head": "rating", "ratio": 0.3}]),
                          ("connectivity", [{"encoder": "table"}, {"encoder": "lightgcn", "gcn_layers": 2}])):
        args, extra = build_parser().parse_known_args(["experiment", verb, "--out", "x"])
        make = _config_factory(args, extra)
        budgets = {(make("AutoInt", 1, **c).train.epochs, make("AutoInt", 1, **c).train.patience) for c in changes}
        assert budgets == {(100, 5)}, verb
        # no experiment reads validation ranking metrics: every run scores uni100 on test alone
        assert not make("AutoInt", 1, **changes[0]).train.ranking_on_valid, verb


def test_broadcast_variant_shares_the_binary_runs_and_retrains_the_rating_runs(tmp_path: Path) -> None:
    from ratingctr.cli import build_parser
    from ratingctr.training.experiments.commands import _config_factory
    from ratingctr.training.experiments.supervision import SupervisionSpec, plan_supervision

    spec = SupervisionSpec(models=("WideDeep", "DCNV2"), seeds=(1, 2), trace_models=())
    index = {}
    for variant in ("wide", "broadcast"):
        args, extra = build_parser().parse_known_args(["experiment", "supervision", "--first-order", variant,
                                                       "--out", "x"])
        index[variant] = plan_supervision(spec, _config_factory(args, extra), Plan(tmp_path, fingerprint="f" * 64))
    wide, broadcast = index["wide"]["main"], index["broadcast"]["main"]
    for seed in (1, 2):
        assert wide[("WideDeep", "binary", seed)] == broadcast[("WideDeep", "binary", seed)]
        assert wide[("WideDeep", "rating", seed)] != broadcast[("WideDeep", "rating", seed)]
        assert wide[("DCNV2", "rating", seed)] == broadcast[("DCNV2", "rating", seed)]  # no first-order term


def test_first_order_both_gives_the_variant_its_own_rows(tmp_path: Path) -> None:
    from ratingctr.cli import build_parser
    from ratingctr.training.experiments.commands import _config_factory, _with_variants
    from ratingctr.training.experiments.supervision import SupervisionSpec, plan_supervision

    assert _with_variants(("WideDeep", "DCNV2", "xDeepFM"), "both") == (
        "WideDeep", "WideDeep@broadcast", "DCNV2", "xDeepFM", "xDeepFM@broadcast")
    args, extra = build_parser().parse_known_args(["experiment", "supervision", "--first-order", "both", "--out", "x"])
    make = _config_factory(args, extra)
    assert make("WideDeep", 1, head="rating").model.first_order == "wide"
    assert make("WideDeep@broadcast", 1, head="rating").model.first_order == "broadcast"
    spec = SupervisionSpec(models=("WideDeep", "WideDeep@broadcast"), seeds=(1,), trace_models=())
    main = plan_supervision(spec, make, Plan(tmp_path, fingerprint="f" * 64))["main"]
    assert main[("WideDeep", "binary", 1)] == main[("WideDeep@broadcast", "binary", 1)]  # one binary run
    assert main[("WideDeep", "rating", 1)] != main[("WideDeep@broadcast", "rating", 1)]


def test_sweep_seeds_run_the_grids_on_a_prefix_of_the_seeds_for_figure_4s_models(tmp_path: Path) -> None:
    from ratingctr.cli import build_parser
    from ratingctr.training.experiments.commands import _config_factory
    from ratingctr.training.experiments.supervision import SupervisionSpec, plan_supervision

    args, extra = build_parser().parse_known_args(["experiment", "supervision", "--out", "x"])
    spec = SupervisionSpec(models=("WideDeep", "DCNV2"), seeds=(1, 2, 3, 4), trace_models=(), select=True,
                           ratio_models=("DCNV2",), sweep_seeds=2)
    plan = Plan(tmp_path, fingerprint="f" * 64)
    index = plan_supervision(spec, _config_factory(args, extra), plan)
    assert spec.sweep == (1, 2) and spec.select_models == ("DCNV2",)
    assert len(index["main"]) == 2 * 4 * 2  # Table 1: every model, seed and head
    assert {(m, s) for m, _, s in index["ratio"]} == {("DCNV2", 1), ("DCNV2", 2)}
    assert {(m, s) for m, _, s in index["select_rating"]} == {("DCNV2", 1), ("DCNV2", 2)}
    assert {(m, s) for m, _, s in index["select_binary"]} == {("DCNV2", 1), ("DCNV2", 2)}
    # grid points that Table 1 already has are the same runs: λr 0.5 and lr factor 1 add nothing
    assert index["ratio"][("DCNV2", 0.5, 1)] == index["main"][("DCNV2", "rating", 1)]
    assert index["select_binary"][("DCNV2", 1.0, 2)] == index["main"][("DCNV2", "binary", 2)]
    assert len(plan.jobs) == 16 + 4 * 2 + 4 * 2  # main + the other λr + the other lr factors


def test_sweep_seeds_outside_the_seeds_are_refused(tiny_atomic: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    base = ["experiment", "supervision", "--dataset", "atomic", "--data-dir", str(tiny_atomic), "--seeds", "3",
            "--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "o")]
    assert main(base + ["--sweep-seeds", "4"]) == 2
    assert "--sweep-seeds must be between 2 and --seeds (3), got 4" in capsys.readouterr().err
    assert main(base + ["--sweep-seeds", "1"]) == 2
    assert not (tmp_path / "runs").exists()  # refused before anything ran
