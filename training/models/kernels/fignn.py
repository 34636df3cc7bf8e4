"""FiGNN's graph part: edge weights, propagation steps with a GRU, attentional scoring (a *forward* kernel).

Both functions take the initial node states h⁰ (from the self-attention) and RecBole's
parameters, and return the ``out``-wide logits.

The reference is RecBole 1.2's layout: node states ``[B, F, A]``; edge weights from
``W_attn [h_i ‖ h_j]`` over all F² (i, j) pairs; per step the per-field matrices as
einsums, the neighbour sum as a ``bmm``, ``nn.GRUCell`` over the B·F node rows.

The fast path keeps the node states field-major, ``[F, A, B]``: every per-field product
is then one GEMM over fields (wide along the batch) or an element-wise op along the
contiguous batch axis, rather than B·F tiny matrices and the reshapes around them;
``W_attn [h_i ‖ h_j]`` is ``w_srcᵀh_i + w_dstᵀh_j`` (no F² pairs are built); and the GRU
gates are ``baddbmm``s in that layout (under autocast a sum with an fp32 bias would
promote back to fp32, a ``baddbmm`` does not).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch
from torch.nn import functional as F


class GraphStep(Protocol):
    """One propagation step's parameters (``fignn._GraphLayer``)."""

    w_in: torch.Tensor  # [F, A, A]
    w_out: torch.Tensor  # [F, A, A]
    bias: torch.Tensor  # [A]


class GRUParams(Protocol):
    """``nn.GRUCell``'s parameters (``fignn._GRUCell``), gate order r, z, n."""

    weight_ih: torch.Tensor  # [3A, A]
    weight_hh: torch.Tensor
    bias_ih: torch.Tensor  # [3A]
    bias_hh: torch.Tensor


def reference_fignn(h0: torch.Tensor, edge_weight: torch.Tensor | None, no_self: torch.Tensor,
                    steps: Sequence[GraphStep], gru: GRUParams | None, score_weight: torch.Tensor,
                    field_weight: torch.Tensor) -> torch.Tensor:
    """RecBole's FiGNN after the attention: h⁰ ``[B, F, A]`` → logits ``[B, out]``.

    ``edge_weight`` ``[1, 2A]`` (W_attn), ``no_self`` the ``[F, F]`` boolean identity (no
    self-loops), ``score_weight`` ``[out, A]``, ``field_weight`` ``[F, F·A]``; with no
    steps, ``edge_weight`` and ``gru`` are None.
    """
    b, f, a = h0.shape
    h = h0
    if steps and edge_weight is not None and gru is not None:
        pairs = torch.cat([h0.unsqueeze(2).expand(b, f, f, a), h0.unsqueeze(1).expand(b, f, f, a)], dim=-1)
        alpha = F.leaky_relu(F.linear(pairs, edge_weight).squeeze(-1), 0.01)  # [B, F_i, F_j]
        graph = torch.softmax(alpha.masked_fill(no_self, float("-inf")), dim=-1)
        for step in steps:
            h_out = torch.einsum("jxy,bjy->bjx", step.w_out, h)  # W_out,j h_j
            agg = torch.einsum("ixy,biy->bix", step.w_in, torch.bmm(graph, h_out)) + step.bias
            h = torch.gru_cell(agg.reshape(-1, a), h.reshape(-1, a), gru.weight_ih, gru.weight_hh,
                               gru.bias_ih, gru.bias_hh).view(b, f, a) + h0
    scores = F.linear(h, score_weight)  # [B, F, out]
    weights = F.linear(h.flatten(1), field_weight)  # [B, F]
    return (scores * weights.unsqueeze(-1)).sum(dim=1)


def gru_cell_fab(x: torch.Tensor, h: torch.Tensor, gru: GRUParams) -> torch.Tensor:
    """``nn.GRUCell`` over feature-major ``[F, A, B]`` inputs and states: the gates are ``W @ x``."""
    f = x.shape[0]
    # baddbmm, not ``W @ x + b``: under autocast the sum with an fp32 bias would promote back to fp32
    xr, xz, xn = torch.baddbmm(gru.bias_ih[None, :, None], gru.weight_ih.expand(f, -1, -1), x).chunk(3, dim=1)
    hr, hz, hn = torch.baddbmm(gru.bias_hh[None, :, None], gru.weight_hh.expand(f, -1, -1), h).chunk(3, dim=1)
    r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
    n = torch.tanh(xn + r * hn)
    return (1 - z) * n + z * h


def edge_weights_fab(h: torch.Tensor, edge_weight: torch.Tensor, no_self: torch.Tensor) -> torch.Tensor:
    """Softmax-normalised ``[F_i, F_j, B]`` edge weights of field-major ``h`` ``[F, A, B]``, no self-loops."""
    w_src, w_dst = edge_weight.chunk(2, dim=1)  # [1, A] each
    src, dst = torch.matmul(w_src, h), torch.matmul(w_dst, h)  # [F, 1, B]
    alpha = F.leaky_relu(src + dst.transpose(0, 1), 0.01)  # [F_i, F_j, B]
    return torch.softmax(alpha.masked_fill(no_self.unsqueeze(-1), float("-inf")), dim=1)


def fast_fignn(h0: torch.Tensor, edge_weight: torch.Tensor | None, no_self: torch.Tensor,
               steps: Sequence[GraphStep], gru: GRUParams | None, score_weight: torch.Tensor,
               field_weight: torch.Tensor) -> torch.Tensor:
    """``reference_fignn`` on field-major node states: h⁰ ``[F, A, B]`` → logits ``[B, out]``."""
    f, a, b = h0.shape
    h = h0
    if steps and edge_weight is not None and gru is not None:
        graph = edge_weights_fab(h0, edge_weight, no_self)
        for step in steps:
            h_out = torch.bmm(step.w_out, h)  # [F, A, B]
            agg = (graph.unsqueeze(2) * h_out.unsqueeze(0)).sum(1)  # Σ_j A_ij h_out,j
            h = gru_cell_fab(torch.baddbmm(step.bias[None, :, None], step.w_in, agg), h, gru) + h0
    scores = torch.matmul(score_weight, h)  # [F, out, B]
    weights = field_weight @ h.reshape(f * a, b)  # [F, B]; (f, a) order = RecBole's flatten
    return (scores * weights.unsqueeze(1)).sum(0).t()
