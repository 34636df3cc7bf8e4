"""The column-blocked CPU sparse product against ``adjacency @ x``: same numbers at any width, the
width measured once per adjacency, and propagation's gradients unchanged."""
from __future__ import annotations

import gc

import numpy as np
import pytest
import torch

from ratingctr.training.graph import normalized_adjacency, propagate
from ratingctr.training.models.kernels import spmm
from ratingctr.training.models.kernels.spmm import blocked_spmm, chosen_width, reference_spmm


def _graph(users: int = 300, items: int = 200, edges: int = 5_000, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return normalized_adjacency(rng.integers(1, users + 1, edges), rng.integers(1, items + 1, edges), users, items)


@pytest.mark.parametrize("width", [1, 3, 8, 16, 60, 64])
def test_blocked_product_equals_the_reference_exactly(width: int) -> None:
    adjacency = _graph()
    x = torch.randn(adjacency.shape[0], 60, generator=torch.Generator().manual_seed(1))
    # the columns are independent: same entries summed in the same order, bit for bit
    assert torch.equal(blocked_spmm(adjacency, x, width), reference_spmm(adjacency, x))


def test_a_small_x_is_one_product_and_a_large_one_is_timed_once_per_adjacency(
        monkeypatch: pytest.MonkeyPatch) -> None:
    adjacency = _graph(seed=5)
    x = torch.randn(adjacency.shape[0], 64)
    assert chosen_width(adjacency, x) == 64  # 502 × 64 floats fit the budget: no trial
    monkeypatch.setattr(spmm, "CACHE_BYTES", 1_024)
    trials: list[int] = []
    product = spmm._product
    monkeypatch.setattr(spmm, "_product", lambda a, v, w: trials.append(w) or product(a, v, w))
    width = chosen_width(adjacency, x)
    assert width in spmm.CANDIDATE_WIDTHS and sorted(trials) == sorted(spmm.CANDIDATE_WIDTHS)
    assert chosen_width(adjacency, x) == width and len(trials) == len(spmm.CANDIDATE_WIDTHS)  # remembered
    assert chosen_width(adjacency, x[:, :16]) <= 16  # another width of X is its own trial
    key = id(adjacency)
    del adjacency
    gc.collect()
    assert key not in spmm._CHOSEN  # forgotten with its graph


def test_propagation_gradients_are_unchanged_by_blocking(monkeypatch: pytest.MonkeyPatch) -> None:
    adjacency = _graph(seed=2)
    weights = [1 / 3] * 3

    def run(cache_bytes: int, widths: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        monkeypatch.setattr(spmm, "CACHE_BYTES", cache_bytes)
        monkeypatch.setattr(spmm, "CANDIDATE_WIDTHS", widths)
        spmm._CHOSEN.pop(id(adjacency), None)
        e0 = torch.randn(adjacency.shape[0], 32, generator=torch.Generator().manual_seed(3), requires_grad=True)
        out = propagate(adjacency, e0, weights)
        (out[:50] ** 2).sum().backward()
        return out.detach(), e0.grad

    blocked_out, blocked_grad = run(1_024, (4,))  # 4-column passes
    whole_out, whole_grad = run(2**40, (64,))  # one product
    assert torch.equal(blocked_out, whole_out) and torch.equal(blocked_grad, whole_grad)
