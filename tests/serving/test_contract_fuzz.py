"""Contract fuzzing: schemathesis generates requests from the gateway's own /openapi.json and
sends them to the real server (uvicorn, real Redis, real bundles).

What must hold for every generated request, valid or not: no 5xx, and the answer conforms to
the schema (documented status codes, content types, response bodies).  The example budget is
fixed and the generation derandomised, so the test is fast and repeatable; the limits in the
schema (maxLength, bounds) keep most generated requests valid, so the scoring path is
exercised, not just the validator.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from ratingctr.serving.process import GatewayProcess, running_gateway

pytestmark = pytest.mark.integration
ADMIN_TOKEN = "fuzz-admin-token"
API_KEY = "fuzz-client-key"

EXAMPLES_PER_OPERATION = 40
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def gateway(tiny_bundles: dict[str, Path], redis_server) -> Iterator[GatewayProcess]:
    """API keys on; admin enabled (so reload bodies reach validation) but confined to the bundles' folder."""
    env = {"RATINGCTR_ADMIN_TOKEN": ADMIN_TOKEN, "RATINGCTR_API_KEYS": API_KEY, "RATINGCTR_BUNDLE_ROOT": str(tiny_bundles["rating"].parent),
           "RATINGCTR_REDIS_PREFIX": "fuzz"}
    with running_gateway({"rating": tiny_bundles["rating"], "binary": tiny_bundles["binary"]},
                         redis_url=redis_server.url, env=env) as gw:
        yield gw


@pytest.fixture(scope="module")
def client(gateway: GatewayProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=30, headers={"X-API-Key": API_KEY}) as c:
        yield c


def test_generated_requests_never_get_a_5xx_or_an_undocumented_answer(gateway, client: httpx.Client) -> None:
    schema = schemathesis.openapi.from_url(f"{gateway.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/recommend", "/v1/score", "/v1/events", "/v1/admin/reload"}
    statuses: dict[str, set[int]] = {}
    for operation in operations:
        headers = ({"Authorization": f"Bearer {ADMIN_TOKEN}"} if operation.path.startswith("/v1/admin/")
                   else {"X-API-Key": API_KEY})

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def check(case) -> None:
            response = case.call(base_url=gateway.url, headers=headers, timeout=30)
            statuses.setdefault(operation.label, set()).add(response.status_code)
            case.validate_response(response, checks=CHECKS)

        check()
    assert client.get("/healthz").status_code == 200
    assert client.post("/v1/recommend", json={"user_id": "u1", "k": 2}).status_code == 200
    # the schema's limits make most generated bodies valid: the scoring paths really ran
    assert 200 in statuses["POST /v1/recommend"] and 200 in statuses["POST /v1/score"]
    assert 202 in statuses["POST /v1/events"]
