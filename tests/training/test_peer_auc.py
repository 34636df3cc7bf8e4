"""``bench auc``: RecBole trains on exactly our split; the table's statistics on known inputs.

The end-to-end test needs an environment with ``recbole==1.2.1`` (``$RATINGCTR_RECBOLE_PYTHON``
or ``/tmp/recbole-env/bin/python``, the README's recipe) and is skipped without one; the split
files and the statistics are checked everywhere.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import run_cli

from ratingctr.training.data.encode import TEST, TRAIN, VALID
from ratingctr.training.peer_auc import peer_rows, verdicts, write_benchmark_files


def _recbole_python() -> str | None:
    candidate = os.environ.get("RATINGCTR_RECBOLE_PYTHON", "/tmp/recbole-env/bin/python")
    if not Path(candidate).exists():
        return None
    ok = subprocess.run([candidate, "-c", "import recbole"], capture_output=True).returncode == 0
    return candidate if ok else None


def test_benchmark_files_hold_our_rows_and_features(tiny, tiny_atomic: Path, tmp_path: Path) -> None:
    counts = write_benchmark_files(tiny, tmp_path)
    folder = tmp_path / "peer"
    for part, label in ((TRAIN, "train"), (VALID, "valid"), (TEST, "test")):
        frame = pd.read_csv(folder / f"peer.{label}.inter", sep="\t", dtype=str)
        rows = tiny.rows(part)
        assert counts[label] == rows.size == len(frame)
        ours = sorted(zip(np.asarray(tiny.vocab["user_id"])[tiny.user[rows]],
                          np.asarray(tiny.vocab["item_id"])[tiny.item[rows]], tiny.rating[rows].astype(str)))
        assert sorted(zip(frame["user_id:token"], frame["item_id:token"], frame["rating:float"])) == ours
    users = pd.read_csv(folder / "peer.user", sep="\t", dtype=str)
    assert list(users.columns) == ["user_id:token", "age:token", "gender:token", "occupation:token"]
    assert len(users) == tiny.n_users and set(users["gender:token"]) <= {"M", "F"}
    items = pd.read_csv(folder / "peer.item", sep="\t", dtype=str).set_index("item_id:token")
    assert "genre:token_seq" in items.columns and len(items) == tiny.n_items
    # a multi-valued field keeps every token of the item, as the encoder pooled them
    source = pd.read_csv(tiny_atomic / "tiny.item", sep="\t", dtype=str).set_index("item_id:token")
    for item in items.index[:20]:
        assert set(items.loc[item, "genre:token_seq"].split()) == set(source.loc[item, "genre:token_seq"].split())


def test_peer_rows_pair_by_seed_and_adjust_over_models() -> None:
    seeds = (1, 2, 3)
    ours = {("A", s): {"test": {"auc": a, "logloss": 0.5}, "history": [0] * 7} for s, a in zip(seeds, (0.80, 0.81, 0.82))}
    ours |= {("B", s): {"test": {"auc": a, "logloss": 0.5}, "history": [0] * 9} for s, a in zip(seeds, (0.70, 0.70, 0.71))}
    theirs = {("A", s): {"test": {"auc": a, "logloss": 0.6}, "epochs_trained": 10}
              for s, a in zip(seeds, (0.79, 0.80, 0.80))}
    theirs |= {("B", s): {"test": {"auc": a, "logloss": 0.4}, "epochs_trained": 12}
               for s, a in zip(seeds, (0.72, 0.73, 0.73))}
    rows = peer_rows(("A", "B"), seeds, ours, theirs)
    a, b = rows[0]["auc"]["diff"], rows[1]["auc"]["diff"]
    assert a["mean"] == pytest.approx((0.01 + 0.01 + 0.02) / 3) and a["pairs"] == 3
    assert b["mean"] == pytest.approx((-0.02 - 0.03 - 0.02) / 3)
    # the paired t interval: mean ± t(0.975, 2) · s / √3
    diffs = np.array([0.01, 0.01, 0.02])
    half = 4.302652729911275 * diffs.std(ddof=1) / np.sqrt(3)
    assert a["ci_low"] == pytest.approx(diffs.mean() - half) and a["ci_high"] == pytest.approx(diffs.mean() + half)
    # Holm over the two architectures: the smaller p doubled, the larger kept (running max)
    ps = sorted([a["p_value"], b["p_value"]])
    assert min(a["holm_p"], b["holm_p"]) == pytest.approx(min(1.0, 2 * ps[0]))
    assert max(a["holm_p"], b["holm_p"]) == pytest.approx(max(min(1.0, 2 * ps[0]), ps[1]))
    assert rows[0]["epochs"] == {"ours": [7, 7, 7], "recbole": [10, 10, 10]}
    said = verdicts(rows)
    assert said[1].startswith("B: our AUC is lower than RecBole's by 0.0233") and "target missed" in said[1]
    assert said[0].startswith("A:")


def test_bench_auc_refuses_what_it_cannot_compare(tiny_atomic: Path, tmp_path: Path) -> None:
    base = ["bench", "auc", "--dataset", "atomic", "--data-dir", str(tiny_atomic), "--k-core", "3",
            "--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "out")]
    no_recbole = run_cli(*base, "--recbole-python", sys.executable)
    assert no_recbole.returncode == 2 and "cannot import recbole" in no_recbole.stderr
    assert not (tmp_path / "runs").exists()
    other = run_cli(*base, "--recbole-python", sys.executable, "--models", "FinalMLP")
    assert other.returncode == 2 and "RecBole 1.2.1 has no FinalMLP" in other.stderr
    one_seed = run_cli(*base, "--recbole-python", sys.executable, "--seeds", "1")
    assert one_seed.returncode == 2 and "--seeds must be at least 2" in one_seed.stderr
    assert not (tmp_path / "runs").exists() and not (tmp_path / "out").exists()


@pytest.mark.skipif(_recbole_python() is None, reason="no recbole==1.2.1 environment (README: bench train)")
def test_recbole_trains_on_our_split_and_the_table_compares_paired_seeds(tiny_atomic: Path, tmp_path: Path) -> None:
    args = ["bench", "auc", "--recbole-python", _recbole_python(), "--dataset", "atomic", "--data-dir",
            str(tiny_atomic), "--k-core", "3", "--models", "WideDeep,DCNV2", "--seeds", "2", "--epochs", "3",
            "--patience", "2", "--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "out")]
    first = run_cli(*args, timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [r["model"] for r in results["rows"]] == ["WideDeep", "DCNV2"]
    cached = sorted((tmp_path / "runs" / "peers").glob("recbole-*.json"))
    assert len(cached) == 4
    ours = {json.loads(m.read_text())["split_hash"]: json.loads(m.read_text())["dataset"]
            for m in (tmp_path / "runs").glob("WideDeep-binary-fp32-s*/metrics.json")}
    assert len(ours) == 2  # two seeds, two splits
    for path in cached:
        run = json.loads(path.read_text())
        # RecBole trained on our rows (the bench refuses otherwise) within our budget and validated every epoch
        assert any(run["rows"] == {k: d[k] for k in ("train", "valid", "test")} for d in ours.values())
        assert len(run["valid_auc"]) == run["epochs_trained"] <= 3 and 0 <= run["best_epoch"] < 3
        assert 0.0 < run["test"]["auc"] < 1.0 and run["test"]["logloss"] > 0
    for row in results["rows"]:
        assert row["auc"]["diff"]["pairs"] == 2 and row["auc"]["diff"]["holm_p"] is not None
    report = (tmp_path / "out" / "report.md").read_text()
    assert "| WideDeep |" in report and "same rows" in report
    stamps = {p: p.stat().st_mtime_ns for p in cached}
    again = run_cli(*args, timeout=300)  # every run cached on both sides: nothing trains again
    assert again.returncode == 0, again.stderr[-2000:]
    assert {p: p.stat().st_mtime_ns for p in cached} == stamps
