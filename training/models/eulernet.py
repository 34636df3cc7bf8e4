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
from torch import nn

from training.models.base import Body
from training.models.layers import Dropout


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

    def forward(self, rp: torch.Tensor, polar: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """``rp`` = the real and imaginary parts stacked, ``[2, B, F, d]`` → ``[2, B, O, d]``.

        Stacked so the implicit part (the same dropout rate and the same Linear on r and on
        p) is one dropout and one GEMM over 2B rows instead of two of each.  ``polar`` =
        (log-modulus, phase) of ``rp`` as ``[B, d, F]`` when the caller knows them in
        closed form (``EulerNet`` does for its first layer); otherwise they are computed.
        """
        r, p = rp[0], rp[1]
        b = r.shape[0]
        if polar is None:
            lam = 0.5 * torch.log(r ** 2 + p ** 2 + 1e-8)  # log-modulus, [B, F, d]
            theta = torch.atan2(p, r)  # phase
            lam, theta = lam.transpose(1, 2), theta.transpose(1, 2)  # [B, d, F]
        else:
            lam, theta = polar
        lam, theta = self.drop_ex(lam), self.drop_ex(theta)
        # Biases in the matmul's output dtype, as autocast treats a Linear's bias: adding an
        # fp32 bias to a bf16 product would run this and every later element-wise op as
        # mixed-dtype kernels, several times slower on CPU.
        lam = lam @ self.inter_orders
        lam = torch.exp(lam + self.bias_lam.to(lam.dtype)).transpose(1, 2)  # explicit modulus, [B, O, d]
        theta = theta @ self.inter_orders
        theta = (theta + self.bias_theta.to(theta.dtype)).transpose(1, 2)  # explicit phase
        rp_im = torch.relu(self.im(self.drop_im(rp).reshape(2 * b, -1))).reshape(2, b, -1, self.dim)  # implicit
        out = rp_im + lam * torch.stack([torch.cos(theta), torch.sin(theta)])
        if self.norm_r is not None and self.norm_p is not None:
            out = torch.stack([self.norm_r(out[0]), self.norm_p(out[1])])
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
        offset = (mu.detach() >= 0).to(emb.dtype) * math.pi  # π − shift, shift = π where μ < 0
        return lam, _WrapPhase.apply(emb.transpose(1, 2), offset)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        rp = self.mu.to(emb.dtype) * torch.stack([torch.cos(emb), torch.sin(emb)])  # [2, B, F, d]
        for i, layer in enumerate(self.layers):
            rp = layer(rp, self.input_polar(emb) if i == 0 else None)
        # predict(r) + predict(p) = W (r + p) + 2b: one GEMM, one backward
        return torch.addmm(2.0 * self.predict.bias, rp.sum(0).flatten(1), self.predict.weight.t())

    def regularized_parameters(self) -> list[torch.Tensor]:
        """RecBole's ``RegularLoss``: every interaction-layer parameter, μ and the output layer."""
        return [*self.layers.parameters(), self.mu, *self.predict.parameters()]
