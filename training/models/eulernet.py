"""EulerNet (Tian et al., 2023): feature interactions as linear operations in complex space.

A field embedding is a phase; Euler's formula turns products of features (arbitrary,
learnable orders) into weighted sums of log-moduli and phases.  Follows RecBole 1.2's
``EulerNet`` / ``EulerInteractionLayer`` line by line, except that the final linear
emits ``out_dim`` logits; the real and imaginary parts share it and are summed.
"""
from __future__ import annotations

import torch
from torch import nn

from training.models.base import Body
from training.models.layers import Dropout


class EulerInteractionLayer(nn.Module):
    def __init__(self, embedding_dim: int, in_fields: int, out_orders: int, drop_ex: float, drop_im: float,
                 apply_norm: bool) -> None:
        super().__init__()
        self.dim = embedding_dim
        self.inter_orders = nn.Parameter(torch.softmax(torch.randn(in_fields, out_orders) / 0.01, dim=0))
        self.im = nn.Linear(in_fields * embedding_dim, out_orders * embedding_dim)
        nn.init.normal_(self.im.weight, mean=0.0, std=0.1)
        self.bias_lam = nn.Parameter(torch.randn(1, embedding_dim, out_orders) * 0.01)
        self.bias_theta = nn.Parameter(torch.randn(1, embedding_dim, out_orders) * 0.01)
        self.drop_ex, self.drop_im = Dropout(drop_ex), Dropout(drop_im)
        self.norm_r = nn.LayerNorm([embedding_dim]) if apply_norm else nn.Identity()
        self.norm_p = nn.LayerNorm([embedding_dim]) if apply_norm else nn.Identity()

    def forward(self, r: torch.Tensor, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = r.shape[0]
        lam = 0.5 * torch.log(r ** 2 + p ** 2 + 1e-8)  # log-modulus
        theta = torch.atan2(p, r)  # phase
        lam, theta = self.drop_ex(lam.transpose(1, 2)), self.drop_ex(theta.transpose(1, 2))  # [B, d, F]
        lam = torch.exp(lam @ self.inter_orders + self.bias_lam).transpose(1, 2)  # explicit: [B, O, d]
        theta = (theta @ self.inter_orders + self.bias_theta).transpose(1, 2)
        r_im = torch.relu(self.im(self.drop_im(r.reshape(b, -1)))).view(b, -1, self.dim)  # implicit
        p_im = torch.relu(self.im(self.drop_im(p.reshape(b, -1)))).view(b, -1, self.dim)
        return self.norm_r(r_im + lam * torch.cos(theta)), self.norm_p(p_im + lam * torch.sin(theta))


class EulerNet(Body):
    def __init__(self, num_fields: int, embedding_dim: int, out_dim: int, reg_weight: float = 5e-4, *,
                 order_list: list[int] = (8,), drop_ex: float = 0.3, drop_im: float = 0.5,
                 apply_norm: bool = False) -> None:
        super().__init__(num_fields, embedding_dim, out_dim, reg_weight)
        shapes = [num_fields, *order_list]
        self.layers = nn.ModuleList(
            EulerInteractionLayer(embedding_dim, shapes[i], shapes[i + 1], drop_ex, drop_im, apply_norm)
            for i in range(len(order_list)))
        self.mu = nn.Parameter(torch.ones(1, num_fields, 1))
        self.reg = nn.Linear(shapes[-1] * embedding_dim, out_dim)
        nn.init.xavier_normal_(self.reg.weight)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        r, p = self.mu * torch.cos(emb), self.mu * torch.sin(emb)
        for layer in self.layers:
            r, p = layer(r, p)
        return self.reg(r.flatten(1)) + self.reg(p.flatten(1))

    def regularized_parameters(self) -> list[torch.Tensor]:
        """RecBole's ``RegularLoss``: the interaction layers, mu and the output layer."""
        return [*self.layers.parameters(), self.mu, *self.reg.parameters()]
