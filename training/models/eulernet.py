"""EulerNet (Tian et al., SIGIR 2023): feature interactions as linear operations in complex space.

Each field embedding e becomes the complex vector μ·e^{ie} (r = μ cos e, p = μ sin e).
In polar form a product of features with learnable exponents is a *linear* map of
log-moduli and phases (Euler's formula), so the explicit part learns arbitrary-order
interactions; an implicit part (ReLU Linear on r and p) runs alongside.

Follows RecBole 1.2's ``EulerNet`` / ``EulerInteractionLayer`` step by step, including
its initialisation (``im`` ~ N(0, 0.1), output ~ N(0, 0.01), zero Linear biases,
orders from a sharp softmax) and its L2 term over every interaction-layer parameter,
μ and the output layer.  The output Linear emits ``out_dim`` logits; as in RecBole the
same Linear is applied to the real and the imaginary part and the two are summed.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ratingctr.training.models.base import Body
from ratingctr.training.models.layers import Dropout


class _SwapFieldsAndDims(torch.autograd.Function):
    """``x.transpose(1, 2).contiguous()`` whose backward also hands back a contiguous gradient.

    Why: autograd's transpose backward is a strided view, and every element-wise kernel
    it then meets (the sine/modulus products, the accumulation of e's three gradients)
    runs strided over a 7- or 8-wide inner axis: ~600 µs a call for ``[4096, 7, 16]`` on
    this CPU against ~100 µs for one contiguous transpose copy.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return x.transpose(1, 2).contiguous()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return grad.transpose(1, 2).contiguous()


class _WrapPhase(torch.autograd.Function):
    """``atan2(μ sin e, μ cos e)`` for real e and μ ≠ 0, computed as e (+π where μ < 0) folded into (−π, π].

    Why: the first Euler layer's input is μ·e^{ie} itself, so its polar form is known in
    closed form: the phase is e up to a multiple of 2π (and π for negative μ), with
    ∂θ/∂e = 1 and ∂θ/∂μ = 0 exactly — the same values RecBole's atan2 path produces
    analytically.  The fold costs two element-wise passes; atan2 with its backward cost
    about ten.  Backward is the identity, so it costs nothing.
    """

    @staticmethod
    def forward(ctx, e: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        # π − ((π − x) mod 2π) ∈ (−π, π], atan2's range; offset = π − shift, shift = π where μ < 0
        return math.pi - torch.remainder(offset - e, 2 * math.pi)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return grad, None


class _OrderMix(torch.autograd.Function):
    """``x @ w`` for a tall ``x`` (``[…, F]``, ~65k rows) and a tiny ``w`` (``[F, O]``).

    Why: the weight gradient xᵀ·g reduces over all rows, and the CPU GEMM does not split a
    reduction across threads: with a 7×8 output one thread did all of it (1.4 ms a call
    on this CPU, the largest single kernel of an EulerNet step).  Here the rows are cut in
    ``_CHUNKS`` blocks, one ``bmm`` reduces each block in parallel and a sum adds them.
    """

    _CHUNKS = 16

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
        chunks = _OrderMix._CHUNKS
        if rows % chunks:
            grad_w = xs.t() @ gs
        else:
            grad_w = torch.bmm(xs.view(chunks, rows // chunks, -1).transpose(1, 2),
                               gs.view(chunks, rows // chunks, -1)).sum(0)
        return grad_x, grad_w


def order_mix(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``x @ w`` in autocast's dtype, with ``_OrderMix``'s parallel weight gradient."""
    if torch.is_autocast_enabled(x.device.type):
        x = x.to(torch.get_autocast_dtype(x.device.type))
    return _OrderMix.apply(x, w)


class EulerInteractionLayer(nn.Module):
    """One complex-space interaction: ``in_fields`` complex vectors → ``out_orders`` ones.

    Args:
        embedding_dim: d.
        in_fields: complex vectors in.
        out_orders: complex vectors out (one learned exponent vector each).
        drop_ex: dropout on log-modulus and phase (explicit part).
        drop_im: dropout on r and p before the implicit Linear.
        apply_norm: LayerNorm on the outputs.
    """

    def __init__(self, embedding_dim: int, in_fields: int, out_orders: int, drop_ex: float, drop_im: float,
                 apply_norm: bool) -> None:
        super().__init__()
        self.dim = embedding_dim
        self.inter_orders = nn.Parameter(torch.softmax(torch.randn(in_fields, out_orders) / 0.01, dim=0))
        self.im = nn.Linear(in_fields * embedding_dim, out_orders * embedding_dim)
        nn.init.normal_(self.im.weight, mean=0.0, std=0.1)
        nn.init.zeros_(self.im.bias)
        self.bias_lam = nn.Parameter(torch.randn(1, embedding_dim, out_orders) * 0.01)
        self.bias_theta = nn.Parameter(torch.randn(1, embedding_dim, out_orders) * 0.01)
        self.drop_ex, self.drop_im = Dropout(drop_ex), Dropout(drop_im)
        self.norm_r = nn.LayerNorm(embedding_dim) if apply_norm else None
        self.norm_p = nn.LayerNorm(embedding_dim) if apply_norm else None

    def forward(self, rp: torch.Tensor, polar: tuple[torch.Tensor, torch.Tensor] | None = None,
                input_scale: torch.Tensor | None = None, sum_parts: bool = False) -> torch.Tensor:
        """``rp`` = the real and imaginary parts stacked, ``[2, B, F, d]`` → ``[2, B, O, d]``.

        Stacked so the implicit part (the same dropout rate and the same Linear on r and on
        p) is one dropout and one GEMM over 2B rows instead of two of each.

        Args:
            polar: (log-modulus, phase) of the input as ``[B, d, F]`` when the caller knows
                them in closed form (``EulerNet`` does for its first layer).
            input_scale: ``[F·d]`` factors the true input has over ``rp`` (μ per field):
                folded into the implicit Linear's weight instead of scaling ``[2, B, F, d]``.
                Exact: dropout is an element-wise mask, so it commutes with the scaling.
            sum_parts: return r + p as ``[B, O·d]`` (all the output layer needs) without
                building the stacked output: with cos θ + sin θ = √2·sin(θ + π/4), the
                explicit part is one sine, the √2 and π/4 ride on the existing bias adds.
        """
        b = rp.shape[1]
        if polar is None:
            r, p = rp[0], rp[1]
            lam = 0.5 * torch.log(r ** 2 + p ** 2 + 1e-8)  # log-modulus, [B, F, d]
            theta = torch.atan2(p, r)  # phase
            lam, theta = _SwapFieldsAndDims.apply(lam), _SwapFieldsAndDims.apply(theta)  # [B, d, F]
        else:
            lam, theta = polar
        lam, theta = self.drop_ex(lam), self.drop_ex(theta)
        lam = order_mix(lam, self.inter_orders)  # [B, d, O]
        theta = order_mix(theta, self.inter_orders)
        weight = self.im.weight if input_scale is None else self.im.weight * input_scale
        implicit = torch.relu(F.linear(self.drop_im(rp).reshape(2 * b, -1), weight, self.im.bias))  # [2B, O·d]
        # Biases in the matmul's output dtype, as autocast treats a Linear's bias: adding an
        # fp32 bias to a bf16 product would run this and every later element-wise op as
        # mixed-dtype kernels, several times slower on CPU.
        if sum_parts and self.norm_r is None:
            modulus = torch.exp(lam + (self.bias_lam + 0.5 * math.log(2.0)).to(lam.dtype))
            explicit = modulus * torch.sin(theta + (self.bias_theta + 0.25 * math.pi).to(theta.dtype))
            halves = implicit.view(2, b, -1)
            return halves[0] + halves[1] + _SwapFieldsAndDims.apply(explicit).view(b, -1)
        lam = _SwapFieldsAndDims.apply(torch.exp(lam + self.bias_lam.to(lam.dtype)))  # explicit modulus, [B, O, d]
        theta = _SwapFieldsAndDims.apply(theta + self.bias_theta.to(theta.dtype))  # explicit phase
        out = implicit.reshape(2, b, -1, self.dim) + lam * torch.stack([torch.cos(theta), torch.sin(theta)])
        if self.norm_r is not None and self.norm_p is not None:
            out = torch.stack([self.norm_r(out[0]), self.norm_p(out[1])])
        if sum_parts:
            return out.sum(0).flatten(1)
        return out


class EulerNet(Body):
    """Stacked Euler interaction layers → ``out_dim`` logits.

    Args:
        order_list: output vectors of each interaction layer.
        drop_ex: explicit-part dropout.
        drop_im: implicit-part dropout.
        apply_norm: LayerNorm after each layer.
    """

    def __init__(self, num_fields: int, embedding_dim: int, out_dim: int, reg_weight: float = 5e-4, *,
                 order_list: Sequence[int] = (8,), drop_ex: float = 0.3, drop_im: float = 0.5,
                 apply_norm: bool = False) -> None:
        super().__init__(num_fields, embedding_dim, out_dim, reg_weight)
        if not order_list:
            raise ValueError("EulerNet needs at least one interaction layer (order_list is empty)")
        shapes = [num_fields, *order_list]
        self.layers = nn.ModuleList(
            EulerInteractionLayer(embedding_dim, n_in, n_out, drop_ex, drop_im, apply_norm)
            for n_in, n_out in zip(shapes[:-1], shapes[1:]))
        self.mu = nn.Parameter(torch.ones(1, num_fields, 1))
        self.predict = nn.Linear(shapes[-1] * embedding_dim, out_dim)  # RecBole's ``self.reg``
        nn.init.normal_(self.predict.weight, mean=0.0, std=0.01)
        nn.init.zeros_(self.predict.bias)

    def input_polar(self, emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-modulus and phase of μ·e^{ie}, ``[B, d, F]`` each, without atan2 or log over the batch.

        |μ e^{ie}| = |μ|, so the log-modulus is ½·log(μ² + 1e-8) per field, broadcast (RecBole
        computes ½·log(r² + p² + 1e-8) with r² + p² = μ²; its gradient in e is zero
        analytically); the phase is ``_WrapPhase``.
        """
        b, f, d = emb.shape
        mu = self.mu.view(1, 1, f).to(torch.promote_types(self.mu.dtype, torch.float32))  # the log never in bf16
        lam = (0.5 * torch.log(mu ** 2 + 1e-8)).to(emb.dtype).expand(b, d, f)
        offset = (mu.detach() >= 0).to(emb.dtype).view(1, f, 1) * math.pi  # π − shift, shift = π where μ < 0
        return lam, _SwapFieldsAndDims.apply(_WrapPhase.apply(emb, offset))

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        b, f, d = emb.shape
        # The unit phasors of e; μ·e^{ie} is never built: the first layer gets its polar form in
        # closed form and μ folded into its implicit weight.
        rp = torch.stack([torch.cos(emb), torch.sin(emb)])  # [2, B, F, d]
        first, *rest = self.layers
        mu_columns = self.mu.view(f, 1).expand(f, d).reshape(1, f * d)
        rp = first(rp, self.input_polar(emb), mu_columns, sum_parts=not rest)
        for i, layer in enumerate(rest, start=1):
            rp = layer(rp, sum_parts=i == len(rest))
        # predict(r) + predict(p) = W (r + p) + 2b: one GEMM, one backward
        return torch.addmm(2.0 * self.predict.bias, rp, self.predict.weight.t())

    def regularized_parameters(self) -> list[torch.Tensor]:
        """RecBole's ``RegularLoss``: every interaction-layer parameter, μ and the output layer."""
        return [*self.layers.parameters(), self.mu, *self.predict.parameters()]
