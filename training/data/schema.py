"""Field schema: the contract between encoded data, the models and the export bundle.

A model input is one int64 matrix ``[B, C]``.  Each field owns ``slots`` consecutive
columns; single-valued fields own one column, multi-valued fields (genres) own several,
padded with 0 and mean-pooled into one field embedding.  Index 0 of every field is the
reserved "unknown / padding" token, so a value never seen in training still has a row.
Pure Python: the serving side reads the same schema from ``manifest.json``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Side = Literal["user", "item"]

UNKNOWN_TOKEN = "[UNK]"


@dataclass(frozen=True)
class FieldSpec:
    """One categorical field.

    Args:
        name: field name, e.g. ``"user_id"`` or ``"genre"``.
        vocab_size: number of rows including the reserved index 0.
        side: whether the value comes from the user table or the item table.
        slots: columns the field occupies (``> 1`` means multi-valued, mean-pooled).
    """

    name: str
    vocab_size: int
    side: Side
    slots: int = 1


@dataclass(frozen=True)
class FieldSchema:
    """Ordered fields: all user-side fields first, then all item-side fields.

    That order lets a batch be built by concatenating a user row with an item row,
    which is exactly what the gateway does by broadcasting.
    """

    fields: tuple[FieldSpec, ...]
    _starts: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        sides = [f.side for f in self.fields]
        if sides != sorted(sides, key=lambda s: 0 if s == "user" else 1):
            raise ValueError("user-side fields must precede item-side fields")
        starts, offset = [], 0
        for spec in self.fields:
            starts.append(offset)
            offset += spec.slots
        object.__setattr__(self, "_starts", tuple(starts))

    @property
    def num_fields(self) -> int:
        return len(self.fields)

    @property
    def num_columns(self) -> int:
        return sum(f.slots for f in self.fields)

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.fields]

    def index(self, name: str) -> int:
        return self.names.index(name)

    def columns(self, name: str) -> slice:
        """Column slice of field ``name`` inside the ``[B, C]`` input matrix."""
        i = self.index(name)
        return slice(self._starts[i], self._starts[i] + self.fields[i].slots)

    def side_slice(self, name: str) -> slice:
        """Column slice of field ``name`` inside its own side's row (user row or item row)."""
        cols = self.columns(name)
        shift = 0 if self.fields[self.index(name)].side == "user" else self.side_columns("user")
        return slice(cols.start - shift, cols.stop - shift)

    def side_columns(self, side: Side) -> int:
        return sum(f.slots for f in self.fields if f.side == side)

    def to_dict(self) -> list[dict]:
        return [{"name": f.name, "vocab_size": f.vocab_size, "side": f.side, "slots": f.slots}
                for f in self.fields]

    @classmethod
    def from_dict(cls, rows: list[dict]) -> "FieldSchema":
        return cls(tuple(FieldSpec(r["name"], int(r["vocab_size"]), r["side"], int(r.get("slots", 1)))
                         for r in rows))
