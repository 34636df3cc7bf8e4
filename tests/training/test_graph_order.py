"""The retriever's degree order: a relabelling inside propagation that changes no number."""
from __future__ import annotations

import numpy as np
import torch

from ratingctr.training.graph import layer_weights, normalized_adjacency
from ratingctr.training.graph_order import degree_order, node_permutation
from ratingctr.training.retriever import LightGCN


def _graph(seed: int = 0) -> tuple[np.ndarray, np.ndarray, int, int]:
    rng = np.random.default_rng(seed)
    n_users, n_items = 40, 25
    user = rng.integers(1, n_users + 1, 600)
    item = np.minimum(rng.zipf(1.6, 600), n_items)  # a few popular items
    return user, item, n_users, n_items


def test_busiest_nodes_get_the_lowest_ids_and_unknown_stays_zero() -> None:
    user = np.array([3, 3, 3, 1, 2, 2])
    item = np.array([1, 2, 2, 2, 4, 4])
    new_user, new_item = degree_order(user, item, 3, 4, dim=8, force=True)
    assert new_user.tolist() == [0, 3, 2, 1]  # user 3 (3 edges) → 1, user 2 → 2, user 1 → 3
    assert new_item.tolist() == [0, 3, 1, 4, 2]  # item 2 (3) → 1, item 4 (2) → 2, item 1 → 3, item 3 (0) → 4
    assert degree_order(user, item, 3, 4, dim=8) is None  # a table this small keeps its order


def test_relabelled_model_gives_the_same_vectors_gradients_and_state() -> None:
    user, item, n_users, n_items = _graph()
    weights = layer_weights(3)
    plain = LightGCN(n_users, n_items, 16, normalized_adjacency(user, item, n_users, n_items), weights)
    new_user, new_item = degree_order(user, item, n_users, n_items, dim=16, force=True)
    relabelled = LightGCN(n_users, n_items, 16, normalized_adjacency(new_user[user], new_item[item], n_users, n_items),
                          weights, node_permutation(new_user, new_item))
    relabelled.load_state_dict(plain.state_dict())
    assert set(relabelled.state_dict()) == set(plain.state_dict()) == {"embedding.weight"}
    for a, b in zip(plain.vectors(), relabelled.vectors()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    users = torch.tensor([1, 5, 9]); pos = torch.tensor([1, 2, 3]); neg = torch.tensor([7, 8, 9])
    plain.bpr_loss(users, pos, neg, 1e-4).backward()
    relabelled.bpr_loss(users, pos, neg, 1e-4).backward()
    torch.testing.assert_close(plain.embedding.weight.grad, relabelled.embedding.weight.grad, rtol=1e-5, atol=1e-7)
    # the relabelling is real: the adjacencies differ while the vectors agree
    assert not torch.equal(plain.adjacency.to_dense(), relabelled.adjacency.to_dense())
