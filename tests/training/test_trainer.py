"""The training loop on real data: early stopping, best-epoch restore, devices, precision."""
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from ratingctr.training.config import HeadConfig, ModelConfig, RunConfig, TrainConfig, build_run_config
from ratingctr.training.data.encode import VALID
from ratingctr.training.evaluation import pointwise_eval
from ratingctr.training.models.build import build_model
from ratingctr.training.trainer import autocast_dtype, fit, select_device

CONFIG = TrainConfig(epochs=12, batch_size=256, patience=2, progress=False, precision="fp32")


def _model(data, name: str = "WideDeep"):
    torch.manual_seed(0)
    return build_model(data.schema, RunConfig(model=ModelConfig(name, 8, {"mlp_hidden_size": [16]}),
                                              head=HeadConfig("rating", 0.5)))


def test_early_stopping_when_validation_never_improves(tiny) -> None:
    result = fit(_model(tiny), tiny, replace(CONFIG, lr=0.0), torch.device("cpu"))
    assert result.best_epoch == 0 and len(result.epoch_seconds) == 3  # epoch 0 + patience 2
    assert all(s > 0 for s in result.epoch_seconds)


def test_best_epoch_weights_are_restored(tiny) -> None:
    model = _model(tiny)
    result = fit(model, tiny, replace(CONFIG, lr=5e-3), torch.device("cpu"))
    valid, _ = pointwise_eval(model, tiny, tiny.rows(VALID), 4096, torch.device("cpu"))
    assert valid["auc"] == pytest.approx(result.best_valid_auc, abs=1e-9)
    assert result.best_valid_auc == max(h["valid_auc"] for h in result.history)
    assert result.history[0]["train_loss"] > result.history[result.best_epoch]["train_loss"]


def test_device_and_precision_selection() -> None:
    assert select_device("cpu").type == "cpu"
    assert select_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            select_device("cuda")
    assert autocast_dtype("fp32", torch.device("cpu")) is None
    assert autocast_dtype("bf16", torch.device("cpu")) is torch.bfloat16
    with pytest.raises(ValueError):
        autocast_dtype("fp8", torch.device("cpu"))


def test_bf16_autocast_trains_to_the_same_quality(tiny) -> None:
    fp32 = fit(_model(tiny), tiny, replace(CONFIG, lr=5e-3), torch.device("cpu"))
    bf16 = fit(_model(tiny), tiny, replace(CONFIG, lr=5e-3, precision="bf16"), torch.device("cpu"))
    assert bf16.precision == "bfloat16" and fp32.precision == "float32"
    assert abs(bf16.best_valid_auc - fp32.best_valid_auc) < 0.03


def test_real_ml100k_run_learns(ml100k_root: Path, tmp_path: Path) -> None:
    """Three epochs of WideDeep with the rating head on MovieLens-100k clear 0.75 test AUC."""
    from ratingctr.training.run import train_run

    config = build_run_config({"model": "WideDeep", "head": "rating", "data_dir": str(ml100k_root), "epochs": 3,
                               "progress": False})
    metrics = train_run(config, tmp_path / "run")
    assert metrics["test"]["auc"] > 0.75, metrics["test"]
    assert metrics["test"]["rows"] == 9796 and metrics["dataset"]["users"] == 943
    assert 0.0 < metrics["test"]["ndcg@10"] <= 1.0 and metrics["test"]["recall@20"] >= metrics["test"]["recall@10"]
    assert metrics["groups"]["low"]["users"] + metrics["groups"]["mid"]["users"] + metrics["groups"]["high"]["users"] <= 943
