"""Every architecture body on its own: shapes, gradients, eval behaviour, L2 terms, golden layer
maths, the registry's errors, the YAML defaults and ONNX export parity."""
from __future__ import annotations

import inspect
import math
from importlib import resources

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from ratingctr.training.models.base import Body
from ratingctr.training.models.fignn import _GRUCell
from ratingctr.training.models.layers import (
    CIN,
    MLP,
    BiInteraction,
    CrossNetV2,
    Dropout,
    FirstOrderLinear,
    GatedCrossNet,
    MultiHeadSelfAttention,
)
from ratingctr.training.models.registry import ARCHITECTURES, build_body, hyper_parameters

F, D, B = 7, 16, 32
NAMES = list(ARCHITECTURES)
REGULARIZED = {"DCNV2", "EulerNet", "xDeepFM"}
FIRST_ORDER = {"WideDeep", "NFM", "xDeepFM", "AutoInt"}

# ARCHITECTURE.md "Models": the authors' reference settings (paper 1).
REFERENCE = {
    "DCNV2": ({"cross_layer_num": 2, "mlp_hidden_size": [256, 256, 256], "dropout_prob": 0.2,
               "structure": "parallel", "reg_weight": 2.0}, 1e-3),
    "AutoInt": ({"n_layers": 3, "attention_size": 8, "num_heads": 2, "dropout_prob": 0.2,
                 "mlp_hidden_size": [256, 256, 256]}, 1e-3),
    "EulerNet": ({"order_list": [8], "drop_ex": 0.3, "drop_im": 0.5, "apply_norm": False, "reg_weight": 5e-4}, 1e-3),
    "WideDeep": ({"mlp_hidden_size": [128, 128, 128], "dropout_prob": 0.2}, 5e-3),
    "FiGNN": ({"n_layers": 2, "num_heads": 2, "attention_size": 8, "attn_dropout_prob": 0.2,
               "hidden_dropout_prob": 0.3}, 5e-3),
    "NFM": ({"mlp_hidden_size": [512, 512, 512], "dropout_prob": 0.5}, 5e-3),
    "xDeepFM": ({"mlp_hidden_size": [512, 512, 512], "cin_layer_size": [200, 200, 200], "dropout_prob": 0.1}, 5e-4),
}


def _yaml(name: str) -> dict:
    return yaml.safe_load(resources.files("ratingctr.training.configs").joinpath("models", f"{name}.yaml").read_text())


def _body(name: str, out_dim: int, seed: int = 0) -> Body:
    torch.manual_seed(seed)
    return build_body(name, F, D, out_dim, _yaml(name)["params"])


def _emb(batch: int = B, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, F, D, generator=torch.Generator().manual_seed(seed)) * 0.3


def _plain(value: object) -> object:
    return list(value) if isinstance(value, tuple) else value


# ---------------------------------------------------------------- every body

@pytest.mark.parametrize("out_dim", [1, 5])
@pytest.mark.parametrize("name", NAMES)
def test_shape_gradients_eval_and_batch_of_one(name: str, out_dim: int) -> None:
    body = _body(name, out_dim)
    emb = _emb().requires_grad_(True)
    body.train()
    out = body(emb)
    assert out.shape == (B, out_dim) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    (out.square().mean() + body.regularization()).backward()
    assert emb.grad is not None and torch.isfinite(emb.grad).all() and emb.grad.abs().sum() > 0
    for pname, param in body.named_parameters():
        assert param.grad is not None, f"{name}.{pname} gets no gradient"
        assert torch.isfinite(param.grad).all(), f"{name}.{pname} has a non-finite gradient"

    body.eval()
    x = _emb(seed=2)
    with torch.no_grad():
        first, second = body(x), body(x)
        single = body(x[:1])
    assert torch.equal(first, second), "eval mode must be deterministic"
    assert single.shape == (1, out_dim)
    torch.testing.assert_close(single, first[:1], atol=1e-5, rtol=1e-4)  # rows are independent in eval


@pytest.mark.parametrize("name", NAMES)
def test_regularization(name: str) -> None:
    body = _body(name, 5)
    reg = body.regularization()
    assert reg.ndim == 0 and torch.isfinite(reg)
    params = body.regularized_parameters()
    if name in REGULARIZED:
        assert body.reg_weight > 0 and reg.item() > 0
        expected = body.reg_weight * sum(p.detach().norm(2) for p in params)
        assert math.isclose(reg.item(), float(expected), rel_tol=1e-5)
        owned = {id(p) for p in body.parameters()}
        assert all(id(p) in owned for p in params)
    else:
        assert params == [] and reg.item() == 0.0


def test_regularized_parameters_are_the_reference_ones() -> None:
    dcn = _body("DCNV2", 5)
    assert [id(p) for p in dcn.regularized_parameters()] == [id(layer.weight) for layer in dcn.cross.layers]
    euler = _body("EulerNet", 5)
    reg = {id(p) for p in euler.regularized_parameters()}
    assert {id(p) for p in euler.layers.parameters()} <= reg and id(euler.mu) in reg
    assert {id(euler.predict.weight), id(euler.predict.bias)} <= reg
    xdfm = _body("xDeepFM", 5)
    reg = {id(p) for p in xdfm.regularized_parameters()}
    assert id(xdfm.cin.fc.weight) not in reg  # RecBole leaves cin_linear out
    assert all(id(conv.weight) in reg for conv in xdfm.cin.convs)
    assert len(reg) == len(xdfm.cin.convs) + 4  # 3 hidden + output Linear of the DNN


@pytest.mark.parametrize("name", NAMES)
def test_wide_branch_flag(name: str) -> None:
    assert ARCHITECTURES[name].wants_first_order is (name in FIRST_ORDER)


@pytest.mark.parametrize("name", NAMES)
def test_bf16_autocast_forward_backward(name: str) -> None:
    """The trainer autocasts to bf16 on hardware with native bf16; bodies must stay finite."""
    body = _body(name, 5).train()
    emb = _emb().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = body(emb)
    out.float().square().mean().backward()
    assert torch.isfinite(out.float()).all() and torch.isfinite(emb.grad).all()


# ---------------------------------------------------------------- golden layer maths

def test_bi_interaction_is_the_sum_of_pairwise_products() -> None:
    emb = _emb(4)
    explicit = sum(emb[:, i] * emb[:, j] for i in range(F) for j in range(i + 1, F))
    torch.testing.assert_close(BiInteraction()(emb), explicit, atol=1e-5, rtol=1e-5)


def test_cross_net_v2_one_layer_matches_formula() -> None:
    torch.manual_seed(0)
    net = CrossNetV2(12, 1)
    x0 = torch.randn(5, 12)
    w, b = net.layers[0].weight, net.layers[0].bias
    torch.testing.assert_close(net(x0), x0 * (x0 @ w.T + b) + x0)
    assert net.weights() == [w]


def test_gated_cross_net_one_layer_matches_formula() -> None:
    torch.manual_seed(0)
    net = GatedCrossNet(12, 1)
    x0 = torch.randn(5, 12)
    w, wg, b = net.cross[0].weight, net.gates[0].weight, net.biases[0]
    torch.testing.assert_close(net(x0), x0 * (x0 @ w.T + b) * torch.sigmoid(x0 @ wg.T) + x0)


def test_first_order_linear_matches_manual_sum() -> None:
    layer = FirstOrderLinear(10, 3)
    with torch.no_grad():
        layer.table.weight.copy_(torch.arange(30, dtype=torch.float32).view(10, 3))
        layer.bias.copy_(torch.tensor([0.5, -1.0, 2.0]))
    ids = torch.tensor([[1, 4, 7], [0, 2, 9]])
    weights = torch.tensor([[1.0, 0.5, 0.5], [1.0, 0.0, 1.0]])
    table, bias = layer.table.weight.detach(), layer.bias.detach()
    expected = torch.stack([sum(weights[r, c] * table[ids[r, c]] for c in range(3)) for r in range(2)]) + bias
    torch.testing.assert_close(layer(ids, weights), expected)
    torch.testing.assert_close(layer(ids), table[ids].sum(1) + bias)


def test_self_attention_matches_torch_multihead_attention() -> None:
    """Our written-out attention is nn.MultiheadAttention (RecBole's building block) exactly, in
    values and in every gradient (the reference path: eval mode; kernels/ tests the training kernel)."""
    torch.manual_seed(0)
    block = MultiHeadSelfAttention(D, 4, 2, num_layers=1, residual=True).double().eval()
    ref = nn.MultiheadAttention(8, 2, batch_first=True).double().eval()
    layer = block.layers[0]
    with torch.no_grad():
        ref.in_proj_weight.copy_(layer.in_proj_weight)
        ref.in_proj_bias.copy_(layer.in_proj_bias)
        ref.out_proj.load_state_dict(layer.out_proj.state_dict())
    emb = _emb(4).double()
    h = block.project(emb)
    expected = torch.relu(ref(h, h, h, need_weights=False)[0] + block.residual(emb))
    ours = block(emb)
    torch.testing.assert_close(ours, expected)
    g = torch.randn_like(ours)
    mine = torch.autograd.grad(ours, [layer.in_proj_weight, layer.in_proj_bias, layer.out_proj.weight,
                                      layer.out_proj.bias, block.project.weight], g)
    theirs = torch.autograd.grad(expected, [ref.in_proj_weight, ref.in_proj_bias, ref.out_proj.weight,
                                            ref.out_proj.bias, block.project.weight], g)
    for a, b in zip(mine, theirs):
        torch.testing.assert_close(a, b)


def test_gru_cell_matches_torch_gru_cell() -> None:
    torch.manual_seed(0)
    ours, ref = _GRUCell(8), nn.GRUCell(8, 8)
    ref.load_state_dict(ours.state_dict())
    x, h = torch.randn(6, 8), torch.randn(6, 8)
    torch.testing.assert_close(ours(x, h), ref(x, h), atol=1e-6, rtol=1e-5)


def test_cin_matches_explicit_loops() -> None:
    torch.manual_seed(0)
    fields, dim = 3, 4
    cin = CIN(fields, [4, 2], out_dim=2, split_half=True)
    emb = torch.randn(2, fields, dim)
    with torch.no_grad():
        hidden, pooled = emb, []
        for k, conv in enumerate(cin.convs):
            w, b = conv.weight[:, :, 0], conv.bias
            z = torch.stack([hidden[:, i] * emb[:, j] for i in range(hidden.shape[1]) for j in range(fields)], 1)
            out = torch.relu(torch.einsum("kc,bcd->bkd", w, z) + b[None, :, None])
            if k < len(cin.convs) - 1:
                half = out.shape[1] // 2
                hidden, direct = out[:, :half], out[:, half:]
            else:
                direct = out
            pooled.append(direct.sum(-1))
        expected = cin.fc(torch.cat(pooled, 1))
        torch.testing.assert_close(cin(emb), expected, atol=1e-5, rtol=1e-5)


def test_mlp_dropout_placement() -> None:
    recbole = MLP(4, [8, 8], output_dim=2, dropout=0.1, dropout_first=True)
    fuxictr = MLP(4, [8, 8], output_dim=2, dropout=0.1)
    assert [type(m) for m in recbole] == [Dropout, nn.Linear, nn.ReLU] * 2 + [nn.Linear]
    assert [type(m) for m in fuxictr] == [nn.Linear, nn.ReLU, Dropout] * 2 + [nn.Linear]
    assert recbole.output_width == 2 and MLP(4, [8, 3]).output_width == 3


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32, torch.float64])
def test_dropout_mask_is_zero_or_the_scale_in_the_input_dtype(dtype: torch.dtype) -> None:
    torch.manual_seed(3)
    drop = Dropout(0.2)
    mask = drop.mask((512, 96), dtype, torch.device("cpu"))
    scale = torch.tensor(1.0 / (1.0 - drop.p), dtype=dtype)
    assert mask.dtype == dtype and mask.shape == (512, 96) and mask.is_contiguous()
    assert set(mask.unique().tolist()) == {0.0, scale.item()}
    assert abs((mask == 0).double().mean().item() - drop.p) < 0.01
    assert drop.eval().mask((4, 4), dtype, torch.device("cpu")) is None


# ---------------------------------------------------------------- registry

def test_registry_names_and_signatures() -> None:
    assert NAMES == ["WideDeep", "NFM", "xDeepFM", "AutoInt", "FiGNN", "DCNV2", "EulerNet", "FinalMLP", "AFN", "GDCN"]
    for name, cls in ARCHITECTURES.items():
        assert issubclass(cls, Body) and cls.__name__ == name
        params = hyper_parameters(name)
        assert "reg_weight" in params
        assert all(v is not inspect.Parameter.empty for v in params.values()), f"{name} has a hyper-parameter without default"


def test_build_body_unknown_model() -> None:
    with pytest.raises(ValueError, match=r"unknown model 'DCN3'; choose one of: WideDeep, NFM, xDeepFM, .*GDCN$"):
        build_body("DCN3", F, D, 1, {})


def test_build_body_unknown_hyper_parameter() -> None:
    with pytest.raises(ValueError, match=r"unknown hyper-parameter 'cross_layers' for DCNV2; known: .*cross_layer_num"):
        build_body("DCNV2", F, D, 1, {"cross_layers": 3})


def test_direct_construction_rejects_unknown_keys_and_positional_hyper_parameters() -> None:
    with pytest.raises(TypeError):
        ARCHITECTURES["DCNV2"](F, D, 1, cross_layers=3)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        ARCHITECTURES["DCNV2"](F, D, 1, 2.0, 3)  # type: ignore[misc]


@pytest.mark.parametrize(("name", "params"), [
    ("DCNV2", {"structure": "diagonal"}), ("GDCN", {"structure": "diagonal"}),
    ("AutoInt", {"attention_size": 7}), ("FiGNN", {"attention_size": 7}), ("FiGNN", {"n_layers": 0}),
    ("xDeepFM", {"cin_layer_size": [5, 4]}), ("FinalMLP", {"num_heads": 3}), ("FinalMLP", {"fs1_context": [9]}),
])
def test_invalid_values_raise(name: str, params: dict) -> None:
    with pytest.raises(ValueError):
        build_body(name, F, D, 1, params)


@pytest.mark.parametrize("structure", ["parallel", "stacked"])
@pytest.mark.parametrize("name", ["DCNV2", "GDCN"])
def test_both_structures(name: str, structure: str) -> None:
    body = build_body(name, F, D, 5, {"structure": structure}).eval()
    assert body(_emb(3)).shape == (3, 5)


def test_non_default_branches() -> None:
    variants = [("AFN", {"ensemble_dnn": True, "batch_norm": True, "logarithmic_neurons": 16}),
                ("FinalMLP", {"fs1_context": [0], "fs2_context": [5, 6], "mlp1_batch_norm": True}),
                ("FinalMLP", {"use_fs": False, "num_heads": 1}), ("xDeepFM", {"direct": True}),
                ("EulerNet", {"apply_norm": True, "order_list": [4, 3]}), ("FiGNN", {"n_layers": 1}),
                ("FiGNN", {"n_layers": 3}), ("AutoInt", {"has_residual": False})]
    for name, params in variants:
        body = build_body(name, F, D, 5, params).train()
        out = body(_emb(8))
        out.square().mean().backward()
        assert out.shape == (8, 5) and torch.isfinite(out).all(), (name, params)
        assert all(p.grad is not None for p in body.parameters()), (name, params)


# ---------------------------------------------------------------- YAML defaults

@pytest.mark.parametrize("name", NAMES)
def test_yaml_loads_builds_and_matches_class_defaults(name: str) -> None:
    text = resources.files("ratingctr.training.configs").joinpath("models", f"{name}.yaml").read_text()
    assert text.startswith("# "), "first line says where the values come from"
    config = yaml.safe_load(text)
    assert set(config) <= {"lr", "embedding_dim", "params"} and float(config["lr"]) > 0
    defaults = hyper_parameters(name)
    for key, value in config["params"].items():
        assert key in defaults, f"{name}.yaml: unknown key {key}"
        assert _plain(defaults[key]) == value, f"{name}: class default {key}={defaults[key]!r} != YAML {value!r}"
    body = build_body(name, F, D, 5, config["params"]).eval()
    assert body(_emb(2)).shape == (2, 5)


@pytest.mark.parametrize("name", list(REFERENCE))
def test_yaml_carries_the_reference_values(name: str) -> None:
    params, lr = REFERENCE[name]
    config = yaml.safe_load(resources.files("ratingctr.training.configs").joinpath("models", f"{name}.yaml").read_text())
    assert math.isclose(float(config["lr"]), lr)
    for key, value in params.items():
        assert config["params"][key] == value, (name, key)


# ---------------------------------------------------------------- ONNX

@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript exporter is what export uses
@pytest.mark.parametrize("name", NAMES)
def test_onnx_export_matches_torch(name: str, tmp_path) -> None:
    pytest.importorskip("onnx", reason="onnx not installed")
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed")
    body = _body(name, 5).eval()
    path = tmp_path / f"{name}.onnx"
    with torch.no_grad():
        torch.onnx.export(body, (_emb(4),), str(path), dynamo=False, opset_version=17, input_names=["emb"],
                          output_names=["logits"], dynamic_axes={"emb": {0: "batch"}, "logits": {0: "batch"}})
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (9, 1):
        x = _emb(batch, seed=batch)
        with torch.no_grad():
            expected = body(x).numpy()
        got = session.run(["logits"], {"emb": x.numpy()})[0]
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)
