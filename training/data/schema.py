"""Field schema: the contract between encoded data, the models and the export bundle.

A model input is one int64 matrix ``[B, C]``.  Each field owns ``slots`` consecutive
columns; single-valued fields own one column, multi-valued fields (genres) own several,
padded with 0 and mean-pooled into one field embedding.  Index 0 of every field is the
reserved "unknown / padding" token, so a value never seen in training still has a row.
``FieldSpec``/``FieldSchema`` are defined once, in ``ratingctr.bundle``: the checkpoint, the
bundle's ``manifest.json`` and the gateway read and write the same classes.
"""
from __future__ import annotations

from ratingctr.bundle import FieldSchema, FieldSpec, Side

__all__ = ["UNKNOWN_TOKEN", "FieldSchema", "FieldSpec", "Side"]

UNKNOWN_TOKEN = "[UNK]"
