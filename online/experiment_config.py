"""The online experiment's settings, kept light (no numpy/pandas) so the CLI builds its flags fast."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class OnlineExperimentConfig:
    """The experiment's knobs; the CLI flags map onto it and ``results.json`` records it."""

    dataset: str = "ml-100k"
    data_dir: str | None = None
    chunks: int = 5
    initial_share: float = 0.5
    model: str = "DCNV2"
    head: str = "rating"
    epochs: int = 30
    retriever_epochs: int = 300
    retrain_epochs: int = 5
    retrain_retriever_epochs: int = 30
    seed: int = 2020
    batch: int = 500
    probe_users: int = 200
    k: int = 10
    crash_chunk: int = 2  # this chunk's cycle pulls with a consumer SIGKILLed mid-write first
    holdout_by: str = "user"  # the loop's gate holdout: each user's newest events, or "time" (newest overall)
    spoil_chunk: int = 3  # this chunk's cycle first runs a spoiled candidate the gate must refuse
    out: str = "reports/ml-100k/online"
    work: str = "runs/online-ml-100k"
