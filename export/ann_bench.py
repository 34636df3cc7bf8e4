"""``ratingctr bench ann``: FAISS index kinds against catalogue size, on this machine.

What the ``auto`` index choice (``export.faiss_index``) rests on: for each catalogue size and
index kind, build seconds, index bytes, the search depth tuning picked, recall@k against exact
search on users the tuning never saw, and single-query search latency at one thread (the
gateway's own call: one user vector, ``k`` results), p50/p99 as the median of several passes.

The vectors are synthetic (no retriever was trained on a million-item catalogue here):
items around clusters, with lognormal norms as a popularity proxy (inner-product retrievers
give popular items larger norms), users as noisy mixtures of cluster centres.  Synthetic
clusters are kinder or harder to an ANN index than a real retriever's vectors in ways
nobody measured, so the report says so; the export re-measures recall on the real vectors.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ratingctr.export.faiss_index import (AUTO_FLAT_MAX_ITEMS, TARGET_RECALL, TUNE_QUERIES, build_index,
                                          exact_top_k, pad_queries, recall_at_k, search, tune_search)
from ratingctr.report_files import short_commit, write_report

KINDS = ("flat", "ivf", "hnsw")


@dataclass(frozen=True)
class AnnBenchConfig:
    items: tuple[int, ...] = (10_000, 100_000, 1_000_000)
    kinds: tuple[str, ...] = KINDS
    dim: int = 64
    k: int = 200
    queries: int = 500
    passes: int = 5
    seed: int = 0
    out: Path = Path("reports/bench/ann")


def synthetic_catalogue(n_items: int, dim: int, n_users: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(item vectors with the unknown row 0, user vectors): clustered, norms spread lognormally."""
    rng = np.random.default_rng(seed)
    clusters = max(16, n_items // 1000)
    centres = rng.normal(size=(clusters, dim)).astype(np.float32)
    items = np.empty((n_items + 1, dim), np.float32)
    items[0] = 0.0
    chunk = 200_000  # bounded temporaries at a million items
    for lo in range(1, n_items + 1, chunk):
        hi = min(n_items + 1, lo + chunk)
        assigned = rng.integers(0, clusters, hi - lo)
        block = centres[assigned] + 0.7 * rng.normal(size=(hi - lo, dim)).astype(np.float32)
        block *= rng.lognormal(0.0, 0.3, size=(hi - lo, 1)).astype(np.float32) / np.sqrt(dim)
        items[lo:hi] = block
    mix = rng.dirichlet(np.full(3, 0.5), size=n_users).astype(np.float32)
    picks = rng.integers(0, clusters, size=(n_users, 3))
    users = (mix[:, :, None] * centres[picks]).sum(1) + 0.3 * rng.normal(size=(n_users, dim)).astype(np.float32)
    return items, np.ascontiguousarray(users, dtype=np.float32)


def _search_latency(index, queries: np.ndarray, k: int, passes: int) -> tuple[float, float]:
    """Median over passes of the per-query p50 and p99 (seconds), one query per call as served."""
    p50s, p99s = [], []
    for _ in range(passes):
        times = np.empty(len(queries))
        for i in range(len(queries)):
            start = time.perf_counter()
            index.search(queries[i:i + 1], k)
            times[i] = time.perf_counter() - start
        p50s.append(np.percentile(times, 50))
        p99s.append(np.percentile(times, 99))
    return float(np.median(p50s)), float(np.median(p99s))


def measure_point(n_items: int, kind: str, config: AnnBenchConfig, items: np.ndarray, tune_users: np.ndarray,
                  eval_users: np.ndarray, truth: np.ndarray) -> dict:
    import faiss

    faiss.omp_set_num_threads(2)  # building may use the machine's cores
    start = time.perf_counter()
    index = build_index(items, kind, config.seed)
    build_s = time.perf_counter() - start
    start = time.perf_counter()
    tuning = tune_search(index, items, tune_users, config.k)
    tune_s = time.perf_counter() - start
    faiss.omp_set_num_threads(1)  # the gateway searches one query on one thread per worker
    recall = recall_at_k(search(index, eval_users, config.k), truth)
    p50, p99 = _search_latency(index, pad_queries(index.d, eval_users), config.k, config.passes)
    return {"items": n_items, "kind": kind, "build_s": build_s, "tune_s": tune_s, "params": tuning.params,
            "tune_recall": tuning.recall, "recall": recall, "p50_ms": p50 * 1e3, "p99_ms": p99 * 1e3,
            "index_bytes": int(faiss.serialize_index(index).nbytes)}


def fitted_exponent(xs: list[float], ys: list[float]) -> float | None:
    """Slope of log y on log x (None with fewer than two sizes)."""
    if len(xs) < 2:
        return None
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def run_ann_bench(config: AnnBenchConfig) -> dict:
    import faiss

    points = []
    for n in config.items:
        items, users = synthetic_catalogue(n, config.dim, TUNE_QUERIES + config.queries, config.seed)
        tune_users, eval_users = users[:TUNE_QUERIES], users[TUNE_QUERIES:]
        faiss.omp_set_num_threads(2)
        truth = exact_top_k(items, eval_users, config.k)
        for kind in config.kinds:
            point = measure_point(n, kind, config, items, tune_users, eval_users, truth)
            print(f"bench ann: {n:,} items {kind}: build {point['build_s']:.1f} s, {point['params']}, "
                  f"recall@{config.k} {point['recall']:.3f}, p50 {point['p50_ms']:.2f} ms, "
                  f"p99 {point['p99_ms']:.2f} ms", flush=True)
            points.append(point)
    exponents = {}
    for kind in config.kinds:
        mine = [p for p in points if p["kind"] == kind]
        sizes = [p["items"] for p in mine]
        exponents[kind] = {"build_s": fitted_exponent(sizes, [p["build_s"] for p in mine]),
                           "p50_ms": fitted_exponent(sizes, [p["p50_ms"] for p in mine])}
    config_dict = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()}
    results = {"commit": short_commit(), "config": config_dict, "points": points, "exponents": exponents,
               "auto_flat_max_items": AUTO_FLAT_MAX_ITEMS, "target_recall": TARGET_RECALL,
               "faiss": faiss.__version__}
    write_report(results, config.out, render_report, plot)
    return results


def render_report(results: dict) -> str:
    c = results["config"]
    lines = [f"# FAISS index kinds against catalogue size (commit {results['commit']})", "",
             f"`ratingctr bench ann --items {','.join(str(n) for n in c['items'])}` on this machine "
             f"(2 cores; FAISS {results['faiss']}); {c['dim']}-d synthetic vectors "
             "(clustered items with lognormal norms, users as noisy cluster mixtures: not a trained "
             f"retriever's vectors); k = {c['k']} (the gateway's default candidates); "
             f"search depth tuned on {TUNE_QUERIES} users to recall ≥ {results['target_recall'] + 0.02:.2f}, "
             f"recall and latency measured on {c['queries']} other users; latency of one query per call at "
             f"one thread, the median over {c['passes']} passes of each pass's p50 / p99.", "",
             "| items | index | build s | search depth | recall@k | p50 ms | p99 ms | index MB |",
             "|---:|---|---:|---|---:|---:|---:|---:|"]
    for p in results["points"]:
        depth = ", ".join(f"{k}={v}" for k, v in p["params"].items()) or "exact"
        lines.append(f"| {p['items']:,} | {p['kind']} | {p['build_s']:.1f} | {depth} | {p['recall']:.3f} | "
                     f"{p['p50_ms']:.2f} | {p['p99_ms']:.2f} | {p['index_bytes'] / 2**20:.1f} |")
    lines += ["", "Fitted exponents (slope of log cost on log items):", "",
              "| index | build | search p50 |", "|---|---:|---:|"]
    for kind, e in results["exponents"].items():
        fmt = (lambda v: "–" if v is None else f"{v:.2f}")
        lines.append(f"| {kind} | {fmt(e['build_s'])} | {fmt(e['p50_ms'])} |")
    lines += ["", "![search p50 and build time against items](ann.png)", ""]
    return "\n".join(lines) + "\n"


def plot(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for kind in results["config"]["kinds"]:
        mine = [p for p in results["points"] if p["kind"] == kind]
        sizes = [p["items"] for p in mine]
        axes[0].loglog(sizes, [p["p50_ms"] for p in mine], "o-", label=kind)
        axes[1].loglog(sizes, [p["build_s"] for p in mine], "o-", label=kind)
    axes[0].set(xlabel="items", ylabel="search p50 (ms, one thread)", title="search")
    axes[1].set(xlabel="items", ylabel="build (s)", title="build")
    for ax in axes:
        ax.legend()
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "ann.png", dpi=100)
    plt.close(fig)
