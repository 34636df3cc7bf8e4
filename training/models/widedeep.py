"""Wide & Deep (Cheng et al., 2016): a first-order wide part plus an MLP over all embeddings."""
from __future__ import annotations

import torch

from training.models.base import Body
from training.models.layers import MLP


class WideDeep(Body):
    wants_first_order = True

    def __init__(self, num_fields: int, embedding_dim: int, out_dim: int, reg_weight: float = 0.0, *,
                 mlp_hidden_size: list[int] = (128, 128, 128), dropout_prob: float = 0.2) -> None:
        super().__init__(num_fields, embedding_dim, out_dim, reg_weight)
        self.deep = MLP(num_fields * embedding_dim, list(mlp_hidden_size), out_dim, dropout=dropout_prob)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return self.deep(emb.flatten(1))
