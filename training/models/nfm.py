"""NFM (He & Chua, 2017): first-order part + bi-interaction pooling fed to an MLP.

As RecBole 1.2's ``NFM``: BatchNorm on the pooled vector, then ``MLPLayers`` with
sigmoid activations and BatchNorm (dropout before each Linear, so the first dropout
acts on the pooled vector, as in the paper), and a bias-free prediction layer.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ratingctr.training.models.base import Body
from ratingctr.training.models.layers import MLP, BiInteraction, reset_linear_


class NFM(Body):
    """Bi-interaction → BN → dropout/MLP → logits; first order added by the wrapper.

    Args:
        mlp_hidden_size: hidden widths of the MLP over the pooled vector.
        dropout_prob: dropout before every hidden Linear.
        first_order: ``wide`` (first-order logits per output) or ``broadcast`` (the authors' scalar).
    """

    wants_first_order = True

    def __init__(self, num_fields: int, embedding_dim: int, out_dim: int, reg_weight: float = 0.0, *,
                 mlp_hidden_size: Sequence[int] = (512, 512, 512), dropout_prob: float = 0.5,
                 first_order: str = "wide") -> None:
        super().__init__(num_fields, embedding_dim, out_dim, reg_weight)
        self.set_first_order(first_order)
        self.pool = BiInteraction()
        self.norm = nn.BatchNorm1d(embedding_dim)
        self.mlp = MLP(embedding_dim, mlp_hidden_size, dropout=dropout_prob, batch_norm=True,
                       activation="sigmoid", dropout_first=True)
        self.predict = nn.Linear(self.mlp.output_width, out_dim, bias=False)
        self.apply(reset_linear_)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return self.predict(self.mlp(self.norm(self.pool(emb))))
