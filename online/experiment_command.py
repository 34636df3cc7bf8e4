"""``ratingctr experiment online``: flags derived from ``OnlineExperimentConfig``, one per field."""
from __future__ import annotations

import argparse
from dataclasses import fields


def cmd_experiment_online(args: argparse.Namespace, extra: list[str]) -> int:
    from ratingctr.online.experiment import run_experiment
    from ratingctr.online.experiment_config import OnlineExperimentConfig

    config = OnlineExperimentConfig(**{f.name: getattr(args, f.name) for f in fields(OnlineExperimentConfig)})
    if config.chunks < 1 or not 0 < config.initial_share < 1:
        from ratingctr.errors import UserError

        raise UserError("--chunks must be at least 1 and --initial-share inside (0, 1)")
    from ratingctr.online.loop import HOLDOUT_BY

    if config.holdout_by not in HOLDOUT_BY:
        from ratingctr.errors import UserError

        raise UserError(f"--holdout-by must be one of {', '.join(HOLDOUT_BY)}, got {config.holdout_by!r}")
    results = run_experiment(config)
    pooled = results["pooled"]["loop_minus_frozen"]
    print(f"loop beats frozen on {results['loop_beats_frozen_chunks']} of {len(results['chunks'])} chunks; pooled "
          f"Δ AUC {pooled['delta']:+.4f} [{pooled['ci95'][0]:+.4f}, {pooled['ci95'][1]:+.4f}] -> {config.out}/report.md")
    return 0


def register_experiment(verbs: argparse._SubParsersAction) -> None:
    from ratingctr.online.experiment_config import OnlineExperimentConfig

    parser = verbs.add_parser("online", help="the online loop judged prequentially: frozen vs loop per time chunk")
    defaults = OnlineExperimentConfig()
    for f in fields(OnlineExperimentConfig):
        default = getattr(defaults, f.name)
        kind = type(default) if default is not None else str
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=default, help=f"default: {default}")
    parser.set_defaults(handler=cmd_experiment_online)
    register_pipeline(verbs)


def cmd_experiment_pipeline(args: argparse.Namespace, extra: list[str]) -> int:
    from pathlib import Path

    from ratingctr.errors import UserError
    from ratingctr.online.pipeline_experiment import PipelineConfig, run_pipeline, write

    try:
        seeds = tuple(int(s) for s in args.seeds.split(",") if s.strip()) if "," in args.seeds else \
            tuple(range(args.first_seed, args.first_seed + int(args.seeds)))
        sweep = tuple(int(n) for n in args.sweep.split(",") if n.strip())
    except ValueError:
        raise UserError(f"--seeds takes a count or a comma-separated list and --sweep integers; got "
                        f"{args.seeds!r} / {args.sweep!r}") from None
    models = tuple(m.strip() for m in args.models.split(",") if m.strip())
    from ratingctr.training.config import model_defaults

    for model in models:
        model_defaults(model)  # an unknown architecture: one clear error before any training
    config = PipelineConfig(models=models, seeds=seeds, dataset=args.dataset, data_dir=args.data_dir,
                            candidates=args.candidates, sweep=sweep, latency_seconds=args.latency_seconds,
                            runs=Path(args.runs_dir), out=Path(args.out))
    results = run_pipeline(config)
    write(results, config.out)
    print(f"wrote {config.out}/report.md", flush=True)
    return 0


def register_pipeline(verbs: argparse._SubParsersAction) -> None:
    parser = verbs.add_parser("pipeline", help="the served top-K per ranker and head over seeds (evaluate-bundle "
                                               "on retriever + ranker bundles): reports/ml-100k/pipeline")
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--models", default="DCNV2,WideDeep,AutoInt")
    parser.add_argument("--seeds", default="5", help="a count (seeds FIRST..) or a comma-separated list")
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument("--candidates", type=int, default=200)
    parser.add_argument("--sweep", default="50,100,200,500,1000")
    parser.add_argument("--latency-seconds", type=float, default=10.0,
                        help="per candidate count and head, /v1/recommend at one client (first model, first seed)")
    parser.add_argument("--runs-dir", default="runs/experiments/pipeline")
    parser.add_argument("--out", default="reports/ml-100k/pipeline")
    parser.set_defaults(handler=cmd_experiment_pipeline)
