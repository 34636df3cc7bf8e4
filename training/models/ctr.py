"""``CTRModel`` = field indexer + encoder + body (+ first-order branch) + head.

Composition, not inheritance: swapping the head (binary ↔ rating) or the encoder
(table ↔ graph) never touches the architecture code.
"""
from __future__ import annotations

import torch
from torch import nn

from ratingctr.training.data.schema import FieldSchema
from ratingctr.training.models.base import Body
from ratingctr.training.models.encoders import FieldIndexer, TableEncoder
from ratingctr.training.models.heads import Prediction
from ratingctr.training.models.kernels import KernelSwitch
from ratingctr.training.models.kernels.lookup import fast_embed_with_first_order
from ratingctr.training.models.layers import FirstOrderLinear


class CTRModel(KernelSwitch, nn.Module):
    """A ranker over ``[B, C]`` int64 field ids.

    ``forward`` returns the serving outputs (p̂, rating distribution, expected rating),
    which is also what the ONNX export traces; ``loss`` is the training objective.
    """

    def __init__(self, schema: FieldSchema, body: Body, head: nn.Module, encoder: nn.Module | None = None) -> None:
        super().__init__()
        self.schema = schema
        self.indexer = FieldIndexer(schema)
        self.encoder = encoder if encoder is not None else TableEncoder(self.indexer.total_vocab, body.embedding_dim)
        self.body = body
        self.head = head
        self.linear = (FirstOrderLinear(self.indexer.total_vocab, body.first_order_width)
                       if body.wants_first_order else None)  # width 1 = broadcast onto the head's logits

    def field_embeddings(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, F, d]`` pooled field embeddings, as the body receives them (before any autocast)."""
        return self._embed(x)[0]

    def _embed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Field embeddings ``[B, F, d]`` and the first-order logits ``[B, out]`` (None without one).

        By default both come from one gather (``kernels/lookup.py``).  With embedding noise
        (robustness study, noise per column before pooling) the two lookups stay separate.
        """
        ids, weights = self.indexer(x)
        if self.linear is not None and self.encoder.noise_std == 0 and self.forward_kernels():
            return fast_embed_with_first_order(self.encoder.table(), self.linear.table.weight, self.linear.bias,
                                               ids, weights, self.indexer.pool)
        emb = self.indexer.pool(self.encoder(ids), weights)
        return emb, self.linear(ids, weights) if self.linear is not None else None

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        emb, first_order = self._embed(x)
        if torch.is_autocast_enabled(emb.device.type):
            # One cast of [B, F, d] here, so the body's element-wise ops (cross products,
            # interactions) run in the autocast dtype instead of promoting back to fp32
            # next to every autocast matmul output.
            emb = emb.to(torch.get_autocast_dtype(emb.device.type))
        out = self.body(emb)
        return out if first_order is None else out + first_order

    def loss(self, x: torch.Tensor, rating: torch.Tensor, click: torch.Tensor) -> torch.Tensor:
        # float(): under bf16 autocast the losses are still computed in fp32
        reg = self.body.regularization(self.linear.table.weight if self.linear is not None else None).float()
        return self.head.loss(self.logits(x).float(), rating, click, reg)

    def predict(self, x: torch.Tensor) -> Prediction:
        return self.head.predict(self.logits(x))

    def forward(self, x: torch.Tensor) -> Prediction:
        return self.predict(x)


def id_rows(schema: FieldSchema, name: str) -> tuple[int, int]:
    """Global ``(start, stop)`` rows of field ``name`` in the shared embedding table."""
    start = sum(f.vocab_size for f in schema.fields[:schema.index(name)])
    return start, start + schema.fields[schema.index(name)].vocab_size

