"""Choosing a setting per architecture on *validation* AUC, never test (issue 17).

Table 1's rating head can be run at a λr chosen per model, as the authors did; to keep
the comparison fair the binary head then gets the same number of tries, on its learning
rate.  Both choices read the runs' recorded ``valid.auc`` (the best-epoch validation
AUC), average it over the seeds and take the argmax (the first in grid order on a tie);
test numbers are read only for the chosen setting.

``AUTHORS_RATIOS`` is the authors' ``commands.sh``: EulerNet and FiGNN at λr = 0.1,
AutoInt and NFM at 0.5, and WideDeep, DCNV2, xDeepFM swept over 0.1–0.9 (which this
code then selects on validation, since their script leaves the pick to the reader).
"""
from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from ratingctr.training.experiments.runner import Plan
from ratingctr.training.experiments.stats import mean_std

AUTHORS_RATIOS: dict[str, tuple[float, ...]] = {"EulerNet": (0.1,), "FiGNN": (0.1,), "AutoInt": (0.5,),
                                                "NFM": (0.5,)}
RATIO_PRESETS = ("sweep", "authors")
DEFAULT_LR_FACTORS = (0.25, 0.5, 1.0, 2.0, 4.0)


def ratio_grid(model: str, ratios: tuple[float, ...], preset: str) -> tuple[float, ...]:
    """The λr candidates of ``model`` (or ``model@variant``): the sweep ``ratios``, or the authors' fixed value
    under ``authors``."""
    if preset not in RATIO_PRESETS:
        raise ValueError(f"unknown ratio preset {preset!r}; choose one of {RATIO_PRESETS}")
    return AUTHORS_RATIOS.get(model.partition("@")[0], ratios) if preset == "authors" else ratios


@dataclass(frozen=True)
class Choice:
    """The candidate validation picked, and what every candidate scored there."""

    chosen: Hashable
    valid_means: dict
    candidates: int


def select_on_validation(plan: Plan, keys: dict[Hashable, Sequence[str]]) -> Choice:
    """Argmax of the mean validation AUC over seeds; ``keys`` maps candidate → its runs' keys.

    A candidate with no finished validation AUC cannot win.
    """
    means = {}
    for candidate, run_keys in keys.items():
        means[candidate] = mean_std([(plan.metrics(k).get("valid") or {}).get("auc") for k in run_keys])[0]
    scored = [c for c in keys if means[c] is not None]
    if not scored:
        return Choice(chosen=None, valid_means=means, candidates=len(keys))
    best = max(scored, key=lambda c: (means[c], -list(keys).index(c)))
    return Choice(chosen=best, valid_means=means, candidates=len(keys))
