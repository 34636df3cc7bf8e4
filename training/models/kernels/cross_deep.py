"""The parallel cross + deep prediction ``W·[c ‖ d] + b`` (a *training* kernel).

The reference concatenates and runs one Linear, which is also the one Gemm export
traces.  The fast path uses ``W·[c ‖ d] = W_c·c + W_d·d`` with the weight split by
columns: training then skips materialising the concatenation (a fresh ``[B, F·d + H]``
copy forward and split-up gradients backward).
"""
from __future__ import annotations

import torch
from torch.nn import functional as F


def reference_parallel_predict(cross: torch.Tensor, deep: torch.Tensor, weight: torch.Tensor,
                               bias: torch.Tensor | None) -> torch.Tensor:
    """``Linear([cross ‖ deep])``."""
    return F.linear(torch.cat([cross, deep], dim=1), weight, bias)


def fast_parallel_predict(cross: torch.Tensor, deep: torch.Tensor, weight: torch.Tensor,
                          bias: torch.Tensor | None) -> torch.Tensor:
    """``W_c·cross + b + W_d·deep`` on the column-split weight: no concatenation."""
    w_cross, w_deep = weight.split([cross.shape[1], deep.shape[1]], dim=1)
    return F.linear(cross, w_cross, bias) + F.linear(deep, w_deep)
