"""``train-retriever --distributed`` with real gloo ranks under torchrun: two ranks train what one
process trains, a rank killed mid-run is restarted and resumes to the uninterrupted run, and the
numpy stream the epochs draw from survives the resume point."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import torchrun_env, torchrun_killing_rank_1, torchrun_to_the_end

from ratingctr.training.retriever_parallel import numpy_stream_tensor, restore_numpy_stream

EPOCHS = 30


def test_the_numpy_stream_resumes_where_it_was_saved() -> None:
    rng = np.random.default_rng(2020)
    rng.permutation(1000)
    rng.random(3)  # leaves no buffered 32-bit half; a uint32 draw below does
    rng.integers(0, 2**32, dtype=np.uint32)
    saved = numpy_stream_tensor(rng)
    expected = (rng.permutation(500), rng.integers(0, 10**9, 7), rng.integers(0, 2**32, 3, dtype=np.uint32))
    other = np.random.default_rng(1)
    restore_numpy_stream(other, saved)
    got = (other.permutation(500), other.integers(0, 10**9, 7), other.integers(0, 2**32, 3, dtype=np.uint32))
    for a, b in zip(expected, got):
        np.testing.assert_array_equal(a, b)


def test_the_retriever_refuses_distributed_without_torchrun_and_torchrun_without_the_flag(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from ratingctr.cli import main

    torchrun = {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}
    for name in torchrun:
        monkeypatch.delenv(name, raising=False)
    assert main(["train-retriever", "--distributed", "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --distributed runs under torchrun") and len(err.splitlines()) == 1
    assert not (tmp_path / "a").exists()
    for name, value in torchrun.items():
        monkeypatch.setenv(name, value)
    assert main(["train-retriever", "--out", str(tmp_path / "b")]) == 2  # N ranks would each train it all
    assert "without --distributed" in capsys.readouterr().err and not (tmp_path / "b").exists()


def _args(tiny_atomic: Path, out: Path) -> list[str]:
    return ["train-retriever", "--dataset", "atomic", "--data-dir", str(tiny_atomic), "--embedding-dim", "16",
            "--gcn-layers", "2", "--batch-size", "64", "--epochs", str(EPOCHS), "--min-epochs", str(EPOCHS),
            "--min-steps", "0", "--patience", str(EPOCHS), "--eval-users", "0", "--seed", "7", "--device", "cpu",
            "--no-progress", "--out", str(out)]


@pytest.fixture(scope="module")
def two_rank_retriever(tiny_atomic: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ddp-retriever") / "run"
    torchrun_to_the_end(_args(tiny_atomic, out))
    return out


@pytest.mark.integration
def test_two_ranks_train_the_retriever_one_process_trains(two_rank_retriever: Path, tiny_atomic: Path,
                                                          tmp_path: Path) -> None:
    from helpers import run_cli

    single = tmp_path / "single"
    proc = run_cli(*_args(tiny_atomic, single), env=torchrun_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in two_rank_retriever.iterdir()) == [
        "item_vectors.npy", "metrics.json", "model.pt", "user_vectors.npy"]  # rank 0 alone wrote, no state left
    one, two = (json.loads((d / "metrics.json").read_text()) for d in (single, two_rank_retriever))
    assert two["distributed"] == {"world_size": 2, "backend": "gloo", "resumed_from_epoch": None}
    assert len(one["history"]) == len(two["history"]) == EPOCHS
    for a, b in zip(one["history"], two["history"]):
        # the all-reduce sums the two shards' gradients in another order than one process:
        # fp32 rounding, which 30 epochs of Adam amplify a little
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)
        assert b["recall@20"] == pytest.approx(a["recall@20"], abs=0.02)
    assert two["best_epoch"] == one["best_epoch"]
    assert one["test"]["recall@20"] > one["popular"]["recall@20"] * 0.5  # it trained on something
    for name in ("user_vectors.npy", "item_vectors.npy"):
        np.testing.assert_allclose(np.load(two_rank_retriever / name), np.load(single / name), rtol=1e-3, atol=1e-4)


@pytest.mark.integration
def test_a_rank_killed_mid_run_is_restarted_and_resumes_the_retriever(two_rank_retriever: Path, tiny_atomic: Path,
                                                                      tmp_path: Path) -> None:
    out = tmp_path / "run"
    torchrun_killing_rank_1(_args(tiny_atomic, out), out)
    resumed = json.loads((out / "metrics.json").read_text())
    reference = json.loads((two_rank_retriever / "metrics.json").read_text())
    assert resumed["distributed"]["resumed_from_epoch"] in range(EPOCHS - 1)
    assert not (out / "train_state.pt").exists()
    assert [r["epoch"] for r in resumed["history"]] == list(range(EPOCHS))
    # same batches, negatives and weights as the uninterrupted run: the numpy stream was restored
    assert [r["loss"] for r in resumed["history"]] == pytest.approx([r["loss"] for r in reference["history"]],
                                                                    rel=1e-6)
    assert resumed["best_epoch"] == reference["best_epoch"]
    for name in ("user_vectors.npy", "item_vectors.npy"):
        np.testing.assert_allclose(np.load(out / name), np.load(two_rank_retriever / name), rtol=1e-5, atol=1e-6)
