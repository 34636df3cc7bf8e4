"""Top-K quality of ranked lists against what each user rated next: the metrics, once.

Why its own module: ``evaluate-bundle`` judges several lists per user (most popular,
the retriever's order, retriever + ranker for each bundle, each candidate count) with the
same definitions, and a paired comparison is only meaningful when both sides were scored
by the same code.  Everything is whole-array numpy over a ``[users, K]`` matrix of item
indices (0 = no item: a list shorter than K), so the cost is linear in users × K.

Definitions (binary relevance: a test item the user clicked, rating ≥ threshold):
Recall@K = hits in the top K / relevant items; HitRate@K = at least one hit; NDCG@K with
the ideal list of min(relevant, K) hits; MRR@K = 1 / rank of the first hit in the top K
(0 when none); coverage@K = distinct items recommended to anyone / catalogue;
popularity@K = mean training clicks of a recommended item.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ratingctr.unique import sorted_unique

METRICS = ("recall", "ndcg", "hit", "mrr")
Z95 = 1.959963984540054


@dataclass(frozen=True)
class Relevant:
    """The relevant (user, item) pairs as sorted keys ``user · stride + item``, and counts per evaluated user."""

    users: np.ndarray  # int64 [U]: the evaluated users, ascending
    keys: np.ndarray  # int64, sorted
    counts: np.ndarray  # int64 [U]
    stride: int

    @classmethod
    def of(cls, user: np.ndarray, item: np.ndarray, n_items: int) -> "Relevant":
        stride = n_items + 1
        keys = sorted_unique(user.astype(np.int64) * stride + item.astype(np.int64))
        users, counts = np.unique(keys // stride, return_counts=True)
        return cls(users, keys, counts, stride)

    def hits(self, lists: np.ndarray) -> np.ndarray:
        """``[U, K]`` bool: whether each listed item is relevant to its row's user (row i = ``users[i]``)."""
        if lists.shape[0] != self.users.shape[0]:
            raise ValueError("one list per evaluated user, in the order of Relevant.users")
        if self.keys.size == 0 or lists.size == 0:
            return np.zeros(lists.shape, dtype=bool)
        keys = self.users[:, None] * self.stride + lists
        pos = np.searchsorted(self.keys, keys).clip(max=self.keys.size - 1)
        return (self.keys[pos] == keys) & (lists > 0)


def per_user(hits: np.ndarray, counts: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Each metric at ``k``, one value per user (the population the intervals are over)."""
    top = hits[:, :k]
    found = top.sum(axis=1)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = np.cumsum(discounts)[np.minimum(counts, k) - 1]
    first = np.where(top.any(axis=1), top.argmax(axis=1) + 1, 0)
    return {"recall": found / counts, "ndcg": (top * discounts[:top.shape[1]]).sum(axis=1) / ideal,
            "hit": (found > 0).astype(np.float64), "mrr": np.where(first > 0, 1.0 / np.maximum(first, 1), 0.0)}


def mean_interval(values: np.ndarray) -> dict[str, float]:
    """Mean and its normal-approximation 95% interval over users (hundreds of users: the CLT holds)."""
    n = values.size
    mean = float(values.mean()) if n else float("nan")
    half = Z95 * float(values.std(ddof=1)) / math.sqrt(n) if n > 1 else float("nan")
    return {"mean": mean, "low": mean - half, "high": mean + half}


def paired(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Mean of ``a − b`` over the same users, its 95% interval and the paired t-test's two-sided p."""
    from scipy import stats

    diff = a - b
    out = mean_interval(diff)
    if diff.size > 1 and float(diff.std()) > 0:
        out["p"] = float(stats.ttest_rel(a, b).pvalue)
    else:
        out["p"] = 1.0 if diff.size else float("nan")
    out["users_better"], out["users_worse"] = int((diff > 0).sum()), int((diff < 0).sum())
    return out


def summarise(lists: np.ndarray, relevant: Relevant, ks: tuple[int, ...], n_items: int,
              train_clicks: np.ndarray) -> dict:
    """Every metric at every K with intervals, plus coverage and popularity of what was listed."""
    hits = relevant.hits(lists)
    out: dict = {"per_user": {}, "metrics": {}}
    for k in ks:
        values = per_user(hits, relevant.counts, k)
        out["per_user"][k] = values
        top = lists[:, :k]
        shown = top[top > 0]
        out["metrics"][k] = {**{name: mean_interval(values[name]) for name in METRICS},
                             "coverage": float(sorted_unique(shown).size / n_items) if n_items else 0.0,
                             "popularity": float(train_clicks[shown].mean()) if shown.size else 0.0,
                             "listed": float((top > 0).sum(axis=1).mean())}
    return out


def pad(rows: list[np.ndarray], width: int) -> np.ndarray:
    """Lists of item indices → ``[len(rows), width]`` int64, 0 where a list is shorter."""
    out = np.zeros((len(rows), width), dtype=np.int64)
    lengths = np.fromiter((min(len(r), width) for r in rows), dtype=np.int64, count=len(rows))
    if rows:
        flat = np.concatenate([np.asarray(r[:width], dtype=np.int64) for r in rows]) if lengths.sum() else \
            np.zeros(0, np.int64)
        row_index = np.repeat(np.arange(len(rows)), lengths)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        out[row_index, np.arange(flat.size) - np.repeat(starts, lengths)] = flat
    return out
