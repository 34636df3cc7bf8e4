"""Fetch the bundled MovieLens-100k: the atomic files shipped inside the recbole wheel.

Why a wheel: PyPI is the one data source every machine of ours can reach, and the
``recbole==1.2.1`` wheel carries ``dataset_example/ml-100k`` in RecBole's atomic format.
We download the wheel with pip (no install), check its sha256, and extract only those
three files, so nothing of recbole's code ever lands on the machine.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from ratingctr.errors import UserError
from ratingctr.hashing import sha256_file

RECBOLE_REQUIREMENT = "recbole==1.2.1"
RECBOLE_WHEEL = "recbole-1.2.1-py3-none-any.whl"
RECBOLE_WHEEL_SHA256 = "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407"
ML100K_MEMBERS = {
    "recbole/dataset_example/ml-100k/ml-100k.inter": "ml-100k.inter",
    "recbole/dataset_example/ml-100k/ml-100k.user": "ml-100k.user",
    "recbole/dataset_example/ml-100k/ml-100k.item": "ml-100k.item",
}


def default_data_root() -> Path:
    """``$RATINGCTR_DATA_DIR`` or ``~/.cache/ratingctr/data``."""
    env = os.environ.get("RATINGCTR_DATA_DIR")
    return Path(env) if env else Path.home() / ".cache" / "ratingctr" / "data"


def _download_wheel(dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "--quiet", "-d", str(dest), RECBOLE_REQUIREMENT]
    proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    wheel = dest / RECBOLE_WHEEL
    if proc.returncode != 0 or not wheel.exists():
        lines = [ln for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
        reason = lines[-1].strip() if lines else f"pip exited with {proc.returncode}"
        raise UserError(f"cannot download {RECBOLE_REQUIREMENT} for MovieLens-100k and no cached copy "
                        f"exists (offline?): {reason}")
    return wheel


def extract_ml100k(wheel: Path, target: Path) -> Path:
    """Verify ``wheel`` and extract the ml-100k atomic files into ``target`` atomically."""
    actual = sha256_file(wheel)
    if actual != RECBOLE_WHEEL_SHA256:
        raise UserError(f"{wheel.name} has sha256 {actual}, expected {RECBOLE_WHEEL_SHA256}; refusing to use it")
    staging = Path(tempfile.mkdtemp(prefix=".ml-100k-", dir=target.parent))
    try:
        with zipfile.ZipFile(wheel) as zf:
            for member, name in ML100K_MEMBERS.items():
                with zf.open(member) as src, open(staging / name, "wb") as dst:
                    shutil.copyfileobj(src, dst)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return target


def fetch_ml100k(data_root: Path | None = None) -> Path:
    """Return the directory holding ``ml-100k.{inter,user,item}``, fetching it once."""
    root = Path(data_root) if data_root else default_data_root()
    target = root / "ml-100k"
    if all((target / name).is_file() for name in ML100K_MEMBERS.values()):
        return target
    root.mkdir(parents=True, exist_ok=True)
    print(f"fetching MovieLens-100k from the {RECBOLE_REQUIREMENT} wheel into {target} ...", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="recbole-wheel-") as tmp:
        wheel = _download_wheel(Path(tmp))
        return extract_ml100k(wheel, target)
