"""TS and FT runs of the graph encoder through the real training path, and the retriever."""
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from ratingctr.errors import UserError
from ratingctr.training.config import DataConfig, EncoderConfig, HeadConfig, ModelConfig, RunConfig, TrainConfig
from ratingctr.training.data.encode import load_dataset
from ratingctr.training.models.encoders import LightGCNEncoder
from ratingctr.training.retriever import RetrieverConfig, train_retriever
from ratingctr.training.run import load_checkpoint, make_model, restore_model, train_run

SMALL = {"DCNV2": {"mlp_hidden_size": [32, 32], "cross_layer_num": 1},
         "AutoInt": {"mlp_hidden_size": [32], "n_layers": 1},
         "FinalMLP": {"mlp1_hidden_size": [32, 32], "mlp2_hidden_size": [32], "fs_hidden_size": [16]}}


def _config(tiny_atomic: Path, model: str, head: str, encoder: EncoderConfig) -> RunConfig:
    return RunConfig(data=DataConfig(dataset="atomic", data_dir=str(tiny_atomic), k_core=3),
                     model=ModelConfig(model, 8, SMALL[model]), head=HeadConfig(head, 0.5),
                     train=TrainConfig(epochs=3, batch_size=256, lr=3e-3, progress=False, precision="fp32"),
                     encoder=encoder)


@pytest.mark.parametrize("head", ["binary", "rating"])
@pytest.mark.parametrize("model", ["DCNV2", "AutoInt", "FinalMLP"])
def test_ts_and_ft_runs(tiny_atomic: Path, tmp_path: Path, model: str, head: str) -> None:
    data = load_dataset(DataConfig(dataset="atomic", data_dir=str(tiny_atomic), k_core=3))
    base = train_run(_config(tiny_atomic, model, head, EncoderConfig()), tmp_path / "base", data)
    ts = train_run(_config(tiny_atomic, model, head, EncoderConfig("lightgcn", 2)), tmp_path / "ts", data)
    ft_config = _config(tiny_atomic, model, head, EncoderConfig("lightgcn", 2, init_from=str(tmp_path / "base")))
    ft_model = make_model(ft_config, data)
    base_payload, _ = load_checkpoint(tmp_path / "base")
    assert isinstance(ft_model.encoder, LightGCNEncoder)
    for key, value in base_payload["state_dict"].items():  # FT starts from every base weight
        assert torch.equal(ft_model.state_dict()[key], value), key
    ft = train_run(ft_config, tmp_path / "ft", data)
    assert (base["mode"], ts["mode"], ft["mode"]) == ("base", "TS", "FT")
    for metrics in (base, ts, ft):
        assert 0.0 < metrics["test"]["auc"] < 1.0 and np.isfinite(metrics["test"]["logloss"])
    # a saved LightGCN run re-scores to the same AUC (the graph is rebuilt from the split)
    payload, config = load_checkpoint(tmp_path / "ft")
    restored = restore_model(payload, config, data)
    from ratingctr.training.evaluation import full_eval
    again = full_eval(restored, data, ranking=False, seed=config.data.seed)
    assert again["test"]["auc"] == pytest.approx(ft["test"]["auc"], abs=1e-6)


def test_materialized_table_equals_graph_encoder(tiny_atomic: Path) -> None:
    data = load_dataset(DataConfig(dataset="atomic", data_dir=str(tiny_atomic), k_core=3))
    model = make_model(_config(tiny_atomic, "DCNV2", "rating", EncoderConfig("lightgcn", 3)), data)
    model.eval()
    x = torch.from_numpy(data.features(data.user[:64], data.item[:64]))
    graph_out = model.predict(x).p_click
    model.encoder = model.encoder.materialize()
    assert torch.allclose(model.predict(x).p_click, graph_out, atol=1e-6)


def test_fine_tune_base_mismatch_is_explained(tiny_atomic: Path, tmp_path: Path) -> None:
    data = load_dataset(DataConfig(dataset="atomic", data_dir=str(tiny_atomic), k_core=3))
    train_run(_config(tiny_atomic, "DCNV2", "binary", EncoderConfig()), tmp_path / "base", data)
    wrong = _config(tiny_atomic, "DCNV2", "rating", EncoderConfig("lightgcn", 2, init_from=str(tmp_path / "base")))
    with pytest.raises(UserError, match="its head is binary, not rating"):
        make_model(wrong, data)
    with pytest.raises(UserError, match="its head is binary, not rating"):  # Base+ is checked the same way
        make_model(replace(wrong, encoder=EncoderConfig(init_from=str(tmp_path / "base"))), data)
    base_plus = make_model(_config(tiny_atomic, "DCNV2", "binary", EncoderConfig(init_from=str(tmp_path / "base"))),
                           data)  # Base+: the table encoder continues from the Base checkpoint's exact weights
    saved = torch.load(tmp_path / "base" / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(v, saved[k]) for k, v in base_plus.state_dict().items())


def test_retriever_trains_and_beats_nothing_less_than_random(tiny_atomic: Path, tmp_path: Path) -> None:
    data_config = DataConfig(dataset="atomic", data_dir=str(tiny_atomic), k_core=3)
    metrics = train_retriever(data_config, RetrieverConfig(embedding_dim=16, layers=2, epochs=15, patience=5,
                                                           lr=5e-3, progress=False), tmp_path / "ret")
    users = np.load(tmp_path / "ret" / "user_vectors.npy")
    items = np.load(tmp_path / "ret" / "item_vectors.npy")
    data = load_dataset(data_config)
    assert users.shape == (data.n_users + 1, 16) and items.shape == (data.n_items + 1, 16)
    saved = json.loads((tmp_path / "ret" / "metrics.json").read_text())
    assert set(saved["test"]) >= {"recall@20", "ndcg@20"} and set(saved["popular"]) >= {"recall@20", "ndcg@20"}
    # 20 of ~80 items: random recall@20 is about 0.25 on this data; a trained retriever does better
    assert saved["test"]["recall@20"] > 0.3
    # the shared early-stopping loop: the saved vectors are the best validation epoch's
    best = metrics["best_epoch"]
    assert metrics["valid"]["recall@20"] == pytest.approx(metrics["history"][best]["recall@20"], abs=1e-12)
    assert metrics["history"][best]["recall@20"] == max(h["recall@20"] for h in metrics["history"])
    assert len(metrics["history"]) == 15 or len(metrics["history"]) == best + 1 + 5
    payload = torch.load(tmp_path / "ret" / "model.pt", weights_only=True)
    assert payload["vocab"]["item_id"] == data.vocab["item_id"]
