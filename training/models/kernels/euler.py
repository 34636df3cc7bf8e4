"""EulerNet's forward pass (a *forward* kernel): RecBole's maths and the rewritten fast form.

``reference_euler_net`` is RecBole 1.2's ``EulerNet.forward`` step by step: the complex
input μ·e^{ie} as (r, p), per layer the polar form (½·log(r² + p²), atan2(p, r)), order
mixing of log-moduli and phases, back to (r, p) plus the implicit ReLU Linear, and the
same output Linear on r and p, summed.

``fast_euler_net`` computes the same values and gradients (tested to fp64 precision,
phases past ±π and negative μ included) with:

* **closed-form polar input.**  The first layer's input is μ·e^{ie} itself, so its
  log-modulus is ½·log(μ² + 1e-8) per field (its gradient in e is zero analytically) and
  its phase is e folded into (−π, π] (+π where μ < 0), with ∂θ/∂e = 1 and ∂θ/∂μ = 0
  exactly, as atan2's gradients are (``WrapPhase``): no atan2/log over the batch.
* **μ folded into the first implicit weight** instead of scaling ``[2, B, F, d]``
  (exact: dropout is an element-wise mask, so it commutes with the scaling).
* **r and p stacked** ``[2, B, F, d]``: the implicit part is one dropout and one GEMM
  over 2B rows.
* **one sine for the last layer**: the output Linear only needs r + p, and
  cos θ + sin θ = √2·sin(θ + π/4), so the √2 and π/4 ride on the existing bias adds;
  predict(r) + predict(p) = W (r + p) + 2b is one GEMM.
* **contiguous swaps** (``SwapFieldsAndDims``): autograd's transpose backward is a
  strided view, and every element-wise kernel it then meets runs strided over a 7- or
  8-wide inner axis; one contiguous copy each way is cheaper.
* **thread-parallel order mixing** (``order_mix``): the weight gradient xᵀ·g of the tall
  ``[…, F] @ [F, O]`` product reduces over all rows, and the CPU GEMM does not split a
  reduction across threads; here blocks of rows are reduced in parallel and summed.
* biases cast to the matmul's output dtype, as autocast treats a Linear's bias (an fp32
  bias added to a bf16 product would run every later element-wise op mixed-dtype).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

import torch
from torch import nn
from torch.nn import functional as F


class EulerLayer(Protocol):
    """The parameters of one Euler interaction layer (``eulernet.EulerInteractionLayer``)."""

    dim: int
    inter_orders: torch.Tensor  # [F_in, O]
    im: nn.Linear  # F_in·d → O·d
    bias_lam: torch.Tensor  # [1, d, O]
    bias_theta: torch.Tensor  # [1, d, O]
    drop_ex: nn.Module
    drop_im: nn.Module
    norm_r: nn.Module | None
    norm_p: nn.Module | None


# ---------------------------------------------------------------- reference

def reference_euler_layer(layer: EulerLayer, r: torch.Tensor, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """RecBole's ``EulerInteractionLayer.forward``: (r, p) ``[B, F, d]`` → ``[B, O, d]`` each."""
    b = r.shape[0]
    lam = 0.5 * torch.log(r ** 2 + p ** 2 + 1e-8)  # log-modulus
    theta = torch.atan2(p, r)  # phase
    lam, theta = layer.drop_ex(lam.transpose(1, 2)), layer.drop_ex(theta.transpose(1, 2))  # [B, d, F]
    lam = torch.exp(lam @ layer.inter_orders + layer.bias_lam)  # [B, d, O]
    theta = theta @ layer.inter_orders + layer.bias_theta
    lam, theta = lam.transpose(1, 2), theta.transpose(1, 2)  # [B, O, d]
    r = torch.relu(layer.im(layer.drop_im(r).flatten(1))).view(b, -1, layer.dim)
    p = torch.relu(layer.im(layer.drop_im(p).flatten(1))).view(b, -1, layer.dim)
    r, p = r + lam * torch.cos(theta), p + lam * torch.sin(theta)
    if layer.norm_r is not None and layer.norm_p is not None:
        r, p = layer.norm_r(r), layer.norm_p(p)
    return r, p


def reference_euler_net(emb: torch.Tensor, mu: torch.Tensor, layers: Sequence[EulerLayer],
                        predict: nn.Linear) -> torch.Tensor:
    """RecBole's ``EulerNet.forward`` on ``[B, F, d]`` embeddings, μ ``[1, F, 1]``: logits ``[B, out]``."""
    r, p = mu * torch.cos(emb), mu * torch.sin(emb)
    for layer in layers:
        r, p = reference_euler_layer(layer, r, p)
    return predict(r.flatten(1)) + predict(p.flatten(1))


# ---------------------------------------------------------------- fast

class SwapFieldsAndDims(torch.autograd.Function):
    """``x.transpose(1, 2).contiguous()`` whose backward also hands back a contiguous gradient."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return x.transpose(1, 2).contiguous()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return grad.transpose(1, 2).contiguous()


class WrapPhase(torch.autograd.Function):
    """``atan2(μ sin e, μ cos e)`` for real e and μ ≠ 0: e (+π where μ < 0) folded into (−π, π].

    Backward is the identity (∂θ/∂e = 1; the offset carries no gradient).
    """

    @staticmethod
    def forward(ctx, e: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        # π − ((π − x) mod 2π) ∈ (−π, π], atan2's range; offset = π − shift, shift = π where μ < 0
        return math.pi - torch.remainder(offset - e, 2 * math.pi)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return grad, None


class OrderMix(torch.autograd.Function):
    """``x @ w`` for a tall ``x`` (``[…, F]``) and a tiny ``w`` (``[F, O]``), weight gradient over row blocks."""

    CHUNKS = 16

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        w = w.to(x.dtype)
        xs = x.reshape(-1, x.shape[-1])  # 2-D: a batched ``x @ w`` on a strided x runs as a slow bmm
        ctx.save_for_backward(xs, w)
        ctx.shape = x.shape
        return (xs @ w).view(*x.shape[:-1], w.shape[1])

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        xs, w = ctx.saved_tensors
        rows = xs.shape[0]
        gs = grad.to(xs.dtype).reshape(rows, -1)
        grad_x = (gs @ w.t()).view(ctx.shape)
        chunks = OrderMix.CHUNKS
        if rows % chunks:
            grad_w = xs.t() @ gs
        else:
            grad_w = torch.bmm(xs.view(chunks, rows // chunks, -1).transpose(1, 2),
                               gs.view(chunks, rows // chunks, -1)).sum(0)
        return grad_x, grad_w


def order_mix(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``x @ w`` in autocast's dtype, with ``OrderMix``'s parallel weight gradient."""
    if torch.is_autocast_enabled(x.device.type):
        x = x.to(torch.get_autocast_dtype(x.device.type))
    return OrderMix.apply(x, w)


def closed_form_polar(emb: torch.Tensor, mu: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-modulus and phase of μ·e^{ie}, ``[B, d, F]`` each, without atan2 or log over the batch."""
    b, f, d = emb.shape
    mu = mu.view(1, 1, f).to(torch.promote_types(mu.dtype, torch.float32))  # the log never in bf16
    lam = (0.5 * torch.log(mu ** 2 + 1e-8)).to(emb.dtype).expand(b, d, f)
    offset = (mu.detach() >= 0).to(emb.dtype).view(1, f, 1) * math.pi  # π − shift, shift = π where μ < 0
    return lam, SwapFieldsAndDims.apply(WrapPhase.apply(emb, offset))


def fast_euler_layer(layer: EulerLayer, rp: torch.Tensor, polar: tuple[torch.Tensor, torch.Tensor] | None = None,
                     input_scale: torch.Tensor | None = None, sum_parts: bool = False) -> torch.Tensor:
    """``reference_euler_layer`` on r and p stacked, ``[2, B, F, d]`` → ``[2, B, O, d]``.

    Args:
        polar: (log-modulus, phase) of the input as ``[B, d, F]`` when known in closed form.
        input_scale: ``[1, F·d]`` factors the true input has over ``rp`` (μ per field),
            folded into the implicit Linear's weight.
        sum_parts: return r + p as ``[B, O·d]`` (all the output layer needs).
    """
    b = rp.shape[1]
    if polar is None:
        r, p = rp[0], rp[1]
        lam = 0.5 * torch.log(r ** 2 + p ** 2 + 1e-8)
        theta = torch.atan2(p, r)
        lam, theta = SwapFieldsAndDims.apply(lam), SwapFieldsAndDims.apply(theta)  # [B, d, F]
    else:
        lam, theta = polar
    lam, theta = layer.drop_ex(lam), layer.drop_ex(theta)
    lam = order_mix(lam, layer.inter_orders)  # [B, d, O]
    theta = order_mix(theta, layer.inter_orders)
    weight = layer.im.weight if input_scale is None else layer.im.weight * input_scale
    implicit = torch.relu(F.linear(layer.drop_im(rp).reshape(2 * b, -1), weight, layer.im.bias))  # [2B, O·d]
    if sum_parts and layer.norm_r is None:
        modulus = torch.exp(lam + (layer.bias_lam + 0.5 * math.log(2.0)).to(lam.dtype))
        explicit = modulus * torch.sin(theta + (layer.bias_theta + 0.25 * math.pi).to(theta.dtype))
        halves = implicit.view(2, b, -1)
        return halves[0] + halves[1] + SwapFieldsAndDims.apply(explicit).view(b, -1)
    lam = SwapFieldsAndDims.apply(torch.exp(lam + layer.bias_lam.to(lam.dtype)))  # explicit modulus, [B, O, d]
    theta = SwapFieldsAndDims.apply(theta + layer.bias_theta.to(theta.dtype))  # explicit phase
    out = implicit.reshape(2, b, -1, layer.dim) + lam * torch.stack([torch.cos(theta), torch.sin(theta)])
    if layer.norm_r is not None and layer.norm_p is not None:
        out = torch.stack([layer.norm_r(out[0]), layer.norm_p(out[1])])
    if sum_parts:
        return out.sum(0).flatten(1)
    return out


def fast_euler_net(emb: torch.Tensor, mu: torch.Tensor, layers: Sequence[EulerLayer],
                   predict: nn.Linear) -> torch.Tensor:
    """``reference_euler_net`` through the closed-form input, the folded μ and the summed last layer."""
    _, f, d = emb.shape
    rp = torch.stack([torch.cos(emb), torch.sin(emb)])  # [2, B, F, d]: the unit phasors; μ·e^{ie} is never built
    first, *rest = layers
    mu_columns = mu.view(f, 1).expand(f, d).reshape(1, f * d)
    rp = fast_euler_layer(first, rp, closed_form_polar(emb, mu), mu_columns, sum_parts=not rest)
    for i, layer in enumerate(rest, start=1):
        rp = fast_euler_layer(layer, rp, sum_parts=i == len(rest))
    return torch.addmm(2.0 * predict.bias, rp, predict.weight.t())
