"""``ratingctr bench ddp``: one process against N data-parallel ranks on the same global batch.

Each (seed, process count) is a whole training run in its own process(es), interleaved
(seed 1: 1, 2; seed 2: 1, 2; …) so machine drift hits both alike.  One process is plain
``ratingctr train``; N ranks are ``torchrun --nproc-per-node N -m ratingctr.cli train …
--distributed``.  Every process gets the same thread count (``OMP_NUM_THREADS``), so N
ranks use N times the cores of one process: the question is how much of that turns into
rows/s, and whether the test AUC stays within the seed-to-seed spread (the global batch,
the batch order and the initial weights are the same; the dropout masks of ranks ≥ 1 are
not).  rows/s are training rows per second of training (validation excluded), from each
run's ``metrics.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ratingctr.errors import UserError
from ratingctr.tables import md_table


def _commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "training/"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" (training/ modified)" if dirty else "")


def _one_run(procs: int, seed: int, args: argparse.Namespace, out: Path) -> dict:
    train = ["train", "--model", args.model, "--dataset", "ml-100k", "--seed", str(seed), "--epochs",
             str(args.epochs), "--batch-size", str(args.batch_size), "--precision", args.precision,
             "--device", "cpu", "--no-progress", "--out", str(out)]
    if args.data_dir:
        train += ["--data-dir", args.data_dir]
    if procs == 1:
        cmd = [sys.executable, "-m", "ratingctr.cli", *train]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(procs),
               "-m", "ratingctr.cli", *train, "--distributed"]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = str(args.threads)
    start = time.perf_counter()
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise UserError(f"{procs}-process run (seed {seed}) failed: {proc.stderr.strip().splitlines()[-1:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    seconds = metrics["epoch_seconds"]
    rows = metrics["dataset"]["train"]
    return {"procs": procs, "seed": seed, "test_auc": metrics["test"]["auc"], "valid_auc": metrics["valid"]["auc"],
            "best_epoch": metrics["best_epoch"], "epochs_run": len(seconds),
            "rows_per_s": rows * len(seconds) / sum(seconds), "median_epoch_s": statistics.median(seconds),
            "wall_s": wall, "precision": metrics["precision"], "train_rows": rows,
            "world_size": metrics.get("distributed", {}).get("world_size", 1)}


def _summary(runs: list[dict], procs: list[int]) -> list[dict]:
    out = []
    for p in procs:
        mine = [r for r in runs if r["procs"] == p]
        aucs = [r["test_auc"] for r in mine]
        out.append({"procs": p, "runs": len(mine), "auc_mean": statistics.fmean(aucs),
                    "auc_std": statistics.stdev(aucs) if len(aucs) > 1 else 0.0, "auc_min": min(aucs),
                    "auc_max": max(aucs), "rows_per_s_median": statistics.median(r["rows_per_s"] for r in mine),
                    "median_epoch_s": statistics.median(r["median_epoch_s"] for r in mine)})
    base = out[0]
    for row in out:
        row["speedup"] = row["rows_per_s_median"] / base["rows_per_s_median"]
        row["auc_delta"] = row["auc_mean"] - base["auc_mean"]
        row["within_spread"] = abs(row["auc_delta"]) <= max(base["auc_std"], row["auc_std"])
    return out


def _markdown(report: dict) -> str:
    s, runs = report["summary"], report["runs"]
    lines = [f"# DDP on ML-100k: {report['model']}, 1 vs {', '.join(str(r['procs']) for r in s[1:])} processes", "",
             f"Commit `{report['commit']}`, {report['date']}.  Reproduce with:", "", "```",
             report["command"], "```", "",
             (f"Machine: {report['cpus']} CPU cores (load average "
             f"{report['load_before'][0]:.2f} before, {report['load_after'][0]:.2f} after), "
             f"{report['threads']} thread(s) per process, precision {runs[0]['precision']}, global batch "
             f"{report['batch_size']} rows, at most {report['epochs']} epochs (patience 3), gloo on the CPU.  "
             f"Seeds {', '.join(map(str, report['seeds']))}; each (seed, processes) one run, interleaved."), "",
             "## Summary", "",
             md_table(["processes", "runs", "test AUC mean ± std", "min … max", "Δ mean vs 1", "within spread",
                       "rows/s (median)", "speed-up", "median s/epoch"],
                      [[r["procs"], r["runs"], f"{r['auc_mean']:.4f} ± {r['auc_std']:.4f}",
                        f"{r['auc_min']:.4f} … {r['auc_max']:.4f}", f"{r['auc_delta']:+.4f}",
                        "yes" if r["within_spread"] else "**no**", f"{r['rows_per_s_median']:,.0f}",
                        f"{r['speedup']:.2f}x", f"{r['median_epoch_s']:.2f}"] for r in s]),
             "", "“Within spread”: |Δ mean| ≤ the larger of the two seed-to-seed standard deviations.", "",
             "## Runs", "",
             md_table(["seed", "processes", "test AUC", "valid AUC", "best epoch", "epochs run", "rows/s",
                       "median s/epoch", "wall s"],
                      [[r["seed"], r["procs"], f"{r['test_auc']:.4f}", f"{r['valid_auc']:.4f}", r["best_epoch"],
                        r["epochs_run"], f"{r['rows_per_s']:,.0f}", f"{r['median_epoch_s']:.2f}",
                        f"{r['wall_s']:.1f}"] for r in runs])]
    return "\n".join(lines) + "\n"


def run_bench_ddp(args: argparse.Namespace) -> int:
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
        procs = [int(p) for p in args.procs.split(",")]
    except ValueError:
        raise UserError(f"--seeds and --procs take comma-separated integers, got {args.seeds!r} / {args.procs!r}") from None
    if not seeds or procs[0] != 1 or any(p < 1 for p in procs) or args.threads < 1:
        raise UserError("--procs must start with 1 (the baseline) and list positive counts; --threads >= 1")
    from ratingctr.training.config import model_defaults

    model_defaults(args.model)  # unknown model: one clear error before any run
    load_before = os.getloadavg()
    runs: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-ddp-") as scratch:
        for seed in seeds:
            for p in procs:
                runs.append(_one_run(p, seed, args, Path(scratch) / f"s{seed}-p{p}"))
                r = runs[-1]
                print(f"seed {seed} procs {p}: test auc {r['test_auc']:.4f}, {r['rows_per_s']:,.0f} rows/s, "
                      f"{r['epochs_run']} epochs", file=sys.stderr)
    report = {"model": args.model, "commit": _commit(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "command": "ratingctr " + " ".join(sys.argv[1:]) if Path(sys.argv[0]).name == "ratingctr"
              else " ".join(["ratingctr", *sys.argv[1:]]),
              "cpus": os.cpu_count(), "load_before": load_before, "load_after": os.getloadavg(),
              "threads": args.threads, "batch_size": args.batch_size, "epochs": args.epochs, "seeds": seeds,
              "python": platform.python_version(), "runs": runs, "summary": _summary(runs, procs)}
    text = _markdown(report)
    print(text)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
        out.with_suffix(".md").write_text(text)
    return 0
