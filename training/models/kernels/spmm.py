"""Sparse Â × dense X on CPU in column blocks (*forward* kernel; LightGCN propagation).

``reference_spmm`` is ``adjacency @ x``.  Each output row gathers the rows of X its
neighbours point at; once X (nodes × d × 4 bytes) outgrows the cache, nearly every gather
is a miss and the cost per stored entry climbs with the graph.  Multiplying by a few
columns of X at a time makes each pass gather from a table small enough to stay cached:
the columns are independent, so the result is the same numbers in the same summation
order, whatever the width.  But every pass streams the whole index again, so blocks only
pay where gathers dominate, and which width is fastest depends on the graph's shape and
the machine's cache.  Measured (``reports/scale/spmm``; synthetic MovieLens-shaped graphs,
d = 64, 2 threads; with the 32-bit indices ``graph.normalized_adjacency`` now builds, 64-bit
ones were converted on every call): 5M ratings, 44k nodes, 181 entries per row: 16–32
columns 2× faster than one product; 25M, 221k nodes: 8 columns 2–3× faster, 16 no faster.
One ad-hoc run on 4M ratings over 1.1M items (6 entries per row; not in that report) had one
product fastest, 8 columns 1.3× and one column 4× slower: a width predicted from the node
count alone had picked the one column there.

So the width is measured, not predicted: the first product with a given adjacency and
width of X times each of ``CANDIDATE_WIDTHS`` once and keeps the fastest for that adjacency
(a training run multiplies by the same Â thousands of times; the trial costs a few
products).  Small graphs, whose X fits ``CACHE_BYTES``, skip the trial: one product.
"""
from __future__ import annotations

import time
import weakref

import torch

CACHE_BYTES = 8 * 2**20
CANDIDATE_WIDTHS = (64, 32, 16, 8)

#: id(adjacency) → {columns of X: fastest width}; an entry goes when its adjacency is freed
_CHOSEN: dict[int, dict[int, int]] = {}


def reference_spmm(adjacency: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return adjacency @ x


def _product(adjacency: torch.Tensor, x: torch.Tensor, width: int) -> torch.Tensor:
    if width >= x.shape[1]:
        return adjacency @ x
    return torch.cat([adjacency @ x[:, lo:lo + width].contiguous() for lo in range(0, x.shape[1], width)], dim=1)


def chosen_width(adjacency: torch.Tensor, x: torch.Tensor) -> int:
    """The width to multiply ``x`` by ``adjacency`` at: all columns when X fits the cache budget,
    else the fastest of ``CANDIDATE_WIDTHS`` (≤ the columns), timed once per adjacency."""
    columns = x.shape[1]
    if x.shape[0] * columns * x.element_size() <= CACHE_BYTES:
        return columns
    per_graph = _CHOSEN.get(id(adjacency))
    if per_graph is not None and columns in per_graph:
        return per_graph[columns]
    timings = {}
    for width in sorted({min(w, columns) for w in CANDIDATE_WIDTHS}, reverse=True):
        start = time.perf_counter()
        _product(adjacency, x, width)
        timings[width] = time.perf_counter() - start
    best = min(timings, key=timings.get)
    if per_graph is None:
        per_graph = _CHOSEN[id(adjacency)] = {}
        key = id(adjacency)
        weakref.finalize(adjacency, _CHOSEN.pop, key, None)
    per_graph[columns] = best
    return best


def blocked_spmm(adjacency: torch.Tensor, x: torch.Tensor, width: int | None = None) -> torch.Tensor:
    """``adjacency @ x`` computed ``width`` columns of ``x`` at a time (CPU; elsewhere one product).
    Without ``width``, the measured fastest for this adjacency (``chosen_width``)."""
    if x.device.type != "cpu" or x.dim() != 2:
        return adjacency @ x
    return _product(adjacency, x, width or chosen_width(adjacency, x))
