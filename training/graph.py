"""LightGCN propagation over the user–item bipartite graph of the *training* split.

Â = D^{-1/2} A D^{-1/2} over ``n_users + 1 + n_items + 1`` nodes (row 0 of each side is
the unknown id and stays isolated), E = Σ_l a_l Â^l E⁰ with a_l = 1/(L+1) by default.
Only training edges enter Â: validation and test interactions must not leak into the
embeddings the model is evaluated with.
"""
from __future__ import annotations

import hashlib
import warnings

import numpy as np
import torch

from ratingctr.training.models.kernels.spmm import blocked_spmm
from ratingctr.unique import sorted_unique

INT32_LIMIT = 2**31 - 1


def normalized_adjacency(user: np.ndarray, item: np.ndarray, n_users: int, n_items: int) -> torch.Tensor:
    """Symmetric-normalised adjacency as a sparse CSR tensor (duplicate edges counted once).

    Node layout: users ``0..n_users`` (0 = unknown), then items ``n_users+1 .. n_users+1+n_items``.
    """
    n_user_nodes, n_nodes = n_users + 1, n_users + 1 + n_items + 1
    pairs = sorted_unique(np.asarray(user, np.int64) * (n_items + 1) + np.asarray(item, np.int64))
    u, i = pairs // (n_items + 1), pairs % (n_items + 1) + n_user_nodes
    rows = np.concatenate([u, i])
    cols = np.concatenate([i, u])
    degree = np.bincount(rows, minlength=n_nodes).astype(np.float64)
    inv_sqrt = np.zeros_like(degree)
    inv_sqrt[degree > 0] = degree[degree > 0] ** -0.5
    values = (inv_sqrt[rows] * inv_sqrt[cols]).astype(np.float32)
    coo = torch.sparse_coo_tensor(torch.from_numpy(np.vstack([rows, cols])), torch.from_numpy(values),
                                  (n_nodes, n_nodes), check_invariants=True).coalesce()
    with warnings.catch_warnings():  # "CSR support is in beta": CSR × dense is all we use
        warnings.simplefilter("ignore", UserWarning)
        csr = coo.to_sparse_csr()
        if csr._nnz() < INT32_LIMIT and n_nodes < INT32_LIMIT:
            # 32-bit indices: torch's CPU product (MKL) takes them as they are, whereas 64-bit ones are
            # converted on every call, a copy of the whole index per product (half of a step at 25M ratings)
            csr = torch.sparse_csr_tensor(csr.crow_indices().to(torch.int32), csr.col_indices().to(torch.int32),
                                          csr.values(), csr.shape)
        return csr


_ADJACENCY_CACHE: dict[tuple[bytes, int, int], torch.Tensor] = {}
_CACHE_SIZE = 8


def cached_adjacency(user: np.ndarray, item: np.ndarray, n_users: int, n_items: int) -> torch.Tensor:
    """``normalized_adjacency`` memoised on a digest of the exact edge list (one per dataset + split)."""
    user = np.ascontiguousarray(user, dtype=np.int64)
    item = np.ascontiguousarray(item, dtype=np.int64)
    key = (hashlib.sha1(user.tobytes() + item.tobytes()).digest(), n_users, n_items)
    if key not in _ADJACENCY_CACHE:
        if len(_ADJACENCY_CACHE) >= _CACHE_SIZE:
            _ADJACENCY_CACHE.pop(next(iter(_ADJACENCY_CACHE)))
        _ADJACENCY_CACHE[key] = normalized_adjacency(user, item, n_users, n_items)
    return _ADJACENCY_CACHE[key]


def layer_weights(layers: int, weights: list[float] | None = None) -> list[float]:
    if weights is None:
        return [1.0 / (layers + 1)] * (layers + 1)
    if len(weights) != layers + 1:
        raise ValueError(f"need {layers + 1} layer weights for {layers} layers, got {len(weights)}")
    return [float(w) for w in weights]


class _SymmetricSpMM(torch.autograd.Function):
    """Â @ X whose backward is Â @ grad, because Â is symmetric.

    torch's own backward for CSR @ dense builds Âᵀ on every call, which made the
    backward pass several times the forward; reusing Â makes them cost the same.
    """

    @staticmethod
    def forward(ctx, adjacency: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        ctx.adjacency = adjacency
        return _spmm(adjacency, x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return None, _spmm(ctx.adjacency, grad)


def _spmm(adjacency: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Sparse × dense in fp32 even under bf16 autocast (the CPU sparse kernels have no bf16)."""
    with torch.autocast(x.device.type, enabled=False):
        return blocked_spmm(adjacency, x.float())


def propagate(adjacency: torch.Tensor, embeddings: torch.Tensor, weights: list[float]) -> torch.Tensor:
    """Σ_l a_l Â^l E⁰ with one sparse matmul per layer (differentiable w.r.t. E⁰; Â symmetric)."""
    out = embeddings * weights[0]
    current = embeddings
    for weight in weights[1:]:
        current = _SymmetricSpMM.apply(adjacency, current)  # without grad, apply just runs forward
        out = out + current * weight
    return out
