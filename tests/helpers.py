"""Helpers the tests share (importable as ``helpers``: pyproject.toml puts tests/ on pytest's path).

Fixtures live in ``conftest.py``; plain functions live here so a test module can call them
at import time or inside its own fixtures.
"""
from __future__ import annotations

import subprocess
import sys
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator

# ``ratingctr`` as a user runs it, without depending on the console script being on PATH.
RATINGCTR = [sys.executable, "-c", "import sys; from ratingctr.cli import main; sys.exit(main())"]


def run_cli(*args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """One ``ratingctr ARGS`` process: text output captured, stdin closed (a verb that waits
    for input fails instead of hanging the suite)."""
    return subprocess.run([*RATINGCTR, *args], capture_output=True, text=True, timeout=timeout, env=env,
                          stdin=subprocess.DEVNULL)


def bundle_history(bundle_path: Path, user_id: str) -> set[str]:
    """Raw item ids of ``user_id``'s training history as the bundle stores it (what the gateway excludes)."""
    from ratingctr.bundle import load_bundle

    bundle = load_bundle(bundle_path)
    u = bundle.vocab["user_id"].index(user_id)
    indptr, items = bundle["history_indptr.npy"], bundle["history_items.npy"]
    return {bundle.vocab["item_id"][i] for i in items[indptr[u]:indptr[u + 1]]}


@asynccontextmanager
async def in_process(**settings: Any) -> AsyncIterator[tuple[Any, Any]]:
    """A started gateway app (its lifespan included) with ``GatewaySettings(**settings)``, and an
    httpx client talking to it through the ASGI transport: ``(client, gateway)``.

    ``raise_app_exceptions=False``: an unhandled error reaches the client as the 500 body a
    server would send, instead of re-raising into the test.
    """
    import httpx

    from ratingctr.serving.app import create_app
    from ratingctr.serving.settings import GatewaySettings

    app = create_app(GatewaySettings(**settings))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test", timeout=30) as client:
            yield client, app.state.gateway
