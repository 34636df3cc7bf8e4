"""Metrics as pure numpy functions over whole arrays (no per-row Python).

* ``auc``: rank statistic with average ranks for ties, global over all rows (RecBole).
* ``logloss``: RecBole's clipped binary cross-entropy (eps = 1e-15, float64).
* ``ranking_metrics``: NDCG@K / Recall@K over per-user candidate lists (uni100 protocol,
  see ``training.evaluation``), averaged over users; ``ranked_hits_at_k`` is the formula
  both it and the retriever's full ranking (``training.retriever``) use.
* ``group_auc``: AUC per user-activity tertile and the variance across the groups.
* ``mci``: the marginal-contribution index log((1−p_b)/(1−p_b−c)) of paper 2.
"""
from __future__ import annotations

import numpy as np

from ratingctr.unique import sorted_unique


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their mean rank (as ``scipy.stats.rankdata``)."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    boundaries = np.flatnonzero(np.diff(sorted_values)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [values.size]])
    mean_rank = (starts + ends + 1) / 2.0  # mean of 1-based ranks start+1..end
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    labels = np.asarray(labels).astype(bool).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = average_ranks(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def logloss(labels: np.ndarray, probs: np.ndarray, eps: float = 1e-15) -> float:
    labels = np.asarray(labels, dtype=np.float64).ravel()
    probs = np.clip(np.asarray(probs, dtype=np.float64).ravel(), eps, 1.0 - eps)
    return float(-np.mean(labels * np.log(probs) + (1.0 - labels) * np.log(1.0 - probs)))


def ranking_metrics(group: np.ndarray, scores: np.ndarray, relevant: np.ndarray, ks: tuple[int, ...] = (10, 20),
                    seed: int = 0, with_ci: bool = False) -> dict[str, float]:
    """NDCG@K and Recall@K per group (user), averaged over groups with ≥ 1 relevant item.

    Each group's candidates are ranked together by score; exact ties are broken at
    random (seeded) so a positive listed first never gains from the order of the arrays.
    ``with_ci`` adds each metric's 95% confidence half-width over groups (``<metric>_ci95``,
    normal approximation: 1.96 · sd / √groups), what a sampled-users evaluation is quoted with.
    """
    group = np.asarray(group)
    relevant = np.asarray(relevant, dtype=bool)
    tie_break = np.random.default_rng(seed).random(group.size)
    order = np.lexsort((tie_break, -np.asarray(scores, dtype=np.float64), group))
    g_sorted, rel_sorted = group[order], relevant[order]
    uniq, starts = np.unique(g_sorted, return_index=True)
    group_pos = np.searchsorted(uniq, g_sorted)
    rank = np.arange(g_sorted.size) - starts[group_pos]  # 0-based rank inside its group
    n_relevant = np.bincount(group_pos, weights=rel_sorted, minlength=uniq.size)
    out: dict[str, float] = {}
    for k in ks:
        per_group = per_group_hits_at_k(group_pos[rel_sorted], rank[rel_sorted], n_relevant, k)
        for name, values in per_group.items():
            out[name] = float(np.mean(values))
            if with_ci:
                out[f"{name}_ci95"] = float(1.96 * values.std(ddof=1) / np.sqrt(values.size)) if values.size > 1 \
                    else float("nan")
    return out


def ranked_hits_at_k(group: np.ndarray, rank: np.ndarray, n_relevant: np.ndarray, k: int) -> dict[str, float]:
    """NDCG@k and Recall@k from where each relevant item ranked, averaged over groups with ≥ 1 relevant item.

    ``group[i]``/``rank[i]``: the group index (into ``n_relevant``) and 0-based rank of
    relevant item i; ``n_relevant[g]``: all relevant items of group g, ranked or not (a
    full-ranking retriever lists only its top k, yet recall counts every positive).
    Both the uni100 candidate lists and the retriever's top-k lists end here.
    """
    return {name: float(np.mean(values)) for name, values in per_group_hits_at_k(group, rank, n_relevant, k).items()}


def per_group_hits_at_k(group: np.ndarray, rank: np.ndarray, n_relevant: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """NDCG@k and Recall@k of every group with ≥ 1 relevant item (see :func:`ranked_hits_at_k`)."""
    n_relevant = np.asarray(n_relevant, dtype=np.float64)
    hit = rank < k
    hit_group, hit_rank = group[hit], rank[hit]
    hits = np.bincount(hit_group, minlength=n_relevant.size)
    dcg = np.bincount(hit_group, weights=1.0 / np.log2(hit_rank + 2.0), minlength=n_relevant.size)
    ideal = np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(k) + 2.0))])
    idcg = ideal[np.minimum(n_relevant, k).astype(np.int64)]
    valid = n_relevant > 0
    return {f"ndcg@{k}": dcg[valid] / idcg[valid], f"recall@{k}": hits[valid] / n_relevant[valid]}


def activity_groups(train_counts: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
    """Tertile group (0 low, 1 mid, 2 high) of every user by training interaction count."""
    active = train_counts[train_counts > 0]
    q1, q2 = np.quantile(active, [1 / 3, 2 / 3]) if active.size else (0.0, 0.0)
    groups = np.where(train_counts <= q1, 0, np.where(train_counts <= q2, 1, 2))
    return groups, (float(q1), float(q2))


GROUP_NAMES = ("low", "mid", "high")


def group_auc(user: np.ndarray, labels: np.ndarray, scores: np.ndarray, train_counts: np.ndarray) -> dict:
    """AUC of the rows of each activity tertile, and the variance of the three AUCs."""
    groups, (q1, q2) = activity_groups(train_counts)
    row_group = groups[user]
    out: dict = {"thresholds": {"low_max": q1, "mid_max": q2}}
    values = []
    for g, name in enumerate(GROUP_NAMES):
        mask = row_group == g
        value = auc(labels[mask], scores[mask]) if mask.any() else float("nan")
        out[name] = {"auc": value, "rows": int(mask.sum()), "users": int(sorted_unique(user[mask]).size),
                     "click_rate": float(labels[mask].mean()) if mask.any() else float("nan")}
        values.append(value)
    finite = [v for v in values if np.isfinite(v)]
    out["variance"] = float(np.var(finite)) if finite else float("nan")
    return out


def mci(p_b: float | np.ndarray, c: float | np.ndarray) -> float | np.ndarray:
    """Marginal contribution index log((1 − p_b) / (1 − p_b − c)); needs p_b + c in (0, 1)."""
    p_b, c = np.asarray(p_b, dtype=np.float64), np.asarray(c, dtype=np.float64)
    total = p_b + c
    if np.any((total <= 0) | (total >= 1)) or np.any((p_b <= 0) | (p_b >= 1)):
        raise ValueError(f"MCI needs p_b in (0, 1) and p_b + c in (0, 1); got p_b={p_b}, c={c}")
    value = np.log((1.0 - p_b) / (1.0 - total))
    return float(value) if value.ndim == 0 else value
