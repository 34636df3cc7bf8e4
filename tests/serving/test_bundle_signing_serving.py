"""Signed bundles in the gateway: with RATINGCTR_BUNDLE_KEY set, start-up, the admin reload API
(422) and a worker following a Redis reload notice all refuse unsigned or forged bundles.

In process (the FastAPI app and its lifespan behind httpx's ASGI transport) with real bundles,
ONNX Runtime, FAISS and the module's real Redis."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import anyio
import pytest
from helpers import in_process
from pydantic import ValidationError

from ratingctr.bundle import MANIFEST, BundleError, load_bundle, sign_bundle
from ratingctr.serving.settings import GatewaySettings

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

KEY = "serving-test-bundle-key-0123456789"
TOKEN = "signing-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}






@pytest.fixture(scope="module")
def signed(tiny_bundles: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Signed copies of both tiny bundles, and a forged one (signed, then its manifest edited)."""
    root = tmp_path_factory.mktemp("signed-bundles")
    out = {}
    for head, path in tiny_bundles.items():
        out[head] = root / f"signed-{head}"
        shutil.copytree(path, out[head])
        sign_bundle(out[head], KEY.encode())
    out["forged"] = root / "forged"
    shutil.copytree(out["binary"], out["forged"])
    raw = json.loads((out["forged"] / MANIFEST).read_text())
    raw["model"]["threshold"] = 0.0
    (out["forged"] / MANIFEST).write_text(json.dumps(raw, indent=2) + "\n")
    return out


async def test_reload_api_refuses_unsigned_and_forged_bundles_with_422(signed, tiny_bundles, redis_server,
                                                                      redis_client) -> None:
    async with in_process(bundles=f"main={signed['rating']}", redis_url=redis_server.url, redis_prefix="signed",
                          admin_token=TOKEN, bundle_key=KEY) as (c, gateway):
        start = gateway.models["main"].version
        for bad, reason in ((tiny_bundles["binary"], "is not signed"), (signed["forged"], "signature does not match")):
            r = await c.post("/v1/admin/reload", json={"name": "main", "path": str(bad)}, headers=AUTH)
            assert r.status_code == 422, r.text
            assert reason in r.json()["error"] and "'main' keeps serving its current version" in r.json()["error"]
            assert gateway.models["main"].version == start
        assert redis_client.get("signed:admin:generation") is None  # refused bundles are never published
        ok = await c.post("/v1/admin/reload", json={"name": "main", "path": str(signed["binary"])}, headers=AUTH)
        assert ok.status_code == 200, ok.text
        assert ok.json()["version"] == load_bundle(signed["binary"]).version
        assert (await c.get("/healthz")).status_code == 200


async def test_a_follower_with_the_key_refuses_an_unsigned_published_reload(signed, tiny_bundles,
                                                                           redis_server) -> None:
    """A worker without the key publishes an unsigned bundle; the one with the key stays on its version,
    backs off and names the model under /readyz's ``behind``."""
    common = {"bundles": f"main={signed['rating']}", "redis_url": redis_server.url, "redis_prefix": "sigfollow",
              "admin_token": TOKEN, "sync_interval_s": 0.05}
    async with in_process(**common) as (first, _), \
            in_process(**common, bundle_key=KEY) as (second, follower):
        start = follower.models["main"].version
        r = await first.post("/v1/admin/reload", json={"name": "main", "path": str(tiny_bundles["binary"])},
                             headers=AUTH)
        assert r.status_code == 200, r.text
        with anyio.fail_after(10):
            while "main" not in follower.behind:
                await anyio.sleep(0.05)
        assert "is not signed" in follower.behind["main"].error
        assert follower.models["main"].version == start
        ready = (await second.get("/readyz")).json()
        assert "main" in ready["behind"], ready
        assert (await second.post("/v1/recommend", json={"user_id": "u1", "k": 2})).status_code == 200


async def test_start_up_refuses_an_unsigned_bundle_when_a_key_is_set(tiny_bundles, redis_server) -> None:
    with pytest.raises(BundleError, match="is not signed"):
        async with in_process(bundles=f"main={tiny_bundles['rating']}", redis_url=redis_server.url,
                              redis_prefix="sigstart", bundle_key=KEY):
            pass


def test_bundle_key_settings_are_checked_when_read(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="at least 16 bytes"):
        GatewaySettings(bundles="x", bundle_key="short")
    key_file = tmp_path / "bundle.key"
    key_file.write_text(KEY + "\n")
    assert GatewaySettings(bundles="x", bundle_key_file=key_file).bundle_key_bytes() == KEY.encode()
    with pytest.raises(ValidationError, match="not both"):
        GatewaySettings(bundles="x", bundle_key=KEY, bundle_key_file=key_file)
    with pytest.raises(ValidationError, match="cannot read"):
        GatewaySettings(bundles="x", bundle_key_file=tmp_path / "absent.key")
    assert GatewaySettings(bundles="x").bundle_key_bytes() is None
    assert KEY not in repr(GatewaySettings(bundles="x", bundle_key=KEY))  # a secret, never logged
