import math

import numpy as np
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from ratingctr.training.metrics import activity_groups, auc, group_auc, logloss, mci, ranked_hits_at_k, ranking_metrics


@pytest.mark.parametrize("seed", range(5))
def test_auc_agrees_with_sklearn_including_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 20_000)
    scores = np.round(rng.random(20_000) * 0.5 + labels * 0.2, 2).astype(np.float32)  # many ties
    assert abs(auc(labels, scores) - roc_auc_score(labels, scores)) < 1e-6
    assert math.isnan(auc(np.ones(5), np.arange(5)))


def test_logloss_agrees_with_sklearn() -> None:
    rng = np.random.default_rng(1)
    labels, probs = rng.integers(0, 2, 5000), rng.random(5000)
    probs[:3] = [0.0, 1.0, 1e-20]
    assert logloss(labels, probs) == pytest.approx(log_loss(labels, np.clip(probs, 1e-15, 1 - 1e-15)), abs=1e-9)


def _reference_ranking(group, scores, relevant, k):
    ndcgs, recalls = [], []
    for g in np.unique(group):
        idx = np.flatnonzero(group == g)
        order = idx[np.argsort(-scores[idx], kind="stable")]
        rel = relevant[order]
        if rel.sum() == 0:
            continue
        top = rel[:k]
        dcg = sum(1 / math.log2(i + 2) for i, r in enumerate(top) if r)
        idcg = sum(1 / math.log2(i + 2) for i in range(min(int(rel.sum()), k)))
        ndcgs.append(dcg / idcg)
        recalls.append(top.sum() / rel.sum())
    return float(np.mean(ndcgs)), float(np.mean(recalls))


def test_ranking_metrics_match_a_per_user_reference() -> None:
    rng = np.random.default_rng(3)
    group = np.repeat(np.arange(50), 120)
    scores = rng.random(group.size)  # continuous: no ties, so tie-breaking cannot matter
    relevant = rng.random(group.size) < 0.05
    got = ranking_metrics(group, scores, relevant, ks=(10, 20))
    for k in (10, 20):
        ndcg, recall = _reference_ranking(group, scores, relevant, k)
        assert got[f"ndcg@{k}"] == pytest.approx(ndcg, abs=1e-12)
        assert got[f"recall@{k}"] == pytest.approx(recall, abs=1e-12)


def test_ranking_perfect_and_worst_lists() -> None:
    group = np.zeros(30, int)
    relevant = np.zeros(30, bool)
    relevant[:3] = True
    best = ranking_metrics(group, np.linspace(1, 0, 30), relevant)
    worst = ranking_metrics(group, np.linspace(0, 1, 30), relevant)
    assert best["ndcg@10"] == pytest.approx(1.0) and best["recall@10"] == 1.0
    assert worst["ndcg@10"] == 0.0 and worst["recall@20"] == 0.0


def test_constant_scores_do_not_favour_positives() -> None:
    group = np.repeat(np.arange(400), 101)
    relevant = np.tile(np.r_[True, np.zeros(100, bool)], 400)  # positive listed first in every group
    got = ranking_metrics(group, np.zeros(group.size), relevant)
    assert got["recall@10"] == pytest.approx(10 / 101, abs=0.05)


def test_ranked_hits_by_hand() -> None:
    # group 0: 3 relevant, ranked 0 and 3 (one unranked); group 1: none (skipped); group 2: 1 relevant at rank 1
    out = ranked_hits_at_k(np.array([0, 0, 2]), np.array([0, 3, 1]), np.array([3, 0, 1]), k=2)
    assert out["recall@2"] == pytest.approx((1 / 3 + 1) / 2)
    assert out["ndcg@2"] == pytest.approx((1 / (1 + 1 / math.log2(3)) + 1 / math.log2(3)) / 2)


def test_retriever_full_ranking_agrees_with_candidate_lists() -> None:
    """The retriever's top-k over every item and uni100-style candidate lists of every item agree."""
    import torch

    from ratingctr.training.retriever import topk_metrics

    rng = np.random.default_rng(4)
    n_users, n_items = 40, 60
    scores = rng.random((n_users + 1, n_items + 1)).astype(np.float32)
    relevant = rng.random(scores.shape) < 0.1
    relevant[0], relevant[:, 0] = False, False
    seen = np.zeros_like(relevant)
    seen[1:, 1] = True  # a training item of every user: masked out of the ranking
    relevant[:, 1] = False
    full = topk_metrics(torch.from_numpy(scores), seen, relevant, 20)
    users = np.repeat(np.arange(n_users + 1), n_items - 1)
    items = np.tile(np.arange(2, n_items + 1), n_users + 1)
    lists = ranking_metrics(users, scores[users, items], relevant[users, items], ks=(20,))
    assert full["recall@20"] == pytest.approx(lists["recall@20"], abs=1e-12)
    assert full["ndcg@20"] == pytest.approx(lists["ndcg@20"], abs=1e-12)
    assert full["users"] == int((relevant.sum(1) > 0).sum()) and 0 < full["recall@20"] < 1


def test_group_auc_by_tertiles() -> None:
    rng = np.random.default_rng(5)
    train_counts = np.r_[0, np.arange(1, 31)]  # users 1..30 with 1..30 training rows
    groups, (q1, q2) = activity_groups(train_counts)
    assert groups[1:].tolist() == [0] * 10 + [1] * 10 + [2] * 10 and q1 < q2
    user = rng.integers(1, 31, 3000)
    labels = rng.integers(0, 2, 3000)
    scores = rng.random(3000) + labels * (user / 30.0)  # more active users are easier
    out = group_auc(user, labels, scores, train_counts)
    for name, members in (("low", user <= 10), ("mid", (user > 10) & (user <= 20)), ("high", user > 20)):
        assert out[name]["auc"] == pytest.approx(roc_auc_score(labels[members], scores[members]), abs=1e-9)
        assert out[name]["rows"] == int(members.sum())
    assert out["low"]["auc"] < out["mid"]["auc"] < out["high"]["auc"]
    aucs = [out[n]["auc"] for n in ("low", "mid", "high")]
    assert out["variance"] == pytest.approx(np.var(aucs))


def test_mci_values_and_domain() -> None:
    assert mci(0.5, 0.1) == pytest.approx(math.log(0.5 / 0.4))
    assert mci(0.7, 0.0) == 0.0
    with pytest.raises(ValueError, match="p_b \\+ c in \\(0, 1\\)"):
        mci(0.8, 0.2)
    with pytest.raises(ValueError):
        mci(0.1, -0.2)


def test_chunked_sparse_full_ranking_equals_the_dense_reference() -> None:
    """full_ranking_metrics (CSR seen/relevant lists, users in chunks) gives exactly what the dense
    topk_metrics gives, whatever the chunk size; a user sample is a subset of the same users."""
    import torch

    from ratingctr.training.full_ranking import UserItems, full_ranking_metrics, sample_users
    from ratingctr.training.retriever import topk_metrics

    rng = np.random.default_rng(11)
    n_users, n_items = 57, 90
    scores = rng.random((n_users + 1, n_items + 1)).astype(np.float32)
    seen_pairs = np.argwhere(rng.random((n_users + 1, n_items + 1)) < 0.15)
    rel_pairs = np.argwhere(rng.random((n_users + 1, n_items + 1)) < 0.08)
    seen_pairs = seen_pairs[(seen_pairs[:, 0] > 0) & (seen_pairs[:, 1] > 0)]
    rel_pairs = rel_pairs[(rel_pairs[:, 0] > 0) & (rel_pairs[:, 1] > 0)]
    seen = np.zeros(scores.shape, bool)
    seen[seen_pairs[:, 0], seen_pairs[:, 1]] = True
    relevant = np.zeros(scores.shape, bool)
    relevant[rel_pairs[:, 0], rel_pairs[:, 1]] = True
    relevant &= ~seen
    dense = topk_metrics(torch.from_numpy(scores), seen, relevant, 20)
    seen_csr = UserItems.from_pairs(seen_pairs[:, 0], seen_pairs[:, 1], n_users)
    rel_pairs = np.argwhere(relevant)
    rel_csr = UserItems.from_pairs(rel_pairs[:, 0], rel_pairs[:, 1], n_users)
    users = sample_users(rel_csr, n_users, None, 0)
    for budget in (4 * (n_items + 1), 4 * (n_items + 1) * 7, 2**20):  # 1, 7 and all users per chunk
        sparse = full_ranking_metrics(lambda u: torch.from_numpy(scores[u].copy()), users, seen_csr, rel_csr,
                                      n_items, 20, budget_bytes=budget)
        assert sparse["recall@20"] == pytest.approx(dense["recall@20"], abs=1e-12)
        assert sparse["ndcg@20"] == pytest.approx(dense["ndcg@20"], abs=1e-12)
        assert sparse["users"] == dense["users"]
    sampled = sample_users(rel_csr, n_users, 10, 3)
    assert sampled.size == 10 and set(sampled) <= set(users) and np.array_equal(sampled, sample_users(rel_csr, n_users,
                                                                                                      10, 3))


def test_user_items_gathers_each_users_items() -> None:
    from ratingctr.training.full_ranking import UserItems

    csr = UserItems.from_pairs(np.array([2, 1, 2, 3]), np.array([5, 4, 1, 9]), 3)
    rows, items = csr.gather(np.array([2, 3]))
    assert rows.tolist() == [0, 0, 1] and items.tolist() == [1, 5, 9]
    assert csr.counts(np.array([0, 1, 2, 3])).tolist() == [0, 1, 2, 1]
