"""Wide & Deep (Cheng et al., 2016): a first-order wide part plus an MLP over all embeddings.

As RecBole 1.2's ``WideDeep``: the deep part is ``MLPLayers`` (dropout before each
Linear) followed by a separate prediction Linear; the wide part is the first-order
linear over raw ids, which the surrounding model adds (``wants_first_order``).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from ratingctr.training.models.base import Body
from ratingctr.training.models.layers import MLP, reset_linear_


class WideDeep(Body):
    """Deep part of Wide & Deep; the wide part comes from ``FirstOrderLinear``.

    Args:
        mlp_hidden_size: hidden widths of the deep MLP.
        dropout_prob: dropout before every hidden Linear (RecBole's placement).
        first_order: ``wide`` (first-order logits per output) or ``broadcast`` (the authors' scalar).
    """

    wants_first_order = True

    def __init__(self, num_fields: int, embedding_dim: int, out_dim: int, reg_weight: float = 0.0, *,
                 mlp_hidden_size: Sequence[int] = (128, 128, 128), dropout_prob: float = 0.2,
                 first_order: str = "wide") -> None:
        super().__init__(num_fields, embedding_dim, out_dim, reg_weight)
        self.set_first_order(first_order)
        self.deep = MLP(num_fields * embedding_dim, mlp_hidden_size, out_dim, dropout=dropout_prob,
                        dropout_first=True)
        self.apply(reset_linear_)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return self.deep(emb.flatten(1))
