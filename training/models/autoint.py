"""AutoInt (Song et al., 2019): multi-head self-attention over fields, plus an MLP and first order.

As RecBole 1.2's ``AutoInt``: project fields to ``attention_size``, ``n_layers`` stacked
multi-head attention layers, one residual from the raw embeddings + ReLU, flatten →
Linear; a parallel MLP (dropout before each Linear) → Linear; the first-order part is
added by the wrapper.  ``attention_size`` is RecBole's: the total width, shared by
the heads.  RecBole's ``dropout_probs`` = [attention, MLP, unused]; one rate serves both.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ratingctr.training.models.base import Body
from ratingctr.training.models.layers import MLP, MultiHeadSelfAttention, reset_linear_


class AutoInt(Body):
    """Attention branch + MLP branch, each ``out_dim`` logits, summed.

    Args:
        n_layers: stacked attention layers.
        attention_size: total attention width (must divide by ``num_heads``).
        num_heads: attention heads.
        dropout_prob: dropout on attention weights and before every MLP Linear.
        mlp_hidden_size: hidden widths of the MLP branch.
        has_residual: add the projected raw embeddings before the ReLU.
        first_order: ``wide`` (first-order logits per output) or ``broadcast`` (the authors' scalar).
    """

    wants_first_order = True

    def __init__(self, num_fields: int, embedding_dim: int, out_dim: int, reg_weight: float = 0.0, *,
                 n_layers: int = 3, attention_size: int = 8, num_heads: int = 2, dropout_prob: float = 0.2,
                 mlp_hidden_size: Sequence[int] = (256, 256, 256), has_residual: bool = True,
                 first_order: str = "wide") -> None:
        super().__init__(num_fields, embedding_dim, out_dim, reg_weight)
        self.set_first_order(first_order)
        if attention_size % num_heads:
            raise ValueError(f"attention_size={attention_size} must be divisible by num_heads={num_heads}")
        self.attention = MultiHeadSelfAttention(embedding_dim, attention_size // num_heads, num_heads,
                                                dropout=dropout_prob, num_layers=n_layers, residual=has_residual)
        self.attention_out = nn.Linear(num_fields * attention_size, out_dim)
        self.deep = MLP(num_fields * embedding_dim, mlp_hidden_size, out_dim, dropout=dropout_prob,
                        dropout_first=True)
        self.apply(reset_linear_)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return self.attention_out(self.attention(emb).flatten(1)) + self.deep(emb.flatten(1))
