"""A committable copy of finished runs' results, so a long experiment survives a lost ``runs/``.

Why: the experiment verbs cache runs under ``runs/`` (checkpoints included), which is not
versioned; a machine that loses it loses every finished run, and a study longer than one
working session could never finish.  A records folder keeps, per run, only the JSON files a
report reads (``config.json``, ``metrics.json``, ``trace.json``, ``noise.json``, ``rm.json``:
kilobytes, no checkpoint, nothing to unpickle), under the same ``LABEL-KEY`` name as the run
folder.  The key already digests the configuration and the training code's fingerprint, so a
record can only stand in for the run it came from; a code change gives new keys and the old
records simply stop matching.

A run restored from its record has no ``model.pt``; the runner re-trains it only when something
still needs the checkpoint (a missing noise / EvalRM score, or an FT run built on it).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

#: the files a report reads; checkpoints and anything else stay in the runs folder only
RECORD_FILES = ("config.json", "metrics.json", "trace.json", "noise.json", "rm.json")


def _finished(folder: Path) -> bool:
    try:
        json.loads((folder / "metrics.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return True


def sync(records: Path, run_dir: Path) -> None:
    """A finished run updates its record (so runs cached before ``--records`` was given get one);
    an unfinished run folder is filled from a finished record."""
    if _finished(run_dir):
        save(records, run_dir)
    else:
        restore(records, run_dir)


def restore(records: Path, run_dir: Path) -> bool:
    """Copy the record of ``run_dir``'s run into it when the run folder has no finished run and
    the record has one; True when it did.  A half-written record (no readable metrics.json)
    is ignored."""
    source = records / run_dir.name
    if _finished(run_dir) or not _finished(source):
        return False
    run_dir.mkdir(parents=True, exist_ok=True)
    for name in RECORD_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, run_dir / name)
    return True


def save(records: Path, run_dir: Path) -> None:
    """Copy a finished run's JSON files into its record, ``metrics.json`` last (its presence
    marks the record complete, as it marks the run)."""
    target = records / run_dir.name
    target.mkdir(parents=True, exist_ok=True)
    for name in RECORD_FILES:
        if name != "metrics.json" and (run_dir / name).is_file():
            shutil.copyfile(run_dir / name, target / name)
    tmp = target / "metrics.json.tmp"
    shutil.copyfile(run_dir / "metrics.json", tmp)
    tmp.replace(target / "metrics.json")
