"""How γ (``training/data/synth.py::SELECTION``) was chosen: on draws of ML-100k's shape (943 users,
1,682 items, 100,000 ratings; seeds 0-2), EASE's and item-kNN's Recall@20 over most popular, on
the split ``train-retriever`` uses (``peer_recalls``), against the same numbers on ML-100k.

    .venv/bin/python reports/scale/synth-selection/calibrate.py > reports/scale/synth-selection/calibration.json
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from ratingctr.report_files import short_commit
from ratingctr.training.config import DataConfig
from ratingctr.training.data import synth
from ratingctr.training.data.synth_calibration import ml100k_calibration
from ratingctr.training.experiments.retriever_sizes import peer_recalls

GAMMAS = (0.0, 1.0, 1.2, 1.4, 1.6)
SEEDS = (0, 1, 2)


def lifts(data: DataConfig) -> dict[str, float]:
    r = peer_recalls(data)
    return {"ease": r["ease"] / r["popular"], "item_knn": r["item_knn"] / r["popular"], "popular": r["popular"]}


def main() -> None:
    cal = ml100k_calibration()
    out = {"commit": short_commit(), "chosen": synth.SELECTION, "ml-100k": lifts(DataConfig(dataset="ml-100k")),
           "draws": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for gamma in GAMMAS:
            synth.SELECTION = gamma
            per_seed = []
            for seed in SEEDS:
                folder = Path(tmp) / f"g{gamma}-s{seed}" / "synth"  # atomic: the folder carries the dataset name
                synth.synthesize(synth.SynthSpec(users=943, items=1682, ratings=100_000, seed=seed), cal, folder)
                per_seed.append(lifts(DataConfig(dataset="atomic", data_dir=str(folder))))
            out["draws"][str(gamma)] = {"per_seed": per_seed, "mean": {
                key: float(np.mean([s[key] for s in per_seed])) for key in per_seed[0]}}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
