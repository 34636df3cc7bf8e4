"""Field copies of bundle versions no worker serves are deleted after RATINGCTR_STALE_VERSION_GRACE_S,
by the gateway's sync loop, against a real Redis; served, young and loading versions are kept."""
from __future__ import annotations

import json
import time

import anyio
import pytest
from helpers import in_process
from pydantic import ValidationError

from ratingctr.bundle import load_bundle
from ratingctr.serving.settings import GatewaySettings

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

TOKEN = "stale-versions-token"
GRACE = 1.5
PREFIX = "stale"






def _seed(redis_client, version: str, loaded_at: float | None, loading: bool = False) -> None:
    """A version as an earlier worker left it: field rows, the load marker, registered."""
    redis_client.hset(f"{PREFIX}:b:{version}:fields", mapping={"u1": "row", "u2": "row"})
    if loaded_at is not None:
        redis_client.set(f"{PREFIX}:b:{version}:loaded", json.dumps({"bundle": "old", "at": loaded_at}))
    if loading:
        redis_client.set(f"{PREFIX}:b:{version}:loading", "1", ex=60)
    redis_client.sadd(f"{PREFIX}:b:versions", version)


async def _wait_until_gone(redis_client, version: str, timeout: float = 10) -> float:
    with anyio.fail_after(timeout):
        while redis_client.exists(f"{PREFIX}:b:{version}:fields"):
            await anyio.sleep(0.02)
    return time.monotonic()


async def test_unserved_versions_are_deleted_after_the_grace_period(tiny_bundles, redis_server, redis_client) -> None:
    versions = {head: load_bundle(path).version for head, path in tiny_bundles.items()}
    async with in_process(bundles=f"main={tiny_bundles['rating']}", redis_url=redis_server.url, redis_prefix=PREFIX,
                          admin_token=TOKEN, sync_interval_s=0.05, stale_version_grace_s=GRACE) as (c, _):
        _seed(redis_client, "0ld0ld0ld0ld", time.time() - 100)  # unserved, loaded long ago
        _seed(redis_client, "y0ungy0ung00", time.time())  # unserved, but loaded just now
        _seed(redis_client, "l0ad1ng00000", None, loading=True)  # a bulk load under way elsewhere
        _seed(redis_client, "n0markn0mark", None)  # a load that died half-way: nothing claims it
        await _wait_until_gone(redis_client, "0ld0ld0ld0ld")
        await _wait_until_gone(redis_client, "n0markn0mark")
        assert redis_client.exists(f"{PREFIX}:b:y0ungy0ung00:fields")  # younger than the grace period
        assert not redis_client.exists(f"{PREFIX}:b:0ld0ld0ld0ld:loaded")
        assert "0ld0ld0ld0ld" not in redis_client.smembers(f"{PREFIX}:b:versions")
        await _wait_until_gone(redis_client, "y0ungy0ung00")
        assert redis_client.exists(f"{PREFIX}:b:l0ad1ng00000:fields")  # its loader holds the lock
        # the served version is claimed (expiring after the grace period) and kept
        served = f"{PREFIX}:b:{versions['rating']}"
        assert redis_client.exists(f"{served}:fields") and redis_client.exists(f"{served}:loaded")
        assert 0 < redis_client.pttl(f"{served}:served") <= GRACE * 1000

        r = await c.post("/v1/admin/reload", json={"name": "main", "path": str(tiny_bundles["binary"])},
                         headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200, r.text
        swapped = time.monotonic()
        gone = await _wait_until_gone(redis_client, versions["rating"])
        assert gone - swapped >= GRACE - 0.2  # not before its last claim expired
        assert redis_client.hlen(f"{PREFIX}:b:{versions['binary']}:fields") == 60  # the new one stays
        body = (await c.post("/v1/recommend", json={"user_id": "u1", "k": 3})).json()
        assert body["model"]["version"] == versions["binary"] and body["fallback"] is None


def test_the_grace_period_must_outlast_two_sync_passes() -> None:
    with pytest.raises(ValidationError, match="twice sync_interval_s"):
        GatewaySettings(bundles="x", sync_interval_s=1.0, stale_version_grace_s=2.0)
    assert GatewaySettings(bundles="x").stale_version_grace_s == 3600
