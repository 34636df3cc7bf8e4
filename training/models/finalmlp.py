"""FinalMLP (Mao et al., 2023): two MLP streams with feature gating and bilinear fusion.

As FuxiCTR: each stream sees the flattened embeddings re-weighted by its own learned
gate (2·σ(MLP(context)), the context being a learned bias when no field is chosen),
and a multi-head bilinear ``InteractionAggregation`` fuses the two streams into
``out_dim`` logits.
"""
from __future__ import annotations

import torch
from torch import nn

from training.models.base import Body
from training.models.layers import MLP


class _FeatureGate(nn.Module):
    def __init__(self, embedding_dim: int, feature_dim: int, hidden: list[int]) -> None:
        super().__init__()
        self.context = nn.Parameter(torch.zeros(1, embedding_dim))
        self.gate = MLP(embedding_dim, hidden, feature_dim)

    def forward(self, flat: torch.Tensor) -> torch.Tensor:
        return flat * (2.0 * torch.sigmoid(self.gate(self.context)))


class InteractionAggregation(nn.Module):
    """y = w_x·x + w_y·y + Σ_heads x_hᵀ W_xy,h y_h, each term ``out_dim`` wide."""

    def __init__(self, x_dim: int, y_dim: int, out_dim: int, num_heads: int) -> None:
        super().__init__()
        if x_dim % num_heads or y_dim % num_heads:
            raise ValueError(f"stream widths {x_dim}, {y_dim} must divide by num_heads={num_heads}")
        self.heads, self.hx, self.hy, self.out_dim = num_heads, x_dim // num_heads, y_dim // num_heads, out_dim
        self.w_x, self.w_y = nn.Linear(x_dim, out_dim), nn.Linear(y_dim, out_dim)
        self.w_xy = nn.Parameter(torch.empty(num_heads, self.hx, self.hy * out_dim))
        nn.init.xavier_normal_(self.w_xy)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # One [B, hx] @ [hx, hy·out] product per head: broadcasting a per-row matmul
        # instead would materialise B copies of w_xy in the backward pass.
        xw = torch.einsum("bhx,hxk->bhk", x.view(-1, self.heads, self.hx), self.w_xy)
        xw = xw.view(-1, self.heads, self.out_dim, self.hy)  # [B, H, out, hy]
        bilinear = (xw * y.view(-1, self.heads, 1, self.hy)).sum(dim=(1, 3))  # [B, out]
        return self.w_x(x) + self.w_y(y) + bilinear


class FinalMLP(Body):
    def __init__(self, num_fields: int, embedding_dim: int, out_dim: int, reg_weight: float = 0.0, *,
                 mlp1_hidden_size: list[int] = (400, 400, 400), mlp2_hidden_size: list[int] = (800,),
                 mlp1_dropout: float = 0.2, mlp2_dropout: float = 0.2, mlp_batch_norm: bool = True,
                 use_fs: bool = True, fs_hidden_size: list[int] = (800,), num_heads: int = 1) -> None:
        super().__init__(num_fields, embedding_dim, out_dim, reg_weight)
        width = num_fields * embedding_dim
        self.mlp1 = MLP(width, list(mlp1_hidden_size), dropout=mlp1_dropout, batch_norm=mlp_batch_norm)
        self.mlp2 = MLP(width, list(mlp2_hidden_size), dropout=mlp2_dropout, batch_norm=mlp_batch_norm)
        self.gate1 = _FeatureGate(embedding_dim, width, list(fs_hidden_size)) if use_fs else None
        self.gate2 = _FeatureGate(embedding_dim, width, list(fs_hidden_size)) if use_fs else None
        self.fusion = InteractionAggregation(self.mlp1.output_width, self.mlp2.output_width, out_dim, num_heads)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        flat = emb.flatten(1)
        x1 = self.gate1(flat) if self.gate1 is not None else flat
        x2 = self.gate2(flat) if self.gate2 is not None else flat
        return self.fusion(self.mlp1(x1), self.mlp2(x2))
