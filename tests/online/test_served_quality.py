"""The top-K metrics on lists small enough to score by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest

from ratingctr.online.served_quality import Relevant, pad, paired, per_user, summarise


def test_metrics_match_hand_scored_lists() -> None:
    # user 1 clicked items 3 and 7; user 2 clicked item 5 (catalogue of 9 items)
    relevant = Relevant.of(np.array([1, 1, 2]), np.array([3, 7, 5]), n_items=9)
    assert relevant.users.tolist() == [1, 2] and relevant.counts.tolist() == [2, 1]
    lists = np.array([[7, 1, 3, 0], [2, 4, 6, 8]])  # user 1: hits at ranks 1 and 3; user 2: none
    hits = relevant.hits(lists)
    assert hits.tolist() == [[True, False, True, False], [False, False, False, False]]
    at2 = per_user(hits, relevant.counts, 2)
    assert at2["recall"].tolist() == [0.5, 0.0]
    assert at2["hit"].tolist() == [1.0, 0.0]
    assert at2["mrr"].tolist() == [1.0, 0.0]
    assert at2["ndcg"][0] == pytest.approx(1 / (1 + 1 / math.log2(3)))  # one hit at rank 1 of an ideal two
    at3 = per_user(hits, relevant.counts, 3)
    assert at3["recall"].tolist() == [1.0, 0.0]
    assert at3["ndcg"][0] == pytest.approx((1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3)))
    clicks = np.arange(10, dtype=np.int64) * 10  # item i was clicked 10·i times in training
    summary = summarise(lists, relevant, (2, 4), n_items=9, train_clicks=clicks)
    assert summary["metrics"][2]["coverage"] == pytest.approx(4 / 9)  # 7, 1, 2, 4
    assert summary["metrics"][2]["popularity"] == pytest.approx((70 + 10 + 20 + 40) / 4)
    assert summary["metrics"][4]["listed"] == pytest.approx(3.5)  # user 1's list has 3 items
    assert summary["metrics"][2]["recall"]["mean"] == pytest.approx(0.25)


def test_a_list_of_an_unrelated_user_scores_nothing_and_padding_never_hits() -> None:
    relevant = Relevant.of(np.array([4]), np.array([2]), n_items=5)
    assert not relevant.hits(np.array([[0, 0, 1, 3]])).any()
    assert relevant.hits(np.array([[0, 2]])).tolist() == [[False, True]]


def test_pad_keeps_order_and_fills_with_zero() -> None:
    assert pad([np.array([5, 3, 9]), np.array([], dtype=np.int64), np.array([1, 2, 3, 4, 5])], 4).tolist() == \
        [[5, 3, 9, 0], [0, 0, 0, 0], [1, 2, 3, 4]]


def test_paired_difference_interval_and_test() -> None:
    a = np.array([0.5, 0.6, 0.7, 0.8])
    b = a - np.array([0.1, 0.1, 0.2, 0.0])
    d = paired(a, b)
    assert d["mean"] == pytest.approx(0.1)
    half = 1.959963984540054 * np.std([0.1, 0.1, 0.2, 0.0], ddof=1) / 2
    assert (d["low"], d["high"]) == (pytest.approx(0.1 - half), pytest.approx(0.1 + half))
    assert 0.05 < d["p"] < 0.2  # t = 0.1 / (0.0816 / 2) = 2.45 on 3 degrees of freedom: p ≈ 0.092
    assert (d["users_better"], d["users_worse"]) == (3, 0)
