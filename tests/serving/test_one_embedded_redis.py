"""``--workers N`` never starts two embedded Redis servers on one data directory.

``ratingctr serve --workers N`` starts one in the parent and hands its URL to the workers;
``uvicorn --factory ratingctr.serving.app:create_app --workers N`` without a Redis URL would
make each worker start its own, so the second is refused (a lock on ``RATINGCTR_REDIS_DIR``)
with a message naming ``ratingctr serve --workers N``, and uvicorn stops.  Real processes,
real redis-server, real uvicorn."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import run_cli

from ratingctr.processes import free_port
from ratingctr.serving.app import create_app
from ratingctr.serving.redis_dir_lock import RedisDirBusy, RedisDirLock
from ratingctr.serving.settings import GatewaySettings

pytestmark = [pytest.mark.integration]


def _redis_servers_on(directory: Path) -> list[int]:
    """Pids of live redis-server processes working in ``directory`` (Redis chdirs to its ``--dir``
    and rewrites its command line, so the working directory is what identifies it)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if "redis-server" in (entry / "comm").read_text() and \
                        os.readlink(entry / "cwd") == str(directory.resolve()):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def test_the_lock_admits_one_holder_and_names_it(tmp_path: Path) -> None:
    first = RedisDirLock(tmp_path).acquire()
    with pytest.raises(RedisDirBusy, match=rf"pid {os.getpid()}\).*ratingctr serve --workers N"):
        RedisDirLock(tmp_path).acquire()
    first.release()
    RedisDirLock(tmp_path).acquire().release()  # free again once released


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_second_gateway_on_the_same_redis_dir_is_refused(tiny_bundles, tmp_path: Path,
                                                                 anyio_backend: str) -> None:
    common = {"bundles": f"main={tiny_bundles['rating']}", "redis_dir": tmp_path / "redis"}
    first = create_app(GatewaySettings(**common))
    async with first.router.lifespan_context(first):
        assert len(_redis_servers_on(tmp_path / "redis")) == 1
        second = create_app(GatewaySettings(**common))
        with pytest.raises(RedisDirBusy, match="ratingctr serve --workers N"):
            async with second.router.lifespan_context(second):
                pass
        assert len(_redis_servers_on(tmp_path / "redis")) == 1
        assert (await first.state.gateway.store.ping())  # the first one's Redis is untouched
    assert _redis_servers_on(tmp_path / "redis") == []
    RedisDirLock(tmp_path / "redis").acquire().release()  # stop() released the lock


def test_uvicorn_factory_with_several_workers_refuses_clearly(tiny_bundles, tmp_path: Path) -> None:
    redis_dir = tmp_path / "redis"
    env = {**os.environ, "RATINGCTR_BUNDLES": f"main={tiny_bundles['rating']}", "RATINGCTR_REDIS_DIR": str(redis_dir)}
    for name in ("REDIS_URL", "RATINGCTR_REDIS_URL"):
        env.pop(name, None)
    proc = subprocess.run([sys.executable, "-m", "uvicorn", "--factory", "ratingctr.serving.app:create_app",
                           "--workers", "2", "--port", str(free_port())],
                          capture_output=True, text=True, timeout=120, env=env, stdin=subprocess.DEVNULL)
    # uvicorn stops the whole server when a worker fails its start-up (its exit status stays 0)
    assert "ratingctr serve --workers N" in proc.stderr, proc.stderr[-2000:]
    assert "failed to start, stopping the parent process" in proc.stderr, proc.stderr[-2000:]
    assert _redis_servers_on(redis_dir) == []  # the worker that won stopped its Redis on the way out


def test_serve_refuses_a_redis_dir_another_process_holds(tiny_bundles, tmp_path: Path) -> None:
    lock = RedisDirLock(tmp_path / "redis").acquire()
    try:
        env = {**os.environ, "RATINGCTR_REDIS_DIR": str(tmp_path / "redis")}
        env.pop("REDIS_URL", None)
        proc = run_cli("serve", "--bundle", str(tiny_bundles["rating"]), "--port", str(free_port()),
                       timeout=60, env=env)
    finally:
        lock.release()
    assert proc.returncode == 2, proc.stderr
    assert "already runs an embedded Redis" in proc.stderr and "ratingctr serve --workers N" in proc.stderr
    assert _redis_servers_on(tmp_path / "redis") == []
