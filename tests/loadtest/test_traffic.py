"""The traffic model and response checks of the locustfile, on a real tiny bundle (no HTTP)."""
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from ratingctr.bundle import load_bundle
from ratingctr.loadtest.traffic import UNKNOWN_PREFIX, EventLedger, Traffic, TrafficConfig


@pytest.fixture(scope="module")
def traffic(tiny_bundles: dict) -> Traffic:
    return Traffic(TrafficConfig(tiny_bundles["rating"], "rating", unknown_share=0.05, k_values=(5, 10, 20)))


def _response(traffic: Traffic, items: list[str], fallback=None, model="rating", index: int = 0) -> dict:
    """A well-formed answer; for a known user (``index`` > 0) in the served order,
    log p_click + w x (user vector . item vector), as the gateway ranks."""
    p = np.linspace(0.9, 0.1, max(1, len(items)))[:len(items)]
    if index > 0 and len(items) > 1 and len(set(items)) == len(items):
        rows = [traffic.item_index[it] for it in items]
        blend = np.log(p) + traffic.manifest.ranking.retriever_weight * (
            traffic.item_vectors[rows].astype(np.float64) @ traffic.user_vectors[index].astype(np.float64))
        order = np.argsort(-blend, kind="stable")
        items, p = [items[i] for i in order], p[order]
    probs = [0.1, 0.1, 0.2, 0.3, 0.3]
    return {"items": [{"item_id": it, "p_click": float(p[i]), "rating_probs": probs, "expected_rating": 3.6}
                      for i, it in enumerate(items)],
            "model": {"name": model, "version": traffic.version}, "fallback": fallback}


def test_users_follow_training_activity_plus_unknown_share(traffic: Traffic, tiny_bundles: dict) -> None:
    bundle = load_bundle(tiny_bundles["rating"])
    activity = np.diff(bundle["history_indptr.npy"])[1:len(bundle.vocab["user_id"])]
    rng = np.random.default_rng(0)
    draws = [traffic.sample_user(rng) for _ in range(40_000)]
    unknown = sum(1 for _, i in draws if i == 0)
    assert unknown / len(draws) == pytest.approx(0.05, abs=0.006)
    assert all(u.startswith(UNKNOWN_PREFIX) for u, i in draws if i == 0)
    counts = np.bincount([i for _, i in draws if i > 0], minlength=activity.size + 1)[1:]
    expected = activity / activity.sum() * counts.sum()
    assert np.max(np.abs(counts - expected) / np.sqrt(expected)) < 5  # within 5 sigma for every user
    assert all(traffic.user_ids[i] == u for u, i in draws[:200] if i > 0)


def test_k_is_drawn_from_the_configured_sizes(traffic: Traffic) -> None:
    rng = np.random.default_rng(1)
    assert {traffic.sample_k(rng) for _ in range(300)} == {5, 10, 20}


def test_a_correct_answer_passes_and_each_fault_is_named(traffic: Traffic) -> None:
    user, index = traffic.user_ids[1], 1
    seen = sorted(traffic.seen(index))
    assert seen, "tiny users have a history"
    unseen = [it for it in traffic.item_ids[1:] if it not in traffic.seen(index)]
    good = _response(traffic, unseen[:5], index=index)
    assert traffic.check_recommend(200, good, user, index, 5, model="rating") is None
    assert "for user" in traffic.check_recommend(200, {**good, "user_id": "someone-else"}, user, index, 5)
    assert "seen items" in traffic.check_recommend(200, _response(traffic, [seen[0], *unseen[:4]]), user, index, 5)
    # with events in the traffic, other writers may have used candidates up: short lists pass, long never
    assert traffic.check_recommend(200, _response(traffic, unseen[:4], index=index), user, index, 5,
                                   model="rating") is None
    assert "6 items for k=5" in traffic.check_recommend(200, _response(traffic, unseen[:6]), user, index, 5)
    # without events the generator knows every seen item, so a short list is a fault
    exact = Traffic(dataclasses.replace(traffic.config, events_share=0.0))
    assert "4 items for k=5" in exact.check_recommend(200, _response(exact, unseen[:4]), user, index, 5)
    assert "status 500" in traffic.check_recommend(500, {"error": "boom"}, user, index, 5)
    assert "duplicate" in traffic.check_recommend(200, _response(traffic, [unseen[0]] * 5), user, index, 5)
    assert "asked for 'rating'" in traffic.check_recommend(200, _response(traffic, unseen[:5], model="binary"),
                                                            user, index, 5, model="rating")
    reordered = _response(traffic, unseen[:5], index=index)
    reordered["items"].reverse()
    assert "ordered" in traffic.check_recommend(200, reordered, user, index, 5)
    # a known user's list in p_click order is wrong when the blend reorders it; an unknown user's is right
    assert traffic.manifest.ranking.retriever_weight == 1.0
    by_p = _response(traffic, unseen[:12])
    retrieval = traffic.item_vectors[[traffic.item_index[i] for i in unseen[:12]]] @ traffic.user_vectors[index]
    spread = float(retrieval.max() - retrieval.min())
    for rank, item in enumerate(by_p["items"]):  # p_click descending, steps far below the retrieval spread
        item["p_click"] = 0.5 - rank * 1e-3 * spread
    assert "log p_click + w x retriever score" in traffic.check_recommend(200, by_p, user, index, 12)
    assert traffic.check_recommend(200, {**by_p, "fallback": "cold_start"}, "loadtest-unknown-9", 0, 12) is None
    bad_probs = _response(traffic, unseen[:5], index=index)
    bad_probs["items"][0]["rating_probs"] = [0.5, 0.5]
    assert "rating_probs" in traffic.check_recommend(200, bad_probs, user, index, 5)
    bad_probs["items"][0]["rating_probs"] = [0.2, 0.2, None, 0.2, 0.4]  # None would pass as NaN
    assert "rating_probs" in traffic.check_recommend(200, bad_probs, user, index, 5)
    del bad_probs["items"][0]["rating_probs"]
    assert "rating_probs" in traffic.check_recommend(200, bad_probs, user, index, 5)
    off_scale = _response(traffic, unseen[:5], index=index)
    off_scale["items"][3]["expected_rating"] = 5.5
    assert "expected_rating" in traffic.check_recommend(200, off_scale, user, index, 5)
    off_scale["items"][3]["expected_rating"] = None
    assert "expected_rating" in traffic.check_recommend(200, off_scale, user, index, 5)
    assert "fallback" in traffic.check_recommend(200, _response(traffic, unseen[:5], fallback="degraded"),
                                                 user, index, 5)


def test_confirmed_events_join_the_seen_set_from_their_confirmation_on(traffic: Traffic) -> None:
    user, index = traffic.user_ids[2], 2
    unseen = [it for it in traffic.item_ids[1:] if it not in traffic.seen(index)]
    ledger = EventLedger()
    ledger.record(user, unseen[0], at=10.0)
    answer = _response(traffic, unseen[:5])
    assert traffic.check_recommend(200, answer, user, index, 5, ledger.seen_before(user, 9.0)) is None
    assert "seen items" in traffic.check_recommend(200, answer, user, index, 5, ledger.seen_before(user, 10.0))


def test_unknown_users_must_be_cold_start_and_may_get_any_item(traffic: Traffic) -> None:
    answer = _response(traffic, traffic.item_ids[1:11], fallback="cold_start")
    assert traffic.check_recommend(200, answer, "loadtest-unknown-1", 0, 10) is None
    assert "cold_start" in traffic.check_recommend(200, _response(traffic, traffic.item_ids[1:11]),
                                                   "loadtest-unknown-1", 0, 10)


def test_fewer_than_k_only_when_candidates_run_out(traffic: Traffic) -> None:
    traffic = Traffic(dataclasses.replace(traffic.config, events_share=0.0))  # the exact count check
    user, index = traffic.user_ids[3], 3
    unseen = [it for it in traffic.item_ids[1:] if it not in traffic.seen(index)]
    everything = _response(traffic, unseen, index=index)
    assert traffic.check_recommend(200, everything, user, index, len(unseen) + 10) is None
    assert "items for k" in traffic.check_recommend(200, _response(traffic, unseen[:-1]), user, index,
                                                    len(unseen) + 10)


def test_torchserve_rows_are_the_users_unseen_retrieved_candidates(traffic: Traffic, tiny_bundles: dict) -> None:
    bundle = load_bundle(tiny_bundles["rating"])
    items = traffic.candidate_items(4)
    seen = {traffic.item_index[i] for i in traffic.seen(4)}
    assert items.size == min(traffic.config.candidates, traffic.n_items - len(seen))
    assert not set(items.tolist()) & seen
    scores = bundle["item_vectors.npy"] @ bundle["user_vectors.npy"][4]
    unseen = [i for i in range(1, traffic.n_items + 1) if i not in seen]
    assert min(scores[items]) >= max(scores[[i for i in unseen if i not in set(items.tolist())]], default=-np.inf)
    rows = traffic.candidate_rows(4)
    user_cols = bundle["user_fields.npy"].shape[1]
    assert rows.dtype == np.int64 and rows.shape == (items.size, bundle.manifest.num_columns)
    assert (rows[:, :user_cols] == bundle["user_fields.npy"][4]).all()
    assert (rows[:, user_cols:] == bundle["item_fields.npy"][items]).all()
    body, count = traffic.prediction_body(4)
    assert json.loads(body) == {"fields": rows.tolist()} and count == rows.shape[0]
    assert traffic.prediction_body(4)[0] is body  # built once per user
    cold = traffic.candidate_rows(0)
    assert (cold[:, :user_cols] == bundle["user_fields.npy"][0]).all()
    assert (traffic.candidate_items(0) == bundle["popular.npy"][:cold.shape[0]]).all()
    good = {"p_click": [0.5] * rows.shape[0], "rating_probs": [[0.2] * 5] * rows.shape[0],
            "expected_rating": [3.0] * rows.shape[0]}
    assert traffic.check_prediction(200, good, rows.shape[0]) is None
    assert "rows" in traffic.check_prediction(200, {"p_click": [0.5]}, rows.shape[0])


def test_bad_traffic_settings_are_refused(tiny_bundles: dict) -> None:
    with pytest.raises(ValueError):
        TrafficConfig(Path(tiny_bundles["rating"]), k_values=(0,))
    with pytest.raises(ValueError):
        TrafficConfig(Path(tiny_bundles["rating"]), unknown_share=1.5)


def test_an_event_accepted_before_the_request_must_be_excluded(traffic: Traffic) -> None:
    """Accepted before sending: the gateway must honour it; accepted later: it may not have."""
    user, index = traffic.user_ids[5], 5
    unseen = [it for it in traffic.item_ids[1:] if it not in traffic.seen(index)]
    ledger = EventLedger()
    ledger.record(user, unseen[1], at=0.0)
    ledger.record(user, unseen[2], at=5.0)
    answer = _response(traffic, unseen[1:4])
    assert "seen items" in traffic.check_recommend(200, answer, user, index, 3, ledger.seen_before(user, 1.0))
    assert traffic.check_recommend(200, _response(traffic, unseen[2:5], index=index), user, index, 3,
                                   ledger.seen_before(user, 1.0)) is None
    assert ledger.seen_before(user, 1.0) == {unseen[1]} and ledger.seen_before(user, 9.0) == {unseen[1], unseen[2]}