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


def _pairs(a: Sequence[float | None], b: Sequence[float | None]) -> np.ndarray:
    """Per-seed differences b − a over the seeds where both arms have a finite value."""
    diffs = [y - x for x, y in zip(a, b) if x is not None and y is not None and math.isfinite(x) and math.isfinite(y)]
    return np.asarray(diffs, dtype=np.float64)


def paired_difference(a: Sequence[float | None], b: Sequence[float | None], level: float = 0.95) -> dict:
    """Mean of b − a over seeds, its two-sided ``level`` t confidence interval and the paired p-value.

    ``{"mean", "ci_low", "ci_high", "p_value", "pairs"}``: the interval is
    mean ± t_{(1+level)/2, n−1} · s/√n over the n per-seed differences, the interval the
    paired t-test inverts (0 lies outside it exactly when p < 1 − level).  With fewer than
    two pairs the interval and p are None; with no spread the interval is the point and p
    is None (the t statistic is undefined).
    """
    from scipy.stats import t

    diff = _pairs(a, b)
    out = {"mean": float(diff.mean()) if diff.size else None, "ci_low": None, "ci_high": None,
           "p_value": paired_p_value(a, b), "pairs": int(diff.size)}
    if diff.size < 2:
        return out
    half = float(t.ppf((1.0 + level) / 2.0, diff.size - 1) * diff.std(ddof=1) / math.sqrt(diff.size))
    out["ci_low"], out["ci_high"] = out["mean"] - half, out["mean"] + half
    return out


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjustment of one family of p-values (None entries are not tests).

    Sort the m p-values ascending, multiply the i-th (0-based) by m − i, carry the running
    maximum so the order is kept, cap at 1.  Controls the family-wise error rate at α
    under any dependence between the tests, which paired comparisons on shared seeds have.
    """
    tested = [(p, i) for i, p in enumerate(p_values) if p is not None]
    m = len(tested)
    out: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(sorted(tested)):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


def hit_cap(metrics: dict) -> bool | None:
    """Whether a finished run was stopped by its epoch budget rather than by early stopping.

    True when it trained every allowed epoch and fewer than ``patience`` epochs had passed
    since its best one (so patience would not have stopped it there); None when the run
    did not record its history or configuration.
    """
    train = (metrics.get("config") or {}).get("train") or {}
    history, best = metrics.get("history"), metrics.get("best_epoch")
    if history is None or best is None or "epochs" not in train or "patience" not in train:
        return None
    return len(history) >= train["epochs"] and train["epochs"] - 1 - best < train["patience"]


def count_capped(runs: Sequence[dict]) -> dict:
    """``{"capped": n, "runs": total, "unknown": k}`` over finished runs' ``metrics.json`` payloads."""
    flags = [hit_cap(m) for m in runs]
    return {"capped": sum(f is True for f in flags), "runs": len(flags), "unknown": sum(f is None for f in flags)}


def diff_ci(diff: dict, digits: int = 4) -> str:
    """``+0.0012 [−0.0003, +0.0027]``: a ``paired_difference`` as a table cell."""
    if diff.get("mean") is None:
        return "n/a"
    if diff.get("ci_low") is None:
        return f"{diff['mean']:+.{digits}f}"
    return f"{diff['mean']:+.{digits}f} [{diff['ci_low']:+.{digits}f}, {diff['ci_high']:+.{digits}f}]"


def capped_line(counts: dict[str, dict]) -> str:
    """The sentence under a table: how many of its runs the epoch budget stopped (target 0)."""
    total = sum(c["runs"] for c in counts.values())
    capped = sum(c["capped"] for c in counts.values())
    unknown = sum(c["unknown"] for c in counts.values())
    parts = ", ".join(f"{name} {c['capped']}/{c['runs']}" for name, c in counts.items())
    tail = f"; {unknown} without a recorded history" if unknown else ""
    return (f"Runs stopped by the epoch cap rather than by early stopping: **{capped} of {total}** "
            f"({parts}){tail}. Target: 0.")


def merge_counts(counts: list[dict]) -> dict:
    """Sum ``count_capped`` results."""
    return {key: sum(c[key] for c in counts) for key in ("capped", "runs", "unknown")}
