"""Summaries across seeds and the paired test behind every "is it significant" column.

Seeds pair runs: seed s fixes the split, the initialisation and the batch order of both
arms, so arm A and arm B of seed s saw the same data.  The paired t-test on the
per-seed differences is therefore the right test (the papers report no variance).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (ddof = 1) of the finite values; None where undefined."""
    arr = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if arr.size == 0:
        return None, None
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else None


def paired_p_value(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Two-sided paired t-test p-value of b − a over seeds; None with < 2 pairs or no spread."""
    from scipy.stats import ttest_rel

    pairs = [(x, y) for x, y in zip(a, b) if x is not None and y is not None]
    if len(pairs) < 2:
        return None
    x, y = np.asarray(pairs, dtype=np.float64).T
    diff = y - x
    if np.allclose(diff, diff[0], rtol=0.0, atol=1e-15):  # constant differences: t undefined
        return None
    return float(ttest_rel(y, x).pvalue)


def relative(base: float | None, other: float | None) -> float | None:
    if base is None or other is None or base == 0:
        return None
    return (other - base) / abs(base)
