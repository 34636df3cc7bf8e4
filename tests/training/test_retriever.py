"""The retriever's batch policy: bounded steps per epoch on both sides, so an epoch's cost is linear."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ratingctr.training.config import DataConfig
from ratingctr.training.data.encode import TRAIN
from ratingctr.training.retriever import RetrieverConfig, train_retriever


def test_the_batch_grows_so_an_epoch_has_at_most_max_batches_steps(tiny, tiny_atomic: Path, tmp_path: Path) -> None:
    clicks = int(((tiny.split == TRAIN) & (tiny.rating >= tiny.threshold)).sum())
    data = DataConfig(dataset="atomic", data_dir=str(tiny_atomic), k_core=3)
    capped = train_retriever(data, RetrieverConfig(embedding_dim=8, layers=1, epochs=1, min_steps=0, batch_size=64,
                                                   min_batches_per_epoch=0, max_batches_per_epoch=3,
                                                   progress=False), tmp_path / "capped")
    assert clicks > 3 * 64 and capped["batch_size"] == -(-clicks // 3)  # 64 would take 9+ steps: ceil(n/3)
    default = train_retriever(data, RetrieverConfig(embedding_dim=8, layers=1, epochs=1, min_steps=0,
                                                    progress=False), tmp_path / "default")
    assert default["batch_size"] == max(64, -(-clicks // 25))  # small data: the minimum-steps rule, untouched
    assert np.isfinite(capped["test"]["recall@20"]) and capped["test"]["users"] == default["test"]["users"]
