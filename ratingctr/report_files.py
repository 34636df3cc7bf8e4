"""What every generated report shares: the commit it came from and its three files.

Why one place: experiment and evaluation verbs in several rooms write ``report.md``,
``results.json`` and plots into one folder and stamp the commit; a second copy of either
would drift (one stamping the short hash, another the full one, one forgetting the plot).
"""
from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path


def short_commit() -> str:
    """``git rev-parse --short HEAD`` of the working directory, ``unknown`` outside a checkout."""
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def write_report(results: dict, out: Path, render: Callable[[dict], str], plot: Callable[[dict, Path], None]) -> None:
    """``out/results.json``, ``out/report.md`` (``render(results)``) and the plots (``plot(results, out)``)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "report.md").write_text(render(results))
    plot(results, out)
