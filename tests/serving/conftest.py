"""Serving fixtures: a real gateway process on the shared real Redis (`redis_server`, tests/conftest.py)."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import httpx
import pytest

from ratingctr.serving.embedded_redis import EmbeddedRedis
from ratingctr.serving.process import GatewayProcess, running_gateway

ADMIN_TOKEN = "test-admin-token"


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    """In-process gateway tests run on asyncio, the loop uvicorn serves on; module-scoped so a
    module's app and its client share one event loop."""
    return "asyncio"


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
