"""The column-blocked CPU sparse product against ``adjacency @ x``: same numbers, any width."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ratingctr.training.graph import normalized_adjacency, propagate
from ratingctr.training.models.kernels.spmm import block_width, blocked_spmm, reference_spmm


def _graph(users: int = 300, items: int = 200, edges: int = 5_000, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return normalized_adjacency(rng.integers(1, users + 1, edges), rng.integers(1, items + 1, edges), users, items)


@pytest.mark.parametrize("width", [1, 3, 8, 16, 60, 64])
def test_blocked_product_equals_the_reference_exactly(width: int) -> None:
    adjacency = _graph()
    x = torch.randn(adjacency.shape[0], 60, generator=torch.Generator().manual_seed(1))
    # the columns are independent: same entries summed in the same order, bit for bit
    assert torch.equal(blocked_spmm(adjacency, x, width), reference_spmm(adjacency, x))


def test_the_width_is_all_columns_when_x_fits_and_a_power_of_two_slice_when_not() -> None:
    assert block_width(8_859, 64) == 64  # 1M ratings: X is 2.3 MB
    assert block_width(44_269, 64) == 32  # 5M: 11 MB, a 32-column slice is 5.7 MB
    assert block_width(221_275, 64) == 8  # 25M: 57 MB, an 8-column slice is 7.1 MB
    assert block_width(50_000_000, 64) == 1  # wider than any slice: one column, never zero
    assert block_width(1_000, 48, cache_bytes=1_000 * 20 * 4) == 16


def test_propagation_gradients_are_unchanged_by_blocking(monkeypatch: pytest.MonkeyPatch) -> None:
    from ratingctr.training.models.kernels import spmm

    adjacency = _graph(seed=2)
    weights = [1 / 3] * 3

    def grad_with(cache_bytes: int) -> tuple[torch.Tensor, torch.Tensor]:
        monkeypatch.setattr(spmm, "CACHE_BYTES", cache_bytes)
        e0 = torch.randn(adjacency.shape[0], 32, generator=torch.Generator().manual_seed(3), requires_grad=True)
        out = propagate(adjacency, e0, weights)
        (out[:50] ** 2).sum().backward()
        return out.detach(), e0.grad

    blocked_out, blocked_grad = grad_with(adjacency.shape[0] * 4 * 4)  # 4-column passes
    whole_out, whole_grad = grad_with(2**40)  # one product
    assert torch.equal(blocked_out, whole_out) and torch.equal(blocked_grad, whole_grad)
