"""``ratingctr bench score``: what the rating head costs at scoring time.

Binary and rating bundles of the same architecture are scored with in-process ONNX
Runtime on the same candidate matrices (one user row broadcast against N item rows, as
the gateway does), in interleaved rounds (A B A B …) so drift hits both alike; each
figure is the median over all calls.  With ``--torchserve`` the rating bundle is also
scored through a local TorchServe's HTTP inference API for the same candidates.
"""
from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import numpy as np

from ratingctr.errors import UserError
from ratingctr.loadtest.config import ScoreBenchConfig
from ratingctr.tables import md_table


def _candidates(bundle, n: int, rng: np.random.Generator) -> np.ndarray:
    users, items = bundle["user_fields.npy"], bundle["item_fields.npy"]
    user = users[rng.integers(1, users.shape[0])]
    # A catalogue smaller than n (ML-100k has 1,152 items) repeats items: the scorer's cost
    # depends on the row count, and n must mean n rows.
    chosen = items[rng.choice(np.arange(1, items.shape[0]), n, replace=n > items.shape[0] - 1)]
    return np.concatenate([np.broadcast_to(user, (n, user.size)), chosen], axis=1)


def _time_calls(fn, inputs: list[np.ndarray]) -> list[float]:
    out = []
    for x in inputs:
        start = time.perf_counter()
        fn(x)
        out.append((time.perf_counter() - start) * 1000.0)
    return out


def run_bench_score(config: ScoreBenchConfig) -> int:
    from ratingctr.serving.ranker import load_ranker

    binary = load_ranker(Path(config.binary), threads=config.threads, device="cpu", warmup_calls=0)
    rating = load_ranker(Path(config.rating), threads=config.threads, device="cpu", warmup_calls=0)
    if binary.manifest.model.arch != rating.manifest.model.arch:
        raise UserError("compare bundles of the same architecture: "
                        f"{binary.manifest.model.arch} vs {rating.manifest.model.arch}")
    if binary.manifest.fields != rating.manifest.fields:
        raise UserError("the two bundles have different field schemas")
    sizes = list(config.candidates)
    rng = np.random.default_rng(0)
    inputs = {n: [_candidates(binary.bundle, n, rng) for _ in range(config.calls)] for n in sizes}
    times: dict[tuple[str, int], list[float]] = {}
    for n in sizes:  # warm-up: allocator and ORT's first-run graph work
        for served in (binary, rating):
            _time_calls(served.predict, inputs[n][:20])
    for _ in range(config.rounds):
        for n in sizes:
            for label, served in (("binary", binary), ("rating", rating)):
                times.setdefault((label, n), []).extend(_time_calls(served.predict, inputs[n]))
    if config.torchserve:
        from ratingctr.export.torchserve_process import local_torchserve, post_json

        with local_torchserve(Path(config.rating), rating.manifest.num_columns) as url:
            for n in sizes:
                post = lambda x: post_json(f"{url}/predictions/ranker", {"fields": x.tolist()})  # noqa: E731
                _time_calls(post, inputs[n][:20])
                calls = inputs[n][: max(50, config.calls // 4)]
                times[("torchserve", n)] = _time_calls(post, calls)
    rows = []
    for n in sizes:
        row = {"candidates": n}
        for label in ("binary", "rating", "torchserve"):
            if (label, n) in times:
                values = times[(label, n)]
                row[f"{label}_ms_p50"] = statistics.median(values)
                row[f"{label}_ms_p99"] = float(np.percentile(values, 99))
                row[f"{label}_calls"] = len(values)
        row["rating_over_binary_p50"] = row["rating_ms_p50"] / row["binary_ms_p50"]
        if "torchserve_ms_p50" in row:
            row["torchserve_over_ort_p50"] = row["torchserve_ms_p50"] / row["rating_ms_p50"]
        rows.append(row)
    header = ["candidates", "binary p50 ms", "rating p50 ms", "rating/binary", "binary p99 ms", "rating p99 ms"]
    if config.torchserve:
        header += ["TorchServe p50 ms", "TorchServe/ORT"]
    print(f"{binary.manifest.model.arch}: {config.rounds} interleaved rounds x {config.calls} calls, "
          f"ORT intra-op threads {config.threads}")
    cells = []
    for r in rows:
        line = [r["candidates"], f"{r['binary_ms_p50']:.3f}", f"{r['rating_ms_p50']:.3f}",
                f"{r['rating_over_binary_p50']:.3f}", f"{r['binary_ms_p99']:.3f}", f"{r['rating_ms_p99']:.3f}"]
        if config.torchserve:
            line += [f"{r['torchserve_ms_p50']:.3f}", f"{r['torchserve_over_ort_p50']:.1f}x"]
        cells.append(line)
    print(md_table(header, cells))
    if config.out:
        Path(config.out).parent.mkdir(parents=True, exist_ok=True)
        Path(config.out).write_text(json.dumps({"binary": str(config.binary), "rating": str(config.rating),
                                              "threads": config.threads, "rounds": config.rounds, "calls": config.calls,
                                              "rows": rows}, indent=2) + "\n")
    return 0
