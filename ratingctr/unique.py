"""Distinct values of an integer array, sorted: ``np.unique`` without its hash table.

Why this exists: since numpy 2.3, ``np.unique(a)`` (no ``return_*`` option) finds distinct
values with a hash table, then sorts them.  On the interaction keys this project builds
(int64 ``user * (n_items + 1) + item``), measured here with numpy 2.4.6 on this machine's
CPU, it was 40–75× slower than sorting and grew faster than the data: 0.87 s / 5.7 s / 38 s
for 1M / 5M / 25M random int64 keys against 0.02 s / 0.09 s / 0.51 s for sort + compare
(``reports/scale``: at 25M ratings, uni100's touched-pair keys took 89 of evaluation's
160 s).  ``np.unique`` with ``return_index`` / ``return_inverse`` / ``return_counts`` still
sorts and is not affected.
"""
from __future__ import annotations

import numpy as np


def reference_sorted_unique(values: np.ndarray) -> np.ndarray:
    """``np.unique`` itself: what ``sorted_unique`` must equal."""
    return np.unique(values)


def sorted_unique(values: np.ndarray) -> np.ndarray:
    """The distinct values of ``values`` (any shape, flattened), ascending, in its dtype.

    For integers (and booleans): NaN never compares equal, so float input with NaNs would keep
    every NaN, unlike ``np.unique``.
    """
    flat = np.sort(np.asarray(values).ravel())
    if flat.size < 2:
        return flat
    keep = np.empty(flat.size, dtype=bool)
    keep[0] = True
    np.not_equal(flat[1:], flat[:-1], out=keep[1:])
    return flat[keep]


def reference_compact_codes(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(codes, return_inverse=True)``: what ``compact_codes`` must equal."""
    return np.unique(codes, return_inverse=True)


def compact_codes(codes: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(the distinct values of ``codes``, ascending; each code's index among them) for codes in
    ``0..size-1``, in O(len + size) with a presence table instead of ``np.unique``'s argsort.

    Why: dataset encoding renumbers the users and items left by k-core filtering, 25M codes
    of a factorized column at MovieLens-25M's size, where the argsort was ~5 s per column.
    """
    codes = np.asarray(codes)
    if codes.size and (codes.min() < 0 or codes.max() >= size):
        raise ValueError(f"codes must lie in 0..{size - 1}")
    present = np.zeros(size, dtype=bool)
    present[codes] = True
    remap = np.cumsum(present, dtype=np.int64) - 1
    return np.flatnonzero(present), remap[codes]
