"""The body contract every CTR architecture implements.

A body maps field embeddings ``[B, F, d]`` to ``out_dim`` logits.  It owns nothing
else: no loss, no optimizer, no device placement.  The head decides ``out_dim``
(1 for the binary head, N levels for the rating head), so the same body class serves
both supervision schemes unchanged.
"""
from __future__ import annotations

import torch
from torch import nn

FIRST_ORDER_VARIANTS = ("wide", "broadcast")


class Body(nn.Module):
    """Base class for architectures.

    Args:
        num_fields: F, number of fields in the embedding tensor.
        embedding_dim: d, width of every field embedding.
        out_dim: number of output logits.
        reg_weight: weight of the architecture's own L2 term (see ``regularization``).

    Subclasses set ``wants_first_order = True`` when the architecture has a wide /
    first-order branch; the surrounding model then adds a ``FirstOrderLinear`` output
    of width ``first_order_width`` computed from the raw ids (that branch needs ids, not
    embeddings, so the body cannot compute it itself).  Such a body takes a keyword
    ``first_order``: ``"wide"`` (one first-order logit per output) or ``"broadcast"``
    (the authors' released code: one scalar, broadcast onto all ``out_dim`` logits).
    """

    wants_first_order: bool = False
    regularize_first_order: bool = False
    first_order: str = "wide"

    def __init__(self, num_fields: int, embedding_dim: int, out_dim: int, reg_weight: float = 0.0) -> None:
        super().__init__()
        self.num_fields = num_fields
        self.embedding_dim = embedding_dim
        self.out_dim = out_dim
        self.reg_weight = reg_weight

    @property
    def first_order_width(self) -> int:
        """Width of the first-order branch: ``out_dim``, or 1 when it is broadcast."""
        return 1 if self.first_order == "broadcast" else self.out_dim

    def set_first_order(self, variant: str) -> None:
        """Record the first-order variant (before any layer is built from it)."""
        if variant not in FIRST_ORDER_VARIANTS:
            raise ValueError(f"first_order must be one of {FIRST_ORDER_VARIANTS}, got {variant!r}")
        self.first_order = variant

    def forward(self, emb: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def regularized_parameters(self) -> list[torch.Tensor]:
        """Parameters the reference implementation puts under its L2 term (default: none)."""
        return []

    def regularization(self, first_order: torch.Tensor | None = None) -> torch.Tensor:
        """``reg_weight · Σ ||W||₂`` over ``regularized_parameters`` (RecBole's RegLoss).

        ``first_order`` is the wide table, which the surrounding model owns; it joins the
        sum when the architecture sets ``regularize_first_order`` (RecBole's xDeepFM).
        """
        params = self.regularized_parameters()
        if first_order is not None and self.regularize_first_order:
            params = [*params, first_order]
        if self.reg_weight == 0.0 or not params:
            return torch.zeros((), device=next(self.parameters()).device)
        return self.reg_weight * sum(p.norm(2) for p in params)
