"""The cross-network + MLP composition that DCN-V2 and GDCN share.

Both papers combine an explicit cross network with a deep network in one of two ways:
side by side with one Linear over ``[cross ‖ deep]`` (parallel), or the MLP on top of the
cross output (stacked).  Only the cross layer differs, so it is injected.
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from ratingctr.training.models.base import Body
from ratingctr.training.models.kernels import KernelSwitch
from ratingctr.training.models.kernels.cross_deep import fast_parallel_predict, reference_parallel_predict
from ratingctr.training.models.layers import MLP, reset_linear_

Structure = Literal["parallel", "stacked"]


class CrossDeepBody(KernelSwitch, Body):
    """Base for cross + deep architectures; subclasses pass their cross network and MLP."""

    def _assemble(self, cross: nn.Module, deep: MLP, structure: str) -> None:
        if structure not in ("parallel", "stacked"):
            raise ValueError(f"structure must be 'parallel' or 'stacked', got {structure!r}")
        width = self.num_fields * self.embedding_dim
        self.parallel = structure == "parallel"
        self.cross = cross
        self.deep = deep
        self.predict = nn.Linear(width + deep.output_width if self.parallel else deep.output_width, self.out_dim)
        self.apply(reset_linear_)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        x0 = emb.flatten(1)
        if not self.parallel:
            return self.predict(self.deep(self.cross(x0)))
        cross, deep = self.cross(x0), self.deep(x0)  # side by side: one Linear over [cross ‖ deep]
        predict = fast_parallel_predict if self.training_kernels() else reference_parallel_predict
        return predict(cross, deep, self.predict.weight, self.predict.bias)
