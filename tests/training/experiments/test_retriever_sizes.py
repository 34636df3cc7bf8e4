"""The retriever-size experiment: the subsample keeps each user's share, runs are cached per point."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ratingctr.training.experiments.retriever_sizes import (EASE_LAMBDAS, Policy, ease_weights, render, run_experiment,
                                                             user_stratified_sample)


def test_every_user_keeps_the_same_share_of_their_rows_and_at_least_one() -> None:
    user = np.array(["a"] * 10 + ["b"] * 5 + ["c"] * 1 + ["d"] * 3)
    mask = user_stratified_sample(user, 0.4, seed=1)
    kept = pd.Series(user[mask]).value_counts().to_dict()
    assert kept == {"a": 4, "b": 2, "c": 1, "d": 1}  # round(0.4·n), never zero
    assert mask.tolist() == user_stratified_sample(user, 0.4, seed=1).tolist()  # deterministic per seed
    assert mask.tolist() != user_stratified_sample(user, 0.4, seed=2).tolist()  # the seed draws the rows
    assert user_stratified_sample(user, 1.0, seed=3).all()


def test_runs_are_cached_per_policy_share_and_seed(ml100k_root: Path, tmp_path: Path) -> None:
    short = [Policy("short", patience=1, min_epochs=0, epochs=2), Policy("floor", patience=1, min_epochs=3, epochs=3)]
    first = run_experiment(short, (0.2,), (1,), tmp_path / "runs", str(ml100k_root))
    by_policy = {r["policy"]: r for r in first["rows"]}
    assert by_policy["floor"]["epochs_run"] == 3  # the minimum holds even when validation stalls
    assert by_policy["short"]["epochs_run"] <= 2
    assert 8_000 < by_policy["short"]["train_ratings"] < 20_000  # 20% of ML-100k's ~80k training ratings
    again = run_experiment(short, (0.2,), (1,), tmp_path / "runs", str(ml100k_root))
    assert all(r["cached"] for r in again["rows"]) and not any(r["cached"] for r in first["rows"])
    assert [r["test_recall"] for r in again["rows"]] == [r["test_recall"] for r in first["rows"]]
    assert "| floor | 20% |" in render(again)
    # the item-kNN baseline is judged on exactly the retriever's split: the same most-popular recall
    knn = first["item_knn"]
    assert len(knn) == 1 and knn[0]["popular"] == pytest.approx(by_policy["short"]["popular_recall"])
    assert knn[0]["ratio"] == knn[0]["item_knn"] / knn[0]["popular"] and 0.05 < knn[0]["item_knn"] < 0.5
    # EASE on the same split, λ from the grid (chosen on validation), a real recommender's recall
    assert knn[0]["ease_lambda"] in EASE_LAMBDAS and 0.05 < knn[0]["ease"] < 0.5
    assert knn[0]["ease_ratio"] == knn[0]["ease"] / knn[0]["popular"]
    text = render(first)
    assert "| 20% | 1 |" in text and "EASE ratio" in text and f"{knn[0]['ease_ratio']:.2f}×" in text


def test_ease_weights_are_each_items_ridge_regression_on_the_others() -> None:
    """The closed form against its definition: column j of B is the ridge regression of item j's
    column of X on every other item's column (λ the same), with B_jj = 0."""
    rng = np.random.default_rng(0)
    x = (rng.random((40, 6)) < 0.35).astype(np.float64)
    lam = 3.0
    weights = ease_weights(x.T @ x, lam)
    assert np.allclose(np.diag(weights), 0.0)
    for j in range(6):
        others = [i for i in range(6) if i != j]
        a = x[:, others]
        ridge = np.linalg.solve(a.T @ a + lam * np.eye(5), a.T @ x[:, j])
        assert np.allclose(weights[others, j], ridge, atol=1e-10)
