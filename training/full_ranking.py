"""Full-ranking Recall@k / NDCG@k (every item a candidate) in bounded memory.

The retriever is judged over the whole catalogue.  Done as one dense ``users × items`` score
matrix with dense seen/relevant masks (``retriever.topk_metrics``, kept as the plain
reference), memory grows with users × items, i.e. with the square of the data: MovieLens-25M's
162k users × 59k items is 38 GB per matrix.  Here users are scored in chunks sized to a
memory budget, seen and relevant items are per-user index lists (CSR), so memory is
O(chunk × items + interactions); and validation can run on a seeded sample of users
(``sample_users``), which keeps the time per evaluation linear in the catalogue.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ratingctr.training.metrics import ranked_hits_at_k

CHUNK_BYTES = 256 * 2**20  # one chunk's float32 score matrix


@dataclass(frozen=True)
class UserItems:
    """Items of every user as CSR: user ``u``'s items are ``items[indptr[u]:indptr[u + 1]]``."""

    indptr: np.ndarray
    items: np.ndarray

    @classmethod
    def from_pairs(cls, users: np.ndarray, items: np.ndarray, n_users: int) -> "UserItems":
        order = np.lexsort((items, users))
        counts = np.bincount(users, minlength=n_users + 1)
        return cls(np.concatenate([[0], np.cumsum(counts)]).astype(np.int64), items[order].astype(np.int64))

    def counts(self, users: np.ndarray) -> np.ndarray:
        return self.indptr[users + 1] - self.indptr[users]

    def gather(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(position of each pair's user in ``users``, item) for every item of ``users``."""
        starts, lengths = self.indptr[users], self.counts(users)
        total = int(lengths.sum())
        offsets = np.cumsum(lengths) - lengths
        index = np.arange(total) - np.repeat(offsets, lengths) + np.repeat(starts, lengths)
        return np.repeat(np.arange(users.size), lengths), self.items[index]


def sample_users(relevant: UserItems, n_users: int, eval_users: int | None, seed: int) -> np.ndarray:
    """Users with ≥ 1 relevant item: all of them, or a seeded sample of ``eval_users``."""
    users = np.flatnonzero(relevant.counts(np.arange(n_users + 1)) > 0)
    if eval_users is None or eval_users >= users.size:
        return users
    return np.sort(np.random.default_rng([seed, 0x5EED]).choice(users, size=eval_users, replace=False))


def chunk_rows(n_items: int, budget_bytes: int = CHUNK_BYTES) -> int:
    return max(1, budget_bytes // (4 * (n_items + 1)))


def full_ranking_metrics(score_users: Callable[[np.ndarray], torch.Tensor], users: np.ndarray, seen: UserItems,
                         relevant: UserItems, n_items: int, k: int,
                         budget_bytes: int = CHUNK_BYTES) -> dict[str, float]:
    """Recall@k / NDCG@k of ``users`` over all items, ``seen`` masked; the same numbers as
    ``retriever.topk_metrics`` on the dense matrices (a test checks it).

    ``score_users(u)`` returns the ``[len(u), n_items + 1]`` scores of those users (a fresh
    tensor: it is written to).
    """
    chunk = chunk_rows(n_items, budget_bytes)
    width = n_items + 1
    hit_users, hit_ranks = [], []
    for lo in range(0, users.size, chunk):
        batch = users[lo:lo + chunk]
        scores = score_users(batch)
        scores[:, 0] = -torch.inf  # the unknown-item row is never a candidate
        rows, cols = seen.gather(batch)
        scores[torch.from_numpy(rows), torch.from_numpy(cols)] = -torch.inf
        top = torch.topk(scores, min(k, width), dim=1).indices.cpu().numpy()
        del scores
        rel_rows, rel_cols = relevant.gather(batch)
        hit = np.isin(np.arange(batch.size)[:, None] * width + top, rel_rows * width + rel_cols)
        row, rank = np.nonzero(hit)
        hit_users.append(lo + row)
        hit_ranks.append(rank)
    n_relevant = relevant.counts(users)
    metrics = ranked_hits_at_k(np.concatenate(hit_users) if hit_users else np.zeros(0, np.int64),
                               np.concatenate(hit_ranks) if hit_ranks else np.zeros(0, np.int64), n_relevant, k)
    return {f"recall@{k}": metrics[f"recall@{k}"], f"ndcg@{k}": metrics[f"ndcg@{k}"],
            "users": int((n_relevant > 0).sum())}
