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
from ratingctr.training.models.kernels import KernelSwitch
from ratingctr.training.models.kernels.afn import fast_afn, reference_afn
from ratingctr.training.models.layers import MLP, reset_linear_


class AFN(KernelSwitch, Body):
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
        # dropout after each activation: the MLP starts with the Linear the AFN kernel reads
        self.afn = MLP(embedding_dim * logarithmic_neurons, afn_hidden_size, out_dim, dropout=afn_dropout,
                       batch_norm=batch_norm)
        if not isinstance(self.afn[0], nn.Linear):
            raise TypeError("AFN's MLP must start with its Linear (the logarithmic neurons feed it directly)")
        self.dnn = MLP(num_fields * embedding_dim, dnn_hidden_size, out_dim, dropout=dnn_dropout,
                       batch_norm=batch_norm) if ensemble_dnn else None
        self.apply(reset_linear_)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        """exp(coefficients · BN(log|e|)) → BN → MLP; the transformation through the MLP's
        first Linear is ``kernels/afn.py`` (by default in a d-major neuron layout)."""
        first, *rest = self.afn
        transform = fast_afn if self.forward_kernels() else reference_afn
        out = transform(emb, self.log_norm, self.coefficients, self.exp_norm, first)
        for layer in rest:
            out = layer(out)
        if self.dnn is not None:
            out = out + self.dnn(emb.flatten(1))
        return out
