"""Start and stop a local TorchServe serving one bundle's ``ranker.mar`` (benchmarks, tests, compose)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ratingctr.errors import UserError
from ratingctr.export.torchserve import config_properties, venv_tool
from ratingctr.processes import free_port, stop_process


def post_json(url: str, payload: dict, timeout: float = 30) -> dict:
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


@contextmanager
def local_torchserve(bundle_dir: Path, num_columns: int, disable_token_auth: bool = True,
                     startup_seconds: float = 180) -> Iterator[str]:
    """Yield the inference URL of a TorchServe on loopback ports serving ``bundle_dir/ranker.mar``."""
    if shutil.which("java") is None:
        raise UserError("TorchServe needs java (JDK 17) on PATH")
    mar = Path(bundle_dir) / "ranker.mar"
    if not mar.is_file():
        raise UserError(f"{bundle_dir} has no ranker.mar: export it with --torchserve")
    binary = venv_tool("torchserve")
    with tempfile.TemporaryDirectory(prefix="ratingctr-ts-") as tmp:
        work = Path(tmp)
        (work / "store").mkdir()
        shutil.copy(mar, work / "store" / "ranker.mar")
        ports = [free_port() for _ in range(5)]  # REST x3 + gRPC x2, never the fixed defaults
        (work / "config.properties").write_text(config_properties(str(work / "store"), *ports))
        cmd = [binary, "--start", "--foreground", "--ncs", "--ts-config", str(work / "config.properties"),
               "--model-store", str(work / "store")] + (["--disable-token-auth"] if disable_token_auth else [])
        # Own process group: the launcher forks java, and only killing the group stops both.
        # Own TMPDIR: TorchServe keeps a machine-wide pid file there and refuses a second instance.
        env = {**os.environ, "TMPDIR": str(work)}
        with open(work / "ts.log", "w") as log:
            proc = subprocess.Popen(cmd, cwd=work, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=env, start_new_session=True)
            url = f"http://127.0.0.1:{ports[0]}"
            try:
                deadline = time.time() + startup_seconds
                while True:
                    try:
                        post_json(f"{url}/predictions/ranker", {"fields": [[0] * num_columns]}, timeout=5)
                        break
                    except Exception:
                        if time.time() > deadline or proc.poll() is not None:
                            raise UserError("TorchServe did not start: " + (work / "ts.log").read_text()[-1500:])
                        time.sleep(1)
                yield url
            finally:
                stop_process(proc)
