"""AFN's logarithmic transformation through the first Linear of its MLP (a *forward* kernel).

Both take the same modules: the log-space BatchNorm over fields, the coefficient Linear
(F → N), the exp-space BatchNorm over neurons and the MLP's first Linear (N·d → H), and
return that Linear's output ``[B, H]``.

The reference is FuxiCTR's layout: neurons ``[B, N, d]``, flattened n-major.  The fast
path keeps them as ``[B, d, N]``, the layout the coefficient product makes: the exp is
contiguous, the BatchNorm sees ``[B·d, N]`` (the same per-neuron statistics over batch
and d) and the first Linear reads its weight columns in d-major order, instead of
transposing and copying N·d values a row (and their gradients) every step.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def _log_emb(emb: torch.Tensor, log_norm: nn.BatchNorm1d) -> torch.Tensor:
    """log|e| with |e| clamped at 1e-5, normalised per field: ``[B, F, d]``."""
    return log_norm(torch.log(emb.abs().clamp_min(1e-5)))


def reference_afn(emb: torch.Tensor, log_norm: nn.BatchNorm1d, coefficients: nn.Linear,
                  exp_norm: nn.BatchNorm1d, first: nn.Linear) -> torch.Tensor:
    """FuxiCTR: exp(coefficients · log|e|) as ``[B, N, d]``, BatchNorm, flatten, first Linear."""
    crossed = torch.exp(coefficients(_log_emb(emb, log_norm).transpose(1, 2)).transpose(1, 2))  # [B, N, d]
    return first(exp_norm(crossed).flatten(1))


def fast_afn(emb: torch.Tensor, log_norm: nn.BatchNorm1d, coefficients: nn.Linear,
             exp_norm: nn.BatchNorm1d, first: nn.Linear) -> torch.Tensor:
    """``reference_afn`` with the neurons d-major, ``[B, d, N]``, and the first weight permuted to match."""
    b, _, d = emb.shape
    crossed = torch.exp(coefficients(_log_emb(emb, log_norm).transpose(1, 2)))  # [B, d, N]
    neurons = exp_norm(crossed.reshape(b * d, -1)).view(b, -1)  # [B, d·N]
    weight = first.weight.view(first.out_features, -1, d).transpose(1, 2).reshape(first.out_features, -1)
    return F.linear(neurons, weight, first.bias)
