"""xDeepFM's compressed interaction network up to its sum-pooled maps (a *forward* kernel).

Both functions take RecBole's parameters: per layer a 1×1 ``Conv1d`` weight
``[H_{k+1}, H_k·F, 1]`` whose input channel ``h·F + f`` is the product of hidden map h with
field f, and its bias.  They return the concatenated sum-pooled output maps ``[B, P]``.

The reference is RecBole's layout: maps ``[B, H, d]``, the products ``[B, H_k·F, d]``, a
``conv1d``; a batch of B tiny ``[H_{k+1}, H_k·F] @ [H_k·F, d]`` products with d columns.

The fast path runs channels-last, maps ``[B, d, H]``: each convolution is one large
``[B·d, F·H_k] @ [F·H_k, H_{k+1}]`` GEMM over field-major products, z[·, f·H + h] = e_f·h_h,
with the long H axis innermost so the products and their gradient reductions vectorise
(h·F + f put the 7-wide field axis innermost).  The convolution weight is read in that
channel order (a permuted view per call, H_{k+1}·H_k·F values).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.nn import functional as F


def _halves(out: torch.Tensor, size: int, split: bool, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(next layer's maps, maps sent to the output): split in half, or both the whole."""
    if split:
        hidden, direct = torch.split(out, [size, size], dim=dim)
        return hidden, direct
    return out, out


def reference_cin(emb: torch.Tensor, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor],
                  hidden_sizes: Sequence[int], split_half: bool) -> torch.Tensor:
    """RecBole's CIN over ``[B, F, d]`` → pooled maps ``[B, P]``."""
    b, _, d = emb.shape
    hidden, pooled = emb, []
    last = len(weights) - 1
    for i, (weight, bias) in enumerate(zip(weights, biases)):
        z = torch.einsum("bhd,bmd->bhmd", hidden, emb).reshape(b, -1, d)  # [B, H_k·F, d]
        out = torch.relu(F.conv1d(z, weight, bias))  # [B, H_{k+1}, d]
        hidden, direct = _halves(out, hidden_sizes[i], split_half and i < last, dim=1)
        pooled.append(direct.sum(dim=2))
    return torch.cat(pooled, dim=1)


def fast_cin(emb: torch.Tensor, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor],
             hidden_sizes: Sequence[int], split_half: bool) -> torch.Tensor:
    """``reference_cin`` channels-last: one GEMM per layer over field-major products."""
    b, f, d = emb.shape
    emb_t = emb.transpose(1, 2)  # [B, d, F]
    hidden, pooled = emb_t, []
    last = len(weights) - 1
    for i, (weight, bias) in enumerate(zip(weights, biases)):
        z = (emb_t.unsqueeze(3) * hidden.unsqueeze(2)).reshape(b * d, -1)  # [B·d, F·H_k]
        out_channels = weight.shape[0]
        field_major = weight.view(out_channels, -1, f).transpose(1, 2).reshape(out_channels, -1)
        out = torch.relu(F.linear(z, field_major, bias)).view(b, d, -1)
        hidden, direct = _halves(out, hidden_sizes[i], split_half and i < last, dim=2)
        pooled.append(direct.sum(dim=1))
    return torch.cat(pooled, dim=1)
