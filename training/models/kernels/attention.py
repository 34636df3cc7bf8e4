"""Field self-attention (one ``nn.MultiheadAttention`` layer over fields), width-major.

Layout as in ``layers.MultiHeadSelfAttention``: ``[W, F, B]``, W = heads · hd, so every
projection is one GEMM over all F·B field vectors and the F×F products vectorise along
the contiguous batch axis.

``reference_field_attention`` is the maths spelled out with broadcast products; it traces
to plain MatMul/Softmax and is what export and evaluation run.

``fast_field_attention`` (a *training* kernel) is the same maths with a hand-written
backward.  Why: with F ≈ 7 fields and 4-wide heads every contraction is a tiny per-sample
product; autograd runs each as a broadcast multiply into a fresh ``[H, hd, F, F, B]``
tensor followed by a sum, forward and backward, saves a bf16 copy of everything under
autocast, and stacks the q/k/v gradients at the end.  Here each contraction is a short
loop of ``addcmul_`` into one preallocated output along the contiguous batch axis (no 5-D
temporaries), the projections are fp32 ``mm`` (oneDNN's bf16 kernels for K = 8 were
slower than MKL's fp32 ones), and the q/k/v gradients are written straight into one
``[3W, N]`` buffer.  CPU only: on other devices the reference runs.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch


def reference_field_attention(x: torch.Tensor, w_in: torch.Tensor, b_in: torch.Tensor, w_out: torch.Tensor,
                              b_out: torch.Tensor, mask: torch.Tensor | None, heads: int,
                              head_dim: int) -> torch.Tensor:
    """``y = W_o · MHA(W_in · x + b_in) + b_o`` over fields, ``[W, F, B]`` → ``[W, F, B]``.

    ``mask``: the dropout mask on the attention weights, already scaled by 1/(1-p), shape
    ``[H, F, F, B]``, or None.  ``heads`` and ``head_dim`` are plain ints (W = their
    product), so a traced graph scales the scores by a constant.
    """
    width, f, b = x.shape
    hd = head_dim
    qkv = torch.addmm(b_in.unsqueeze(1), w_in, x.reshape(width, f * b))
    q, k, v = qkv.view(3, heads, hd, f, b).unbind(0)  # each [H, hd, F, B]
    scores = ((q * hd ** -0.5).unsqueeze(3) * k.unsqueeze(2)).sum(1)  # [H, F_i, F_j, B]
    attn = torch.softmax(scores, dim=2)
    if mask is not None:
        attn = attn * mask
    out = (attn.unsqueeze(1) * v.unsqueeze(2)).sum(3)  # [H, hd, F_i, B]
    return torch.addmm(b_out.unsqueeze(1), w_out, out.reshape(width, f * b)).view(width, f, b)


def fast_field_attention(x: torch.Tensor, w_in: torch.Tensor, b_in: torch.Tensor, w_out: torch.Tensor,
                         b_out: torch.Tensor, mask: torch.Tensor | None, heads: int, head_dim: int) -> torch.Tensor:
    """``reference_field_attention`` with ``FieldAttentionFunction``'s backward, in fp32 under autocast."""
    return FieldAttentionFunction.apply(x, w_in, b_in, w_out, b_out, mask, heads)


def _contract(out: torch.Tensor, pairs: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """``out = Σ x · y`` over ``pairs`` (broadcast products), accumulated in place."""
    x, y = pairs[0]
    torch.mul(x, y, out=out)
    for x, y in pairs[1:]:
        out.addcmul_(x, y)
    return out


class FieldAttentionFunction(torch.autograd.Function):
    """``reference_field_attention`` as an autograd function; runs in fp32 whatever autocast says."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cpu", cast_inputs=torch.float32)
    def forward(ctx, x: torch.Tensor, w_in: torch.Tensor, b_in: torch.Tensor, w_out: torch.Tensor,
                b_out: torch.Tensor, mask: torch.Tensor | None, heads: int) -> torch.Tensor:
        width, f, b = x.shape
        hd = width // heads
        x2 = x.reshape(width, f * b)
        qkv = torch.mm(w_in, x2).add_(b_in.unsqueeze(1)).view(3, heads, hd, f, b)
        q, k, v = qkv.unbind(0)
        # scores[h, i, j, b] = Σ_c q[h, c, i, b] k[h, c, j, b]
        scores = _contract(x.new_empty(heads, f, f, b), [(q[:, c, :, None], k[:, c, None]) for c in range(hd)])
        probs = torch.softmax(scores.mul_(hd ** -0.5), dim=2)
        attn = probs * mask if mask is not None else probs
        # out[h, c, i, b] = Σ_j attn[h, i, j, b] v[h, c, j, b]
        out = _contract(x.new_empty(heads, hd, f, b), [(attn[:, None, :, j], v[:, :, None, j]) for j in range(f)])
        y = torch.mm(w_out, out.view(width, f * b)).add_(b_out.unsqueeze(1))
        ctx.save_for_backward(x2, w_in, w_out, qkv, probs, attn, mask, out)
        return y.view(width, f, b)

    @staticmethod
    @torch.amp.custom_bwd(device_type="cpu")
    def backward(ctx, dy: torch.Tensor):
        x2, w_in, w_out, qkv, probs, attn, mask, out = ctx.saved_tensors
        width, n = x2.shape
        _, heads, hd, f, b = qkv.shape
        q, k, v = qkv.unbind(0)
        dy = dy.reshape(width, n)
        dw_out = torch.mm(dy, out.view(width, n).t())
        db_out = dy.sum(1)
        d_out = torch.mm(w_out.t(), dy).view(heads, hd, f, b)
        d_qkv = x2.new_empty(3, heads, hd, f, b)
        d_attn = _contract(x2.new_empty(heads, f, f, b), [(d_out[:, c, :, None], v[:, c, None]) for c in range(hd)])
        _contract(d_qkv[2], [(attn[:, None, i], d_out[:, :, i, None]) for i in range(f)])  # dv
        if mask is not None:
            d_attn.mul_(mask)
        d_scores = torch._softmax_backward_data(d_attn, probs, 2, probs.dtype).mul_(hd ** -0.5)
        _contract(d_qkv[0], [(d_scores[:, None, :, j], k[:, :, None, j]) for j in range(f)])  # dq
        _contract(d_qkv[1], [(d_scores[:, None, i], q[:, :, i, None]) for i in range(f)])  # dk
        d_qkv = d_qkv.view(3 * width, n)
        dw_in = torch.mm(d_qkv, x2.t())
        db_in = d_qkv.sum(1)
        dx = torch.mm(w_in.t(), d_qkv).view(width, f, b)
        return dx, dw_in, db_in, dw_out, db_out, None, None
