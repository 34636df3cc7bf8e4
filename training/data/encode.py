"""Raw string tokens → integer fields, labels, k-core filter and a random or temporal split.

Every step is a whole-array numpy/pandas operation.  The result keeps one feature row
per user and per item (not per interaction): a batch's input matrix is
``concat(user_rows[user], item_rows[item])``, the same broadcast the gateway performs.

Both splits come after the k-core filter, which sees the whole log (RecBole's order):
under the temporal split a user or item that passes k-core may therefore have all its
rows in valid/test, so test rows can be cold (unseen in train) by construction.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ratingctr.errors import UserError
from ratingctr.training.config import DataConfig, check_fractions
from ratingctr.training.data.fetch import fetch_ml100k
from ratingctr.training.data.readers import DATASETS, RawData, read_atomic, read_csv, read_ml1m, read_ml100k
from ratingctr.training.data.schema import UNKNOWN_TOKEN, FieldSchema, FieldSpec
from ratingctr.unique import compact_codes

TRAIN, VALID, TEST, EXCLUDED = 0, 1, 2, -1


@dataclass
class EncodedData:
    """Encoded interactions.

    ``split`` is TRAIN/VALID/TEST, or EXCLUDED for middle ratings dropped by
    ``drop_middle``; ``middle`` flags ratings equal to ``threshold - 1`` so evaluation
    with and without them can be reported from the same run.  ``ts`` is each row's
    timestamp as the source gave it (NaN where it has none), kept for whatever orders
    interactions in time after loading (the online experiment, warm-start retraining).
    """

    schema: FieldSchema
    user_rows: np.ndarray  # int64 [n_users + 1, user columns]; row 0 = unknown user
    item_rows: np.ndarray  # int64 [n_items + 1, item columns]; row 0 = unknown item
    user: np.ndarray  # int64 [n]
    item: np.ndarray  # int64 [n]
    rating: np.ndarray  # int64 [n], 1..levels
    split: np.ndarray  # int8 [n]
    middle: np.ndarray  # bool [n]
    ts: np.ndarray  # float64 [n], source timestamps; NaN = none
    vocab: dict[str, list[str]]
    levels: int
    threshold: int
    stats: dict = field(default_factory=dict)

    @property
    def n_users(self) -> int:
        return self.user_rows.shape[0] - 1

    @property
    def n_items(self) -> int:
        return self.item_rows.shape[0] - 1

    @property
    def click(self) -> np.ndarray:
        return (self.rating >= self.threshold).astype(np.float32)

    def rows(self, part: int) -> np.ndarray:
        return np.flatnonzero(self.split == part)

    def features(self, user: np.ndarray, item: np.ndarray) -> np.ndarray:
        """``[m, C]`` model input for (user, item) index pairs."""
        return np.concatenate([self.user_rows[user], self.item_rows[item]], axis=1)


def read_raw(config: DataConfig) -> RawData:
    if config.dataset not in DATASETS:
        raise UserError(f"unknown dataset '{config.dataset}'; choose one of: {', '.join(DATASETS)}")
    if config.dataset == "ml-100k":
        return read_ml100k(fetch_ml100k(Path(config.data_dir) if config.data_dir else None))
    if config.data_dir is None:
        raise UserError(f"--data-dir is required for --dataset {config.dataset}")
    reader = {"ml-1m": read_ml1m, "atomic": read_atomic, "csv": read_csv}[config.dataset]
    return reader(Path(config.data_dir))


def validate_ratings(rating: np.ndarray, levels: int, threshold: int, source: str) -> np.ndarray:
    if not 2 <= threshold <= levels:
        raise UserError(f"threshold {threshold} is outside the rating scale: it must be in 2..{levels}")
    bad = (rating != np.round(rating)) | (rating < 1) | (rating > levels)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise UserError(f"{source}: {int(bad.sum())} rating(s) outside the integer scale 1..{levels}, "
                        f"first is {rating[first]:g} (row {first + 1}); set --levels or clean the file")
    return rating.astype(np.int64)


def k_core_mask(user: np.ndarray, item: np.ndarray, k: int) -> np.ndarray:
    """Rows kept after iteratively removing users and items with fewer than ``k`` rows."""
    keep = np.ones(user.shape[0], dtype=bool)
    if k <= 1:
        return keep
    n_users, n_items = int(user.max()) + 1, int(item.max()) + 1
    while True:
        user_count = np.bincount(user[keep], minlength=n_users)
        item_count = np.bincount(item[keep], minlength=n_items)
        new_keep = keep & (user_count[user] >= k) & (item_count[item] >= k)
        if new_keep.sum() == keep.sum():
            return keep
        keep = new_keep


def _split_in_order(order: np.ndarray, fractions: tuple[float, float, float]) -> np.ndarray:
    """The first ``fractions[0]`` of ``order`` → TRAIN, the next ``fractions[1]`` → VALID, the rest → TEST."""
    fractions = check_fractions(fractions)
    n = order.shape[0]
    n_train = int(round(fractions[0] * n))
    n_valid = int(round(fractions[1] * n))
    split = np.empty(n, dtype=np.int8)
    split[order[:n_train]] = TRAIN
    split[order[n_train:n_train + n_valid]] = VALID
    split[order[n_train + n_valid:]] = TEST
    return split


def random_split(n: int, fractions: tuple[float, float, float], seed: int) -> np.ndarray:
    """Seeded random TRAIN/VALID/TEST assignment with the given fractions (papers: 0.8/0.1/0.1)."""
    check_fractions(fractions)
    return _split_in_order(np.random.default_rng(seed).permutation(n), fractions)


def temporal_split(timestamps: np.ndarray, fractions: tuple[float, float, float],
                   source: str = "the dataset") -> np.ndarray:
    """TRAIN/VALID/TEST by global time: the oldest ``fractions[0]`` of the rows train, the
    next ``fractions[1]`` validate, the newest test, so every train timestamp is <= every
    valid one <= every test one.  Equal timestamps keep their input row order (a stable
    sort), so a tie across a boundary is cut the same way on every run; no seed is involved.

    Users and items are not split per user: a test row's user or item may be absent from
    train (cold), which is what a model deployed at the cut-off time would face.
    """
    timestamps = np.asarray(timestamps, dtype=np.float64)
    missing = int(np.isnan(timestamps).sum())
    if missing:
        what = "has no timestamps" if missing == timestamps.shape[0] \
            else f"lacks a timestamp on {missing} of {timestamps.shape[0]} interactions"
        raise UserError(f"--split temporal orders interactions by time, but {source} {what}; "
                        f"use --split random or add a timestamp column")
    return _split_in_order(np.argsort(timestamps, kind="stable"), fractions)


def _token_codes(values: pd.Series) -> tuple[np.ndarray, list[str]]:
    """Codes 1..V for non-empty tokens (0 for missing) and the vocabulary in code order."""
    values = values.fillna("").astype(str).str.strip()
    vocab = sorted(set(values[values != ""].unique()))
    codes = pd.Categorical(values, categories=vocab).codes.astype(np.int64) + 1
    return codes, [UNKNOWN_TOKEN, *vocab]


def _multi_token_codes(values: pd.Series) -> tuple[np.ndarray, list[str]]:
    """Padded ``[n, slots]`` codes for space-separated token sets (0 = padding)."""
    tokens = values.fillna("").astype(str).str.split().explode()
    tokens = tokens[tokens.notna() & (tokens != "")]
    vocab = sorted(set(tokens.unique()))
    rows = np.asarray(tokens.index, dtype=np.int64)
    codes = pd.Categorical(tokens.to_numpy(), categories=vocab).codes.astype(np.int64) + 1
    position = pd.Series(rows).groupby(rows).cumcount().to_numpy()
    slots = int(position.max()) + 1 if position.size else 1
    out = np.zeros((len(values), slots), dtype=np.int64)
    out[rows, position] = codes
    return out, [UNKNOWN_TOKEN, *vocab]


def _side_rows(ids: list[str], table: pd.DataFrame | None, multi: set[str], side: str,
               id_field: str, specs: list[FieldSpec], vocab: dict[str, list[str]]) -> np.ndarray:
    n = len(ids)
    columns = [np.arange(n + 1, dtype=np.int64)[:, None]]
    specs.append(FieldSpec(id_field, n + 1, side))  # type: ignore[arg-type]
    vocab[id_field] = [UNKNOWN_TOKEN, *ids]
    if table is not None:
        aligned = table.reindex(ids)
        for name in aligned.columns:
            if name in vocab:
                raise UserError(f"field name '{name}' appears on both the user and the item side")
            if name in multi:
                codes, words = _multi_token_codes(aligned[name].reset_index(drop=True))
            else:
                codes, words = _token_codes(aligned[name].reset_index(drop=True))
                codes = codes[:, None]
            columns.append(np.vstack([np.zeros((1, codes.shape[1]), np.int64), codes]))
            specs.append(FieldSpec(name, len(words), side, codes.shape[1]))  # type: ignore[arg-type]
            vocab[name] = words
    return np.ascontiguousarray(np.concatenate(columns, axis=1))


def encode(raw: RawData, config: DataConfig) -> EncodedData:
    frame = raw.interactions
    rating = validate_ratings(frame["rating"].to_numpy(), config.levels, config.threshold, raw.name)
    user_codes, user_tokens = pd.factorize(frame["user_id"], sort=True)
    item_codes, item_tokens = pd.factorize(frame["item_id"], sort=True)
    keep = k_core_mask(user_codes, item_codes, config.k_core)
    if not keep.any():
        raise UserError(f"{config.k_core}-core filtering removed every interaction of {raw.name}")
    kept_users, user = compact_codes(user_codes[keep], len(user_tokens))
    kept_items, item = compact_codes(item_codes[keep], len(item_tokens))
    specs: list[FieldSpec] = []
    vocab: dict[str, list[str]] = {}
    user_ids = np.asarray(user_tokens)[kept_users].astype(str).tolist()
    item_ids = np.asarray(item_tokens)[kept_items].astype(str).tolist()
    user_rows = _side_rows(user_ids, raw.users, raw.multi_valued, "user", "user_id", specs, vocab)
    item_rows = _side_rows(item_ids, raw.items, raw.multi_valued, "item", "item_id", specs, vocab)
    rating = rating[keep]
    ts = frame["timestamp"].to_numpy(dtype=np.float64)[keep] if "timestamp" in frame.columns \
        else np.full(rating.shape[0], np.nan)
    if config.split_mode == "temporal":
        split = temporal_split(ts, config.split, raw.name)
    else:
        split = random_split(rating.shape[0], config.split, config.seed)
    middle = rating == config.threshold - 1
    if config.drop_middle in ("train", "both"):
        split[middle & (split == TRAIN)] = EXCLUDED
    if config.drop_middle in ("eval", "both"):
        split[middle & (split != TRAIN)] = EXCLUDED
    data = EncodedData(schema=FieldSchema(tuple(specs)), user_rows=user_rows, item_rows=item_rows,
                       user=user.astype(np.int64) + 1, item=item.astype(np.int64) + 1, rating=rating,
                       split=split, middle=middle, ts=ts, vocab=vocab, levels=config.levels, threshold=config.threshold)
    data.stats = {
        "dataset": raw.name, "users": data.n_users, "items": data.n_items,
        "interactions": int(rating.shape[0]), "interactions_before_k_core": int(keep.shape[0]),
        "density": float(rating.shape[0]) / float(data.n_users * data.n_items),
        "click_rate": float(data.click.mean()),
        "train": int((split == TRAIN).sum()), "valid": int((split == VALID).sum()),
        "test": int((split == TEST).sum()), "excluded_middle": int((split == EXCLUDED).sum()),
        "split_mode": config.split_mode, "split_fractions": list(config.split),
    }
    if config.split_mode == "temporal":  # where the cuts fell, and how cold the held-out rows are
        data.stats.update(_temporal_stats(data))
    return data


def _temporal_stats(data: EncodedData) -> dict:
    """The time range of each part and the share of valid/test rows whose user or item has no train row."""
    train = data.split == TRAIN
    seen_user = np.zeros(data.n_users + 1, dtype=bool)
    seen_item = np.zeros(data.n_items + 1, dtype=bool)
    seen_user[data.user[train]] = True
    seen_item[data.item[train]] = True
    out: dict = {}
    for name, part in (("train", TRAIN), ("valid", VALID), ("test", TEST)):
        rows = data.split == part
        if rows.any():
            out[f"{name}_time"] = [float(data.ts[rows].min()), float(data.ts[rows].max())]
        if part != TRAIN:
            out[f"{name}_cold_user_rows"] = int((rows & ~seen_user[data.user]).sum())
            out[f"{name}_cold_item_rows"] = int((rows & ~seen_item[data.item]).sum())
    return out


def load_dataset(config: DataConfig) -> EncodedData:
    """Read, validate, filter, encode and split the dataset named by ``config``."""
    if config.levels < 2:
        raise UserError(f"levels must be at least 2, got {config.levels}")
    return encode(read_raw(config), config)
