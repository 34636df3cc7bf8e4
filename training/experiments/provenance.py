"""Which code produced a run: the training-source fingerprint and the git commit.

The run cache (``runner.run_key``) is keyed by configuration *and* by
``code_fingerprint()``, so editing the model, trainer, data or evaluation code never
silently re-uses a run trained by the old code.  The fingerprint is the sha256 over the
sorted ``(relative path, sha256 of contents)`` of every ``.py`` / ``.yaml`` file under
``training/`` that can change a run's numbers, plus the versions of the libraries that
compute them (torch, numpy, pandas).

From the shared root package it adds ``ROOT_SOURCES``: ``bundle.py`` defines the
``FieldSchema`` a dataset is encoded with, ``unique.py`` the distinct-keys routine negative
sampling and the graph build rely on (``errors`` and ``hashing``, also imported by a run,
cannot change a number).

Left out (``EXCLUDED``), because no training run or its extra artifacts execute them:
the experiments' planning / report / plot / records code (``experiments/`` except ``runner.py``,
which holds the traced run and the noise / EvalRM re-scoring), the CLI verb modules,
``compare``, the benches (``peer_auc`` included), the retriever (its data-parallel part and node order included), the synthetic-data generator and
the online-retraining modules (``retrain*``, ``data/grow``, ``models/grow``,
``data/event_log``, ``data/stored``).  ``tests/training/experiments`` checks that a
training run imports none of them, so the list cannot silently go stale.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import subprocess
from pathlib import Path

EXCLUDED: frozenset[str] = frozenset({
    "experiments/__init__.py", "experiments/commands.py", "experiments/connectivity.py",
    "experiments/plots.py", "experiments/provenance.py", "experiments/stats.py", "experiments/supervision.py",
    "experiments/selection.py", "experiments/retriever_sizes.py", "experiments/records.py",
    "commands.py", "compare.py", "bench.py", "bench_recbole.py", "bench_recbole_auc.py", "peer_auc.py",
    "bench_worker.py", "distributed_bench.py",
    "retriever.py", "retriever_parallel.py", "graph_order.py", "data/synth.py", "data/synth_calibration.py", "retrain.py", "retrain_commands.py", "data/grow.py", "models/grow.py",
    "data/event_log.py", "data/stored.py",
})
#: modules of the shared root package (``ratingctr/``) that can change a run's numbers
ROOT_SOURCES = ("bundle.py", "unique.py")
#: libraries whose version can change a run's numbers
LIBRARIES = ("torch", "numpy", "pandas")


def training_root() -> Path:
    """The ``training/`` folder this process imports ``ratingctr.training`` from."""
    import ratingctr.training

    return Path(ratingctr.training.__file__).resolve().parent


def fingerprinted_files(root: Path) -> list[str]:
    """Relative paths (posix, sorted) of the sources that enter the fingerprint."""
    paths = [p for pattern in ("*.py", "*.yaml") for p in root.rglob(pattern) if "__pycache__" not in p.parts]
    rel = sorted(p.relative_to(root).as_posix() for p in paths)
    return [r for r in rel if r not in EXCLUDED]


def fingerprint_of(root: Path, versions: dict[str, str], shared: Path | None = None) -> str:
    """sha256 over the sources under ``root`` (``training/``), ``ROOT_SOURCES`` of ``shared`` (the root
    package, when given) and the library ``versions``; uncached, so tests can pass a copy."""
    digest = hashlib.sha256()
    for rel in fingerprinted_files(root):
        digest.update(rel.encode() + b"\0" + hashlib.sha256((root / rel).read_bytes()).digest())
    for rel in ROOT_SOURCES if shared is not None else ():
        digest.update(f"ratingctr/{rel}".encode() + b"\0" + hashlib.sha256((shared / rel).read_bytes()).digest())
    for name in sorted(versions):
        digest.update(f"{name}={versions[name]}\0".encode())
    return digest.hexdigest()


def library_versions() -> dict[str, str]:
    out = {}
    for name in LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """This process's fingerprint (computed once: the sources do not change under a running plan)."""
    import ratingctr

    return fingerprint_of(training_root(), library_versions(), Path(ratingctr.__file__).resolve().parent)


def git_commit(root: Path | None = None) -> dict:
    """``{"commit": sha or None, "training_dirty": bool or None}`` of the checkout holding ``training/``.

    ``training_dirty`` says the training sources differ from that commit, in which case the
    fingerprint, not the commit, identifies the code.  Outside a git checkout both are None.
    """
    root = root or training_root()
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "."], capture_output=True,
                                text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "training_dirty": None}
    return {"commit": commit or None, "training_dirty": bool(status.strip())}


def provenance() -> dict:
    """What every report records: the commit, whether training/ was dirty, the fingerprint, the libraries."""
    return {**git_commit(), "code_fingerprint": code_fingerprint(), "libraries": library_versions()}


def provenance_line(results: dict) -> str:
    """The report's one sentence on which code produced its runs."""
    prov = results.get("provenance")
    if not prov:
        return "Code: not recorded (these results predate runs keyed by code)."
    commit = prov.get("commit") or "unknown (no git checkout)"
    dirty = {True: ", training/ modified since that commit", False: "", None: ""}[prov.get("training_dirty")]
    libs = ", ".join(f"{k} {v}" for k, v in (prov.get("libraries") or {}).items())
    return (f"Code: commit `{commit}`{dirty}; training-source fingerprint `{prov.get('code_fingerprint')}` "
            f"(part of every run's cache key); {libs}.")
