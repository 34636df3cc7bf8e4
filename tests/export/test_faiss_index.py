import numpy as np
import pytest

from ratingctr.export.faiss_index import build_index, search


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
    approx = search(build_index(items, kind), queries, 10)
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact)])
    assert recall >= 0.8, recall


def test_unknown_index_kind() -> None:
    with pytest.raises(ValueError, match="unknown index kind 'lsh'"):
        build_index(_vectors(10), "lsh")


def test_auto_keeps_flat_for_small_catalogues_and_builds_ivf_above_the_threshold() -> None:
    from ratingctr.export.faiss_index import AUTO_FLAT_MAX_ITEMS, resolve_kind

    assert resolve_kind("auto", 1_152) == "flat"
    assert resolve_kind("auto", AUTO_FLAT_MAX_ITEMS) == "flat"
    assert resolve_kind("auto", AUTO_FLAT_MAX_ITEMS + 1) == "ivf"
    assert resolve_kind("ivf", 10) == "ivf"


def test_recall_at_k_counts_shared_ids_whatever_their_order() -> None:
    from ratingctr.export.faiss_index import recall_at_k

    truth = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    found = np.array([[4, 3, 9, 1], [8, 7, 6, 5]])
    assert recall_at_k(found, truth) == (3 + 4) / 8


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_tuning_raises_the_search_depth_until_the_measured_recall_is_reached(kind: str, tmp_path) -> None:
    import faiss

    from ratingctr.export.faiss_index import TUNE_MARGIN, build_tuned_index, exact_top_k, recall_at_k

    items = _vectors(n=6000, d=16, seed=3)
    users = np.random.default_rng(4).normal(size=(301, 16)).astype(np.float32)
    index, tuning = build_tuned_index(items, kind, users, k=100)
    assert tuning.kind == kind and tuning.k == 100 and tuning.queries == 256
    assert tuning.recall >= 0.95 + TUNE_MARGIN
    depth_name = "efSearch" if kind == "hnsw" else "nprobe"
    depth = tuning.params[depth_name]
    # the index is left at the tuned depth, and FAISS keeps it in the file the gateway reads
    path = tmp_path / "items.faiss"
    faiss.write_index(index, str(path))
    loaded = faiss.read_index(str(path))
    stored = loaded.hnsw.efSearch if kind == "hnsw" else faiss.extract_index_ivf(loaded).nprobe
    assert stored == depth
    # unseen queries (other users) get about the same recall from the stored index
    fresh = np.random.default_rng(5).normal(size=(200, 16)).astype(np.float32)
    assert recall_at_k(search(loaded, fresh, 100), exact_top_k(items, fresh, 100)) >= 0.95


def test_a_flat_index_needs_no_tuning_and_reports_exact_recall() -> None:
    from ratingctr.export.faiss_index import build_tuned_index

    index, tuning = build_tuned_index(_vectors(500), "auto", _vectors(50, seed=9))
    assert tuning.kind == "flat" and tuning.params == {} and tuning.recall == 1.0 and tuning.chosen_by == "auto"


def test_auto_gives_way_to_flat_when_ivf_must_probe_most_lists_and_keeps_ivf_on_clustered_vectors(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from ratingctr.export import faiss_index
    from ratingctr.export.faiss_index import build_tuned_index

    monkeypatch.setattr(faiss_index, "AUTO_FLAT_MAX_ITEMS", 1_000)  # small catalogues, the large-catalogue rule
    rng = np.random.default_rng(11)
    # no cluster structure (a barely trained retriever): every list holds some of every query's top-200
    noise = rng.normal(size=(8001, 32)).astype(np.float32)
    index, tuning = build_tuned_index(noise, "auto", rng.normal(size=(300, 32)).astype(np.float32))
    assert tuning.kind == "flat" and tuning.recall == 1.0 and index.ntotal == 8000
    assert tuning.ivf_rejected["nprobe"] >= 0.25 * tuning.ivf_rejected["nlist"]
    assert tuning.to_dict()["ivf_rejected"] == tuning.ivf_rejected
    # 40 tight clusters, users near them: a few lists hold each query's answers, IVF stays
    centres = rng.normal(size=(40, 32)).astype(np.float32) * 3
    clustered = (centres[rng.integers(0, 40, 8001)] + rng.normal(size=(8001, 32)) * 0.3).astype(np.float32)
    users = (centres[rng.integers(0, 40, 300)] + rng.normal(size=(300, 32)) * 0.3).astype(np.float32)
    _, kept = build_tuned_index(clustered, "auto", users)
    assert kept.kind == "ivf" and kept.recall >= 0.95 and not kept.ivf_rejected
    assert "ivf_rejected" not in kept.to_dict()


def test_the_augmented_euclidean_order_is_the_inner_product_order() -> None:
    """What lets HNSW (a metric index) answer inner-product queries: exact L2 search over the
    augmented items returns exactly the exact inner-product top-k."""
    import faiss

    from ratingctr.export.faiss_index import exact_top_k, mips_augment, pad_queries

    rng = np.random.default_rng(8)
    items = rng.normal(size=(3001, 16)).astype(np.float32) * rng.lognormal(0, 0.5, size=(3001, 1)).astype(np.float32)
    queries = rng.normal(size=(40, 16)).astype(np.float32)
    l2 = faiss.IndexFlatL2(17)
    l2.add(mips_augment(items[1:]))
    found = l2.search(pad_queries(17, queries), 50)[1]
    assert np.array_equal(found, exact_top_k(items, queries, 50))
    with pytest.raises(ValueError, match="the index has 20 dimensions"):
        pad_queries(20, queries)
