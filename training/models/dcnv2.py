"""DCN-V2 (Wang et al., 2021): full-rank cross network with a deep network, parallel or stacked.

Follows RecBole: BatchNorm in the MLP, ``reg_weight · Σ ||W_cross||₂`` on the cross weights.
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from training.models.base import Body
from training.models.layers import MLP, CrossNetV2


class DCNV2(Body):
    def __init__(self, num_fields: int, embedding_dim: int, out_dim: int, reg_weight: float = 2.0, *,
                 cross_layer_num: int = 2, mlp_hidden_size: list[int] = (256, 256, 256), dropout_prob: float = 0.2,
                 structure: Literal["parallel", "stacked"] = "parallel") -> None:
        super().__init__(num_fields, embedding_dim, out_dim, reg_weight)
        if structure not in ("parallel", "stacked"):
            raise ValueError(f"structure must be 'parallel' or 'stacked', got {structure!r}")
        width = num_fields * embedding_dim
        self.structure = structure
        self.cross = CrossNetV2(width, cross_layer_num)
        self.deep = MLP(width, list(mlp_hidden_size), dropout=dropout_prob, batch_norm=True)
        head_in = width + self.deep.output_width if structure == "parallel" else self.deep.output_width
        self.predict = nn.Linear(head_in, out_dim)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        x0 = emb.flatten(1)
        if self.structure == "parallel":
            return self.predict(torch.cat([self.cross(x0), self.deep(x0)], dim=1))
        return self.predict(self.deep(self.cross(x0)))

    def regularized_parameters(self) -> list[torch.Tensor]:
        return self.cross.weights()
