"""Summarise compare.sh's raw JSON: baseline vs this checkout, median over interleaved rounds.

    python reports/bench/issue13/summarize.py OUT_DIR BASE_REV NEW_REV   -> OUT_DIR/summary.md
"""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from ratingctr.tables import md_table


def _rounds(raw: Path, kind: str, side: str, suffix: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(raw.glob(f"{kind}-{side}-*{suffix}"))]


def train_rows(raw: Path) -> list[list[str]]:
    """Seconds per epoch per (model, head): the median of the per-round medians, and its range."""
    rows = []
    base, new = _rounds(raw, "train", "base", ".json"), _rounds(raw, "train", "new", ".json")
    models = [r["model"] for r in base[0]["table"]]
    for model in models:
        for head in ("binary", "rating"):
            values = {side: [next(r for r in run["table"] if r["model"] == model)[f"{head}_s_per_epoch"]
                             for run in runs] for side, runs in (("base", base), ("new", new))}
            b, n = statistics.median(values["base"]), statistics.median(values["new"])
            rows.append([model, head, f"{b:.3f} ({min(values['base']):.3f}–{max(values['base']):.3f})",
                         f"{n:.3f} ({min(values['new']):.3f}–{max(values['new']):.3f})", f"{n / b:.3f}"])
    return rows


def gateway_rows(raw: Path) -> list[list[str]]:
    """/v1/recommend at one client and p99 during reloads, median over the bench invocations."""
    runs = {side: _rounds(raw, "gateway", side, ".json") for side in ("base", "new")}
    metrics = {
        "p50 ms (1 client)": lambda r: r["gateway"]["1"]["p50_ms"],
        "p99 ms (1 client)": lambda r: r["gateway"]["1"]["p99_ms"],
        "req/s (1 client)": lambda r: r["gateway"]["1"]["req_per_s"],
        "p99 during reloads / steady": lambda r: r["reload"]["p99_ratio"],
        "failed requests": lambda r: r["gateway"]["1"]["failed"] + r["reload"]["during"]["failed"],
    }
    rows = []
    for name, get in metrics.items():
        b = [get(r) for r in runs["base"]]
        n = [get(r) for r in runs["new"]]
        rows.append([name, f"{statistics.median(b):.3f} ({min(b):.3f}–{max(b):.3f})",
                     f"{statistics.median(n):.3f} ({min(n):.3f}–{max(n):.3f})",
                     f"{statistics.median(n) / statistics.median(b):.3f}" if statistics.median(b) else "–"])
    return rows


def main(out: Path, base_rev: str, new_rev: str) -> None:
    raw = out / "raw"
    n_train = len(_rounds(raw, "train", "base", ".json"))
    n_gateway = len(_rounds(raw, "gateway", "base", ".json"))
    lines = [
        f"# Before/after: baseline {base_rev} vs {new_rev}",
        "",
        f"Made by `reports/bench/issue13/compare.sh {base_rev} {new_rev} BINARY_BUNDLE RATING_BUNDLE` on one machine, "
        "baseline and new interleaved (base, new, base, new, …); every figure is the median over the "
        "invocations with the range in brackets.",
        "",
    ]
    if n_train:
        lines += [
            f"## `bench train --models DCNV2,AutoInt --epochs 3 --runs 1`, {n_train} invocations per side",
            "",
            "Seconds per epoch on ML-100k (batch 4096, each invocation one fresh worker per model and head "
            "after a warm-up epoch).",
            "",
            md_table(["model", "head", f"{base_rev} s/epoch", f"{new_rev} s/epoch", "new/base"], train_rows(raw)),
            "",
        ]
    if n_gateway:
        lines += [
            f"## `bench gateway --clients 1 --seconds 8 --rounds 3 --reloads 10 --no-torchserve`, "
            f"{n_gateway} invocations per side",
            "",
            "DCNV2 rating-head bundle (reloads alternate with the binary-head bundle); each invocation "
            "reports the median of its 3 rounds.",
            "",
            md_table(["metric", base_rev, new_rev, "new/base"], gateway_rows(raw)),
            "",
        ]
    text = "\n".join(lines)
    (out / "summary.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], sys.argv[3])
