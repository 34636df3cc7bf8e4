"""``/v1/events`` with side fields, in process against a real Redis: ``user_fields`` / ``item_fields``
land in the stream entry as compact JSON (only when sent), hostile values are refused with 422
before anything is stored, the limits are the ones ``/v1/recommend``'s ``user_fields`` has and
the OpenAPI schema shows them, and an ``event_id`` retry still stores nothing twice."""
from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import redis
from helpers import in_process

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

PREFIX = "sidefields"
MAX_FIELDS = 4  # small, so "one field too many" is a small body
MAX_ID_CHARS = 32


@pytest.fixture(scope="module")
async def client(tiny_bundles: dict[str, Path], redis_server) -> AsyncIterator[httpx.AsyncClient]:
    async with in_process(bundles=f"rating={tiny_bundles['rating']}", redis_url=redis_server.url,
                          redis_prefix=PREFIX, max_user_fields=MAX_FIELDS, max_id_chars=MAX_ID_CHARS) as (c, _):
        yield c


def entries(redis_client: redis.Redis) -> dict[str, dict]:
    return dict(redis_client.xrange(f"{PREFIX}:events"))


async def test_side_fields_are_stored_as_compact_json_and_only_when_sent(client: httpx.AsyncClient,
                                                                       redis_client: redis.Redis) -> None:
    events = [{"user_id": "new-u", "item_id": "new-i", "rating": 4, "user_fields": {"gender": "F", "age": 25},
               "item_fields": {"genre": ["Comedy", "Drama"], "year": "1999"}},
              {"user_id": "u1", "item_id": "i2", "rating": 3, "item_fields": {"genre": "Horror"}},
              {"user_id": "u1", "item_id": "i3", "rating": 5}]
    r = await client.post("/v1/events", json={"events": events})
    assert r.status_code == 202, r.text
    ids = r.json()["ids"]
    stored = entries(redis_client)
    first, second, third = (stored[i] for i in ids)
    # keys sorted, no spaces, an integer id-like value as the string the API types it as
    assert first["user_fields"] == '{"age":"25","gender":"F"}'
    assert first["item_fields"] == '{"genre":["Comedy","Drama"],"year":"1999"}'
    assert "user_fields" not in second and json.loads(second["item_fields"]) == {"genre": "Horror"}
    assert "user_fields" not in third and "item_fields" not in third
    assert first["user_id"] == "new-u" and float(first["rating"]) == 4.0


async def test_non_ascii_field_values_are_stored_as_text(client: httpx.AsyncClient, redis_client: redis.Redis) -> None:
    r = await client.post("/v1/events", json={"events": [
        {"user_id": "u2", "item_id": "i1", "rating": 2, "user_fields": {"city": "Zürich"}}]})
    assert r.status_code == 202, r.text
    assert entries(redis_client)[r.json()["ids"][0]]["user_fields"] == '{"city":"Zürich"}'


HOSTILE = [
    ({"user_fields": {f"f{i}": "x" for i in range(MAX_FIELDS + 1)}}, "user_fields"),
    ({"item_fields": {f"f{i}": "x" for i in range(MAX_FIELDS + 1)}}, "item_fields"),
    ({"user_fields": {"gender": "F\x00"}}, "control"),
    ({"item_fields": {"genre": ["ok", "bad\x1b[31m"]}}, "control"),
    ({"user_fields": {"bad\nname": "x"}}, "control"),
    ({"user_fields": {"age": "9" * (MAX_ID_CHARS + 1)}}, "at most"),
    ({"item_fields": {"x" * (MAX_ID_CHARS + 1): "1"}}, "at most"),
    ({"item_fields": {"genre": ["g"] * (MAX_FIELDS + 1)}}, "at most"),
    ({"user_fields": {"age": {"nested": "object"}}}, "user_fields"),
    ({"user_fields": {"age": 2.5}}, "user_fields"),
    ({"user_fields": {"flag": True}}, "user_fields"),
    ({"user_fields": {"gender": ""}}, "user_fields"),
    ({"user_fields": ["gender", "F"]}, "user_fields"),
    ({"user_fields": "gender=F"}, "user_fields"),
    ({"side_fields": {"gender": "F"}}, "side_fields"),
]


@pytest.mark.parametrize(("extra", "mentions"), HOSTILE, ids=[f"hostile{i}" for i in range(len(HOSTILE))])
async def test_hostile_side_fields_are_refused_and_nothing_is_stored(client: httpx.AsyncClient,
                                                                    redis_client: redis.Redis, extra: dict,
                                                                    mentions: str) -> None:
    before = redis_client.xlen(f"{PREFIX}:events")
    good = {"user_id": "u3", "item_id": "i1", "rating": 4}
    r = await client.post("/v1/events", json={"events": [good, {**good, **extra}]})
    assert r.status_code == 422, r.text
    assert mentions in r.text.lower() or mentions in r.text
    assert redis_client.xlen(f"{PREFIX}:events") == before  # the good event of the batch is not stored either


async def test_a_retried_event_id_is_stored_once_with_its_first_side_fields(client: httpx.AsyncClient,
                                                                           redis_client: redis.Redis) -> None:
    event = {"user_id": "u4", "item_id": "i4", "rating": 5, "event_id": "side-retry-1",
             "user_fields": {"gender": "M"}}
    first = await client.post("/v1/events", json={"events": [event]})
    before = redis_client.xlen(f"{PREFIX}:events")
    again = await client.post("/v1/events", json={"events": [{**event, "user_fields": {"gender": "F"}}]})
    assert first.status_code == again.status_code == 202
    assert again.json()["ids"] == first.json()["ids"]
    assert redis_client.xlen(f"{PREFIX}:events") == before
    stored = entries(redis_client)[first.json()["ids"][0]]
    assert stored["event_id"] == "side-retry-1" and stored["user_fields"] == '{"gender":"M"}'


async def test_openapi_shows_the_side_field_bounds(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    event = next(v for k, v in schema["components"]["schemas"].items() if k.startswith("Event") and
                 "user_fields" in v.get("properties", {}))
    for side in ("user_fields", "item_fields"):
        (obj,) = [o for o in event["properties"][side]["anyOf"] if o.get("type") == "object"]
        assert obj["maxProperties"] == MAX_FIELDS
        assert obj["propertyNames"]["maxLength"] == MAX_ID_CHARS
        values = obj["additionalProperties"]["anyOf"]
        assert {"type": "string", "minLength": 1, "maxLength": MAX_ID_CHARS}.items() <= values[0].items()
        assert values[1]["type"] == "array" and values[1]["maxItems"] == MAX_FIELDS
