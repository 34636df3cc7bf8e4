"""Helpers the tests share (importable as ``helpers``: pyproject.toml puts tests/ on pytest's path).

Fixtures live in ``conftest.py``; plain functions live here so a test module can call them
at import time or inside its own fixtures.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import Counter
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator

import httpx

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


class Traffic:
    """Client threads sending /v1/recommend until stopped; every outcome is counted."""

    def __init__(self, url: str, threads: int = 4, users: tuple[str, ...] = ("u1", "u2", "u3", "stranger")) -> None:
        self.url, self.users = url, users
        self.outcomes: Counter = Counter()
        self.versions: Counter = Counter()
        self.fallbacks: Counter = Counter()
        self.failures: list[str] = []
        self.latencies: list[float] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def _run(self, i: int) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as client:
            n = 0
            while not self._stop.is_set():
                user = self.users[(i + n) % len(self.users)]
                n += 1
                start = time.perf_counter()
                try:
                    r = client.post("/v1/recommend", json={"user_id": user, "k": 5})
                    ok = r.status_code == 200 and len(r.json()["items"]) == 5
                    body = r.json()
                except Exception as exc:  # noqa: BLE001 - a transport error is a failed request
                    with self._lock:
                        self.failures.append(repr(exc))
                    continue
                with self._lock:
                    self.latencies.append(time.perf_counter() - start)
                    self.outcomes[r.status_code] += 1
                    if not ok:
                        self.failures.append(f"{r.status_code} {r.text[:200]}")
                    else:
                        self.versions[body["model"]["version"]] += 1
                        self.fallbacks[body["fallback"]] += 1

    def __enter__(self) -> "Traffic":
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)

    def snapshot(self) -> Counter:
        with self._lock:
            return Counter(self.fallbacks)


def wait_for(predicate, timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, message
        time.sleep(0.05)


def reload_reaches_every_worker(bundles: dict[str, Path], redis_url: str, token: str) -> Counter:
    """Two workers on ``redis_url``; reload ``main`` to the binary bundle through one of them, wait
    ten sync intervals, and count the versions 40 fresh connections are served (both workers answer)."""
    from ratingctr.serving.process import running_gateway

    with running_gateway({"main": bundles["rating"]}, redis_url=redis_url, workers=2,
                         env={"RATINGCTR_ADMIN_TOKEN": token, "RATINGCTR_REDIS_PREFIX": "workers",
                              "RATINGCTR_SYNC_INTERVAL_S": "0.2"}) as gw:
        r = httpx.post(f"{gw.url}/v1/admin/reload", json={"name": "main", "path": str(bundles["binary"])},
                       headers={"Authorization": f"Bearer {token}"}, timeout=60)
        assert r.status_code == 200, r.text
        time.sleep(2.0)  # ten sync intervals
        return Counter(httpx.post(f"{gw.url}/v1/recommend", json={"user_id": "u1", "k": 2},
                                  timeout=10).json()["model"]["version"] for _ in range(40))


# ---- torchrun jobs (tests/training/test_distributed*.py) ---------------------------------------

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]


def torchrun_env() -> dict[str, str]:
    """This environment without a rank of its own, one thread per rank (two ranks share two cores)."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    return {**env, "OMP_NUM_THREADS": "1"}


def descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children = [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
            found += children
            todo += children
    return found


def rank_pid(root: int, rank: int) -> int | None:
    for pid in descendants(root):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in env and any(e.startswith(b"TORCHELASTIC_RUN_ID=") for e in env):
            return pid
    return None


def torchrun_cli(args: list[str], restarts: int = 0) -> subprocess.Popen:
    """``ratingctr ARGS --distributed`` on two local ranks under torchrun (not waited for)."""
    return subprocess.Popen([*TORCHRUN, "--max-restarts", str(restarts), "--monitor-interval", "0.1",
                             "-m", "ratingctr.cli", *args, "--distributed"], env=torchrun_env(), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def torchrun_to_the_end(args: list[str]) -> None:
    _, err = (proc := torchrun_cli(args)).communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]


def torchrun_killing_rank_1(args: list[str], out: Path) -> None:
    """Run with one restart allowed, SIGKILL rank 1 once ``out/train_state.pt`` exists (a finished
    epoch), and wait for the restarted job to end well."""
    import signal

    proc = torchrun_cli(args, restarts=1)
    deadline = time.monotonic() + 300
    while proc.poll() is None and not (out / "train_state.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    victim = rank_pid(proc.pid, 1)
    assert proc.poll() is None and victim is not None, "the run ended before a rank could be killed"
    os.kill(victim, signal.SIGKILL)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]


#: Gateways that tests put under Locust load read Redis with a 2 s timeout instead of the serving
#: default (0.1 s).  Why: on a loaded machine the embedded Redis can answer a read after 100 ms,
#: and the gateway then serves that request from the bundle with ``fallback='degraded'`` -- as
#: designed, and Locust rightly counts it as a failure -- which made these tests fail under CPU
#: contention (1-2 of thousands of requests).  They test traffic and counting, not Redis latency.
PATIENT_REDIS = {"RATINGCTR_REDIS_TIMEOUT_S": "2"}
