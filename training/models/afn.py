"""AFN (Cheng et al., 2020): adaptive-order interactions through a logarithmic transformation.

log|e| → linear mix over fields → exp gives learnable-order products of features; an
MLP scores them.  With ``ensemble_dnn`` (AFN+), a plain DNN branch adds its own
``out_dim`` logits.  As FuxiCTR, BatchNorm stabilises the log and exp spaces.
Deviation: AFN+ in FuxiCTR gives the DNN its own embedding table; ours shares the
encoder's, so the graph encoder can feed both branches.
"""
from __future__ import annotations

import torch
from torch import nn

from training.models.base import Body
from training.models.layers import MLP


class AFN(Body):
    def __init__(self, num_fields: int, embedding_dim: int, out_dim: int, reg_weight: float = 0.0, *,
                 logarithmic_neurons: int = 256, afn_hidden_size: list[int] = (400, 400, 400),
                 afn_dropout: float = 0.2, ensemble_dnn: bool = True, dnn_hidden_size: list[int] = (400, 400, 400),
                 dnn_dropout: float = 0.2) -> None:
        super().__init__(num_fields, embedding_dim, out_dim, reg_weight)
        self.log_norm = nn.BatchNorm1d(num_fields)
        self.coefficients = nn.Linear(num_fields, logarithmic_neurons, bias=False)
        self.exp_norm = nn.BatchNorm1d(logarithmic_neurons)
        self.afn = MLP(embedding_dim * logarithmic_neurons, list(afn_hidden_size), out_dim, dropout=afn_dropout)
        self.dnn = MLP(num_fields * embedding_dim, list(dnn_hidden_size), out_dim, dropout=dnn_dropout) \
            if ensemble_dnn else None

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        log_emb = self.log_norm(torch.log(emb.abs().clamp_min(1e-5)))  # [B, F, d]
        crossed = torch.exp(self.coefficients(log_emb.transpose(1, 2)).transpose(1, 2))  # [B, N, d]
        out = self.afn(self.exp_norm(crossed).flatten(1))
        if self.dnn is not None:
            out = out + self.dnn(emb.flatten(1))
        return out
