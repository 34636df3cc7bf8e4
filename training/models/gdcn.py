"""GDCN (Wang et al., CIKM 2023): gated cross network, then (stacked) or beside (parallel) an MLP.

As FuxiCTR's ``GDCN`` (stacked: MLP over the cross output) and ``GDCNP`` (parallel:
one Linear over ``[cross ‖ MLP]``).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from ratingctr.training.models.cross_deep import CrossDeepBody
from ratingctr.training.models.layers import MLP, GatedCrossNet


class GDCN(CrossDeepBody):
    """Gated cross network + MLP → ``out_dim`` logits.

    Args:
        cross_layer_num: gated cross layers (FuxiCTR's ``num_cross_layers``).
        mlp_hidden_size: hidden widths of the MLP (FuxiCTR's ``dnn_hidden_units``).
        dropout_prob: dropout after each hidden activation (FuxiCTR's ``net_dropout``).
        batch_norm: BatchNorm in the MLP.
        structure: ``stacked`` (GDCN-S, default) or ``parallel`` (GDCN-P).
    """

    def __init__(self, num_fields: int, embedding_dim: int, out_dim: int, reg_weight: float = 0.0, *,
                 cross_layer_num: int = 3, mlp_hidden_size: Sequence[int] = (1024, 512, 256),
                 dropout_prob: float = 0.0, batch_norm: bool = False,
                 structure: Literal["stacked", "parallel"] = "stacked") -> None:
        super().__init__(num_fields, embedding_dim, out_dim, reg_weight)
        width = num_fields * embedding_dim
        deep = MLP(width, mlp_hidden_size, dropout=dropout_prob, batch_norm=batch_norm)
        self._assemble(GatedCrossNet(width, cross_layer_num), deep, structure)
