"""FinalMLP's multi-head bilinear term Σ_h x_hᵀ W_h y_h, ``out`` wide (a *forward* kernel).

``w_xy`` has FuxiCTR's shape ``[H·hx·hy, out]``, read as ``[H, hx, out, hy]``.

The reference is the einsum of FuxiCTR's form.  The fast path is, per head, one
``[B, hx] @ [hx, out·hy]`` GEMM and then a batched ``[out, hy] @ [hy, 1]`` product with
y_h: broadcasting a per-row matmul would materialise B copies of w_xy in the backward,
and a broadcast multiply + sum over ``[B, H, out, hy]`` costs ∝ out, which is what a
5-level rating head multiplies.
"""
from __future__ import annotations

import torch

#: FuxiCTR's reading of ``w_xy``: (heads, hx, out, hy), plain ints so a traced graph has constant shapes
Layout = tuple[int, int, int, int]


def reference_bilinear(x: torch.Tensor, y: torch.Tensor, w_xy: torch.Tensor, layout: Layout) -> torch.Tensor:
    """``einsum("bhi,hiok,bhk->bo")`` over the heads of x ``[B, H·hx]`` and y ``[B, H·hy]``."""
    heads, hx, _, hy = layout
    b = x.shape[0]
    return torch.einsum("bhi,hiok,bhk->bo", x.view(b, heads, hx), w_xy.view(layout), y.view(b, heads, hy))


def fast_bilinear(x: torch.Tensor, y: torch.Tensor, w_xy: torch.Tensor, layout: Layout) -> torch.Tensor:
    """``reference_bilinear`` as per-head GEMMs and batched matrix-vector products."""
    heads, hx, out, hy = layout
    w = w_xy.view(heads, hx, out * hy)
    x_heads, y_heads = x.split(hx, dim=1), y.split(hy, dim=1)
    return sum(torch.bmm(torch.mm(xh, wh).view(-1, out, hy), yh.unsqueeze(2)).squeeze(2)
               for xh, wh, yh in zip(x_heads, w.unbind(0), y_heads))
