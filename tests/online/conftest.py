"""Online fixtures: a fresh key prefix per test, so tests share the module's real Redis
(``redis_server`` in tests/conftest.py) but never a stream."""
from __future__ import annotations

import itertools
from pathlib import Path

import pytest

_prefixes = itertools.count()


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
