"""Every hand-optimised kernel against its reference: values, gradients and ONNX parity.

One case per kernel (``training/models/kernels/``): the fast path must equal the reference
maths in values and in every gradient on realistic shapes and random inputs (float64, so
the tolerances are tight), and the path export traces must run in ONNX Runtime with the
torch values.  Then, model by model, the ``TRAINING`` kernels against ``REFERENCE``, and
the switch itself (``use_kernels``, export's ``INFERENCE`` mode).
"""
from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from ratingctr.training.data.schema import FieldSchema, FieldSpec
from ratingctr.training.models.afn import AFN
from ratingctr.training.models.ctr import CTRModel
from ratingctr.training.models.encoders import FieldIndexer
from ratingctr.training.models.eulernet import EulerNet
from ratingctr.training.models.finalmlp import InteractionAggregation
from ratingctr.training.models.heads import build_head
from ratingctr.training.models.kernels import KernelMode, use_kernels
from ratingctr.training.models.kernels.afn import fast_afn, reference_afn
from ratingctr.training.models.kernels.attention import (
    FieldAttentionFunction,
    fast_field_attention,
    reference_field_attention,
)
from ratingctr.training.models.kernels.bilinear import fast_bilinear, reference_bilinear
from ratingctr.training.models.kernels.cin import fast_cin, reference_cin
from ratingctr.training.models.kernels.cross_deep import fast_parallel_predict, reference_parallel_predict
from ratingctr.training.models.kernels.dropout import fast_keep, fast_scale, reference_keep, reference_scale
from ratingctr.training.models.kernels.euler import fast_euler_net, order_mix, reference_euler_net
from ratingctr.training.models.kernels.fignn import fast_fignn, reference_fignn
from ratingctr.training.models.kernels.lookup import (
    fast_embed_with_first_order,
    lookup,
    reference_embed_with_first_order,
    reference_lookup,
)
from ratingctr.training.models.layers import CIN, Dropout, MultiHeadSelfAttention
from ratingctr.training.models.registry import ARCHITECTURES, build_body

F, D, B = 7, 16, 64  # ML-100k's 7 fields, the configured 16-wide embeddings, a test batch
f64 = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(*shape: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    return (torch.randn(*shape, generator=_gen(seed), dtype=f64) * scale).requires_grad_()


# ---------------------------------------------------------------- cases: fast vs reference


@dataclass
class Case:
    """One kernel: ``make()`` → (the arguments both paths take, the tensors to differentiate)."""

    name: str
    make: Callable[[], tuple[tuple, list[torch.Tensor]]]
    fast: Callable[..., torch.Tensor | tuple[torch.Tensor, ...]]
    reference: Callable[..., torch.Tensor | tuple[torch.Tensor, ...]]


def _attention(masked: bool) -> Callable[[], tuple[tuple, list[torch.Tensor]]]:
    def make() -> tuple[tuple, list[torch.Tensor]]:
        heads, hd = 2, 4  # AutoInt's reference setting: attention_size 8 over 2 heads
        width = heads * hd
        x = _randn(width, F, B, seed=1)
        params = [_randn(3 * width, width, seed=2, scale=0.4), _randn(3 * width, seed=3, scale=0.1),
                  _randn(width, width, seed=4, scale=0.4), _randn(width, seed=5, scale=0.1)]
        mask = (torch.rand(heads, F, F, B, generator=_gen(6), dtype=f64) >= 0.2).to(f64) / 0.8 if masked else None
        return (x, *params, mask, heads, hd), [x, *params]
    return make


def _cross_deep() -> tuple[tuple, list[torch.Tensor]]:
    cross, deep = _randn(B, F * D, seed=1), _randn(B, 256, seed=2)
    weight, bias = _randn(5, F * D + 256, seed=3, scale=0.05), _randn(5, seed=4)
    return (cross, deep, weight, bias), [cross, deep, weight, bias]


def _cin(split_half: bool) -> Callable[[], tuple[tuple, list[torch.Tensor]]]:
    def make() -> tuple[tuple, list[torch.Tensor]]:
        torch.manual_seed(0)
        cin = CIN(F, [64, 64, 32], out_dim=5, split_half=split_half).double()
        emb = _randn(B, F, D, seed=1, scale=0.5)
        weights, biases = [c.weight for c in cin.convs], [c.bias for c in cin.convs]
        return (emb, weights, biases, cin.hidden_sizes, split_half), [emb, *weights, *biases]
    return make


def _afn(train: bool) -> Callable[[], tuple[tuple, list[torch.Tensor]]]:
    def make() -> tuple[tuple, list[torch.Tensor]]:
        torch.manual_seed(0)
        body = AFN(F, D, 5, logarithmic_neurons=64, afn_hidden_size=[128]).double().train(train)
        emb = _randn(B, F, D, seed=1, scale=0.5)
        modules = (body.log_norm, body.coefficients, body.exp_norm, body.afn[0])
        return (emb, *modules), [emb, *(p for m in modules for p in m.parameters())]
    return make


def _bilinear(heads: int, out: int) -> Callable[[], tuple[tuple, list[torch.Tensor]]]:
    def make() -> tuple[tuple, list[torch.Tensor]]:
        hx, hy = 256 // heads, 128 // heads  # FinalMLP's stream widths (…, 256) and (…, 128)
        x, y = _randn(B, heads * hx, seed=1), _randn(B, heads * hy, seed=2)
        w_xy = _randn(heads * hx * hy, out, seed=3, scale=0.05)
        return (x, y, w_xy, (heads, hx, out, hy)), [x, y, w_xy]
    return make


SCHEMA = FieldSchema((FieldSpec("user_id", 40, "user"), FieldSpec("age", 6, "user"),
                      FieldSpec("item_id", 50, "item"), FieldSpec("genre", 7, "item", slots=3)))


def _ids(n: int = B, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    genre = rng.integers(0, 7, (n, 3))
    genre[:, 0] = rng.integers(1, 7, n)
    cols = [rng.integers(1, 40, n), rng.integers(0, 6, n), rng.integers(1, 50, n)]
    return torch.from_numpy(np.column_stack(cols + [genre]).astype(np.int64))


def _lookup() -> tuple[tuple, list[torch.Tensor]]:
    indexer = FieldIndexer(SCHEMA)  # a multi-valued field: pooling weights 1/count and padding
    ids, weights = indexer(_ids())
    table = _randn(indexer.total_vocab, D, seed=1)
    first_table, first_bias = _randn(indexer.total_vocab, 5, seed=2), _randn(5, seed=3)
    return (table, first_table, first_bias, ids, weights.to(f64), indexer.pool), [table, first_table, first_bias]


def _euler(order_list: list[int], apply_norm: bool) -> Callable[[], tuple[tuple, list[torch.Tensor]]]:
    def make() -> tuple[tuple, list[torch.Tensor]]:
        torch.manual_seed(0)
        body = EulerNet(F, D, 5, order_list=order_list, apply_norm=apply_norm).double().eval()
        with torch.no_grad():  # negative μ (a phase shift of π) and no μ = 0
            body.mu.copy_(torch.linspace(-1.5, 1.5, F + 1)[torch.arange(F + 1) != F // 2].view(1, F, 1))
        emb = _randn(B, F, D, seed=1, scale=4.0)  # |e| past several 2π wraps
        return (emb, body.mu, list(body.layers), body.predict), [emb, *body.parameters()]
    return make


def _fignn(n_layers: int) -> Callable[[], tuple[tuple, list[torch.Tensor]]]:
    def make() -> tuple[tuple, list[torch.Tensor]]:
        torch.manual_seed(0)
        body = build_body("FiGNN", F, D, 5, {"n_layers": n_layers}).double()
        h0 = _randn(B, F, 8, seed=1)  # RecBole's attention_size 8
        edge = body.edge_attention.weight if body.edge_attention is not None else None
        args = (h0, edge, body.self_loop, list(body.graph_layers), body.gru, body.field_score.weight,
                body.field_weight.weight)
        graph_params = [p for name, p in body.named_parameters() if not name.startswith("attention.")]
        return args, [h0, *graph_params]
    return make


def _fignn_field_major(h0: torch.Tensor, *rest: object) -> torch.Tensor:
    return fast_fignn(h0.permute(1, 2, 0).contiguous(), *rest)


CASES = [
    Case("attention", _attention(masked=False), fast_field_attention, reference_field_attention),
    Case("attention+dropout-mask", _attention(masked=True), fast_field_attention, reference_field_attention),
    Case("cross_deep", _cross_deep, fast_parallel_predict, reference_parallel_predict),
    Case("cin-split-half", _cin(True), fast_cin, reference_cin),
    Case("cin-direct", _cin(False), fast_cin, reference_cin),
    Case("afn-train", _afn(True), fast_afn, reference_afn),
    Case("afn-eval", _afn(False), fast_afn, reference_afn),
    Case("bilinear-2-heads", _bilinear(2, 5), fast_bilinear, reference_bilinear),
    Case("bilinear-1-head", _bilinear(1, 1), fast_bilinear, reference_bilinear),
    Case("lookup", _lookup, fast_embed_with_first_order, reference_embed_with_first_order),
    Case("euler-one-layer", _euler([8], False), fast_euler_net, reference_euler_net),
    Case("euler-two-layers", _euler([6, 4], False), fast_euler_net, reference_euler_net),
    Case("euler-layer-norm", _euler([6, 4], True), fast_euler_net, reference_euler_net),
    Case("fignn-two-steps", _fignn(3), _fignn_field_major, reference_fignn),
    Case("fignn-no-steps", _fignn(1), _fignn_field_major, reference_fignn),
]


def _outputs(value: torch.Tensor | tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return value if isinstance(value, tuple) else (value,)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_fast_path_equals_reference_in_values_and_gradients(case: Case) -> None:
    args, wrt = case.make()
    fast_args, fast_wrt = copy.deepcopy((args, wrt)) if case.name.startswith("afn-train") else (args, wrt)
    fast, reference = _outputs(case.fast(*fast_args)), _outputs(case.reference(*args))
    for mine, theirs in zip(fast, reference, strict=True):
        assert mine.shape == theirs.shape and mine.dtype == theirs.dtype == f64
        torch.testing.assert_close(mine, theirs, rtol=1e-9, atol=1e-10)
    cotangents = [torch.randn(t.shape, generator=_gen(9 + i), dtype=f64) for i, t in enumerate(reference)]
    fast_grads = torch.autograd.grad(fast, fast_wrt, cotangents, allow_unused=True)
    reference_grads = torch.autograd.grad(reference, wrt, cotangents, allow_unused=True)
    for i, (mine, theirs) in enumerate(zip(fast_grads, reference_grads, strict=True)):
        assert (mine is None) == (theirs is None), f"gradient {i}"
        if theirs is not None:
            assert theirs.abs().sum() > 0 or mine.abs().sum() == 0
            torch.testing.assert_close(mine, theirs, rtol=1e-8, atol=1e-9, msg=f"gradient {i}")
    if case.name == "afn-train":  # both paths update the BatchNorms' running statistics identically
        for theirs, mine in ((args[1], fast_args[1]), (args[3], fast_args[3])):
            torch.testing.assert_close(mine.running_mean, theirs.running_mean)
            torch.testing.assert_close(mine.running_var, theirs.running_var)


def test_attention_kernel_gradcheck_with_a_dropout_mask() -> None:
    args, wrt = _attention(masked=True)()
    x, mask, heads = args[0], args[5], args[6]
    small = [t.detach()[..., :3].clone().requires_grad_() if t is x else t.detach().clone().requires_grad_()
             for t in wrt]
    mask = mask[..., :3]
    assert torch.autograd.gradcheck(lambda *t: FieldAttentionFunction.apply(*t, mask, heads), small)


def test_attention_kernel_runs_in_fp32_under_bf16_autocast() -> None:
    args, _ = _attention(masked=False)()
    x, *params = [t.detach().float().requires_grad_() for t in args[:5]]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fast_field_attention(x, *params, None, 2, 4)
    assert out.dtype == torch.float32
    out.sum().backward()
    torch.testing.assert_close(out, reference_field_attention(x, *params, None, 2, 4))


@pytest.mark.parametrize("rows", [4096 * 16, 45])  # chunked weight gradient, and the plain fallback
def test_euler_order_mix_is_a_matmul_in_values_and_gradients(rows: int) -> None:
    x = torch.randn(rows, 3, 7, generator=_gen(0), dtype=f64).transpose(1, 2).requires_grad_()  # strided, like λ
    w = torch.randn(3, 5, generator=_gen(1), dtype=f64).requires_grad_()
    torch.testing.assert_close(order_mix(x, w), x @ w)
    g = torch.randn(rows, 7, 5, generator=_gen(2), dtype=f64)
    for mine, theirs in zip(torch.autograd.grad(order_mix(x, w), [x, w], g), torch.autograd.grad(x @ w, [x, w], g)):
        torch.testing.assert_close(mine, theirs)
    if rows < 100:
        assert torch.autograd.gradcheck(order_mix, (x, w))


def test_lookup_is_the_embedding_gather_in_values_and_gradients() -> None:
    table, ids = _randn(103, D, seed=1), _ids()
    torch.testing.assert_close(lookup(table, ids), reference_lookup(table, ids))
    g = torch.randn(*ids.shape, D, generator=_gen(2), dtype=f64)
    torch.testing.assert_close(torch.autograd.grad(lookup(table, ids), table, g)[0],
                               torch.autograd.grad(reference_lookup(table, ids), table, g)[0])


# ---------------------------------------------------------------- dropout masks


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32, torch.float64])
def test_dropout_mask_bit_patterns_equal_the_cast_and_scale(dtype: torch.dtype) -> None:
    keep = torch.rand(512, 96, generator=_gen(0)) >= 51 / 256
    scale = 1.0 / (1.0 - 51 / 256)
    fast, reference = fast_scale(keep, scale, dtype), reference_scale(keep, scale, dtype)
    assert fast.dtype == reference.dtype == dtype and fast.is_contiguous()
    assert torch.equal(fast, reference)
    x = torch.randn(512, 96, generator=_gen(1), dtype=f64).to(dtype).requires_grad_()
    assert torch.equal(torch.autograd.grad((x * fast).sum(), x)[0], torch.autograd.grad((x * reference).sum(), x)[0])


@pytest.mark.parametrize("draw", [fast_keep, reference_keep], ids=["fast", "reference"])
def test_dropout_keep_masks_are_bernoulli_and_follow_torch_seed(draw: Callable) -> None:
    cut = 51  # p = 0.2 quantised
    torch.manual_seed(7)
    first, second = draw((4096, 64), cut, torch.device("cpu")), draw((4096, 64), cut, torch.device("cpu"))
    torch.manual_seed(7)
    assert torch.equal(draw((4096, 64), cut, torch.device("cpu")), first)  # seeded runs repeat exactly
    keep = 1 - cut / 256
    assert abs(first.double().mean().item() - keep) < 0.005  # sd 0.0016 over 262k draws
    assert (first.double().mean(0) - keep).abs().max().item() < 0.04  # every column: sd 0.006 over 4096 rows
    agree = (first == second).double().mean().item()
    assert abs(agree - (keep ** 2 + (1 - keep) ** 2)) < 0.005  # consecutive draws independent


def test_dropout_module_keeps_expectation_and_is_identity_in_eval() -> None:
    for mode in KernelMode:
        drop = use_kernels(Dropout(0.2), mode)
        torch.manual_seed(0)
        x = torch.ones(200_000)
        y = drop(x)
        assert abs(y.mean().item() - 1.0) < 0.01 and abs((y == 0).double().mean().item() - drop.p) < 0.01
        assert torch.equal(drop.eval()(x), x) and drop.mask((4, 4), torch.float32, torch.device("cpu")) is None


# ---------------------------------------------------------------- ONNX parity of what export traces


class _Call(nn.Module):
    """``fn(module, x)`` as an exportable module that owns ``module`` (so copies and modes follow it)."""

    def __init__(self, fn: Callable[[nn.Module, torch.Tensor], torch.Tensor], module: nn.Module) -> None:
        super().__init__()
        self.fn, self.module = fn, module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(self.module, x)


def _onnx_cases() -> list[tuple[str, nn.Module, Callable[[int], torch.Tensor]]]:
    """(name, a module in its export mode, batch → input): every kernel, the path export traces."""
    torch.manual_seed(0)

    def emb(n: int) -> torch.Tensor:
        return torch.randn(n, F, D, generator=_gen(n)) * 0.5

    attention = MultiHeadSelfAttention(D, 4, 2, dropout=0.2, num_layers=2)
    cin = CIN(F, [64, 64, 32], out_dim=5)
    afn = AFN(F, D, 5, logarithmic_neurons=64, afn_hidden_size=[128], batch_norm=True)
    for bn in (afn.log_norm, afn.exp_norm):  # non-trivial running statistics
        bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2)
    fusion = InteractionAggregation(256, 128, 5, 2)
    head = build_head("rating", 5, 4, 0.5, "logit_sum")
    wide = CTRModel(SCHEMA, build_body("WideDeep", SCHEMA.num_fields, D, head.out_dim, {}), head)
    nn.init.normal_(wide.linear.table.weight)
    return [
        ("attention", attention, emb),
        ("cross_deep", build_body("DCNV2", F, D, 5, {"structure": "parallel"}), emb),
        ("cin", cin, emb),
        ("afn", afn, emb),
        ("bilinear", _Call(lambda m, xy: m(xy[:, :256], xy[:, 256:]), fusion),
         lambda n: torch.randn(n, 384, generator=_gen(n))),
        ("euler", EulerNet(F, D, 5, order_list=[6, 4]), lambda n: emb(n) * 8.0),
        ("fignn", build_body("FiGNN", F, D, 5, {"n_layers": 3}), emb),
        ("lookup", _Call(lambda m, x: m.logits(x), wide), lambda n: _ids(n, seed=n)),
        ("dropout", nn.Sequential(nn.Linear(D, D), Dropout(0.5)), lambda n: torch.randn(n, D, generator=_gen(n))),
    ]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript exporter is what export uses
@pytest.mark.parametrize("name", [name for name, _, _ in _onnx_cases()])
def test_onnx_of_the_export_mode_matches_torch(name: str, tmp_path) -> None:
    onnx = pytest.importorskip("onnx", reason="onnx not installed")
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed")
    module, make_input = next((m, i) for n, m, i in _onnx_cases() if n == name)
    module = use_kernels(module.eval(), KernelMode.INFERENCE)  # what prepare_for_export sets
    path = tmp_path / f"{name}.onnx"
    with torch.no_grad():
        torch.onnx.export(module, (make_input(4),), str(path), dynamo=False, opset_version=17, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert not ops & {"PythonOp", "RandomUniformLike", "RandomUniform", "Dropout"}, ops
    for batch in (9, 1):
        x = make_input(batch)
        with torch.no_grad():
            expected = module(x).numpy()
            reference = use_kernels(copy.deepcopy(module), KernelMode.REFERENCE)(x).numpy()
        got = session.run(["y"], {"x": x.numpy()})[0]
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(got, reference, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- every model: TRAINING kernels vs REFERENCE


def _yaml(name: str) -> dict:
    return yaml.safe_load(resources.files("ratingctr.training.configs").joinpath("models", f"{name}.yaml").read_text())


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_model_trains_the_same_with_kernels_as_with_the_reference_maths(name: str) -> None:
    """Whole models in train mode (every training kernel on), dropout off so both paths are
    deterministic: equal logits and equal gradients of every parameter, float64."""
    torch.manual_seed(0)
    head = build_head("rating", 5, 4, 0.5, "logit_sum")
    body = build_body(name, SCHEMA.num_fields, D, head.out_dim, _yaml(name)["params"])
    model = CTRModel(SCHEMA, body, head).train()
    for part in (model.encoder, model.body, model.linear):  # float64 parameters; the indexer's buffers stay
        if part is not None:
            part.double()
    for module in model.modules():
        if isinstance(module, Dropout):
            module.cut, module.p = 0, 0.0
    if model.linear is not None:
        nn.init.normal_(model.linear.table.weight)
    reference = use_kernels(copy.deepcopy(model), KernelMode.REFERENCE)
    assert model.kernels is KernelMode.TRAINING  # the default: a fresh model trains on the kernels
    x = _ids(128)
    fast, theirs = model.logits(x), reference.logits(x)
    torch.testing.assert_close(fast, theirs, rtol=1e-9, atol=1e-10)
    g = torch.randn(fast.shape, generator=_gen(1), dtype=f64)
    fast_grads = torch.autograd.grad(fast, list(model.parameters()), g, allow_unused=True)
    reference_grads = torch.autograd.grad(theirs, list(reference.parameters()), g, allow_unused=True)
    for (pname, _), mine, theirs in zip(model.named_parameters(), fast_grads, reference_grads, strict=True):
        assert (mine is None) == (theirs is None), pname
        if mine is not None:
            torch.testing.assert_close(mine, theirs, rtol=1e-8, atol=1e-10, msg=f"{name}.{pname}")


def test_use_kernels_sets_every_switch_and_training_kernels_need_train_mode() -> None:
    model = build_body("AutoInt", F, D, 5, {})
    switches = [m for m in model.modules() if hasattr(m, "kernels")]
    assert len(switches) > 3 and all(m.kernels is KernelMode.TRAINING for m in switches)
    layer = model.attention.layers[0]
    assert layer.training_kernels() and layer.forward_kernels()
    assert not layer.eval().training_kernels() and layer.forward_kernels()  # eval: the traced graph
    use_kernels(model.train(), "inference")
    assert all(m.kernels is KernelMode.INFERENCE for m in switches)
    assert not layer.training_kernels() and layer.forward_kernels()
    use_kernels(model, KernelMode.REFERENCE)
    assert not layer.training_kernels() and not layer.forward_kernels()
    with pytest.raises(ValueError):
        use_kernels(model, "fastest")


def test_attention_picks_its_graph_by_mode_not_by_grad_mode() -> None:
    block = MultiHeadSelfAttention(D, 4, 2, num_layers=1)
    emb = torch.randn(8, F, D)
    with torch.no_grad():  # train mode + TRAINING: the kernel, even without autograd
        assert block.train()(emb).shape == (8, F, 8)
    out = block.train()(emb.requires_grad_())
    assert any("FieldAttention" in type(fn).__name__ for fn in _grad_fns(out))
    out = block.eval()(emb)  # grad enabled, eval mode: the plain graph export traces
    assert not any("FieldAttention" in type(fn).__name__ for fn in _grad_fns(out))


def _grad_fns(out: torch.Tensor) -> list:
    seen, stack = [], [out.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.append(fn)
        stack.extend(next_fn for next_fn, _ in fn.next_functions)
    return seen


def test_every_kernel_case_is_covered_once() -> None:
    kernels = {"attention", "cross_deep", "cin", "afn", "bilinear", "lookup", "euler", "fignn"}
    assert {case.name.split("-")[0].split("+")[0] for case in CASES} == kernels
    assert {name for name, _, _ in _onnx_cases()} == kernels | {"dropout"}
    assert len({case.name for case in CASES}) == len(CASES)
