"""Encoders turn the ``[B, C]`` id matrix into field embeddings ``[B, F, d]``.

The encoder is injected into the model (TorchRec's composition by named parts): the
``table`` encoder here is one embedding row per id; a graph encoder can replace the
user/item rows without the body or the head noticing.
"""
from __future__ import annotations

import torch
from torch import nn

from ratingctr.training.data.schema import FieldSchema
from ratingctr.training.models.kernels.lookup import lookup

__all__ = ["FieldIndexer", "LightGCNEncoder", "TableEncoder", "lookup"]


class FieldIndexer(nn.Module):
    """Maps per-field local ids to global ids and per-column pooling weights.

    Why weights: a multi-valued field (genres) occupies several columns padded with 0;
    its field embedding is the mean over the non-padding columns, so those columns get
    weight ``1/count`` and padding gets 0.  Single-valued columns always weigh 1 (their
    index 0 is the learned "unknown" row, not padding).  The assignment matrix
    ``column → field`` turns pooling into one batched matmul, which exports to ONNX.
    """

    def __init__(self, schema: FieldSchema) -> None:
        super().__init__()
        offsets, field_of_column, multi = [], [], []
        base = 0
        for f_index, spec in enumerate(schema.fields):
            for _ in range(spec.slots):
                offsets.append(base)
                field_of_column.append(f_index)
                multi.append(spec.slots > 1)
            base += spec.vocab_size
        self.total_vocab = base
        self.num_fields = schema.num_fields
        self.has_multi = any(multi)
        self.register_buffer("offsets", torch.tensor(offsets, dtype=torch.long), persistent=False)
        self.register_buffer("multi", torch.tensor(multi, dtype=torch.bool), persistent=False)
        # Column spans for ``pool``: runs of single-slot fields pass through as one slice,
        # each multi-slot field is a weighted sum over its columns.
        self.spans: list[tuple[int, int, bool]] = []
        col = 0
        for spec in schema.fields:
            if spec.slots == 1 and self.spans and not self.spans[-1][2] and self.spans[-1][1] == col:
                self.spans[-1] = (self.spans[-1][0], col + 1, False)
            else:
                self.spans.append((col, col + spec.slots, spec.slots > 1))
            col += spec.slots
        assign = torch.zeros(len(offsets), schema.num_fields)
        assign[torch.arange(len(offsets)), torch.tensor(field_of_column)] = 1.0
        self.register_buffer("assign", assign, persistent=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ids = x + self.offsets
        if not self.has_multi:
            return ids, torch.ones_like(x, dtype=torch.float32)
        present = ((x != 0) | ~self.multi).to(torch.float32)
        counts = (present @ self.assign).clamp_min(1.0)  # [B, F]
        weights = present / (counts @ self.assign.t())
        return ids, weights

    def pool(self, per_column: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """``[B, C, d]`` column embeddings → ``[B, F, d]`` field embeddings."""
        if not self.has_multi:
            return per_column
        # Slices + one weighted sum per multi-valued field.  (An einsum with the assignment
        # matrix did the same as a bmm, but under bf16 autocast it cast and permuted the
        # whole [B, C, d] tensor forth and back every step.)
        # ``split``, not one slice per span: a slice's backward zero-fills a full-size
        # gradient per span, a split's backward is one ``cat``.
        pieces = torch.split(per_column, [b - a for a, b, _ in self.spans], dim=1)
        parts = [piece if not multi else
                 (piece * weights[:, a:b, None].to(per_column.dtype)).sum(1, keepdim=True)
                 for piece, (a, b, multi) in zip(pieces, self.spans)]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


class TableEncoder(nn.Module):
    """One embedding row per id of every field.

    Args:
        total_vocab: rows across all fields (``FieldIndexer.total_vocab``).
        embedding_dim: d.
        noise_std: Gaussian noise added to the embeddings when > 0 (robustness study).
    """

    def __init__(self, total_vocab: int, embedding_dim: int, noise_std: float = 0.0) -> None:
        super().__init__()
        self.embedding = nn.Embedding(total_vocab, embedding_dim)
        nn.init.xavier_normal_(self.embedding.weight)
        self.noise_std = noise_std

    def table(self) -> torch.Tensor:
        """The ``[total_vocab, d]`` rows ``forward`` looks ids up in."""
        return self.embedding.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        emb = lookup(self.table(), ids)
        if self.noise_std > 0:
            emb = emb + torch.randn_like(emb) * self.noise_std
        return emb


class LightGCNEncoder(nn.Module):
    """Table encoder whose user-id and item-id rows are LightGCN-propagated.

    The rows of every field live in one ``embedding`` table, exactly as in
    ``TableEncoder`` (same parameter name), so fine-tuning (FT) starts by loading a
    trained table model's state dict unchanged; only the user/item slices are replaced
    by Σ_l a_l Â^l E⁰ over the training graph before the lookup.  Side-feature rows are
    untouched.

    Args:
        total_vocab: rows across all fields.
        embedding_dim: d.
        adjacency: normalised ``(n_users+1+n_items+1)²`` sparse matrix (``training.graph``).
        user_rows: ``(start, stop)`` global rows of the user-id field.
        item_rows: ``(start, stop)`` global rows of the item-id field.
        layer_weights: a_0..a_L.
    """

    def __init__(self, total_vocab: int, embedding_dim: int, adjacency: torch.Tensor, user_rows: tuple[int, int],
                 item_rows: tuple[int, int], layer_weights: list[float], noise_std: float = 0.0) -> None:
        super().__init__()
        if user_rows[1] > item_rows[0]:
            raise ValueError("user-id rows must precede item-id rows")
        self.embedding = nn.Embedding(total_vocab, embedding_dim)
        nn.init.xavier_normal_(self.embedding.weight)
        self.register_buffer("adjacency", adjacency, persistent=False)
        self.user_rows, self.item_rows = user_rows, item_rows
        self.layer_weights = list(layer_weights)
        self.noise_std = noise_std

    def propagated_table(self) -> torch.Tensor:
        """The full ``[total_vocab, d]`` table with graph-propagated user/item rows."""
        from ratingctr.training.graph import propagate

        table = self.embedding.weight
        (us, ue), (is_, ie) = self.user_rows, self.item_rows
        ego = torch.cat([table[us:ue], table[is_:ie]])
        mixed = propagate(self.adjacency, ego, self.layer_weights)
        n_user = ue - us
        return torch.cat([table[:us], mixed[:n_user], table[ue:is_], mixed[n_user:], table[ie:]])

    def table(self) -> torch.Tensor:
        """The ``[total_vocab, d]`` rows ``forward`` looks ids up in (propagated every call)."""
        return self.propagated_table()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        emb = lookup(self.table(), ids)
        if self.noise_std > 0:
            emb = emb + torch.randn_like(emb) * self.noise_std
        return emb

    def materialize(self) -> TableEncoder:
        """A plain ``TableEncoder`` holding the propagated rows (what export and serving use)."""
        table = TableEncoder(self.embedding.num_embeddings, self.embedding.embedding_dim, self.noise_std)
        with torch.no_grad():
            table.embedding.weight.copy_(self.propagated_table())
        return table
