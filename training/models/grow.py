"""Warm start over a grown vocabulary: a freshly initialised bigger model holding every trained row.

Every field's rows live in one shared table (``FieldIndexer``: field after field, user
fields first), so when the user-id vocabulary grows, every later field's rows move down.
Copying "the old rows into rows [0, old)" would hand item rows to new users; the copy
here is per field block: field ``f``'s old rows go to the start of its new block, and
the rows a block gained keep the fresh initialisation of the grown model (exactly what
a new model of that size would have drawn for them). Tensors whose shape did not change
(the body, the head, the first-order bias) are copied as they are, so before any
training the grown model scores every old (user, item) pair bit-identically.
"""
from __future__ import annotations

import torch
from torch import nn

from ratingctr.training.config import RunConfig
from ratingctr.training.data.schema import FieldSchema
from ratingctr.training.models.build import build_model
from ratingctr.training.models.ctr import CTRModel


def copy_blocks(old: torch.Tensor, new: torch.Tensor, old_sizes: list[int], new_sizes: list[int]) -> None:
    """Copy block ``k`` of ``old`` (``old_sizes[k]`` rows) to the start of block ``k`` of ``new``, in place."""
    if len(old_sizes) != len(new_sizes) or any(o > n for o, n in zip(old_sizes, new_sizes)):
        raise ValueError(f"blocks can only grow: {old_sizes} → {new_sizes}")
    if old.shape[0] != sum(old_sizes) or new.shape[0] != sum(new_sizes) or old.shape[1:] != new.shape[1:]:
        raise ValueError(f"cannot grow a {tuple(old.shape)} table into {tuple(new.shape)} by blocks "
                         f"{old_sizes} → {new_sizes}")
    old_start = new_start = 0
    with torch.no_grad():
        for old_size, new_size in zip(old_sizes, new_sizes):
            new[new_start:new_start + old_size].copy_(old[old_start:old_start + old_size])
            old_start, new_start = old_start + old_size, new_start + new_size


def grow_state_into(model: nn.Module, old_state: dict[str, torch.Tensor], old_sizes: list[int],
                    new_sizes: list[int]) -> None:
    """Load ``old_state`` into ``model``, growing tables whose rows are the blocks ``old_sizes``.

    A tensor of the same shape is copied as it is; one whose first dimension is
    ``sum(old_sizes)`` in the old state and ``sum(new_sizes)`` in the model is copied block
    by block (``copy_blocks``); anything else is a ``ValueError`` (a different model).
    """
    state = model.state_dict()
    missing = sorted(set(state) ^ set(old_state))
    if missing:
        raise ValueError(f"the old weights do not belong to this model: {', '.join(missing[:3])} differ")
    for name, target in state.items():
        source = old_state[name]
        if source.shape == target.shape:
            with torch.no_grad():
                target.copy_(source)
        elif source.dim() >= 1 and source.shape[0] == sum(old_sizes) and target.shape[0] == sum(new_sizes):
            copy_blocks(source, target, old_sizes, new_sizes)
        else:
            raise ValueError(f"{name}: cannot grow {tuple(source.shape)} into {tuple(target.shape)}")


def grow_model(old_state: dict[str, torch.Tensor], old_schema: FieldSchema, new_schema: FieldSchema,
               config: RunConfig, adjacency: torch.Tensor | None = None) -> CTRModel:
    """``build_model(new_schema, config, adjacency)`` (the usual initialisation, from the
    caller's seed) holding every tensor of ``old_state``, tables grown per field.

    ``new_schema`` must have the old fields in the old order with vocabularies at least as
    large (``training.data.grow`` only appends ids). A LightGCN encoder grows like a table
    (its ego embeddings are the same ``embedding`` parameter); ``adjacency`` is the graph
    over the grown data.
    """
    old_fields = [(f.name, f.side, f.slots) for f in old_schema.fields]
    if old_fields != [(f.name, f.side, f.slots) for f in new_schema.fields]:
        raise ValueError("the grown schema must keep the old fields, sides and slots in order")
    model = build_model(new_schema, config, adjacency)
    grow_state_into(model, old_state, [f.vocab_size for f in old_schema.fields],
                    [f.vocab_size for f in new_schema.fields])
    return model
