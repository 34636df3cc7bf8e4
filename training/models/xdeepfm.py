"""xDeepFM (Lian et al., 2018): first-order + CIN (explicit vector-wise crosses) + DNN.

The CIN and DNN branches each emit ``out_dim`` logits and are summed, as RecBole does.
"""
from __future__ import annotations

import torch

from training.models.base import Body
from training.models.layers import CIN, MLP


class xDeepFM(Body):  # noqa: N801 - the architecture's published name
    wants_first_order = True

    def __init__(self, num_fields: int, embedding_dim: int, out_dim: int, reg_weight: float = 5e-4, *,
                 mlp_hidden_size: list[int] = (512, 512, 512), cin_layer_size: list[int] = (200, 200, 200),
                 dropout_prob: float = 0.1, direct: bool = False) -> None:
        super().__init__(num_fields, embedding_dim, out_dim, reg_weight)
        self.cin = CIN(num_fields, list(cin_layer_size), out_dim, split_half=not direct)
        self.dnn = MLP(num_fields * embedding_dim, list(mlp_hidden_size), out_dim, dropout=dropout_prob)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return self.cin(emb) + self.dnn(emb.flatten(1))

    def regularized_parameters(self) -> list[torch.Tensor]:
        """RecBole regularises the weights of the DNN and the CIN convolutions."""
        return [p for n, p in [*self.dnn.named_parameters(), *self.cin.named_parameters()] if n.endswith("weight")]
