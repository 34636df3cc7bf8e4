"""Uniform negative items by whole-array rejection: the one sampler of training and evaluation.

The uni100 protocol (``training.evaluation``) draws 100 negatives per test positive
among the items a user never touched; the retriever's BPR loss draws one per training
positive among the items that are not its training positives. Same draw, different
excluded set, so both come from here.
"""
from __future__ import annotations

import numpy as np

from ratingctr.unique import sorted_unique


def interaction_keys(user: np.ndarray, item: np.ndarray, n_items: int) -> np.ndarray:
    """One int64 key per (user, item) pair, ``user * (n_items + 1) + item``, sorted and unique."""
    return sorted_unique(np.asarray(user, np.int64) * (n_items + 1) + np.asarray(item, np.int64))


def sample_negatives(users: np.ndarray, excluded: np.ndarray, n_items: int, count: int,
                     rng: np.random.Generator) -> np.ndarray:
    """``[len(users), count]`` items drawn uniformly from ``1..n_items`` whose key with their
    user (``interaction_keys``) is not in ``excluded``.

    Draw everything, then redraw only the collisions until none is left: no per-row
    Python. Every user must have at least one item outside ``excluded`` or this never
    ends (``evaluation.sample_uni100`` drops users who touched every item first).
    """
    stride = n_items + 1
    users = np.asarray(users, np.int64)[:, None]
    negatives = rng.integers(1, n_items + 1, size=(users.shape[0], count))
    bad = in_sorted(users * stride + negatives, excluded)
    while bad.any():
        negatives[bad] = rng.integers(1, n_items + 1, size=int(bad.sum()))
        bad = in_sorted(users * stride + negatives, excluded)
    return negatives


def in_sorted(values: np.ndarray, sorted_keys: np.ndarray) -> np.ndarray:
    """``np.isin(values, sorted_keys)`` for keys already sorted (``interaction_keys``): a binary
    search per value, O(m log n), where ``np.isin`` sorts values and keys together every call
    (the keys are every interaction: 25M at MovieLens-25M's size, per rejection round)."""
    if sorted_keys.size == 0:
        return np.zeros(np.shape(values), bool)
    index = np.searchsorted(sorted_keys, values)
    np.minimum(index, sorted_keys.size - 1, out=index)
    return sorted_keys[index] == values
