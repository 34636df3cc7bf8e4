"""What the synthetic generator copies from MovieLens-100k, and the statistics that check it.

Why constants and not a read at run time: ``data synth`` must work offline and without the
recbole wheel, yet its marginals must stay ML-100k's.  ``calibrate`` derives a
``Calibration`` from any ``RawData``; ``ML100K`` is its value on the bundled ML-100k, and
``tests/training/data/test_synth.py`` recomputes it from the real files, so the literal
below cannot drift from the data it claims to describe.

``dataset_statistics`` is the one definition of the numbers both sides are compared on
(histogram, click rate, the spread and concentration of user activity and item popularity).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ratingctr.training.data.readers import RawData


@dataclass(frozen=True)
class Categorical:
    """A categorical marginal: tokens and their probabilities (same order, summing to 1)."""

    tokens: tuple[str, ...]
    probs: tuple[float, ...]

    def draw(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """Codes into ``tokens``, drawn by inverse CDF (one ``searchsorted``, no per-row Python)."""
        cdf = np.cumsum(self.probs)
        return np.minimum(np.searchsorted(cdf / cdf[-1], rng.random(size), side="right"), len(self.tokens) - 1)


@dataclass(frozen=True)
class Calibration:
    """The ML-100k marginals the generator reproduces.

    ``user_log_std`` / ``item_log_std``: standard deviation of log(ratings per user / item),
    the width of the lognormal activity and popularity laws.  ``min_user_ratings``: ML-100k
    keeps users with at least 20 ratings.  ``genres_per_item``: P(1 genre), P(2), ...
    """

    rating_probs: tuple[float, ...]
    user_log_std: float
    item_log_std: float
    min_user_ratings: int
    time_range: tuple[int, int]
    age: Categorical
    gender: Categorical
    occupation: Categorical
    release_year: Categorical
    genre: Categorical
    genres_per_item: tuple[float, ...]


def _marginal(values: pd.Series) -> Categorical:
    counts = values.fillna("").astype(str).value_counts()
    counts = counts.sort_index()
    return Categorical(tuple(counts.index), tuple(round(float(p), 6) for p in (counts / counts.sum())))


def dataset_statistics(user: np.ndarray, item: np.ndarray, rating: np.ndarray, levels: int = 5,
                       threshold: int = 4) -> dict[str, float | list[float]]:
    """Histogram, click rate, log-count spread and Gini of users' and items' rating counts."""
    _, user_counts = np.unique(user, return_counts=True)
    _, item_counts = np.unique(item, return_counts=True)
    rating = np.asarray(rating, dtype=np.int64)
    hist = np.bincount(rating, minlength=levels + 1)[1:levels + 1] / rating.size
    return {"rating_probs": [float(p) for p in hist], "click_rate": float((rating >= threshold).mean()),
            "user_log_std": float(np.log(user_counts).std()), "item_log_std": float(np.log(item_counts).std()),
            "user_gini": gini(user_counts), "item_gini": gini(item_counts),
            "ratings_per_user": float(rating.size / user_counts.size)}


def gini(counts: np.ndarray) -> float:
    """Gini coefficient of non-negative counts (0: all equal, → 1: one holds everything)."""
    x = np.sort(np.asarray(counts, dtype=np.float64))
    n = x.size
    return float((2.0 * np.arange(1, n + 1) - n - 1) @ x / (n * x.sum())) if n and x.sum() else 0.0


def calibrate(raw: RawData) -> Calibration:
    """The marginals of ``raw`` (ML-100k's atomic files, read with their own field names)."""
    inter = raw.interactions
    stats = dataset_statistics(pd.factorize(inter["user_id"])[0], pd.factorize(inter["item_id"])[0],
                               inter["rating"].to_numpy())
    users, items = raw.users, raw.items
    assert users is not None and items is not None, "calibration needs the .user and .item side tables"
    genre_col = "genre" if "genre" in items.columns else "class"
    genres = items[genre_col].fillna("").str.split()
    per_item = genres.str.len().to_numpy()
    per_item_probs = np.bincount(per_item[per_item > 0])[1:] / (per_item > 0).sum()
    ts = inter["timestamp"].to_numpy()
    return Calibration(
        rating_probs=tuple(round(p, 6) for p in stats["rating_probs"]),  # type: ignore[union-attr]
        user_log_std=round(float(stats["user_log_std"]), 4), item_log_std=round(float(stats["item_log_std"]), 4),
        min_user_ratings=int(inter.groupby("user_id").size().min()),
        time_range=(int(np.nanmin(ts)), int(np.nanmax(ts))),
        age=_marginal(users["age"]), gender=_marginal(users["gender"]), occupation=_marginal(users["occupation"]),
        release_year=_marginal(items["release_year"][items["release_year"] != ""]),
        genre=_marginal(genres.explode().dropna()),
        genres_per_item=tuple(round(float(p), 6) for p in per_item_probs))


def ml100k_calibration(data_root: str | None = None) -> Calibration:
    """ML-100k's calibration, from the bundled ML-100k (fetched once into the data cache)."""
    from pathlib import Path

    from ratingctr.training.data.fetch import fetch_ml100k
    from ratingctr.training.data.readers import read_ml100k

    return calibrate(read_ml100k(fetch_ml100k(Path(data_root) if data_root else None)))
