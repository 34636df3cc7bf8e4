"""Print the requirements of one pyproject extra, so the images install from pyproject.toml alone.

    python docker/extras.py gpu            -> onnxruntime-gpu>=1.20 faiss-gpu-cu12>=1.9
    python docker/extras.py train torch    -> torch==2.13.0   (only the named packages)

Used by the Dockerfiles for the two installs that pip cannot express as ``.[extra]``: the
GPU wheels that must replace the CPU ones, and torch from PyTorch's own wheel index.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import tomllib


def requirements(extra: str, only: list[str], pyproject: Path) -> list[str]:
    extras = tomllib.loads(pyproject.read_text())["project"]["optional-dependencies"]
    if extra not in extras:
        raise SystemExit(f"pyproject.toml has no extra {extra!r} (has: {', '.join(sorted(extras))})")
    reqs = extras[extra]
    if only:
        names = {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower(): r for r in reqs}
        missing = [n for n in only if n.lower() not in names]
        if missing:
            raise SystemExit(f"extra {extra!r} does not list {', '.join(missing)}")
        reqs = [names[n.lower()] for n in only]
    return reqs


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    root = Path(__file__).resolve().parent.parent
    print(" ".join(requirements(sys.argv[1], sys.argv[2:], root / "pyproject.toml")))
