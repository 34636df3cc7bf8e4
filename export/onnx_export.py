"""Checkpoint → ONNX, and the parity check that guards every bundle.

The exported graph is the serving contract: ``fields: int64[B, C]`` in, ``p_click`` (and
for rating heads ``rating_probs`` and ``expected_rating``) out, dynamic batch.  A
LightGCN encoder is materialised first, so the graph is a plain table lookup.
"""
from __future__ import annotations

import copy
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_linear_bn_eval

from ratingctr.training.models.ctr import CTRModel
from ratingctr.training.models.encoders import LightGCNEncoder
from ratingctr.training.models.kernels import KernelMode, use_kernels

OPSET = 17


class ServingGraph(nn.Module):
    """The model as the gateway sees it: named outputs, no loss, no graph propagation."""

    def __init__(self, model: CTRModel) -> None:
        super().__init__()
        self.model = model
        self.rating = model.head.out_dim > 1

    def forward(self, fields: torch.Tensor) -> tuple[torch.Tensor, ...]:
        pred = self.model.predict(fields)
        if self.rating:
            return pred.p_click, pred.rating_probs, pred.expected_rating
        return (pred.p_click,)


def output_names(model: CTRModel) -> list[str]:
    return ["p_click", "rating_probs", "expected_rating"] if model.head.out_dim > 1 else ["p_click"]


def prepare_for_export(model: CTRModel) -> CTRModel:
    """Eval mode, on CPU, the inference kernels, with a LightGCN encoder replaced by its materialised table."""
    model = use_kernels(model.cpu().eval(), KernelMode.INFERENCE)
    if isinstance(model.encoder, LightGCNEncoder):
        model.encoder = model.encoder.materialize()
    model.encoder.noise_std = 0.0
    return model


def fold_batch_norm(module: nn.Module) -> nn.Module:
    """Fold every eval-mode ``BatchNorm1d`` that directly follows a ``Linear`` into it, in place.

    Why: ONNX Runtime keeps Gemm → BatchNormalization as two kernels; folded, each MLP
    block is one Gemm (one kernel launch and one pass over the activations fewer).
    Only ``Linear, BatchNorm1d`` neighbours inside a ``Sequential`` are touched, so a
    BatchNorm on anything else (AFN's log-space norms) stays as it is.
    """
    for seq in [m for m in module.modules() if isinstance(m, nn.Sequential)]:
        children = list(seq.named_children())
        for (name, first), (bn_name, second) in zip(children, children[1:]):
            if (isinstance(first, nn.Linear) and isinstance(second, nn.BatchNorm1d) and not second.training
                    and second.track_running_stats and second.running_mean is not None):
                setattr(seq, name, fuse_linear_bn_eval(first, second))
                setattr(seq, bn_name, nn.Identity())
    return module


def export_onnx(model: CTRModel, sample: np.ndarray, path: Path) -> list[str]:
    """Trace ``model`` on ``sample`` rows and write ``path``; returns the output names.

    The traced copy has its BatchNorms folded (``fold_batch_norm``); ``model`` itself is
    left alone, so ``parity(model, …)`` also checks the folding.
    """
    graph = ServingGraph(fold_batch_norm(copy.deepcopy(model))).eval()
    names = output_names(model)
    dynamic = {"fields": {0: "batch"}, **{name: {0: "batch"} for name in names}}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        torch.onnx.export(graph, (torch.from_numpy(sample),), str(path), dynamo=False, opset_version=OPSET,
                          input_names=["fields"], output_names=names, dynamic_axes=dynamic,
                          do_constant_folding=True)
    return names


def torch_outputs(model: CTRModel, rows: np.ndarray) -> dict[str, np.ndarray]:
    with torch.no_grad():
        out = ServingGraph(model).eval()(torch.from_numpy(rows))
    return {name: t.numpy() for name, t in zip(output_names(model), out)}


def parity(model: CTRModel, onnx_path: Path, rows: np.ndarray, providers: list[str] | None = None) -> dict:
    """Max |Δ| between torch and ONNX Runtime on the same rows, per output."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=providers or ["CPUExecutionProvider"])
    ours = torch_outputs(model, rows)
    theirs = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"fields": rows})))
    report = {"rows": int(rows.shape[0]), "providers": session.get_providers()}
    for name, value in ours.items():
        report[f"max_abs_diff_{name}"] = float(np.max(np.abs(value - theirs[name]))) if value.size else 0.0
    return report
