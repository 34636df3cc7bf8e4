"""FAISS inner-product index over the retriever's item vectors.

Item row ``i`` (1-based; row 0 is the unknown item and is never indexed) is stored as
FAISS id ``i - 1``, so search results map back with ``+1`` and FAISS's ``-1`` padding
stays recognisable.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

INDEX_KINDS = ("flat", "ivf", "hnsw")


def build_index(item_vectors: np.ndarray, kind: str = "flat", seed: int = 2020):
    """Flat is exact (the default); IVF and HNSW trade exactness for speed on large catalogues."""
    import faiss

    vectors = np.ascontiguousarray(item_vectors[1:], dtype=np.float32)
    n, dim = vectors.shape
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "ivf":
        nlist = max(1, min(int(4 * math.sqrt(n)), n // 39 or 1))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed
        index.train(vectors)
        index.nprobe = max(1, nlist // 4)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = 128
    else:
        raise ValueError(f"unknown index kind '{kind}'; choose one of {', '.join(INDEX_KINDS)}")
    index.add(vectors)
    return index


def write_index(index, path: Path) -> None:
    import faiss

    faiss.write_index(index, str(path))
