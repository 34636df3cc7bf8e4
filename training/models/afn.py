"""AFN (Cheng et al., AAAI 2020): adaptive-order interactions through a logarithmic transformation.

exp(Σ_f w_nf · log|e_f|) = Π_f |e_f|^{w_nf}: each of the ``logarithmic_neurons`` is a
product of features with learned (fractional) exponents.  As FuxiCTR's ``AFN``: |e| is
clamped at 1e-5 before the log, BatchNorm stabilises the log and the exp space, and an
MLP maps the neurons to logits.  With ``ensemble_dnn`` (AFN+) a plain DNN over the
flattened embeddings adds its own ``out_dim`` logits.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ratingctr.training.models.base import Body
from ratingctr.training.models.layers import MLP, reset_linear_


class AFN(Body):
    """Logarithmic transformation layer + MLP (+ DNN) → ``out_dim`` logits.

    Args:
        logarithmic_neurons: learned products (N).
        afn_hidden_size: hidden widths of the MLP over the N·d neuron outputs.
        afn_dropout: its dropout after each hidden activation.
        ensemble_dnn: add the AFN+ DNN branch.
        dnn_hidden_size: hidden widths of that branch.
        dnn_dropout: its dropout.
        batch_norm: BatchNorm inside both MLPs (the log/exp BatchNorms are always on).
    """

    def __init__(self, num_fields: int, embedding_dim: int, out_dim: int, reg_weight: float = 0.0, *,
                 logarithmic_neurons: int = 256, afn_hidden_size: Sequence[int] = (400, 400, 400),
                 afn_dropout: float = 0.0, ensemble_dnn: bool = False,
                 dnn_hidden_size: Sequence[int] = (400, 400, 400), dnn_dropout: float = 0.0,
                 batch_norm: bool = False) -> None:
        super().__init__(num_fields, embedding_dim, out_dim, reg_weight)
        self.log_norm = nn.BatchNorm1d(num_fields)
        self.coefficients = nn.Linear(num_fields, logarithmic_neurons, bias=False)
        self.exp_norm = nn.BatchNorm1d(logarithmic_neurons)
        self.afn = MLP(embedding_dim * logarithmic_neurons, afn_hidden_size, out_dim, dropout=afn_dropout,
                       batch_norm=batch_norm)
        self.dnn = MLP(num_fields * embedding_dim, dnn_hidden_size, out_dim, dropout=dnn_dropout,
                       batch_norm=batch_norm) if ensemble_dnn else None
        self.apply(reset_linear_)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        """The N·d neurons stay in the ``[B, d, N]`` layout the coefficient product makes.

        FuxiCTR transposes them to ``[B, N, d]`` first; with N·d = 4096 values a row, the
        exp, the BatchNorm over a strided channel axis and the flatten copy (and their
        backward) then ran over 16M strided elements a step.  Here the exp is contiguous,
        the BatchNorm sees ``[B·d, N]`` (the same per-neuron statistics over batch and d)
        and the first MLP Linear reads its weight columns in d-major order instead.
        """
        b, f, d = emb.shape
        log_emb = self.log_norm(torch.log(emb.abs().clamp_min(1e-5)))  # [B, F, d]
        crossed = torch.exp(self.coefficients(log_emb.transpose(1, 2)))  # [B, d, N]
        neurons = self.exp_norm(crossed.reshape(b * d, -1)).view(b, -1)  # [B, d·N]
        first, *rest = self.afn
        weight = first.weight.view(first.out_features, -1, d).transpose(1, 2).reshape(first.out_features, -1)
        out = nn.functional.linear(neurons, weight, first.bias)
        for layer in rest:
            out = layer(out)
        if self.dnn is not None:
            out = out + self.dnn(emb.flatten(1))
        return out
