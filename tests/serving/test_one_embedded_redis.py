"""``--workers N`` never starts two embedded Redis servers on one data directory.

``ratingctr serve --workers N`` starts one in the parent and hands its URL to the workers;
under ``uvicorn --factory ratingctr.serving.app:create_app --workers N`` without a Redis URL
the first worker starts it (a lock on ``RATINGCTR_REDIS_DIR``) and its siblings share it,
taking it over if that worker dies; an unrelated process on the directory is refused with a
message naming the entry points that work.  Real processes, real redis-server, real uvicorn."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
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


def _children(pid: int) -> set[int]:
    """uvicorn's worker processes (its multiprocessing resource tracker is a child too)."""
    out = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid and \
                        b"resource_tracker" not in (entry / "cmdline").read_bytes():
                    out.add(int(entry.name))
            except (OSError, ValueError):
                continue
    return out


def _until(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _answers(url: str, n: int) -> list[dict]:
    """``n`` answers for u1, each on a new connection, so both workers answer some."""
    return [httpx.post(f"{url}/v1/recommend", json={"user_id": "u1", "k": 1000}, timeout=10).json() for _ in range(n)]


def test_uvicorn_factory_workers_share_one_embedded_redis_and_outlive_its_owner(tiny_bundles, tmp_path: Path) -> None:
    """`uvicorn --factory … --workers 2` without a Redis URL: one redis-server for both workers;
    SIGKILL the worker that started it and a sibling restarts it on the same URL (the append-only
    file keeps the events), uvicorn replaces the dead worker, and it shares again."""
    redis_dir, port = tmp_path / "redis", free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "RATINGCTR_BUNDLES": f"main={tiny_bundles['rating']}", "RATINGCTR_REDIS_DIR": str(redis_dir),
           "RATINGCTR_SYNC_INTERVAL_S": "0.2", "RATINGCTR_REDIS_RETRY_S": "0.2"}
    for name in ("REDIS_URL", "RATINGCTR_REDIS_URL"):
        env.pop(name, None)
    log = open(tmp_path / "uvicorn.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory", "ratingctr.serving.app:create_app",
                             "--workers", "2", "--port", str(port)], stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    try:
        _until(lambda: (tmp_path / "uvicorn.log").read_text().count("Application startup complete") >= 2, 90,
               "both workers to start")
        servers = _redis_servers_on(redis_dir)
        assert len(servers) == 1, servers
        owner = int((redis_dir / "gateway.lock").read_text().strip())
        assert owner in _children(proc.pid) and len(_children(proc.pid)) == 2
        item = "i1"
        r = httpx.post(f"{url}/v1/events", json={"events": [{"user_id": "u1", "item_id": item, "rating": 5}]})
        assert r.status_code == 202
        answers = _answers(url, 20)  # whichever worker answers reads the same Redis
        assert all(a["fallback"] is None and item not in {i["item_id"] for i in a["items"]} for a in answers)

        os.kill(owner, signal.SIGKILL)
        _until(lambda: len(_redis_servers_on(redis_dir)) == 1 and _redis_servers_on(redis_dir) != servers, 30,
               "a sibling to restart the embedded Redis")
        _until(lambda: len(_children(proc.pid)) == 2 and owner not in _children(proc.pid), 60,
               "uvicorn to replace the killed worker")
        _until(lambda: all(a.get("fallback") is None for a in _answers(url, 10)), 30, "both workers out of degraded")
        answers = _answers(url, 20)
        assert all(a["fallback"] is None and item not in {i["item_id"] for i in a["items"]} for a in answers)
        assert len(_redis_servers_on(redis_dir)) == 1
        text = (tmp_path / "uvicorn.log").read_text()  # a sibling took over, or the replacement came first
        assert "restarted it here" in text or "on its previous URL" in text
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
        log.close()
    _until(lambda: _redis_servers_on(redis_dir) == [], 15, "the embedded Redis to stop with the workers")


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
