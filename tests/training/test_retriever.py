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
                                                   positives="clicks", progress=False), tmp_path / "capped")
    assert clicks > 3 * 64 and capped["batch_size"] == -(-clicks // 3)  # 64 would take 9+ steps: ceil(n/3)
    default = train_retriever(data, RetrieverConfig(embedding_dim=8, layers=1, epochs=1, min_steps=0,
                                                    positives="clicks", progress=False), tmp_path / "default")
    assert default["batch_size"] == max(64, -(-clicks // 25))  # small data: the minimum-steps rule, untouched
    assert np.isfinite(capped["test"]["recall@20"]) and capped["test"]["users"] == default["test"]["users"]


def test_rating_positives_use_every_rated_train_item_and_patience_counts_steps(tiny, tiny_atomic: Path,
                                                                              tmp_path: Path) -> None:
    """``positives="ratings"`` (the default): every rated train row is an edge and a BPR positive;
    the most-popular baseline still counts clicks; the patience is at least ``patience_steps``."""
    rated = int((tiny.split == TRAIN).sum())
    clicks = int(((tiny.split == TRAIN) & (tiny.rating >= tiny.threshold)).sum())
    data = DataConfig(dataset="atomic", data_dir=str(tiny_atomic), k_core=3)
    common = dict(embedding_dim=8, layers=1, epochs=2, min_steps=0, progress=False)
    ratings = train_retriever(data, RetrieverConfig(**common, patience_steps=1000), tmp_path / "ratings")
    click_run = train_retriever(data, RetrieverConfig(**common, positives="clicks", patience_steps=0),
                                tmp_path / "clicks")
    assert rated > clicks
    assert ratings["graph_edges"] == rated and click_run["graph_edges"] == clicks
    assert ratings["popular"] == click_run["popular"]  # the same click-popularity baseline
    assert ratings["batch_size"] == max(64, -(-rated // 25))
    steps = -(-rated // ratings["batch_size"])
    assert ratings["patience_epochs"] == max(10, -(-1000 // steps)) > 10 and click_run["patience_epochs"] == 10
    with __import__("pytest").raises(ValueError, match="positives"):
        train_retriever(data, RetrieverConfig(**common, positives="views"), tmp_path / "bad")
