import numpy as np
import pytest

from ratingctr.export.faiss_index import build_index


def _vectors(n: int = 2000, d: int = 16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(n + 1, d)).astype(np.float32)
    v[0] = 1e3  # the unknown-item row must never be indexed, however large its score would be
    return v


def test_flat_index_is_exact_inner_product_over_items_1_to_n() -> None:
    items = _vectors()
    index = build_index(items, "flat")
    assert index.ntotal == items.shape[0] - 1
    queries = np.random.default_rng(1).normal(size=(20, 16)).astype(np.float32)
    _, ids = index.search(queries, 10)
    expected = np.argsort(-(queries @ items[1:].T), axis=1)[:, :10]
    assert np.array_equal(ids, expected)  # FAISS id = item row - 1


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_indexes_keep_high_recall(kind: str) -> None:
    items = _vectors()
    queries = np.random.default_rng(2).normal(size=(50, 16)).astype(np.float32)
    _, exact = build_index(items, "flat").search(queries, 10)
    _, approx = build_index(items, kind).search(queries, 10)
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact)])
    assert recall >= 0.8, recall


def test_unknown_index_kind() -> None:
    with pytest.raises(ValueError, match="unknown index kind 'lsh'"):
        build_index(_vectors(10), "lsh")
