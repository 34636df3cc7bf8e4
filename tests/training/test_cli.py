"""The ``ratingctr`` CLI as a user runs it: a real process, real files."""
import json
from pathlib import Path

import pytest
import torch
from helpers import run_cli


@pytest.fixture(scope="module")
def tiny_run(tiny_atomic: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run") / "dcnv2"
    proc = run_cli("train", "--model", "DCNV2", "--dataset", "atomic", "--data-dir", str(tiny_atomic),
                   "--k-core", "3", "--head", "rating", "--ratio", "0.5", "--epochs", "4", "--batch-size", "256",
                   "--no-progress", "--out", str(out), "--mlp_hidden_size=[32,32]", "--cross_layer_num=1")
    assert proc.returncode == 0, proc.stderr
    return out


def test_train_writes_metrics_and_weights_only_checkpoint(tiny_run: Path) -> None:
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    for part in ("test", "valid"):
        assert set(metrics[part]) >= {"auc", "logloss", "ndcg@10", "ndcg@20", "recall@10", "recall@20"}
        assert 0.0 <= metrics[part]["auc"] <= 1.0 and metrics[part]["logloss"] > 0
    assert 1 <= len(metrics["epoch_seconds"]) <= 4 and 0 <= metrics["best_epoch"] < 4
    assert set(metrics["groups"]) >= {"low", "mid", "high", "variance"}
    assert metrics["config"]["model"]["params"]["mlp_hidden_size"] == [32, 32]
    assert metrics["config"]["model"]["params"]["cross_layer_num"] == 1
    payload = torch.load(tiny_run / "model.pt", weights_only=True)
    assert payload["config"]["head"]["kind"] == "rating" and "state_dict" in payload
    assert payload["vocab"]["user_id"][0] == "[UNK]"


def test_evaluate_reproduces_and_noise_hurts(tiny_run: Path) -> None:
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    clean = run_cli("evaluate", "--checkpoint", str(tiny_run))
    assert clean.returncode == 0, clean.stderr
    result = json.loads(clean.stdout)
    assert result["test"]["auc"] == pytest.approx(metrics["test"]["auc"], abs=1e-6)
    assert result["test"]["ndcg@10"] == pytest.approx(metrics["test"]["ndcg@10"], abs=1e-6)
    noisy = json.loads(run_cli("evaluate", "--checkpoint", str(tiny_run), "--noise-std", "1.0", "--no-ranking").stdout)
    assert noisy["noise_std"] == 1.0 and noisy["test"]["auc"] < result["test"]["auc"]


@pytest.mark.parametrize("args, message", [
    (["train", "--model", "Nope", "--out", "x"], "unknown model 'Nope'"),
    (["train", "--dataset", "ml-20m", "--out", "x"], "unknown dataset 'ml-20m'"),
    (["train", "--dataset", "csv", "--data-dir", "/nonexistent.csv", "--out", "x"], "CSV ratings file not found"),
    (["train", "--model", "DCNV2", "--out", "x", "--not_a_param=3"], "unknown hyper-parameter 'not_a_param'"),
    (["train", "--out", "x", "stray"], "unrecognized argument 'stray'"),
    (["train", "--ratio", "2", "--out", "x"], "--ratio must be in [0, 1]"),
    (["evaluate", "--checkpoint", "/nonexistent"], "checkpoint not found"),
])
def test_bad_input_is_one_error_line_and_exit_2(args: list[str], message: str, tmp_path: Path) -> None:
    proc = run_cli(*[a if a != "x" else str(tmp_path / "out") for a in args])
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], proc.stderr


def test_threshold_and_ratings_errors(tmp_path: Path) -> None:
    csv = tmp_path / "r.csv"
    csv.write_text("user_id,item_id,rating\n1,1,5\n1,2,7\n")
    proc = run_cli("train", "--dataset", "csv", "--data-dir", str(csv), "--k-core", "1", "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and "outside the integer scale 1..5" in proc.stderr
    proc = run_cli("train", "--dataset", "csv", "--data-dir", str(csv), "--threshold", "9", "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and "threshold 9 is outside the rating scale" in proc.stderr


def test_truncated_checkpoint_is_a_clear_error(tmp_path: Path, tiny_run: Path) -> None:
    bad = tmp_path / "model.pt"
    bad.write_bytes((tiny_run / "model.pt").read_bytes()[:1000])
    proc = run_cli("evaluate", "--checkpoint", str(bad))
    assert proc.returncode == 2 and "not a readable ratingctr checkpoint" in proc.stderr


def test_train_retriever_compare_and_bench_propagate_verbs(tiny_atomic: Path, tiny_run: Path, tmp_path: Path) -> None:
    proc = run_cli("train-retriever", "--dataset", "atomic", "--data-dir", str(tiny_atomic), "--k-core", "3",
                   "--embedding-dim", "8", "--gcn-layers", "2", "--epochs", "3", "--no-progress",
                   "--out", str(tmp_path / "ret"))
    assert proc.returncode == 0, proc.stderr
    assert "test recall@20" in proc.stdout and "most-popular recall@20" in proc.stdout
    assert (tmp_path / "ret" / "item_vectors.npy").is_file()
    same = run_cli("compare", str(tiny_run), str(tiny_run))
    assert same.returncode == 0 and "overall" in same.stdout and "+0.0000" in same.stdout
    prop = run_cli("bench", "propagate", "--dataset", "atomic", "--data-dir", str(tiny_atomic), "--repeats", "5")
    assert prop.returncode == 0, prop.stderr
    assert "| csr | 16 |" in prop.stdout and "| coo | 64 |" in prop.stdout


def test_temporal_split_train_evaluate_and_retriever(tiny_atomic: Path, tmp_path: Path) -> None:
    run = tmp_path / "temporal"
    proc = run_cli("train", "--model", "DCNV2", "--dataset", "atomic", "--data-dir", str(tiny_atomic), "--k-core", "3",
                   "--split", "temporal", "--split-fractions", "0.7,0.15,0.15", "--epochs", "1", "--batch-size", "256",
                   "--no-progress", "--out", str(run), "--mlp_hidden_size=[32,32]", "--cross_layer_num=1")
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["config"]["data"]["split_mode"] == "temporal"
    assert metrics["config"]["data"]["split"] == [0.7, 0.15, 0.15]
    stats = metrics["dataset"]
    assert (stats["split_mode"], stats["train"], stats["valid"], stats["test"]) == ("temporal", 1260, 270, 270)
    assert stats["train_time"][1] <= stats["valid_time"][0] <= stats["valid_time"][1] <= stats["test_time"][0]
    assert metrics["test"]["rows"] == 270
    # evaluate re-reads the data with the run's recorded mode: the same 270 newest rows, the same AUC
    result = json.loads(run_cli("evaluate", "--checkpoint", str(run), "--no-ranking").stdout)
    assert result["test"]["rows"] == 270 and result["test"]["auc"] == pytest.approx(metrics["test"]["auc"], abs=1e-6)
    proc = run_cli("train-retriever", "--dataset", "atomic", "--data-dir", str(tiny_atomic), "--k-core", "3",
                   "--split", "temporal", "--embedding-dim", "8", "--epochs", "1", "--no-progress",
                   "--out", str(tmp_path / "ret"))
    assert proc.returncode == 0, proc.stderr
    retriever = json.loads((tmp_path / "ret" / "metrics.json").read_text())
    assert retriever["data"]["split_mode"] == "temporal" and retriever["dataset"]["test_time"][0] == 2620.0
    csv = tmp_path / "untimed.csv"
    csv.write_text("user_id,item_id,rating\n1,1,5\n1,2,4\n2,1,3\n")
    proc = run_cli("train", "--dataset", "csv", "--data-dir", str(csv), "--k-core", "1", "--split", "temporal",
                   "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and "error: --split temporal orders interactions by time, but untimed has no " \
        "timestamps" in proc.stderr, proc.stderr
    proc = run_cli("train", "--split-fractions", "0.9,0.1", "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and "split fractions must be three non-negative numbers" in proc.stderr, proc.stderr
