"""xDeepFM (Lian et al., 2018): first-order + CIN (explicit vector-wise crosses) + DNN.

As RecBole 1.2's ``xDeepFM``: split-half CIN unless ``direct``, a DNN with dropout
before each Linear, each branch emitting ``out_dim`` logits, summed.  RecBole's DNN is
``MLPLayers(... + [1])``, which also puts a ReLU on the output logit; we leave that
ReLU out, since a logit clipped at zero cannot vote against a class.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ratingctr.training.models.base import Body
from ratingctr.training.models.layers import CIN, MLP, Dropout, reset_linear_


class xDeepFM(Body):  # noqa: N801 - the architecture's published name
    """CIN + DNN logits; the linear part comes from ``FirstOrderLinear``.

    Args:
        mlp_hidden_size: hidden widths of the DNN.
        cin_layer_size: feature maps per CIN layer.
        dropout_prob: DNN dropout, before each Linear including the output one (RecBole).
        direct: feed every CIN map both forward and to the output (no split-half).
        first_order: ``wide`` (first-order and CIN logits per output) or ``broadcast``
            (the authors' code: each one scalar, broadcast onto every output logit).
    """

    wants_first_order = True
    #: RecBole's xDeepFM also puts the first-order table's weight under its L2 term;
    #: that table lives in the wrapper, so the wrapper has to add it.
    regularize_first_order = True

    def __init__(self, num_fields: int, embedding_dim: int, out_dim: int, reg_weight: float = 5e-4, *,
                 mlp_hidden_size: Sequence[int] = (512, 512, 512), cin_layer_size: Sequence[int] = (200, 200, 200),
                 dropout_prob: float = 0.1, direct: bool = False, first_order: str = "wide") -> None:
        super().__init__(num_fields, embedding_dim, out_dim, reg_weight)
        self.set_first_order(first_order)
        # broadcast (the authors' code): one CIN logit added to all out_dim logits, like the first order
        self.cin = CIN(num_fields, cin_layer_size, self.first_order_width, split_half=not direct)
        hidden = MLP(num_fields * embedding_dim, mlp_hidden_size, dropout=dropout_prob, dropout_first=True)
        self.dnn = nn.Sequential(hidden, Dropout(dropout_prob), nn.Linear(hidden.output_width, out_dim))
        self.apply(reset_linear_)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return self.cin(emb) + self.dnn(emb.flatten(1))

    def regularized_parameters(self) -> list[torch.Tensor]:
        """RecBole: the DNN's Linear weights and the CIN convolution weights (not the CIN output Linear)."""
        return [m.weight for m in (*self.dnn.modules(), *self.cin.convs) if isinstance(m, (nn.Linear, nn.Conv1d))]
