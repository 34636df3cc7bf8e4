"""LightGCN propagation: normalisation, layer weights, and no leakage from valid/test."""
from pathlib import Path

import numpy as np
import pytest
import torch

from ratingctr.training.config import DataConfig, EncoderConfig, RunConfig
from ratingctr.training.data.encode import TEST, TRAIN, VALID, load_dataset
from ratingctr.training.graph import cached_adjacency, layer_weights, normalized_adjacency, propagate
from ratingctr.training.run import training_graph


def test_normalisation_matches_dense_hand_computation() -> None:
    # users 1,2 ; items 1,2,3 ; edges (1,1) (1,2) (2,2) (2,3) and a duplicate (1,1)
    user, item = np.array([1, 1, 2, 2, 1]), np.array([1, 2, 2, 3, 1])
    adj = normalized_adjacency(user, item, n_users=2, n_items=3).to_dense()
    a = np.zeros((7, 7))
    for u, i in {(1, 1), (1, 2), (2, 2), (2, 3)}:
        a[u, 3 + i] = a[3 + i, u] = 1.0  # user nodes 0..2, item nodes 3..6
    deg = a.sum(1)
    inv = np.divide(1.0, np.sqrt(deg), out=np.zeros_like(deg), where=deg > 0)
    expected = inv[:, None] * a * inv[None, :]
    assert np.allclose(adj.numpy(), expected, atol=1e-7)
    assert adj[0].abs().sum() == 0 and adj[:, 3].abs().sum() == 0  # unknown rows stay isolated
    assert adj[1, 4].item() == pytest.approx(1 / np.sqrt(2 * 1))  # deg(u1)=2, deg(i1)=1


def test_propagation_is_the_weighted_sum_of_powers() -> None:
    rng = np.random.default_rng(0)
    user, item = rng.integers(1, 6, 30), rng.integers(1, 9, 30)
    adj = normalized_adjacency(user, item, 5, 8)
    e0 = torch.randn(adj.shape[0], 4)
    dense = adj.to_dense()
    weights = layer_weights(3)
    assert weights == [0.25] * 4
    expected = sum(w * torch.linalg.matrix_power(dense, layer) @ e0 for layer, w in enumerate(weights))
    assert torch.allclose(propagate(adj, e0, weights), expected, atol=1e-5)
    assert torch.allclose(propagate(adj, e0, [0.1, 0.9]), 0.1 * e0 + 0.9 * dense @ e0, atol=1e-6)
    with pytest.raises(ValueError, match="need 3 layer weights"):
        layer_weights(2, [0.5, 0.5])


def test_graph_uses_training_edges_only(tiny_atomic: Path) -> None:
    data = load_dataset(DataConfig(dataset="atomic", data_dir=str(tiny_atomic), k_core=3))
    adj = training_graph(RunConfig(encoder=EncoderConfig(kind="lightgcn")), data)
    dense = adj.to_dense()
    offset = data.n_users + 1
    train_pairs = {(u, i) for u, i in zip(data.user[data.split == TRAIN], data.item[data.split == TRAIN])}
    for part in (VALID, TEST):
        rows = data.rows(part)
        held_out = [(u, i) for u, i in zip(data.user[rows], data.item[rows]) if (u, i) not in train_pairs]
        assert held_out, "the fixture must have held-out pairs"
        assert all(dense[u, offset + i] == 0 and dense[offset + i, u] == 0 for u, i in held_out)
    for u, i in list(train_pairs)[:50]:
        assert dense[u, offset + i] > 0
    assert int((dense > 0).sum()) == 2 * len(train_pairs)
    assert cached_adjacency(data.user[data.split == TRAIN], data.item[data.split == TRAIN],
                            data.n_users, data.n_items) is adj  # cached per dataset + split


def test_propagate_gradient_matches_the_dense_reference() -> None:
    """The custom backward (Â @ grad, Â symmetric) equals autograd through a dense Â."""
    import numpy as np
    import torch

    from ratingctr.training.graph import normalized_adjacency, propagate

    rng = np.random.default_rng(0)
    adjacency = normalized_adjacency(rng.integers(1, 8, 40), rng.integers(1, 11, 40), 7, 10)
    weights = [0.4, 0.3, 0.2, 0.1]
    target = torch.randn(adjacency.shape[0], 5, dtype=torch.float32)
    sparse_in = torch.randn(adjacency.shape[0], 5, requires_grad=True)
    dense_in = sparse_in.detach().clone().requires_grad_(True)
    (propagate(adjacency, sparse_in, weights) * target).sum().backward()
    dense, current, out = adjacency.to_dense(), dense_in, dense_in * weights[0]
    for w in weights[1:]:
        current = dense @ current
        out = out + current * w
    (out * target).sum().backward()
    assert torch.allclose(sparse_in.grad, dense_in.grad, atol=1e-6)
    assert sparse_in.grad.abs().sum() > 0


def test_propagate_runs_under_bf16_autocast() -> None:
    """Sparse CPU kernels have no bf16: propagation must stay fp32 inside an autocast region."""
    import numpy as np
    import torch

    from ratingctr.training.graph import normalized_adjacency, propagate

    rng = np.random.default_rng(1)
    adjacency = normalized_adjacency(rng.integers(1, 8, 40), rng.integers(1, 11, 40), 7, 10)
    x = torch.randn(adjacency.shape[0], 4, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = propagate(adjacency, x, [0.5, 0.5])
    out.sum().backward()
    expected = 0.5 * x.detach() + 0.5 * (adjacency.to_dense() @ x.detach())
    assert out.dtype == torch.float32 and torch.allclose(out, expected, atol=1e-6)


def test_the_adjacency_has_32_bit_indices_and_multiplies_like_the_64_bit_one() -> None:
    rng = np.random.default_rng(4)
    adjacency = normalized_adjacency(rng.integers(1, 30, 400), rng.integers(1, 50, 400), 29, 49)
    assert adjacency.crow_indices().dtype == torch.int32 and adjacency.col_indices().dtype == torch.int32
    wide = torch.sparse_csr_tensor(adjacency.crow_indices().long(), adjacency.col_indices().long(),
                                   adjacency.values(), adjacency.shape)
    x = torch.randn(adjacency.shape[0], 16)
    assert torch.equal(adjacency @ x, wide @ x)
