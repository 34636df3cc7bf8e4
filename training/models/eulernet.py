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

from collections.abc import Sequence

import torch
from torch import nn

from training.models.base import Body
from training.models.layers import Dropout


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

    def forward(self, r: torch.Tensor, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = r.shape[0]
        lam = 0.5 * torch.log(r ** 2 + p ** 2 + 1e-8)  # log-modulus, [B, F, d]
        theta = torch.atan2(p, r)  # phase
        lam, theta = self.drop_ex(lam.transpose(1, 2)), self.drop_ex(theta.transpose(1, 2))  # [B, d, F]
        lam = torch.exp(lam @ self.inter_orders + self.bias_lam).transpose(1, 2)  # explicit modulus, [B, O, d]
        theta = (theta @ self.inter_orders + self.bias_theta).transpose(1, 2)  # explicit phase
        r_im = torch.relu(self.im(self.drop_im(r).reshape(b, -1))).reshape(b, -1, self.dim)  # implicit
        p_im = torch.relu(self.im(self.drop_im(p).reshape(b, -1))).reshape(b, -1, self.dim)
        o_r, o_p = r_im + lam * torch.cos(theta), p_im + lam * torch.sin(theta)
        if self.norm_r is not None and self.norm_p is not None:
            o_r, o_p = self.norm_r(o_r), self.norm_p(o_p)
        return o_r, o_p


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

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        r, p = self.mu * torch.cos(emb), self.mu * torch.sin(emb)
        for layer in self.layers:
            r, p = layer(r, p)
        return self.predict(r.flatten(1)) + self.predict(p.flatten(1))

    def regularized_parameters(self) -> list[torch.Tensor]:
        """RecBole's ``RegularLoss``: every interaction-layer parameter, μ and the output layer."""
        return [*self.layers.parameters(), self.mu, *self.predict.parameters()]
