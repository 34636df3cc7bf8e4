"""The HTTP API against a real uvicorn process, real Redis and real exported bundles."""
from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
from helpers import bundle_history

from ratingctr.bundle import load_bundle


def test_recommend_returns_k_items_ranked_by_p_click(client: httpx.Client, tiny_bundles) -> None:
    r = client.post("/v1/recommend", json={"user_id": "u1", "k": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["fallback"] is None and body["user_id"] == "u1"
    assert body["model"] == {"name": "rating", "version": load_bundle(tiny_bundles["rating"]).version}
    items = body["items"]
    assert len(items) == 5 and len({i["item_id"] for i in items}) == 5
    p = [i["p_click"] for i in items]
    assert p == sorted(p, reverse=True) and all(0 < x < 1 for x in p)
    for item in items:
        assert len(item["rating_probs"]) == 5 and abs(sum(item["rating_probs"]) - 1) < 1e-5
        expected = sum((k + 1) * q for k, q in enumerate(item["rating_probs"]))
        assert abs(item["expected_rating"] - expected) < 1e-4


def test_binary_model_is_picked_by_name_and_has_no_rating_distribution(client: httpx.Client) -> None:
    body = client.post("/v1/recommend", json={"user_id": "u1", "k": 3, "model": "binary"}).json()
    assert body["model"]["name"] == "binary"
    assert all(i["rating_probs"] is None and i["expected_rating"] is None for i in body["items"])


def test_seen_items_are_never_returned_even_when_k_exceeds_the_catalogue(client: httpx.Client, tiny_bundles) -> None:
    seen = bundle_history(tiny_bundles["rating"], "u2")
    n_items = len(load_bundle(tiny_bundles["rating"]).vocab["item_id"]) - 1
    body = client.post("/v1/recommend", json={"user_id": "u2", "k": 1000}).json()
    returned = [i["item_id"] for i in body["items"]]
    assert not seen & set(returned)
    assert len(returned) == len(set(returned)) == n_items - len(seen)  # everything that remains, no padding
    everything = client.post("/v1/recommend", json={"user_id": "u2", "k": 1000, "exclude_seen": False}).json()
    assert {i["item_id"] for i in everything["items"]} >= seen


def test_an_event_removes_the_item_from_later_recommendations(client: httpx.Client, redis_client) -> None:
    top = client.post("/v1/recommend", json={"user_id": "u3", "k": 1}).json()["items"][0]["item_id"]
    r = client.post("/v1/events", json={"events": [{"user_id": "u3", "item_id": top, "rating": 5}]})
    assert r.status_code == 202 and r.json()["accepted"] == 1
    after = client.post("/v1/recommend", json={"user_id": "u3", "k": 20}).json()
    assert top not in {i["item_id"] for i in after["items"]}
    assert top in redis_client.smembers("rc:seen:u3")


def test_training_history_stays_excluded_when_redis_lacks_the_seen_set(client: httpx.Client, redis_client,
                                                                      tiny_bundles) -> None:
    """A worker can serve before another worker's bulk load has finished, and a Redis can come
    back empty: the bundle's own history must still keep training items out, with events added."""
    seen = bundle_history(tiny_bundles["rating"], "u4")
    assert seen
    redis_client.delete("rc:seen:u4")
    first = client.post("/v1/recommend", json={"user_id": "u4", "k": 1000}).json()
    returned = {i["item_id"] for i in first["items"]}
    assert first["fallback"] is None and not seen & returned
    rated = sorted(returned)[0]
    assert client.post("/v1/events", json={"events": [{"user_id": "u4", "item_id": rated, "rating": 2}]}).status_code == 202
    after = {i["item_id"] for i in client.post("/v1/recommend", json={"user_id": "u4", "k": 1000}).json()["items"]}
    assert after == returned - {rated}


def test_events_land_in_the_stream_and_new_users_get_a_state_record(client: httpx.Client, redis_client) -> None:
    events = [{"user_id": "brand-new", "item_id": "i5", "rating": 4, "ts": 1700000000.5},
              {"user_id": 42, "item_id": "i6", "rating": 1}]
    r = client.post("/v1/events", json={"events": events})
    assert r.status_code == 202, r.text
    ids = r.json()["ids"]
    stored = {entry_id: fields for entry_id, fields in redis_client.xrange("rc:events")}
    assert stored[ids[0]]["user_id"] == "brand-new" and stored[ids[0]]["item_id"] == "i5"
    assert float(stored[ids[0]]["ts"]) == 1700000000.5 and float(stored[ids[0]]["rating"]) == 4
    assert stored[ids[1]]["user_id"] == "42"
    state = redis_client.hgetall("rc:user:brand-new")
    assert state["events"] == "1" and float(state["last_ts"]) == 1700000000.5 and "first_seen" in state
    # the new user is still unknown to the model: cold start, minus what they have seen
    body = client.post("/v1/recommend", json={"user_id": "brand-new", "k": 100}).json()
    assert body["fallback"] == "cold_start" and "i5" not in {i["item_id"] for i in body["items"]}


def test_cold_start_ranks_popular_items_with_supplied_fields(client: httpx.Client, tiny_bundles) -> None:
    from ratingctr.serving.loader import open_bundle

    served = open_bundle(tiny_bundles["rating"])
    bundle = served.bundle
    popular = bundle["popular.npy"][:200]  # the candidate pool: the gateway's default 200 most popular
    plain = client.post("/v1/recommend", json={"user_id": "stranger", "k": 10}).json()
    assert plain["fallback"] == "cold_start"
    # scored with the unknown-id row (all zeros): the top 10 of the pool by p_click, exactly
    x = np.concatenate([np.zeros((len(popular), bundle["user_fields.npy"].shape[1]), np.int64),
                        bundle["item_fields.npy"][popular]], axis=1)
    p = served.score(x)["p_click"]
    best = [bundle.vocab["item_id"][i] for i in popular[np.argsort(-p, kind="stable")[:10]]]
    assert [i["item_id"] for i in plain["items"]] == best
    assert [i["p_click"] for i in plain["items"]] == pytest.approx(np.sort(p)[::-1][:10].tolist(), abs=1e-6)
    fields = {"gender": "F", "age": 25, "occupation": "a"}
    profiled = client.post("/v1/recommend", json={"user_id": "stranger", "k": 10, "user_fields": fields}).json()
    row = np.zeros(bundle["user_fields.npy"].shape[1], np.int64)
    for col, name in enumerate(["user_id", "age", "gender", "occupation"]):
        if name in fields:
            row[col] = bundle.vocab[name].index(str(fields[name]))
    x[:, :row.size] = row
    p_fields = served.score(x)["p_click"]
    assert np.abs(p_fields - p).max() > 1e-6  # the fields reach the model
    assert [i["p_click"] for i in profiled["items"]] == pytest.approx(np.sort(p_fields)[::-1][:10].tolist(), abs=1e-6)


def test_score_keeps_order_reports_unknown_ids_and_agrees_with_recommend(client: httpx.Client) -> None:
    rec = client.post("/v1/recommend", json={"user_id": "u4", "k": 4}).json()["items"]
    wanted = [rec[2]["item_id"], "no-such-item", rec[0]["item_id"], rec[1]["item_id"]]
    body = client.post("/v1/score", json={"user_id": "u4", "item_ids": wanted}).json()
    assert [i["item_id"] for i in body["items"]] == [wanted[0], wanted[2], wanted[3]]
    assert body["unknown_item_ids"] == ["no-such-item"]
    by_id = {i["item_id"]: i["p_click"] for i in rec}
    for item in body["items"]:
        assert item["p_click"] == pytest.approx(by_id[item["item_id"]], abs=1e-6)


def test_score_matches_onnx_runtime_on_the_bundle(client: httpx.Client, tiny_bundles) -> None:
    from ratingctr.serving.loader import open_bundle

    served = open_bundle(tiny_bundles["rating"])
    bundle = served.bundle
    items = bundle.vocab["item_id"][1:31]
    body = client.post("/v1/score", json={"user_id": "u5", "item_ids": items}).json()
    u = bundle.vocab["user_id"].index("u5")
    x = np.concatenate([np.repeat(bundle["user_fields.npy"][u:u + 1], 30, axis=0), bundle["item_fields.npy"][1:31]], 1)
    expected = served.score(x)["p_click"]
    assert np.max(np.abs(np.array([i["p_click"] for i in body["items"]]) - expected)) < 1e-6


@pytest.mark.parametrize("path,payload,status,fragment", [
    ("/v1/recommend", {"user_id": "u1", "k": 0}, 422, "k"),
    ("/v1/recommend", {"user_id": "u1", "k": 1001}, 422, "k"),
    ("/v1/recommend", {"user_id": "u1", "k": "ten"}, 422, "k"),
    ("/v1/recommend", {"k": 5}, 422, "user_id"),
    ("/v1/recommend", {"user_id": True}, 422, "user_id"),
    ("/v1/recommend", {"user_id": ""}, 422, "user_id"),
    ("/v1/recommend", {"user_id": "u1", "model": "nope"}, 404, "unknown model"),
    ("/v1/recommend", {"user_id": "u1", "colour": "red"}, 422, "colour"),
    ("/v1/recommend", {"user_id": "stranger", "user_fields": {"shoe_size": 9}}, 422, "shoe_size"),
    ("/v1/recommend", [1, 2, 3], 422, "invalid request"),
    ("/v1/score", {"user_id": "u1", "item_ids": []}, 422, "item_ids"),
    ("/v1/score", {"user_id": "u1", "item_ids": [f"i{i}" for i in range(10_001)]}, 422, "item_ids"),
    ("/v1/score", {"user_id": "u1", "item_ids": "i1"}, 422, "item_ids"),
    ("/v1/events", {"events": []}, 422, "events"),
    ("/v1/events", {"events": [{"user_id": "u1", "item_id": "i1", "rating": 9}]}, 422, "outside 1..5"),
    ("/v1/events", {"events": [{"user_id": "u1", "item_id": "i1"}]}, 422, "rating"),
    ("/v1/events", {"events": [{"user_id": "u1", "item_id": "i1", "rating": "five"}]}, 422, "rating"),
    ("/v1/admin/reload", {"name": "rating", "path": "/tmp"}, 401, "token"),
])
def test_bad_input_gets_a_json_4xx_with_a_message(client: httpx.Client, path, payload, status, fragment) -> None:
    r = client.post(path, json=payload)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    message = r.json()["error"]
    assert fragment in message and "Traceback" not in message


def test_malformed_json_oversized_bodies_and_unknown_routes_are_clean_4xx(client: httpx.Client) -> None:
    r = client.post("/v1/recommend", content=b'{"user_id": "u1", "k": ', headers={"content-type": "application/json"})
    assert r.status_code == 422 and "invalid request" in r.json()["error"]
    big = json.dumps({"user_id": "u1", "pad": "x" * (2 << 20)}).encode()
    r = client.post("/v1/recommend", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "exceeds" in r.json()["error"]

    def chunks():  # no content-length: the limit is enforced while streaming
        for _ in range(40):
            yield b"x" * 65536
    r = client.post("/v1/recommend", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "exceeds" in r.json()["error"]
    r = client.get("/v1/nothing-here")
    assert r.status_code == 404 and "error" in r.json()
    r = client.get("/v1/recommend")
    assert r.status_code == 405 and "error" in r.json()


def test_health_readiness_metrics_and_openapi(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["status"] == "ready" and ready["redis"] == "ok" and set(ready["models"]) == {"rating", "binary"}
    client.post("/v1/recommend", json={"user_id": "u1", "k": 2})
    text = client.get("/metrics").text
    assert 'ratingctr_request_seconds_bucket{endpoint="recommend",le="0.002",model="rating"}' in text
    for stage in ("redis", "faiss", "onnx"):
        assert f'ratingctr_stage_seconds_count{{model="rating",stage="{stage}"}}' in text
    assert 'ratingctr_errors_total{endpoint="recommend",status="422"}' in text
    assert 'ratingctr_fallback_total{kind="cold_start",model="rating"}' in text
    spec = client.get("/openapi.json").json()
    assert {"/v1/recommend", "/v1/score", "/v1/events", "/v1/admin/reload"} <= set(spec["paths"])
    assert client.get("/docs").status_code == 200
