"""``build_model(schema, config)``: the one place a ``RunConfig`` becomes a ``CTRModel``.

Training, checkpoint restore, export, benches and tests all build through here, so a
new setting is threaded through once instead of through every caller's argument list.
"""
from __future__ import annotations

import torch

from ratingctr.training.config import RunConfig
from ratingctr.training.data.schema import FieldSchema
from ratingctr.training.graph import layer_weights
from ratingctr.training.models.ctr import CTRModel, id_rows
from ratingctr.training.models.encoders import LightGCNEncoder
from ratingctr.training.models.heads import build_head
from ratingctr.training.models.registry import build_body


def build_model(schema: FieldSchema, config: RunConfig, adjacency: torch.Tensor | None = None) -> CTRModel:
    """Assemble the configured body, head and encoder over ``schema``'s fields.

    The LightGCN encoder (``config.encoder.kind == "lightgcn"``) propagates over
    ``adjacency``, the training graph, which depends on the data rather than the
    configuration (``training.run.training_graph`` builds it). Bad settings raise
    ``ValueError`` naming the valid ones.

    Example:
        >>> from ratingctr.training.config import build_run_config
        >>> from ratingctr.training.data.schema import FieldSchema, FieldSpec
        >>> schema = FieldSchema((FieldSpec("user_id", 10, "user"), FieldSpec("item_id", 20, "item")))
        >>> build_model(schema, build_run_config({"model": "DCNV2", "head": "binary"})).head.out_dim
        1
    """
    head = build_head(config.head.kind, config.data.levels, config.data.threshold, config.head.ratio,
                      config.head.aggregate)
    params = dict(config.model.params)
    if config.model.first_order != "wide":  # the default is left to the body, so wide builds as it always did
        params["first_order"] = config.model.first_order
    body = build_body(config.model.name, schema.num_fields, config.model.embedding_dim, head.out_dim, params)
    if config.encoder.kind == "table":
        return CTRModel(schema, body, head)
    if config.encoder.kind != "lightgcn":
        raise ValueError(f"unknown encoder '{config.encoder.kind}'; choose table or lightgcn")
    if adjacency is None:
        raise ValueError("the lightgcn encoder needs the training graph's adjacency")
    total = sum(f.vocab_size for f in schema.fields)
    encoder = LightGCNEncoder(total, config.model.embedding_dim, adjacency, id_rows(schema, "user_id"),
                              id_rows(schema, "item_id"),
                              layer_weights(config.encoder.gcn_layers, config.encoder.layer_weights))
    return CTRModel(schema, body, head, encoder)
