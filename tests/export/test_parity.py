"""ONNX export parity for every architecture × head, and a LightGCN-encoded model."""
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from ratingctr.export.build import PARITY_BOUND
from ratingctr.export.onnx_export import export_onnx, parity, prepare_for_export
from ratingctr.training.config import (
    DataConfig,
    EncoderConfig,
    HeadConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
    first_order_applies,
)
from ratingctr.training.models.build import build_model
from ratingctr.training.models.registry import ARCHITECTURES
from ratingctr.training.run import make_model

SMALL = {"WideDeep": {"mlp_hidden_size": [16]}, "NFM": {"mlp_hidden_size": [16]},
         "xDeepFM": {"mlp_hidden_size": [16], "cin_layer_size": [8, 8]},
         "AutoInt": {"mlp_hidden_size": [16], "n_layers": 2}, "FiGNN": {}, "DCNV2": {"mlp_hidden_size": [16]},
         "EulerNet": {}, "FinalMLP": {"mlp1_hidden_size": [16], "mlp2_hidden_size": [16], "fs_hidden_size": [16]},
         "AFN": {"logarithmic_neurons": 16, "afn_hidden_size": [16]}, "GDCN": {"mlp_hidden_size": [16]}}


def _rows(data, n: int = 512) -> np.ndarray:
    rng = np.random.default_rng(1)
    rows = rng.choice(data.user.size, n, replace=False)
    x = data.features(data.user[rows], data.item[rows])
    x[:8, 0] = 0  # unknown users and items must score too
    x[8:16, data.schema.columns("item_id")] = 0
    return x


# every architecture × head, plus the authors' broadcast first-order variant where it applies
CASES = [(name, head, "wide") for name in ARCHITECTURES for head in ("binary", "rating")] + \
    [(name, "rating", "broadcast") for name in ARCHITECTURES if first_order_applies(name)]


@pytest.mark.parametrize(("name", "head", "first_order"), CASES)
def test_every_architecture_exports_within_the_parity_bound(tiny, name: str, head: str, first_order: str,
                                                            tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model(tiny.schema, RunConfig(model=ModelConfig(name, 8, SMALL[name], first_order=first_order),
                                               head=HeadConfig(head)))
    if model.linear is not None:  # first-order rows start at zero: give them a value parity can see
        with torch.no_grad():
            model.linear.table.weight.normal_(0.0, 0.1)
    model = prepare_for_export(model)
    x = _rows(tiny)
    names = export_onnx(model, x[:4], tmp_path / "m.onnx")
    onnx.checker.check_model(str(tmp_path / "m.onnx"))
    assert names == (["p_click", "rating_probs", "expected_rating"] if head == "rating" else ["p_click"])
    report = parity(model, tmp_path / "m.onnx", x)
    assert report["max_abs_diff_p_click"] <= PARITY_BOUND, report
    if head == "rating":
        assert report["max_abs_diff_rating_probs"] <= PARITY_BOUND
        assert report["max_abs_diff_expected_rating"] <= 1e-4


def test_lightgcn_model_is_materialised_and_matches(tiny, tiny_atomic: Path, tmp_path: Path) -> None:
    config = RunConfig(data=DataConfig(dataset="atomic", data_dir=str(tiny_atomic), k_core=3),
                       model=ModelConfig("DCNV2", 8, SMALL["DCNV2"]), head=HeadConfig("rating"),
                       train=TrainConfig(), encoder=EncoderConfig("lightgcn", 2))
    torch.manual_seed(0)
    model = make_model(config, tiny).eval()
    x = _rows(tiny)
    with torch.no_grad():
        graph_p = model.predict(torch.from_numpy(x)).p_click.numpy()
    exported = prepare_for_export(model)
    export_onnx(exported, x[:4], tmp_path / "g.onnx")
    graph_ops = {n.op_type for n in onnx.load(str(tmp_path / "g.onnx")).graph.node}
    assert not any("Sparse" in op for op in graph_ops)  # a plain lookup, no propagation at serving time
    report = parity(exported, tmp_path / "g.onnx", x)
    assert report["max_abs_diff_p_click"] <= PARITY_BOUND
    import onnxruntime as ort
    onnx_p = ort.InferenceSession(str(tmp_path / "g.onnx")).run(["p_click"], {"fields": x})[0]
    assert np.max(np.abs(onnx_p - graph_p)) <= PARITY_BOUND  # same as the graph encoder itself


def test_batch_norm_is_folded_and_the_rating_head_adds_no_matmul(tiny, tmp_path: Path) -> None:
    ops = {}
    for head in ("binary", "rating"):
        torch.manual_seed(0)
        config = RunConfig(model=ModelConfig("DCNV2", 8, {"mlp_hidden_size": [16, 16]}), head=HeadConfig(head))
        model = prepare_for_export(build_model(tiny.schema, config))
        norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d)]
        assert len(norms) == 2
        with torch.no_grad():  # running statistics and affine terms far from the identity
            for bn in norms:
                bn.running_mean.uniform_(-2.0, 2.0)
                bn.running_var.uniform_(0.2, 5.0)
                bn.weight.uniform_(0.5, 2.0)
                bn.bias.uniform_(-1.0, 1.0)
        x = _rows(tiny)
        path = tmp_path / f"{head}.onnx"
        export_onnx(model, x[:4], path)
        ops[head] = [n.op_type for n in onnx.load(str(path)).graph.node]
        assert "BatchNormalization" not in ops[head]
        assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in model.modules()) == 2  # caller's model untouched
        report = parity(model, path, x)  # against the unfolded model
        assert report["max_abs_diff_p_click"] <= PARITY_BOUND, report
    # the rating head's extra work is element-wise (softmax, sums), no extra MatMul/Gemm kernels
    for op in ("MatMul", "Gemm"):
        assert ops["rating"].count(op) == ops["binary"].count(op), op
