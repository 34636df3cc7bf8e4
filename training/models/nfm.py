"""NFM (He & Chua, 2017): first-order part + bi-interaction pooling fed to an MLP.

Follows RecBole: BatchNorm on the pooled vector, sigmoid MLP with BatchNorm, and a
bias-free prediction layer.
"""
from __future__ import annotations

import torch
from torch import nn

from training.models.base import Body
from training.models.layers import MLP, BiInteraction


class NFM(Body):
    wants_first_order = True

    def __init__(self, num_fields: int, embedding_dim: int, out_dim: int, reg_weight: float = 0.0, *,
                 mlp_hidden_size: list[int] = (512, 512, 512), dropout_prob: float = 0.5) -> None:
        super().__init__(num_fields, embedding_dim, out_dim, reg_weight)
        self.pool = BiInteraction()
        self.norm = nn.BatchNorm1d(embedding_dim)
        self.mlp = MLP(embedding_dim, list(mlp_hidden_size), dropout=dropout_prob, batch_norm=True, act="sigmoid")
        self.predict = nn.Linear(self.mlp.output_width, out_dim, bias=False)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return self.predict(self.mlp(self.norm(self.pool(emb))))
