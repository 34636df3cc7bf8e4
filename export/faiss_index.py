"""FAISS inner-product index over the retriever's item vectors, its kind chosen by catalogue size
and its search depth tuned to a measured recall.

Item row ``i`` (1-based; row 0 is the unknown item and is never indexed) is stored as
FAISS id ``i - 1``, so search results map back with ``+1`` and FAISS's ``-1`` padding
stays recognisable.

``auto`` (the export default) keeps the exact flat index up to ``AUTO_FLAT_MAX_ITEMS`` items and
builds IVF above: a flat search costs one pass over every item vector per request, linear in
the catalogue, while IVF scans ``nprobe`` of its ``nlist`` ≈ 4√n lists (``reports/bench/ann``
measured all three kinds per catalogue size on this machine).

HNSW is built on the item vectors *augmented* to a metric problem: each item gets one more
coordinate ``sqrt(M² − ‖x‖²)`` (``M`` the largest norm) and a query gets ``0`` there, so
Euclidean order over the augmented vectors is inner-product order over the originals
(Bachrach et al., 2014).  A graph index searched directly by inner product, on vectors whose
norms differ from item to item, missed most of the true top-200 however deep it searched
(recall@200 0.69 at ``efSearch`` 6,400 on 10k synthetic items, measured before the transform).
The index then has ``dim + 1`` dimensions; :func:`search` (and the gateway's ranker) append the
zero to queries when it does.  An approximate index's search depth (HNSW ``efSearch``, IVF
``nprobe``) is not a constant: export raises it until recall@``k`` against exact search, on a
sample of the retriever's real user vectors, reaches ``TARGET_RECALL`` plus a margin, and
records the parameters and the measured recall in the manifest.  FAISS stores both
parameters in the index file, so the gateway searches exactly as measured.

Under ``auto``, an IVF that needs ``nprobe`` of a quarter of its lists or more to reach the recall
is replaced by the exact index: its vectors have too little cluster structure for the lists to
prune (a retriever trained one short epoch on 130,602 items: nprobe 1,024 of 1,445 lists, 5.2 ms
per query against 1.7 ms for flat, one thread; ``reports/scale``), and scanning most lists costs
more than scanning every item once.  The manifest then says why (``search.ivf_rejected``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

INDEX_KINDS = ("auto", "flat", "ivf", "hnsw")
AUTO_FLAT_MAX_ITEMS = 20_000
TUNE_K = 200            # RATINGCTR_CANDIDATES' default: the depth the gateway searches at
TARGET_RECALL = 0.95
TUNE_MARGIN = 0.02      # tuned to target + margin on the sample, so unseen users stay above target
TUNE_QUERIES = 256
HNSW_M = 32
# k-means on at most this many points per list: training then costs O(n) (nlist ~ 4 sqrt n), not O(n^1.5)
IVF_TRAIN_POINTS_PER_LIST = 64
IVF_MAX_PROBE_SHARE = 0.25  # auto: an IVF probing this share of its lists or more gives way to flat
HNSW_EF_CONSTRUCTION = 80


@dataclass(frozen=True)
class SearchTuning:
    """How an index searches and what recall that was measured to give."""

    kind: str
    params: dict[str, int] = field(default_factory=dict)
    k: int = TUNE_K
    recall: float = 1.0
    queries: int = 0
    chosen_by: str = "flag"  # "auto": picked by catalogue size; "flag": --index
    #: auto only: the IVF tuning that was measured and rejected for flat (nprobe, nlist, recall)
    ivf_rejected: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = {"params": dict(self.params), "k": self.k, "recall": round(self.recall, 4), "queries": self.queries,
               "chosen_by": self.chosen_by}
        if self.ivf_rejected:
            out["ivf_rejected"] = dict(self.ivf_rejected)
        return out


def resolve_kind(kind: str, n_items: int) -> str:
    """``auto`` → flat up to ``AUTO_FLAT_MAX_ITEMS`` items, IVF above; other kinds as given."""
    if kind not in INDEX_KINDS:
        raise ValueError(f"unknown index kind '{kind}'; choose one of {', '.join(INDEX_KINDS)}")
    if kind != "auto":
        return kind
    return "flat" if n_items <= AUTO_FLAT_MAX_ITEMS else "ivf"


def build_index(item_vectors: np.ndarray, kind: str = "flat", seed: int = 2020):
    """Flat is exact; IVF and HNSW trade exactness for speed on large catalogues (untuned here:
    :func:`build_tuned_index` sets their search depth)."""
    import faiss

    vectors = np.ascontiguousarray(item_vectors[1:], dtype=np.float32)
    n, dim = vectors.shape
    kind = resolve_kind(kind, n)
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "ivf":
        nlist = max(1, min(int(4 * math.sqrt(n)), n // 39 or 1))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed
        index.cp.max_points_per_centroid = IVF_TRAIN_POINTS_PER_LIST
        index.train(vectors)
        index.nprobe = max(1, nlist // 4)
    else:
        vectors = mips_augment(vectors)
        index = faiss.IndexHNSWFlat(dim + 1, HNSW_M, faiss.METRIC_L2)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        index.hnsw.efSearch = 128
    index.add(vectors)
    return index


def mips_augment(vectors: np.ndarray) -> np.ndarray:
    """Items with the extra coordinate that turns inner-product search into Euclidean search."""
    squared = np.einsum("ij,ij->i", vectors, vectors, dtype=np.float64)
    extra = np.sqrt(np.maximum(squared.max() - squared, 0.0)).astype(np.float32)
    return np.ascontiguousarray(np.hstack([vectors, extra[:, None]]), dtype=np.float32)


def pad_queries(index_dim: int, queries: np.ndarray) -> np.ndarray:
    """Queries as an index of ``index_dim`` dimensions takes them: a zero appended for an
    augmented (inner product → Euclidean) index, unchanged otherwise."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if index_dim == queries.shape[1] + 1:
        return np.ascontiguousarray(np.hstack([queries, np.zeros((len(queries), 1), np.float32)]))
    if index_dim != queries.shape[1]:
        raise ValueError(f"the index has {index_dim} dimensions, the queries {queries.shape[1]}")
    return queries


def search(index, queries: np.ndarray, k: int) -> np.ndarray:
    """Top-``k`` FAISS ids of each query, whatever the index's kind."""
    return index.search(pad_queries(index.d, queries), k)[1]


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of each query's exact top-k that the index returned (``[Q, k]`` id arrays)."""
    k = truth.shape[1]
    hits = (np.sort(found, axis=1)[:, :, None] == np.sort(truth, axis=1)[:, None, :]).any(axis=2)
    return float(hits.sum() / (truth.shape[0] * k))


def exact_top_k(item_vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    import faiss

    flat = faiss.IndexFlatIP(item_vectors.shape[1])
    flat.add(np.ascontiguousarray(item_vectors[1:], dtype=np.float32))
    return flat.search(np.ascontiguousarray(queries, dtype=np.float32), k)[1]


def tune_search(index, item_vectors: np.ndarray, queries: np.ndarray, k: int = TUNE_K,
                target: float = TARGET_RECALL, truth: np.ndarray | None = None) -> SearchTuning:
    """Raise the index's search depth until recall@k on ``queries`` reaches ``target + TUNE_MARGIN``
    (or the depth covers the whole catalogue); leaves the index set to it."""
    import faiss

    n = index.ntotal
    k = min(k, n)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if isinstance(index, faiss.IndexFlat):
        return SearchTuning("flat", {}, k, 1.0, len(queries))
    truth = exact_top_k(item_vectors, queries, k) if truth is None else truth
    goal = min(1.0, target + TUNE_MARGIN)
    if isinstance(index, faiss.IndexHNSW):
        name, steps = "efSearch", [k, 2 * k, 3 * k, 4 * k, 6 * k, 8 * k, 12 * k, 16 * k, 32 * k]

        def set_depth(depth: int) -> None:
            index.hnsw.efSearch = depth
    else:
        ivf = faiss.extract_index_ivf(index)
        name, steps = "nprobe", sorted({min(ivf.nlist, 2 ** i) for i in range(0, 20)})

        def set_depth(depth: int) -> None:
            ivf.nprobe = depth
    recall, depth = 0.0, steps[0]
    for depth in steps:
        set_depth(depth)
        recall = recall_at_k(search(index, queries, k), truth)
        if recall >= goal:
            break
    kind = "hnsw" if name == "efSearch" else "ivf"
    return SearchTuning(kind, {name: int(depth)}, k, recall, len(queries))


def build_tuned_index(item_vectors: np.ndarray, kind: str, user_vectors: np.ndarray, k: int = TUNE_K,
                      seed: int = 2020) -> tuple[Any, SearchTuning]:
    """:func:`build_index` plus :func:`tune_search` on a seeded sample of real user vectors."""
    n = item_vectors.shape[0] - 1
    resolved = resolve_kind(kind, n)
    index = build_index(item_vectors, resolved, seed)
    users = user_vectors[1:] if len(user_vectors) > 1 else user_vectors
    rows = np.random.default_rng(seed).choice(len(users), size=min(TUNE_QUERIES, len(users)), replace=False)
    queries = users[np.sort(rows)]
    tuning = tune_search(index, item_vectors, queries, k)
    rejected: dict[str, float] = {}
    if kind == "auto" and tuning.kind == "ivf":
        import faiss

        nlist = faiss.extract_index_ivf(index).nlist
        if tuning.params["nprobe"] >= IVF_MAX_PROBE_SHARE * nlist:
            rejected = {"nprobe": tuning.params["nprobe"], "nlist": int(nlist), "recall": round(tuning.recall, 4)}
            index = build_index(item_vectors, "flat", seed)
            tuning = tune_search(index, item_vectors, queries, k)
    return index, SearchTuning(tuning.kind, tuning.params, tuning.k, tuning.recall, tuning.queries,
                               "auto" if kind == "auto" else "flag", rejected)


def write_index(index, path: Path) -> None:
    import faiss

    faiss.write_index(index, str(path))
