"""The one negative sampler: never an excluded pair, uniform over the rest, reproducible."""
import numpy as np

from ratingctr.training.sampling import interaction_keys, sample_negatives


def test_negatives_avoid_excluded_pairs_and_cover_the_rest_uniformly() -> None:
    n_items = 10
    users = np.repeat(np.arange(1, 4), 2000)
    seen_user = np.array([1, 1, 1, 2, 3, 3])
    seen_item = np.array([1, 2, 3, 10, 5, 6])
    excluded = interaction_keys(seen_user, seen_item, n_items)
    negatives = sample_negatives(users, excluded, n_items, 5, np.random.default_rng(0))
    assert negatives.shape == (6000, 5) and negatives.min() >= 1 and negatives.max() <= n_items
    for user, items in ((1, {1, 2, 3}), (2, {10}), (3, {5, 6})):
        drawn = negatives[users == user].ravel()
        assert not set(drawn.tolist()) & items
        counts = np.bincount(drawn, minlength=n_items + 1)[1:]
        allowed = counts[[i - 1 for i in range(1, n_items + 1) if i not in items]]
        assert allowed.min() > 0.8 * drawn.size / allowed.size  # uniform over the allowed items


def test_same_seed_same_draw_and_keys_are_unique() -> None:
    excluded = interaction_keys(np.array([1, 1, 2]), np.array([4, 4, 2]), 5)
    assert excluded.tolist() == [1 * 6 + 4, 2 * 6 + 2]
    users = np.array([1, 2, 2, 1])
    a = sample_negatives(users, excluded, 5, 3, np.random.default_rng(3))
    b = sample_negatives(users, excluded, 5, 3, np.random.default_rng(3))
    assert np.array_equal(a, b)


def test_in_sorted_is_isin_for_sorted_keys() -> None:
    from ratingctr.training.sampling import in_sorted

    rng = np.random.default_rng(3)
    keys = np.unique(rng.integers(0, 10_000, 3_000))
    values = rng.integers(-5, 10_010, size=(400, 7))
    assert np.array_equal(in_sorted(values, keys), np.isin(values, keys))
    assert not in_sorted(values, keys[:0]).any()
