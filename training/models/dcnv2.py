"""DCN-V2 (Wang et al., 2021): full-rank cross network with a deep network, parallel or stacked.

As RecBole 1.2's ``DCNV2`` (``mixed=False``): the deep part is ``MLPLayers`` with
BatchNorm (dropout before each Linear), one prediction Linear over
``[cross ‖ deep]`` (parallel) or over ``deep(cross)`` (stacked), and
``reg_weight · Σ_l ||W_l||₂`` on the cross matrices only.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from ratingctr.training.models.cross_deep import CrossDeepBody
from ratingctr.training.models.layers import MLP, CrossNetV2


class DCNV2(CrossDeepBody):
    """Cross network + MLP → ``out_dim`` logits.

    Args:
        cross_layer_num: cross layers.
        mlp_hidden_size: hidden widths of the deep network.
        dropout_prob: dropout before every deep Linear.
        structure: ``parallel`` (cross and deep side by side) or ``stacked`` (deep on cross).
    """

    def __init__(self, num_fields: int, embedding_dim: int, out_dim: int, reg_weight: float = 2.0, *,
                 cross_layer_num: int = 2, mlp_hidden_size: Sequence[int] = (256, 256, 256),
                 dropout_prob: float = 0.2, structure: Literal["parallel", "stacked"] = "parallel") -> None:
        super().__init__(num_fields, embedding_dim, out_dim, reg_weight)
        width = num_fields * embedding_dim
        deep = MLP(width, mlp_hidden_size, dropout=dropout_prob, batch_norm=True, dropout_first=True)
        self._assemble(CrossNetV2(width, cross_layer_num), deep, structure)

    def regularized_parameters(self) -> list[torch.Tensor]:
        return self.cross.weights()
