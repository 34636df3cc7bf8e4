"""The promotion rule: is the candidate not worse than the serving model on held-out events?

Both models are scored on the same rows (``online/holdout.py``); the rule reads only the
whole-holdout AUC and logloss, with tolerances, because a retrained model that is a hair
worse on one window is normal noise and refusing it would freeze the loop:

    promote  iff  AUC(candidate) >= AUC(serving) - max_auc_drop
             and  logloss(candidate) <= logloss(serving) + max_logloss_rise

Everything else here is reported, not judged: calibration (mean p̂ vs observed click rate),
the slices of users and items the serving bundle has never seen (where a retrain should help
most), and the paired difference candidate − serving with a 95% bootstrap interval.  Users,
not rows, are resampled: one user's ratings are not independent of each other.  The bootstrap
is weighted (a user drawn k times weighs k), so each resample is a few whole-array passes over
rows sorted once, never a Python loop over users or rows.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from ratingctr.online.holdout import ScoredEvents
from ratingctr.training.metrics import auc, logloss

DEFAULT_MAX_AUC_DROP = 0.002
DEFAULT_MAX_LOGLOSS_RISE = 0.005
BOOTSTRAP_RESAMPLES = 200
BOOTSTRAP_SEED = 0
EPS = 1e-15


def _finite(value: float) -> float | None:
    """JSON has no NaN: an undefined metric (a slice with one class) is written as null."""
    return None if value is None or not math.isfinite(value) else float(value)


@dataclass(frozen=True)
class Scores:
    """One model on one set of rows. ``auc`` is None when the rows hold a single class."""

    rows: int
    auc: float | None
    logloss: float | None
    mean_p: float | None
    click_rate: float | None

    @property
    def calibration_gap(self) -> float | None:
        """Mean predicted p̂ minus the observed click rate (positive: the model over-predicts)."""
        return None if self.mean_p is None or self.click_rate is None else self.mean_p - self.click_rate

    def to_dict(self) -> dict:
        return {**asdict(self), "calibration_gap": self.calibration_gap}


def scores(labels: np.ndarray, p: np.ndarray) -> Scores:
    if labels.size == 0:
        return Scores(0, None, None, None, None)
    return Scores(rows=int(labels.size), auc=_finite(auc(labels, p)), logloss=_finite(logloss(labels, p)),
                  mean_p=float(p.mean()), click_rate=float(labels.mean()))


@dataclass(frozen=True)
class PairedDifference:
    """Candidate − serving on the same rows, with 95% bootstrap intervals over users."""

    auc_delta: float | None
    auc_ci95: tuple[float | None, float | None]
    logloss_delta: float | None
    logloss_ci95: tuple[float | None, float | None]
    users: int
    resamples: int
    seed: int


@dataclass(frozen=True)
class GateRule:
    max_auc_drop: float = DEFAULT_MAX_AUC_DROP
    max_logloss_rise: float = DEFAULT_MAX_LOGLOSS_RISE


@dataclass(frozen=True)
class GateDecision:
    """Every number the decision rests on, and the reasons when it refuses."""

    promote: bool
    reasons: tuple[str, ...]
    rule: GateRule
    candidate: Scores
    serving: Scores
    slices: dict[str, dict[str, Scores]]  # slice name → {"candidate": …, "serving": …}
    paired: PairedDifference
    cold_start_users: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"promote": self.promote, "reasons": list(self.reasons), "rule": asdict(self.rule),
                "candidate": self.candidate.to_dict(), "serving": self.serving.to_dict(),
                "slices": {name: {model: s.to_dict() for model, s in pair.items()}
                           for name, pair in self.slices.items()},
                "paired": {**asdict(self.paired), "auc_ci95": list(self.paired.auc_ci95),
                           "logloss_ci95": list(self.paired.logloss_ci95)},
                "cold_start_users": dict(self.cold_start_users)}


# ---- weighted metrics: the bootstrap's inner loop ---------------------------------------------
class _RankedRows:
    """Rows sorted once by score, tied scores grouped, for weighted AUCs under many weightings."""

    def __init__(self, labels: np.ndarray, p: np.ndarray) -> None:
        order = np.argsort(p, kind="stable")
        sorted_p = p[order]
        starts = np.concatenate([[True], sorted_p[1:] != sorted_p[:-1]])
        self.group = np.empty(p.size, dtype=np.int64)
        self.group[order] = np.cumsum(starts) - 1
        self.groups = int(starts.sum())
        self.positive = labels > 0.5

    def auc(self, weight: np.ndarray) -> float:
        """AUC with row weights: Σ_pos w · (negative weight scored lower + ½ tied) / (W_pos · W_neg)."""
        pos = np.bincount(self.group, weights=weight * self.positive, minlength=self.groups)
        neg = np.bincount(self.group, weights=weight * ~self.positive, minlength=self.groups)
        total_pos, total_neg = pos.sum(), neg.sum()
        if total_pos <= 0 or total_neg <= 0:
            return float("nan")
        below = np.cumsum(neg) - neg
        return float((pos * (below + 0.5 * neg)).sum() / (total_pos * total_neg))


def _row_logloss(labels: np.ndarray, p: np.ndarray) -> np.ndarray:
    p = np.clip(p, EPS, 1.0 - EPS)
    return -(labels * np.log(p) + (1.0 - labels) * np.log(1.0 - p))


def weighted_auc(labels: np.ndarray, p: np.ndarray, weight: np.ndarray) -> float:
    return _RankedRows(labels, p).auc(weight)


def _interval(values: np.ndarray) -> tuple[float | None, float | None]:
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None, None
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def paired_difference(users: np.ndarray, labels: np.ndarray, p_serving: np.ndarray, p_candidate: np.ndarray,
                      resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> PairedDifference:
    """AUC and logloss of candidate − serving, with 95% intervals from resampling users."""
    codes, uniques = pd.factorize(pd.Series(users, dtype=object))
    n_users = len(uniques)
    ranked_s, ranked_c = _RankedRows(labels, p_serving), _RankedRows(labels, p_candidate)
    loss_delta = _row_logloss(labels, p_candidate) - _row_logloss(labels, p_serving)
    rng = np.random.default_rng(seed)
    auc_deltas, loss_deltas = np.empty(resamples), np.empty(resamples)
    for r in range(resamples):  # one resample = a few passes over all rows
        weight = np.bincount(rng.integers(0, n_users, n_users), minlength=n_users)[codes].astype(np.float64)
        auc_deltas[r] = ranked_c.auc(weight) - ranked_s.auc(weight)
        loss_deltas[r] = (weight * loss_delta).sum() / weight.sum()
    return PairedDifference(
        auc_delta=_finite(auc(labels, p_candidate) - auc(labels, p_serving)), auc_ci95=_interval(auc_deltas),
        logloss_delta=_finite(float(loss_delta.mean())), logloss_ci95=_interval(loss_deltas),
        users=n_users, resamples=resamples, seed=seed)


# ---- the rule -------------------------------------------------------------------------------
def judge(candidate: Scores, serving: Scores, rule: GateRule) -> tuple[bool, tuple[str, ...]]:
    """The decision and, when it refuses, one reason per failed condition (with the numbers)."""
    reasons = []
    if candidate.auc is None or serving.auc is None:
        reasons.append("AUC is undefined on the held-out events (a single class)")
    elif candidate.auc < serving.auc - rule.max_auc_drop:
        reasons.append(f"AUC {candidate.auc:.4f} is more than {rule.max_auc_drop:g} below the serving "
                       f"model's {serving.auc:.4f} (drop {serving.auc - candidate.auc:.4f})")
    if candidate.logloss is None or serving.logloss is None:
        reasons.append("logloss is undefined on the held-out events")
    elif candidate.logloss > serving.logloss + rule.max_logloss_rise:
        reasons.append(f"logloss {candidate.logloss:.4f} is more than {rule.max_logloss_rise:g} above the serving "
                       f"model's {serving.logloss:.4f} (rise {candidate.logloss - serving.logloss:.4f})")
    return not reasons, tuple(reasons)


def decide(serving: ScoredEvents, candidate: ScoredEvents, rule: GateRule = GateRule(),
           resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> GateDecision:
    """Score both models on the same rows, the new-user and new-item slices, and apply the rule.

    The slices are defined by the *serving* bundle's vocabulary: "new" means new to what serves now.
    """
    if serving.labels.shape != candidate.labels.shape or not np.array_equal(serving.labels, candidate.labels):
        raise ValueError("serving and candidate were scored on different rows or with different thresholds")
    labels = serving.labels
    whole_c, whole_s = scores(labels, candidate.p_click), scores(labels, serving.p_click)
    slices = {}
    for name, mask in (("new_users", ~serving.user_known), ("new_items", ~serving.item_known)):
        slices[name] = {"candidate": scores(labels[mask], candidate.p_click[mask]),
                        "serving": scores(labels[mask], serving.p_click[mask])}
    promote, reasons = judge(whole_c, whole_s, rule)
    return GateDecision(promote=promote, reasons=reasons, rule=rule, candidate=whole_c, serving=whole_s,
                        slices=slices, paired=paired_difference(serving.users, labels, serving.p_click,
                                                                candidate.p_click, resamples, seed),
                        cold_start_users={"serving": serving.cold_start_users, "candidate": candidate.cold_start_users})
