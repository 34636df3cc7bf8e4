"""``ratingctr bench train``: seconds per epoch and peak memory, binary vs rating head.

Every (architecture, head) is measured in its own process, several times, interleaved
(A B A B …) so machine drift hits both heads alike; we report the median.  With
``--recbole-python`` the same architectures are timed in RecBole 1.2.1 (an environment
of its own; see ``training/bench_recbole.py``) for the speed-up column.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from ratingctr.errors import UserError
from ratingctr.tables import md_table

RECBOLE_MODELS = {"WideDeep", "NFM", "xDeepFM", "AutoInt", "FiGNN", "DCNV2", "EulerNet"}


def _run_json(cmd: list[str], cwd: str | None = None) -> dict:
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, stdin=subprocess.DEVNULL, cwd=cwd)
    if proc.returncode != 0:
        raise UserError(f"benchmark process failed ({' '.join(cmd[:4])} ...): {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_bench_train(args: argparse.Namespace) -> int:
    from ratingctr.training.data.fetch import fetch_ml100k
    from ratingctr.training.models.registry import ARCHITECTURES

    models = list(ARCHITECTURES) if args.models == "all" else [m.strip() for m in args.models.split(",")]
    unknown = [m for m in models if m not in ARCHITECTURES]
    if unknown:
        raise UserError(f"unknown model(s) {', '.join(unknown)}; choose from: {', '.join(ARCHITECTURES)}")
    heads = [h.strip() for h in args.heads.split(",")]
    if any(h not in ("binary", "rating") for h in heads):
        raise UserError(f"--heads takes binary and/or rating, got {args.heads}")
    data_root = fetch_ml100k(Path(args.data_dir) if args.data_dir else None).parent
    samples: dict[tuple[str, str], list[dict]] = {}
    recbole_models = [m for m in models if m in RECBOLE_MODELS] if args.recbole_python else []
    total = args.runs * (len(models) * len(heads) + len(recbole_models))
    done = 0
    for run in range(args.runs):
        for model in models:
            targets = [(h, [sys.executable, "-m", "ratingctr.training.bench_worker", "--model", model, "--head", h,
                            "--precision", args.precision]) for h in heads]
            if args.recbole_python and model in RECBOLE_MODELS:
                script = str(Path(__file__).with_name("bench_recbole.py"))
                targets.append(("recbole", [args.recbole_python, script, "--model", model]))
            for head, cmd in targets:
                cmd += ["--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
                        "--threads", str(args.threads), "--data-dir", str(data_root)]
                if head == "recbole":
                    with tempfile.TemporaryDirectory(prefix="bench-") as scratch:  # RecBole writes logs into its cwd
                        sample = _run_json(cmd, cwd=scratch)
                else:
                    sample = _run_json(cmd)
                samples.setdefault((model, head), []).append(sample)
                done += 1
                print(f"[{done}/{total}] {model} {head}: "
                      f"{samples[(model, head)][-1]['median_epoch_seconds']:.3f} s/epoch", file=sys.stderr)
    table = []
    for model in models:
        row: dict = {"model": model}
        for head in [*heads, "recbole"]:
            runs = samples.get((model, head))
            if not runs:
                continue
            row[f"{head}_s_per_epoch"] = statistics.median(r["median_epoch_seconds"] for r in runs)
            row[f"{head}_s_per_epoch_min"] = min(r["median_epoch_seconds"] for r in runs)
            row[f"{head}_s_per_epoch_max"] = max(r["median_epoch_seconds"] for r in runs)
            row[f"{head}_peak_rss_mb"] = statistics.median(r["peak_rss_mb"] for r in runs)
        if "binary_s_per_epoch" in row and "rating_s_per_epoch" in row:
            row["rating_over_binary"] = row["rating_s_per_epoch"] / row["binary_s_per_epoch"]
        if "recbole_s_per_epoch" in row:
            ours = row.get("rating_s_per_epoch", row.get("binary_s_per_epoch"))
            row["speedup_vs_recbole"] = row["recbole_s_per_epoch"] / ours
        table.append(row)
    print(format_table(table, heads))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"batch_size": args.batch_size, "epochs": args.epochs,
                                              "runs": args.runs, "table": table}, indent=2) + "\n")
    return 0


def format_table(table: list[dict], heads: list[str]) -> str:
    cols = ["model"] + [f"{h} s/epoch" for h in heads] + [f"{h} peak MB" for h in heads]
    has_ratio = "binary" in heads and "rating" in heads
    has_recbole = any("recbole_s_per_epoch" in r for r in table)
    if has_ratio:
        cols.append("rating/binary")
    if has_recbole:
        cols += ["RecBole s/epoch", "speed-up"]
    rows = []
    for r in table:
        cells = [r["model"]] + [f"{r[f'{h}_s_per_epoch']:.3f}" for h in heads] + [f"{r[f'{h}_peak_rss_mb']:.0f}" for h in heads]
        if has_ratio:
            cells.append(f"{r['rating_over_binary']:.3f}")
        if has_recbole:
            cells += [f"{r['recbole_s_per_epoch']:.3f}" if "recbole_s_per_epoch" in r else "n/a",
                      f"{r['speedup_vs_recbole']:.1f}x" if "speedup_vs_recbole" in r else "n/a"]
        rows.append(cells)
    return md_table(cols, rows)


def run_bench_propagate(args: argparse.Namespace) -> int:
    """Median wall time of one full LightGCN propagation over the training graph."""
    import time

    import numpy as np
    import torch

    from ratingctr.training.commands import data_config
    from ratingctr.training.data.encode import TRAIN, load_dataset
    from ratingctr.training.graph import layer_weights, normalized_adjacency, propagate

    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_dataset(data_config(args))
    train = data.split == TRAIN
    csr = normalized_adjacency(data.user[train], data.item[train], data.n_users, data.n_items)
    coo = csr.to_sparse_coo()
    weights = layer_weights(args.layers)
    print(f"{data.stats['dataset']}: {csr.shape[0]} nodes, {csr.values().numel()} non-zeros, "
          f"{args.layers} layers, {torch.get_num_threads()} threads")
    rows = []
    for dim in [int(d) for d in args.dims.split(",")]:
        emb = torch.randn(csr.shape[0], dim)
        for name, adj in (("csr", csr), ("coo", coo)):
            with torch.no_grad():
                for _ in range(5):
                    propagate(adj, emb, weights)
                times = []
                for _ in range(args.repeats):
                    start = time.perf_counter()
                    propagate(adj, emb, weights)
                    times.append((time.perf_counter() - start) * 1000)
            p10, p50, p90 = np.percentile(times, [10, 50, 90])
            rows.append([name, dim, f"{p50:.3f}", f"{p10:.3f}", f"{p90:.3f}"])
    print(md_table(["layout", "dim", "median ms", "p10 ms", "p90 ms"], rows))
    return 0
