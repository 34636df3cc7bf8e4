"""Verbs owned by ``loadtest/``: ``loadtest`` (the Locust A/B harness), ``bench score``, ``bench gateway``
and ``bench scale``.

The flags are derived from the typed configs in ``loadtest/config.py``; the handlers turn
the parsed flags into one of those configs and hand it to the implementation.
"""
from __future__ import annotations

import argparse
import sys

from ratingctr.loadtest.config import GatewayBenchConfig, LoadTestConfig, ScoreBenchConfig, add_flags


def cmd_loadtest(args: argparse.Namespace, extra: list[str]) -> int:
    from ratingctr.loadtest.harness import run_loadtest

    config = LoadTestConfig.from_args(
        args, command=["ratingctr", *sys.argv[1:]] if sys.argv[1:2] == ["loadtest"] else [])
    report = run_loadtest(config)
    v = report["verdict"]
    print(f"B/A p50 {v['ratios']['p50']['median']:.3f}, p99 {v['ratios']['p99']['median']:.3f} "
          f"(median of {len(report['ratio']['p50']['rounds'])} rounds); {report['failures']} failed requests; "
          f"wrote {config.out / 'report.md'}")
    return 0


def cmd_bench_score(args: argparse.Namespace, extra: list[str]) -> int:
    from ratingctr.loadtest.bench_score import run_bench_score

    return run_bench_score(ScoreBenchConfig.from_args(args))


def cmd_bench_gateway(args: argparse.Namespace, extra: list[str]) -> int:
    from ratingctr.loadtest.gateway_bench import run_bench_gateway

    return run_bench_gateway(GatewayBenchConfig.from_args(args))


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("loadtest", help="Locust A/B load test of two bundles (e.g. binary vs rating head)")
    add_flags(p, LoadTestConfig)
    p.set_defaults(handler=cmd_loadtest)


def register_bench(bench_verbs: argparse._SubParsersAction) -> None:
    """``bench score`` (ONNX Runtime scoring, binary vs rating) and ``bench gateway`` (vs bare TorchServe)."""
    score = bench_verbs.add_parser("score", help="ONNX Runtime scoring time, binary vs rating bundle")
    add_flags(score, ScoreBenchConfig)
    score.set_defaults(handler=cmd_bench_score)
    gateway = bench_verbs.add_parser("gateway", help="/v1/recommend p50/p95/p99 and req/s vs bare TorchServe")
    add_flags(gateway, GatewayBenchConfig)
    gateway.set_defaults(handler=cmd_bench_gateway)
    scale = bench_verbs.add_parser("scale", help="every stage's time and peak RSS against the number of ratings "
                                   "(synthetic data of MovieLens-25M's shape; cached per point, resumable)")
    scale.add_argument("--ratings", default="1M,5M,25M",
                       help="points, comma-separated (1M, 5M, 25M); RATINGS:ITEMS adds a large-catalogue point "
                            "(e.g. 10M:1M, k-core 1)")
    scale.add_argument("--models", default="DCNV2", help="architectures trained for one epoch at each point")
    scale.add_argument("--heads", default="binary", help="heads, comma-separated (binary,rating)")
    scale.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                       help="training precision; stages other than auto are named train-MODEL-HEAD-PRECISION "
                            "(fp32: evaluation's precision, for a like-for-like rows/s comparison)")
    scale.add_argument("--eval-users", type=int, default=2000, help="uni100 on this many sampled users per split")
    scale.add_argument("--requests", type=int, default=500, help="/v1/recommend requests timed at one client")
    scale.add_argument("--work", default="runs/scale", help="data, runs, bundles and the per-stage cache")
    scale.add_argument("--out", default="reports/scale")
    scale.add_argument("--catalogue-retriever-batch", type=int, default=32_768,
                       help="the retriever's batch at RATINGS:ITEMS points (they measure serving; fewer full-graph "
                            "steps per epoch)")
    scale.add_argument("--fresh", action="store_true", help="measure again what the cache holds")
    scale.set_defaults(handler=cmd_bench_scale)


def cmd_bench_scale(args: argparse.Namespace, extra: list[str]) -> int:
    from pathlib import Path

    from ratingctr.errors import UserError
    from ratingctr.loadtest.scale_bench import ScaleBenchConfig, run_scale_bench

    def count(text: str) -> int:
        return int(float(text.strip().replace("k", "e3").replace("M", "e6")))

    try:
        specs = [v.split(":") for v in args.ratings.split(",")]
        ratings = tuple(count(s[0]) for s in specs if len(s) == 1)
        catalogues = tuple((count(s[0]), count(s[1])) for s in specs if len(s) == 2)
        if any(len(s) > 2 for s in specs):
            raise ValueError("a point is RATINGS or RATINGS:ITEMS")
    except ValueError as exc:
        raise UserError(f"--ratings: comma-separated counts (1M, 5M, 25M, 10M:1M): {exc}") from exc
    if min([*ratings, *(r for r, _ in catalogues)]) < 10_000:
        raise UserError("--ratings: each point needs at least 10,000 ratings")
    config = ScaleBenchConfig(ratings=ratings, catalogues=catalogues, models=tuple(args.models.split(",")),
                              heads=tuple(args.heads.split(",")), precision=args.precision,
                              eval_users=args.eval_users, requests=args.requests, work=Path(args.work),
                              out=Path(args.out), fresh=args.fresh,
                              catalogue_retriever_batch=args.catalogue_retriever_batch)
    run_scale_bench(config)
    print(f"wrote {config.out / 'report.md'}")
    return 0
