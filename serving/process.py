"""Start ``ratingctr serve`` as a real subprocess on loopback (tests, benchmarks, the load harness)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ratingctr.processes import free_port, stop_process


@dataclass
class GatewayProcess:
    url: str
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:
            return json.loads(response.read()).get("status") == "ready"
    except (urllib.error.URLError, OSError, ValueError):
        return False


@contextmanager
def running_gateway(bundles: dict[str, Path], port: int | None = None, redis_url: str | None = None,
                    workers: int = 1, env: dict[str, str] | None = None, startup_seconds: float = 90,
                    extra_args: list[str] | None = None) -> Iterator[GatewayProcess]:
    """Yield a ready gateway (``/readyz`` answered) and stop it, with its embedded Redis, on exit.

    The gateway runs in a process group of its own so that stopping it also stops uvicorn
    workers.  Without ``redis_url`` it starts an embedded Redis under a temporary directory
    (or ``RATINGCTR_REDIS_DIR`` from ``env``).
    """
    port = port or free_port()
    cmd = [sys.executable, "-m", "ratingctr.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
           "--workers", str(workers), *[arg for name, path in bundles.items() for arg in ("--bundle", f"{name}={path}")],
           *(extra_args or [])]
    if redis_url:
        cmd += ["--redis-url", redis_url]
    with tempfile.TemporaryDirectory(prefix="ratingctr-gw-") as tmp:
        full_env = {**os.environ, "RATINGCTR_REDIS_DIR": str(Path(tmp) / "redis"), **(env or {})}
        full_env.pop("REDIS_URL", None)
        log_path = Path(tmp) / "gateway.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       env=full_env, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        gateway = GatewayProcess(url, process, log_path)
        try:
            deadline = time.monotonic() + startup_seconds
            while not _ready(url):
                if process.poll() is not None:
                    raise RuntimeError(f"gateway exited with code {process.returncode}:\n{gateway.log()[-3000:]}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"gateway not ready within {startup_seconds:.0f} s:\n{gateway.log()[-3000:]}")
                time.sleep(0.1)
            yield gateway
        finally:
            stop_process(process)
