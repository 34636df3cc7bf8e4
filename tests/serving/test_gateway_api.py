"""The HTTP API through a real uvicorn process (real Redis, real exported bundles): what only a
real server shows, i.e. HTTP framing, body limits on the wire, the worker's /metrics and the docs.
The request logic itself is tested in process, in test_gateway_inprocess.py."""
from __future__ import annotations

import json

import httpx

from ratingctr.bundle import load_bundle


def test_the_real_server_recommends_scores_and_takes_events(client: httpx.Client, tiny_bundles, redis_client) -> None:
    r = client.post("/v1/recommend", json={"user_id": "u1", "k": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["fallback"] is None and len(body["items"]) == 5
    assert body["model"] == {"name": "rating", "version": load_bundle(tiny_bundles["rating"]).version}
    p = [i["p_click"] for i in body["items"]]
    assert p == sorted(p, reverse=True)
    top = body["items"][0]["item_id"]
    scored = client.post("/v1/score", json={"user_id": "u1", "item_ids": [top]}).json()
    assert scored["items"][0]["p_click"] == p[0]  # the same float32, written and parsed exactly
    r = client.post("/v1/events", json={"events": [{"user_id": "u1", "item_id": top, "rating": 5}]})
    assert r.status_code == 202 and redis_client.zscore("rc:seen:u1", top) is not None
    after = client.post("/v1/recommend", json={"user_id": "u1", "k": 5}).json()
    assert top not in {i["item_id"] for i in after["items"]}


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
    client.post("/v1/recommend", json={"user_id": "stranger", "k": 2})
    assert client.post("/v1/recommend", json={"user_id": "u1", "k": 0}).status_code == 422
    text = client.get("/metrics").text
    assert 'ratingctr_request_seconds_bucket{endpoint="recommend",le="0.002",model="rating"}' in text
    for stage in ("redis", "faiss", "onnx"):
        assert f'ratingctr_stage_seconds_count{{model="rating",stage="{stage}"}}' in text
    assert 'ratingctr_errors_total{endpoint="recommend",status="422"}' in text
    assert 'ratingctr_fallback_total{kind="cold_start",model="rating"}' in text
    spec = client.get("/openapi.json").json()
    assert {"/v1/recommend", "/v1/score", "/v1/events", "/v1/admin/reload"} <= set(spec["paths"])
    assert client.get("/docs").status_code == 200
