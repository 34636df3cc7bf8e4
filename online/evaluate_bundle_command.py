"""``ratingctr evaluate-bundle``: flags only (the work is in ``online/evaluate_bundle.py``)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ratingctr.errors import UserError


def _numbers(flag: str, text: str, cast: type, valid, rule: str) -> tuple:
    """A comma-separated flag value → a tuple of ``cast`` values each passing ``valid``, else one clear error."""
    try:
        values = tuple(cast(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise UserError(f"{flag} takes comma-separated {rule}, got {text!r}") from None
    if not all(valid(v) for v in values):
        raise UserError(f"{flag} takes {rule}, got {text!r}")
    return values


def _counts(text: str) -> tuple[int, ...]:
    values = _numbers("--sweep", text, int, lambda v: v >= 1, "positive candidate counts")
    if not values:
        raise UserError(f"--sweep takes positive candidate counts, got {text!r}")
    return values


def _weights(text: str) -> tuple[float, ...]:
    return _numbers("--weights", text, float, lambda v: 0.0 <= v < float("inf"), "finite weights >= 0")


def cmd_evaluate_bundle(args: argparse.Namespace, extra: list[str]) -> int:
    from ratingctr.online.evaluate_bundle import EvaluateConfig, evaluate, render, write

    if args.latency_seconds < 0 or args.max_users < 0:
        raise UserError("--latency-seconds and --max-users must be >= 0")
    config = EvaluateConfig(bundles=tuple(Path(b) for b in args.bundles), split=args.split, data_dir=args.data_dir,
                            ranker_run=Path(args.ranker_run) if args.ranker_run else None,
                            candidates=args.candidates, sweep=_counts(args.sweep), weights=_weights(args.weights),
                            latency_seconds=args.latency_seconds, max_users=args.max_users,
                            out=Path(args.out) if args.out else None)
    results = evaluate(config)
    if config.out:
        write(results, config.out)
    print(render(results), file=sys.stdout)
    return 0


def register_evaluate_bundle(subparsers: argparse._SubParsersAction) -> None:
    from ratingctr.online.evaluate_bundle import CANDIDATE_SWEEP, WEIGHT_SWEEP

    p = subparsers.add_parser(
        "evaluate-bundle", help="Recall/NDCG/HitRate/MRR@K of what /v1/recommend returns, through the serving code, "
                                "against most popular and the retriever's own order")
    p.add_argument("bundles", nargs="+", help="one or more bundles trained on the same data (e.g. both heads)")
    p.add_argument("--split", choices=["test", "valid"], default="test")
    p.add_argument("--data-dir", default=None, help="where the ranker run's dataset lives, if not where it was")
    p.add_argument("--ranker-run", default=None,
                   help="the ranker's run directory (default: the manifest's source.ranker)")
    p.add_argument("--candidates", type=int, default=50,
                   help="the candidate count the main table uses (default: the gateway's RATINGCTR_CANDIDATES default)")
    p.add_argument("--sweep", default=",".join(map(str, CANDIDATE_SWEEP)), help="candidate counts to sweep")
    p.add_argument("--weights", default=",".join(f"{w:g}" for w in WEIGHT_SWEEP),
                   help="retriever weights w of the order log p̂ + w x retriever score to judge beside each "
                        "bundle's own (empty: skip)")
    p.add_argument("--latency-seconds", type=float, default=0.0,
                   help="per candidate count and bundle, measure /v1/recommend p50 at one client for this long "
                        "against a real gateway (0: skip)")
    p.add_argument("--max-users", type=int, default=0, help="evaluate a fixed random subset of users (0: all)")
    p.add_argument("--out", default=None, help="write report.md, results.json and the plots here")
    p.set_defaults(handler=cmd_evaluate_bundle)
