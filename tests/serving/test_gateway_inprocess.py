"""The gateway's request logic in process: the FastAPI app (lifespan included) behind httpx's
ASGI transport, real bundles, ONNX Runtime, FAISS and a real Redis; no uvicorn, no sockets
to the app.  test_gateway_api.py keeps what needs the real server (HTTP framing, /metrics
from a worker, OpenAPI) and test_gateway_resilience.py what needs real processes dying."""
from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx
import numpy as np
import pytest
from helpers import bundle_history, in_process

from ratingctr.bundle import load_bundle
from ratingctr.hashing import sha256_file
from ratingctr.processes import free_port
from ratingctr.serving.gateway import THREAD_SCORE_ROWS, Gateway
from ratingctr.serving.ranker import load_ranker

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

TOKEN = "in-process-token"





@pytest.fixture(scope="module")
async def served(tiny_bundles: dict[str, Path], redis_server) -> AsyncIterator[tuple[httpx.AsyncClient, Gateway]]:
    """Both tiny bundles (rating first: the default model) against the module's Redis, prefix ``rc``."""
    async with in_process(bundles=f"rating={tiny_bundles['rating']},binary={tiny_bundles['binary']}",
                          redis_url=redis_server.url, admin_token=TOKEN) as pair:
        yield pair


@pytest.fixture(scope="module")
def client(served: tuple[httpx.AsyncClient, Gateway]) -> httpx.AsyncClient:
    return served[0]


@pytest.fixture(scope="module")
def rating_ranker(tiny_bundles: dict[str, Path]):
    """The rating bundle opened the way the gateway opens it, to compute expected scores."""
    return load_ranker(tiny_bundles["rating"], warmup_calls=0)


# ---- /v1/recommend ------------------------------------------------------------------
async def test_recommend_returns_k_items_ranked_by_p_click(client: httpx.AsyncClient, tiny_bundles) -> None:
    r = await client.post("/v1/recommend", json={"user_id": "u1", "k": 5})
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


async def test_recommend_is_the_top_k_of_the_unseen_retrieved_candidates(client: httpx.AsyncClient,
                                                                         rating_ranker) -> None:
    """Exactly the pipeline: FAISS top-200 minus history, scored by ONNX Runtime, best 7 by p̂."""
    body = (await client.post("/v1/recommend", json={"user_id": "u6", "k": 7})).json()
    user = rating_ranker.user_index["u6"]
    items = rating_ranker.retrieve(user, rating_ranker.history(user), 200)
    p = rating_ranker.score(rating_ranker.user_fields[user], items)["p_click"]
    best = items[np.argsort(-p, kind="stable")[:7]]
    assert [i["item_id"] for i in body["items"]] == [rating_ranker.item_ids[i] for i in best]
    assert [i["p_click"] for i in body["items"]] == pytest.approx(np.sort(p)[::-1][:7].tolist(), abs=1e-6)


async def test_binary_model_is_picked_by_name_and_has_no_rating_distribution(client: httpx.AsyncClient) -> None:
    body = (await client.post("/v1/recommend", json={"user_id": "u1", "k": 3, "model": "binary"})).json()
    assert body["model"]["name"] == "binary" and len(body["items"]) == 3
    assert all(i["rating_probs"] is None and i["expected_rating"] is None for i in body["items"])


async def test_seen_items_are_never_returned_even_when_k_exceeds_the_catalogue(client: httpx.AsyncClient,
                                                                               tiny_bundles) -> None:
    seen = bundle_history(tiny_bundles["rating"], "u2")
    n_items = len(load_bundle(tiny_bundles["rating"]).vocab["item_id"]) - 1
    body = (await client.post("/v1/recommend", json={"user_id": "u2", "k": 1000})).json()
    returned = [i["item_id"] for i in body["items"]]
    assert not seen & set(returned)
    assert len(returned) == len(set(returned)) == n_items - len(seen)  # everything that remains, no padding
    everything = (await client.post("/v1/recommend", json={"user_id": "u2", "k": 1000, "exclude_seen": False})).json()
    assert {i["item_id"] for i in everything["items"]} >= seen


async def test_cold_start_ranks_popular_items_with_supplied_fields(client: httpx.AsyncClient, rating_ranker) -> None:
    bundle = rating_ranker.bundle
    popular = bundle["popular.npy"][:200]  # the candidate pool: the gateway's default 200 most popular
    plain = (await client.post("/v1/recommend", json={"user_id": "stranger", "k": 10})).json()
    assert plain["fallback"] == "cold_start"
    # scored with the unknown-id row (all zeros): the top 10 of the pool by p_click, exactly
    x = np.concatenate([np.zeros((len(popular), bundle["user_fields.npy"].shape[1]), np.int64),
                        bundle["item_fields.npy"][popular]], axis=1)
    p = rating_ranker.predict(x)["p_click"]
    best = [bundle.vocab["item_id"][i] for i in popular[np.argsort(-p, kind="stable")[:10]]]
    assert [i["item_id"] for i in plain["items"]] == best
    assert [i["p_click"] for i in plain["items"]] == pytest.approx(np.sort(p)[::-1][:10].tolist(), abs=1e-6)
    fields = {"gender": "F", "age": 25, "occupation": "a"}
    profiled = (await client.post("/v1/recommend", json={"user_id": "stranger", "k": 10,
                                                         "user_fields": fields})).json()
    row = np.zeros(bundle["user_fields.npy"].shape[1], np.int64)
    for col, name in enumerate(["user_id", "age", "gender", "occupation"]):
        if name in fields:
            row[col] = bundle.vocab[name].index(str(fields[name]))
    x[:, :row.size] = row
    p_fields = rating_ranker.predict(x)["p_click"]
    assert np.abs(p_fields - p).max() > 1e-6  # the fields reach the model
    assert [i["p_click"] for i in profiled["items"]] == pytest.approx(np.sort(p_fields)[::-1][:10].tolist(), abs=1e-6)


# ---- /v1/events and the seen sets in Redis ---------------------------------------------
async def test_an_event_removes_the_item_from_later_recommendations(client: httpx.AsyncClient, redis_client) -> None:
    top = (await client.post("/v1/recommend", json={"user_id": "u3", "k": 1})).json()["items"][0]["item_id"]
    r = await client.post("/v1/events", json={"events": [{"user_id": "u3", "item_id": top, "rating": 5}]})
    assert r.status_code == 202 and r.json()["accepted"] == 1
    after = (await client.post("/v1/recommend", json={"user_id": "u3", "k": 20})).json()
    assert top not in {i["item_id"] for i in after["items"]}
    assert redis_client.zscore("rc:seen:u3", top) is not None


async def test_training_history_stays_excluded_when_redis_lacks_the_seen_set(client: httpx.AsyncClient, redis_client,
                                                                            tiny_bundles) -> None:
    """A worker can serve before another worker's bulk load has finished, and a Redis can come
    back empty: the bundle's own history must still keep training items out, with events added."""
    seen = bundle_history(tiny_bundles["rating"], "u4")
    assert seen
    redis_client.delete("rc:seen:u4")
    first = (await client.post("/v1/recommend", json={"user_id": "u4", "k": 1000})).json()
    returned = {i["item_id"] for i in first["items"]}
    assert first["fallback"] is None and not seen & returned
    rated = min(returned)
    r = await client.post("/v1/events", json={"events": [{"user_id": "u4", "item_id": rated, "rating": 2}]})
    assert r.status_code == 202
    after = (await client.post("/v1/recommend", json={"user_id": "u4", "k": 1000})).json()["items"]
    assert {i["item_id"] for i in after} == returned - {rated}


async def test_events_land_in_the_stream_and_new_users_get_a_state_record(client: httpx.AsyncClient,
                                                                          redis_client) -> None:
    events = [{"user_id": "brand-new", "item_id": "i5", "rating": 4, "ts": 1700000000.5},
              {"user_id": 42, "item_id": "i6", "rating": 1}]
    r = await client.post("/v1/events", json={"events": events})
    assert r.status_code == 202, r.text
    ids = r.json()["ids"]
    stored = dict(redis_client.xrange("rc:events"))
    assert stored[ids[0]]["user_id"] == "brand-new" and stored[ids[0]]["item_id"] == "i5"
    assert float(stored[ids[0]]["ts"]) == 1700000000.5 and float(stored[ids[0]]["rating"]) == 4
    assert stored[ids[1]]["user_id"] == "42"
    state = redis_client.hgetall("rc:user:brand-new")
    assert state["events"] == "1" and float(state["last_ts"]) == 1700000000.5 and "first_seen" in state
    # the new user is still unknown to the model: cold start, minus what they have seen
    body = (await client.post("/v1/recommend", json={"user_id": "brand-new", "k": 100})).json()
    assert body["fallback"] == "cold_start" and "i5" not in {i["item_id"] for i in body["items"]}


# ---- /v1/score ----------------------------------------------------------------------
async def test_score_keeps_order_reports_unknown_ids_and_agrees_with_recommend(client: httpx.AsyncClient) -> None:
    rec = (await client.post("/v1/recommend", json={"user_id": "u4", "k": 4})).json()["items"]
    wanted = [rec[2]["item_id"], "no-such-item", rec[0]["item_id"], rec[1]["item_id"]]
    body = (await client.post("/v1/score", json={"user_id": "u4", "item_ids": wanted})).json()
    assert [i["item_id"] for i in body["items"]] == [wanted[0], wanted[2], wanted[3]]
    assert body["unknown_item_ids"] == ["no-such-item"]
    by_id = {i["item_id"]: i["p_click"] for i in rec}
    for item in body["items"]:
        assert item["p_click"] == pytest.approx(by_id[item["item_id"]], abs=1e-6)


async def test_score_matches_onnx_runtime_on_the_bundle(client: httpx.AsyncClient, rating_ranker) -> None:
    bundle = rating_ranker.bundle
    items = bundle.vocab["item_id"][1:31]
    body = (await client.post("/v1/score", json={"user_id": "u5", "item_ids": items})).json()
    u = bundle.vocab["user_id"].index("u5")
    x = np.concatenate([np.repeat(bundle["user_fields.npy"][u:u + 1], 30, axis=0), bundle["item_fields.npy"][1:31]], 1)
    expected = rating_ranker.predict(x)["p_click"]
    assert np.max(np.abs(np.array([i["p_click"] for i in body["items"]]) - expected)) < 1e-6


async def test_a_large_score_request_scores_off_the_event_loop_with_the_same_numbers(client: httpx.AsyncClient,
                                                                                    rating_ranker) -> None:
    ids = rating_ranker.item_ids[1:]
    many = (ids * (THREAD_SCORE_ROWS // len(ids) + 2))[:THREAD_SCORE_ROWS + 100]
    big = (await client.post("/v1/score", json={"user_id": "u7", "item_ids": many})).json()
    small = (await client.post("/v1/score", json={"user_id": "u7", "item_ids": ids})).json()
    assert [i["item_id"] for i in big["items"]] == many
    by_id = {i["item_id"]: i["p_click"] for i in small["items"]}
    assert all(abs(i["p_click"] - by_id[i["item_id"]]) < 1e-6 for i in big["items"])


# ---- validation, errors, readiness ----------------------------------------------------
@pytest.mark.parametrize("path,payload,status,fragment", [
    ("/v1/recommend", {"user_id": "u1", "k": 0}, 422, "k"),
    ("/v1/recommend", {"user_id": "u1", "k": 1001}, 422, "k"),
    ("/v1/recommend", {"user_id": "u1", "k": "ten"}, 422, "k"),
    ("/v1/recommend", {"k": 5}, 422, "user_id"),
    ("/v1/recommend", {"user_id": True}, 422, "user_id"),
    ("/v1/recommend", {"user_id": ""}, 422, "user_id"),
    ("/v1/recommend", {"user_id": "u1", "model": "nope"}, 404, "unknown model 'nope'; loaded models: rating, binary"),
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
async def test_bad_input_gets_a_json_4xx_with_a_message(client: httpx.AsyncClient, path, payload, status,
                                                        fragment) -> None:
    r = await client.post(path, json=payload)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    message = r.json()["error"]
    assert fragment in message and "Traceback" not in message


async def test_readiness_names_each_model_with_its_head_version_and_path(client: httpx.AsyncClient,
                                                                         tiny_bundles) -> None:
    r = await client.get("/readyz")
    assert r.status_code == 200
    assert r.json() == {"status": "ready", "redis": "ok", "default_model": "rating", "models": {
        head: {"version": load_bundle(path).version, "path": str(path), "head": head}
        for head, path in tiny_bundles.items()},
        "durability": {"appendonly": "yes", "appendfsync": "always", "save": ""}, "behind": {}}


async def test_a_model_that_produces_nan_is_a_500_without_a_traceback(served) -> None:
    """Fault injection on the real session's output: a broken model must fail loudly, not rank on NaN."""
    client, gateway = served
    ranker = gateway.models["binary"]
    real_predict = ranker.predict

    def with_a_nan(fields: np.ndarray) -> dict:
        out = dict(real_predict(fields))
        out["p_click"] = np.where(np.arange(len(fields)) == 0, np.nan, out["p_click"]).astype(np.float32)
        return out

    ranker.predict = with_a_nan
    try:
        r = await client.post("/v1/recommend", json={"user_id": "u1", "k": 3, "model": "binary"})
    finally:
        del ranker.predict
    assert r.status_code == 500 and r.json() == {"error": "internal error; the gateway logged the details"}
    assert (await client.post("/v1/recommend", json={"user_id": "u1", "k": 3, "model": "binary"})).status_code == 200


# ---- admin: auth and reloads ----------------------------------------------------------
def _rewrite_manifest(bundle: Path, edit) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    edit(manifest)
    (bundle / "manifest.json").write_text(json.dumps(manifest))


async def test_admin_endpoints_are_disabled_without_a_token(tiny_bundles, redis_server) -> None:
    async with in_process(bundles=f"main={tiny_bundles['rating']}", redis_url=redis_server.url,
                          redis_prefix="no-admin") as (c, gateway):
        r = await c.post("/v1/admin/reload", json={"name": "main", "path": str(tiny_bundles["binary"])},
                         headers={"Authorization": "Bearer anything"})
        assert r.status_code == 403 and "RATINGCTR_ADMIN_TOKEN" in r.json()["error"]
        assert gateway.models["main"].version == load_bundle(tiny_bundles["rating"]).version


async def test_reload_swaps_the_model_publishes_it_and_refuses_bad_bundles(tiny_bundles, redis_server, redis_client,
                                                                           tmp_path) -> None:
    versions = {head: load_bundle(path).version for head, path in tiny_bundles.items()}
    truncated = tmp_path / "truncated"
    shutil.copytree(tiny_bundles["rating"], truncated)
    (truncated / "ranker.onnx").write_bytes(b"not an onnx model")
    garbage = tmp_path / "garbage"  # hashes agree with the file: only ONNX Runtime can refuse it
    shutil.copytree(truncated, garbage)
    _rewrite_manifest(garbage, lambda m: m["files"].update(
        {"ranker.onnx": {"sha256": sha256_file(garbage / "ranker.onnx"), "bytes": 17}}))
    headless = tmp_path / "headless"  # manifest.json is not hashed by itself: only its own validation stands
    shutil.copytree(tiny_bundles["binary"], headless)
    _rewrite_manifest(headless, lambda m: m["model"].pop("head"))
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with in_process(bundles=f"main={tiny_bundles['rating']}", redis_url=redis_server.url,
                          redis_prefix="reload", admin_token=TOKEN) as (c, _):
        wrong = await c.post("/v1/admin/reload", json={"name": "main", "path": str(tiny_bundles["binary"])},
                             headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and "token" in wrong.json()["error"]
        r = await c.post("/v1/admin/reload", json={"name": "main", "path": str(tiny_bundles["binary"])}, headers=auth)
        assert r.status_code == 200, r.text
        assert r.json()["version"] == versions["binary"] and r.json()["previous_version"] == versions["rating"]
        body = (await c.post("/v1/recommend", json={"user_id": "u1", "k": 3, "model": "main"})).json()
        assert body["model"]["version"] == versions["binary"] and body["items"][0]["rating_probs"] is None
        assert (await c.get("/readyz")).json()["models"]["main"]["head"] == "binary"
        published = json.loads(redis_client.hget("reload:admin:bundles", "main"))
        assert published == {"path": str(tiny_bundles["binary"].resolve()), "version": versions["binary"]}
        assert redis_client.get("reload:admin:generation") == "1"
        for bad, reason in ((truncated, "ranker.onnx has 17 bytes, manifest says"),
                            (garbage, "ranker.onnx cannot be loaded by ONNX Runtime"),
                            (headless, "manifest.model lacks the 'head' entry"),
                            (tmp_path / "missing", "bundle directory not found")):
            r = await c.post("/v1/admin/reload", json={"name": "main", "path": str(bad)}, headers=auth)
            assert r.status_code == 422, r.text
            assert "'main' keeps serving its current version" in r.json()["error"] and reason in r.json()["error"]
        body = (await c.post("/v1/recommend", json={"user_id": "u1", "k": 3})).json()
        assert body["model"]["version"] == versions["binary"]  # the bad bundles changed nothing
        assert redis_client.get("reload:admin:generation") == "1"  # and were never published


async def test_a_second_gateway_follows_a_published_reload(tiny_bundles, redis_server) -> None:
    """Two workers on one Redis: the one that did not take the admin call follows within its sync interval."""
    versions = {head: load_bundle(path).version for head, path in tiny_bundles.items()}
    common = {"bundles": f"main={tiny_bundles['rating']}", "redis_url": redis_server.url, "redis_prefix": "follow",
              "admin_token": TOKEN, "sync_interval_s": 0.05}
    async with in_process(**common) as (first, _), in_process(**common) as (second, follower):
        r = await first.post("/v1/admin/reload", json={"name": "main", "path": str(tiny_bundles["binary"])},
                             headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200, r.text
        with anyio.fail_after(10):
            while follower.models["main"].version != versions["binary"]:
                await anyio.sleep(0.05)
        body = (await second.post("/v1/recommend", json={"user_id": "u1", "k": 2})).json()
        assert body["model"]["version"] == versions["binary"]


# ---- without Redis ------------------------------------------------------------------
async def test_without_redis_requests_are_served_degraded_and_events_refused(tiny_bundles) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    async with in_process(bundles=f"rating={tiny_bundles['rating']}", redis_url=dead,
                          redis_retry_s=30.0) as (c, _):
        ready = await c.get("/readyz")
        assert ready.status_code == 200 and ready.json()["redis"] == "degraded"
        body = (await c.post("/v1/recommend", json={"user_id": "u2", "k": 1000})).json()
        seen = bundle_history(tiny_bundles["rating"], "u2")
        returned = {i["item_id"] for i in body["items"]}
        assert body["fallback"] == "degraded" and returned and not seen & returned
        n_items = len(load_bundle(tiny_bundles["rating"]).vocab["item_id"]) - 1
        assert len(returned) == n_items - len(seen)  # the bundle's own history, nothing more, nothing less
        stranger = (await c.post("/v1/recommend", json={"user_id": "stranger", "k": 5})).json()
        assert stranger["fallback"] == "degraded" and len(stranger["items"]) == 5
        scored = (await c.post("/v1/score", json={"user_id": "u2", "item_ids": ["i1", "i2"]})).json()
        assert scored["fallback"] == "degraded" and [i["item_id"] for i in scored["items"]] == ["i1", "i2"]
        r = await c.post("/v1/events", json={"events": [{"user_id": "u1", "item_id": "i1", "rating": 5}]})
        assert r.status_code == 503 and "nothing was stored" in r.json()["error"]


async def test_a_reload_by_the_promotion_gate_is_counted_apart_and_a_bad_reason_is_refused(tiny_bundles,
                                                                                           redis_server) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}

    def promotions(text: str) -> float:
        line = next((x for x in text.splitlines() if x.startswith('ratingctr_promotions_total{model="promoted"}')), None)
        return float(line.rsplit(" ", 1)[1]) if line else 0.0

    async with in_process(bundles=f"promoted={tiny_bundles['rating']}", redis_url=redis_server.url,
                          redis_prefix="promo", admin_token=TOKEN) as (c, _):
        before = promotions((await c.get("/metrics")).text)
        manual = await c.post("/v1/admin/reload", json={"name": "promoted", "path": str(tiny_bundles["binary"])},
                              headers=auth)
        assert manual.status_code == 200 and promotions((await c.get("/metrics")).text) == before
        r = await c.post("/v1/admin/reload", json={"name": "promoted", "path": str(tiny_bundles["rating"]),
                                                   "reason": "promotion"}, headers=auth)
        assert r.status_code == 200 and promotions((await c.get("/metrics")).text) == before + 1
        bad = await c.post("/v1/admin/reload", json={"name": "promoted", "path": str(tiny_bundles["rating"]),
                                                     "reason": "because"}, headers=auth)
        assert bad.status_code == 422 and "reason" in bad.json()["error"]
