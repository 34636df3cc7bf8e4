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
from ratingctr.training.models.layers import MLP, reset_linear_

Structure = Literal["parallel", "stacked"]


class CrossDeepBody(Body):
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
        cross, deep = self.cross(x0), self.deep(x0)
        if torch.is_grad_enabled():
            # W·[c ‖ d] = W_c·c + W_d·d: training skips materialising the concatenation
            # (a fresh [B, F·d + 256] copy forward and split-up gradients backward, ~1 ms
            # a DCNV2 step on CPU); export and evaluation keep the one Gemm.
            w_cross, w_deep = self.predict.weight.split([cross.shape[1], deep.shape[1]], dim=1)
            return nn.functional.linear(cross, w_cross, self.predict.bias) + nn.functional.linear(deep, w_deep)
        return self.predict(torch.cat([cross, deep], dim=1))
