"""The request limits are settings: what a deployment configures is what is enforced and what
the OpenAPI schema shows (an app is built, not started: validation runs before the gateway)."""
from __future__ import annotations

import httpx
import pytest

from ratingctr.serving.app import create_app
from ratingctr.serving.settings import GatewaySettings

pytestmark = pytest.mark.anyio

LIMITS = {"max_k": 5, "max_id_chars": 8, "max_model_chars": 4, "max_path_chars": 16, "max_user_fields": 2,
          "max_item_ids": 3, "max_events": 2}




@pytest.fixture
def app():
    return create_app(GatewaySettings(bundles="x=/nonexistent", admin_token="t", **LIMITS))


def test_the_openapi_schema_shows_the_configured_limits(app) -> None:
    schemas = app.openapi()["components"]["schemas"]
    recommend = schemas["RecommendRequest"]["properties"]
    assert recommend["k"]["maximum"] == 5 and recommend["k"]["minimum"] == 1 and recommend["k"]["default"] == 5
    assert recommend["user_id"]["maxLength"] == 8
    assert recommend["model"]["anyOf"][0]["maxLength"] == 4
    assert recommend["user_fields"]["anyOf"][0]["maxProperties"] == 2
    assert schemas["ScoreRequest"]["properties"]["item_ids"]["maxItems"] == 3
    assert schemas["EventsRequest"]["properties"]["events"]["maxItems"] == 2
    assert schemas["ReloadRequest"]["properties"]["path"]["maxLength"] == 16
    event = schemas["Event"]["properties"]
    assert event["rating"]["minimum"] == 1 and event["ts"]["anyOf"][0]["maximum"] == 1e10


@pytest.mark.parametrize("path,body,fragment", [
    ("/v1/recommend", {"user_id": "u1", "k": 6}, "k: Input should be less than or equal to 5"),
    ("/v1/recommend", {"user_id": "u" * 9}, "user_id: String should have at most 8 characters"),
    ("/v1/recommend", {"user_id": "u1", "model": "abcde"}, "model: String should have at most 4 characters"),
    ("/v1/recommend", {"user_id": "u1", "user_fields": {"a": "1", "b": "2", "c": "3"}}, "user_fields"),
    ("/v1/score", {"user_id": "u1", "item_ids": ["a", "b", "c", "d"]}, "item_ids"),
    ("/v1/events", {"events": [{"user_id": "u", "item_id": "i", "rating": 1}] * 3}, "events"),
    ("/v1/admin/reload", {"name": "x", "path": "/" + "p" * 16}, "path: String should have at most 16 characters"),
])
async def test_configured_limits_are_enforced(app, path, body, fragment) -> None:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as client:
        r = await client.post(path, json=body, headers={"Authorization": "Bearer t"})
    assert r.status_code == 422, r.text
    assert fragment in r.json()["error"]


def test_the_openapi_schema_names_the_credentials_each_endpoint_needs() -> None:
    keyed = create_app(GatewaySettings(bundles="x=/nonexistent", api_keys="a,b")).openapi()
    assert set(keyed["components"]["securitySchemes"]) == {"AdminToken", "ApiKey", "ApiKeyBearer"}
    assert keyed["paths"]["/v1/recommend"]["post"]["security"] == [{"ApiKey": []}, {"ApiKeyBearer": []}]
    assert keyed["paths"]["/v1/admin/reload"]["post"]["security"] == [{"AdminToken": []}]
    assert "security" not in keyed["paths"]["/healthz"]["get"]
    open_app = create_app(GatewaySettings(bundles="x=/nonexistent")).openapi()
    assert "security" not in open_app["paths"]["/v1/recommend"]["post"]
    assert open_app["paths"]["/v1/admin/reload"]["post"]["security"] == [{"AdminToken": []}]
