"""Embedding lookups (*forward* kernels): ``lookup`` and the fused embedding + first-order gather.

``lookup`` is ``table[ids]`` through ``index_select`` rather than
``nn.functional.embedding`` (``reference_lookup``; the encoders always use ``lookup``,
which is the same maths and the same ONNX graph): on CPU the latter's backward sorts the
indices (``embedding_dense_backward``), while ``index_select``'s backward is a plain
``index_add_``; both export to the same ONNX ``Gather``.

``fast_embed_with_first_order`` gathers the embedding rows and the first-order rows in one
go, from the two tables side by side (``[V, d + out]``), pooled together: the first-order
term Σ_c w_c·row_c is the sum over fields of the same pooling the embeddings get.  One
gather and one ``index_add`` backward instead of two; the narrow one (5-wide rows for the
rating head) cost as much as the wide one on CPU.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch.nn import functional as F

#: ``[B, C, w]`` column rows and ``[B, C]`` weights → ``[B, F, w]`` field rows
Pool = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def reference_lookup(table: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """``table[ids]`` as ``nn.Embedding`` computes it."""
    return F.embedding(ids, table)


def lookup(table: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """``table[ids]`` via ``index_select`` (an ``index_add_`` backward)."""
    return table.index_select(0, ids.reshape(-1)).view(*ids.shape, table.shape[1])


def reference_embed_with_first_order(table: torch.Tensor, first_table: torch.Tensor, first_bias: torch.Tensor,
                                     ids: torch.Tensor, weights: torch.Tensor,
                                     pool: Pool) -> tuple[torch.Tensor, torch.Tensor]:
    """Field embeddings ``[B, F, d]`` and first-order logits Σ_c w_c·first_table[id_c] + bias, looked up apart.

    What ``TableEncoder`` + pooling and ``FirstOrderLinear`` compute on their own.
    """
    emb = pool(lookup(table, ids), weights)
    rows = lookup(first_table, ids) * weights.unsqueeze(-1).to(first_table.dtype)
    return emb, rows.sum(dim=1) + first_bias


def fast_embed_with_first_order(table: torch.Tensor, first_table: torch.Tensor, first_bias: torch.Tensor,
                                ids: torch.Tensor, weights: torch.Tensor,
                                pool: Pool) -> tuple[torch.Tensor, torch.Tensor]:
    """``reference_embed_with_first_order`` from one gather over ``[table ‖ first_table]``."""
    both = torch.cat([table, first_table.to(table.dtype)], dim=1)
    pooled = pool(lookup(both, ids), weights)
    emb, first = torch.split(pooled, [table.shape[1], first_table.shape[1]], dim=2)  # backward: one cat
    return emb, first.sum(dim=1) + first_bias
