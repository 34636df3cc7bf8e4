"""AutoInt (Song et al., 2019): stacked multi-head self-attention over fields.

As RecBole: attention output → Linear, plus a parallel MLP branch, plus first-order.
"""
from __future__ import annotations

import torch
from torch import nn

from training.models.base import Body
from training.models.layers import MLP, MultiHeadSelfAttention


class AutoInt(Body):
    wants_first_order = True

    def __init__(self, num_fields: int, embedding_dim: int, out_dim: int, reg_weight: float = 0.0, *,
                 n_layers: int = 3, attention_size: int = 8, num_heads: int = 2, dropout_prob: float = 0.2,
                 mlp_hidden_size: list[int] = (256, 256, 256)) -> None:
        super().__init__(num_fields, embedding_dim, out_dim, reg_weight)
        layers, width = [], embedding_dim
        for _ in range(n_layers):
            layers.append(MultiHeadSelfAttention(width, attention_size, num_heads, dropout_prob))
            width = attention_size * num_heads
        self.attention = nn.Sequential(*layers)
        self.attention_out = nn.Linear(num_fields * width, out_dim)
        self.deep = MLP(num_fields * embedding_dim, list(mlp_hidden_size), out_dim, dropout=dropout_prob)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return self.attention_out(self.attention(emb).flatten(1)) + self.deep(emb.flatten(1))
