"""FinalMLP (Mao et al., AAAI 2023): two MLP streams with feature gating and bilinear fusion.

As FuxiCTR's ``FinalMLP``: each stream sees the flattened embeddings re-weighted by its
own gate 2·σ(MLP(context)), and a multi-head bilinear ``InteractionAggregation`` fuses
the two stream outputs into ``out_dim`` logits.  A gate's context is the embeddings of
the fields listed in ``fs1_context`` / ``fs2_context`` (field positions); when a list
is empty the context is all flattened embeddings, so the gate is input-dependent
(FuxiCTR falls back to a learned constant vector there instead).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ratingctr.training.models.base import Body
from ratingctr.training.models.kernels import KernelSwitch
from ratingctr.training.models.kernels.bilinear import fast_bilinear, reference_bilinear
from ratingctr.training.models.layers import MLP, reset_linear_


class _FeatureGate(nn.Module):
    """One stream's feature selection: flat ⊙ 2·σ(MLP(context))."""

    def __init__(self, context_fields: Sequence[int], num_fields: int, embedding_dim: int,
                 hidden: Sequence[int]) -> None:
        super().__init__()
        bad = [i for i in context_fields if not 0 <= i < num_fields]
        if bad:
            raise ValueError(f"feature-selection context fields {bad} out of range for {num_fields} fields")
        self.context: torch.Tensor | None
        if context_fields:
            self.register_buffer("context", torch.tensor(list(context_fields), dtype=torch.long), persistent=False)
        else:
            self.context = None
        width = embedding_dim * (len(context_fields) or num_fields)
        self.gate = MLP(width, hidden, num_fields * embedding_dim)

    def forward(self, emb: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
        context = flat if self.context is None else emb[:, self.context].flatten(1)
        return flat * (2.0 * torch.sigmoid(self.gate(context)))


class InteractionAggregation(KernelSwitch, nn.Module):
    """o = w_xᵀx + w_yᵀy + Σ_h x_hᵀ W_h y_h, each term ``out_dim`` wide (FinalMLP eq. 9, multi-head).

    ``w_xy`` keeps FuxiCTR's shape ``[H·hx·hy, out]`` (and hence its Xavier scale).
    """

    def __init__(self, x_dim: int, y_dim: int, out_dim: int, num_heads: int) -> None:
        super().__init__()
        if x_dim % num_heads or y_dim % num_heads:
            raise ValueError(f"stream widths {x_dim}, {y_dim} must divide by num_heads={num_heads}")
        self.heads, self.hx, self.hy, self.out_dim = num_heads, x_dim // num_heads, y_dim // num_heads, out_dim
        self.w_x, self.w_y = nn.Linear(x_dim, out_dim), nn.Linear(y_dim, out_dim)
        self.w_xy = nn.Parameter(torch.empty(num_heads * self.hx * self.hy, out_dim))
        nn.init.xavier_normal_(self.w_xy)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        bilinear = fast_bilinear if self.forward_kernels() else reference_bilinear  # kernels/bilinear.py
        crossed = bilinear(x, y, self.w_xy, (self.heads, self.hx, self.out_dim, self.hy))
        return self.w_x(x) + self.w_y(y) + crossed


class FinalMLP(Body):
    """Two gated MLP streams fused bilinearly → ``out_dim`` logits.

    Args:
        mlp1_hidden_size / mlp2_hidden_size: hidden widths of the two streams.
        mlp1_dropout / mlp2_dropout: dropout after each hidden activation.
        mlp1_batch_norm / mlp2_batch_norm: BatchNorm in the streams.
        use_fs: stream-specific feature selection gates.
        fs_hidden_size: hidden widths of each gate MLP.
        fs1_context / fs2_context: field positions feeding each gate (empty: all fields).
        num_heads: heads of the bilinear fusion (must divide both stream widths).
    """

    def __init__(self, num_fields: int, embedding_dim: int, out_dim: int, reg_weight: float = 0.0, *,
                 mlp1_hidden_size: Sequence[int] = (1024, 512), mlp2_hidden_size: Sequence[int] = (1024, 512, 256),
                 mlp1_dropout: float = 0.0, mlp2_dropout: float = 0.0, mlp1_batch_norm: bool = False,
                 mlp2_batch_norm: bool = False, use_fs: bool = True, fs_hidden_size: Sequence[int] = (1024, 512),
                 fs1_context: Sequence[int] = (), fs2_context: Sequence[int] = (), num_heads: int = 2) -> None:
        super().__init__(num_fields, embedding_dim, out_dim, reg_weight)
        width = num_fields * embedding_dim
        self.mlp1 = MLP(width, mlp1_hidden_size, dropout=mlp1_dropout, batch_norm=mlp1_batch_norm)
        self.mlp2 = MLP(width, mlp2_hidden_size, dropout=mlp2_dropout, batch_norm=mlp2_batch_norm)
        self.gate1 = _FeatureGate(fs1_context, num_fields, embedding_dim, fs_hidden_size) if use_fs else None
        self.gate2 = _FeatureGate(fs2_context, num_fields, embedding_dim, fs_hidden_size) if use_fs else None
        self.fusion = InteractionAggregation(self.mlp1.output_width, self.mlp2.output_width, out_dim, num_heads)
        self.apply(reset_linear_)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        flat = emb.flatten(1)
        x1 = self.gate1(emb, flat) if self.gate1 is not None else flat
        x2 = self.gate2(emb, flat) if self.gate2 is not None else flat
        return self.fusion(self.mlp1(x1), self.mlp2(x2))
