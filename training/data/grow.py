"""Grow encoded data with pulled events: new ids get appended rows, known ids keep theirs.

Retraining (``training/retrain.py``) continues a trained model on its base data plus the
events the gateway logged. The model's embedding tables are laid out by the data's
vocabularies, so growth here is append-only and deterministic:

* a known user/item id maps to its existing index, and its feature row is kept exactly
  as it was (the trained embeddings were learned with that row; the bundle's field rows of
  existing ids stay identical, so a grown bundle scores an unchanged user the way the
  old one did until training moves the weights);
* an unknown id is appended after the existing ones, in order of first appearance in
  stream order (the ranker and the retriever grown from the same events agree);
* a new id's feature row is encoded from the side fields of its newest event that
  carried any (``event_log.latest_side_fields``) with the *existing* side-field
  vocabularies: a token never seen in training becomes 0, the unknown row. Side
  vocabularies do not grow on purpose: a new token row would start untrained (no better
  than the unknown row, which at least was trained on rare values), and growing every
  side table would shift the global rows of every later field for no gain. Multi-valued
  tokens beyond the field's column count are dropped.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np
import pandas as pd

from ratingctr.errors import UserError
from ratingctr.training.data.encode import EXCLUDED, TEST, TRAIN, VALID, EncodedData, validate_ratings
from ratingctr.training.data.schema import FieldSchema

ROW_TABLES = ("user_rows", "item_rows")  # per-id tables, not per-interaction arrays


@dataclass(frozen=True)
class Growth:
    """What one growth added: new ids (each brings one feature row and one embedding row) and interactions."""

    new_users: int
    new_items: int
    new_interactions: int

    def to_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class Grown:
    """Grown data, the stream id of every interaction ("" for the base dataset's own rows)."""

    data: EncodedData
    stream_id: np.ndarray  # str [n]
    growth: Growth


def _index_of(vocab: list[str], tokens: pd.Series) -> np.ndarray:
    """Index of each token in ``vocab``; -1 where absent."""
    return pd.Index(vocab).get_indexer(tokens.astype(str).to_numpy())


def _append_ids(vocab: list[str], ids: pd.Series) -> tuple[list[str], np.ndarray, list[str]]:
    """(grown vocab, index of every id, the new ids in first-appearance order)."""
    known = _index_of(vocab, ids)
    new_ids = pd.unique(ids[known < 0].astype(str)).tolist()
    grown = [*vocab, *new_ids]
    index = _index_of(grown, ids)
    return grown, index.astype(np.int64), new_ids


def _side_frame(side_fields: dict[str, dict], new_ids: list[str]) -> pd.DataFrame:
    """One row per new id (in order), one column per side field; missing values are NaN."""
    if not side_fields or not new_ids:
        return pd.DataFrame(index=pd.Index(new_ids, dtype=object))
    frame = pd.DataFrame.from_dict(side_fields, orient="index")
    return frame.reindex(new_ids)


def encode_side_rows(schema: FieldSchema, vocab: dict[str, list[str]], side: str, id_field: str,
                     first_index: int, new_ids: list[str], side_fields: dict[str, dict]) -> np.ndarray:
    """``[len(new_ids), side columns]`` feature rows of new ids with the existing side vocabularies.

    Column 0 is the id's own index (``first_index``, ``first_index + 1``, ...); every other
    field's tokens are looked up in its existing vocabulary, unknown → 0 (single-valued) or
    dropped (multi-valued, where 0 is padding).
    """
    n = len(new_ids)
    specs = schema.side_fields(side)  # type: ignore[arg-type]
    out = np.zeros((n, sum(s.slots for s in specs)), dtype=np.int64)
    frame = _side_frame(side_fields, new_ids)
    for spec in specs:
        cols = schema.side_slice(spec.name)
        if spec.name == id_field:
            out[:, cols.start] = np.arange(first_index, first_index + n, dtype=np.int64)
            continue
        if spec.name not in frame.columns:
            continue
        values = frame[spec.name].reset_index(drop=True)
        if spec.slots == 1:
            present = values.notna().to_numpy()
            codes = _index_of(vocab[spec.name], values[present])
            column = np.zeros(n, dtype=np.int64)
            column[present] = np.maximum(codes, 0)
            out[:, cols.start] = column
            continue
        # lists explode to one token per row, strings split on whitespace (RecBole's token_seq)
        tokens = values.explode().dropna().astype(str).str.split().explode().dropna()
        codes = _index_of(vocab[spec.name], tokens)
        known = codes > 0
        rows = np.asarray(tokens.index, dtype=np.int64)[known]
        position = pd.Series(rows).groupby(rows).cumcount().to_numpy()
        fits = position < spec.slots
        out[rows[fits], cols.start + position[fits]] = codes[known][fits]
    return out


def _event_ids(events: pd.DataFrame, column: str, source: str) -> pd.Series:
    ids = events[column]
    bad = ids.isna() | (ids.astype(str).str.strip() == "")
    if bad.any():
        raise UserError(f"{source}: {int(bad.sum())} event(s) without a {column}")
    return ids.astype(str)


def grow(base: EncodedData, base_stream_id: np.ndarray, events: pd.DataFrame, split: np.ndarray,
         drop_middle: str, source: str) -> Grown:
    """Append ``events`` (stream order, ``event_log.COLUMNS``) to ``base`` with splits ``split``.

    ``drop_middle`` (the run's ``DataConfig.drop_middle``) excludes middle ratings of the
    new rows the way ``encode`` excludes them from the base. Ratings are validated like
    the dataset's (integers on 1..levels); a bad one is a ``UserError`` naming ``source``.
    """
    if len(events) != split.shape[0]:
        raise ValueError("one split value per event expected")
    rating = validate_ratings(events["rating"].to_numpy(dtype=np.float64), base.levels, base.threshold, source)
    user_ids, item_ids = _event_ids(events, "user_id", source), _event_ids(events, "item_id", source)
    vocab = dict(base.vocab)
    vocab["user_id"], user, new_users = _append_ids(base.vocab["user_id"], user_ids)
    vocab["item_id"], item, new_items = _append_ids(base.vocab["item_id"], item_ids)
    from ratingctr.training.data.event_log import latest_side_fields

    user_rows = np.concatenate([base.user_rows, encode_side_rows(
        base.schema, base.vocab, "user", "user_id", base.user_rows.shape[0], new_users,
        latest_side_fields(events, "user"))])
    item_rows = np.concatenate([base.item_rows, encode_side_rows(
        base.schema, base.vocab, "item", "item_id", base.item_rows.shape[0], new_items,
        latest_side_fields(events, "item"))])
    schema = FieldSchema(tuple(
        replace(spec, vocab_size=len(vocab[spec.name])) if spec.name in ("user_id", "item_id") else spec
        for spec in base.schema.fields))
    middle = rating == base.threshold - 1
    split = split.astype(np.int8).copy()
    if drop_middle in ("train", "both"):
        split[middle & (split == TRAIN)] = EXCLUDED
    if drop_middle in ("eval", "both"):
        split[middle & (split != TRAIN)] = EXCLUDED
    new_rows = {"user": user, "item": item, "rating": rating, "split": split, "middle": middle}
    updates: dict = {"schema": schema, "vocab": vocab, "user_rows": np.ascontiguousarray(user_rows),
                     "item_rows": np.ascontiguousarray(item_rows)}
    for f in fields(base):
        value = getattr(base, f.name)
        if f.name in ROW_TABLES or not isinstance(value, np.ndarray):
            continue
        if f.name == "ts":  # the temporal split's per-row timestamps, when the data has them
            added = events["ts"].to_numpy().astype(value.dtype)
        elif f.name in new_rows:
            added = new_rows[f.name].astype(value.dtype)
        else:
            raise ValueError(f"cannot grow EncodedData.{f.name}: no event column maps to it")
        updates[f.name] = np.concatenate([value, added])
    data = replace(base, **updates)
    stream_id = np.concatenate([np.asarray(base_stream_id, dtype=str), events["stream_id"].to_numpy(dtype=str)])
    data.stats = {**base.stats, "users": data.n_users, "items": data.n_items,
                  "interactions": int(data.rating.shape[0]),
                  "density": float(data.rating.shape[0]) / float(data.n_users * data.n_items),
                  "click_rate": float(data.click.mean()),
                  "train": int((data.split == TRAIN).sum()), "valid": int((data.split == VALID).sum()),
                  "test": int((data.split == TEST).sum()), "excluded_middle": int((data.split == EXCLUDED).sum()),
                  "events": int((stream_id != "").sum())}
    growth = Growth(new_users=len(new_users), new_items=len(new_items), new_interactions=len(events))
    return Grown(data=data, stream_id=stream_id, growth=growth)

