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
