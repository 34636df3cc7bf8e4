"""Verbs of warm-start retraining: ``retrain`` (the ranker) and ``retrain-retriever``.

Two verbs, like ``train`` / ``train-retriever``, sharing one set of flags: the online loop
retrains both from the same events with the same flags, so their id vocabularies agree
and ``ratingctr export`` can combine them.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ratingctr.training.allocator import training_entry_point


def retrain_config(args: argparse.Namespace):
    from ratingctr.training.data.event_log import read_stream_id_file
    from ratingctr.training.retrain import RetrainConfig

    config = RetrainConfig(window=args.window, replay_share=args.replay_share, holdout_share=args.holdout_share,
                           max_stream_id=args.max_stream_id, epochs=args.epochs, lr=args.lr, lr_scale=args.lr_scale,
                           patience=args.patience, seed=args.seed, device=args.device,
                           progress=not args.no_progress, debug_shuffle_labels=args.debug_shuffle_labels,
                           exclude_stream_ids=read_stream_id_file(args.exclude_events))
    config.check()
    return config


def _report(what: str, metrics: dict, out: str) -> None:
    lineage = metrics["lineage"]
    print(f"{what}: {lineage['events_used']} events ({lineage['events_trained']} trained, "
          f"{lineage['events_held_out']} held out), +{lineage['new_users']} users, +{lineage['new_items']} items, "
          f"last stream id trained {lineage['last_stream_id']} -> {out}")


@training_entry_point
def cmd_retrain(args: argparse.Namespace, extra: list[str]) -> int:
    from ratingctr.training.retrain import retrain_ranker

    metrics = retrain_ranker(Path(args.from_run), Path(args.events), Path(args.out), retrain_config(args))
    _report(f"{metrics['model']} {metrics['head']}: test auc {metrics['test']['auc']:.4f}", metrics, args.out)
    return 0


@training_entry_point
def cmd_retrain_retriever(args: argparse.Namespace, extra: list[str]) -> int:
    from ratingctr.training.retrain import retrain_retriever

    metrics = retrain_retriever(Path(args.from_run), Path(args.events), Path(args.out), retrain_config(args))
    _report(f"retriever: test recall@20 {metrics['test']['recall@20']:.4f}", metrics, args.out)
    return 0


def _arguments(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--from", dest="from_run", required=True, help=f"the trained {what} run to continue")
    parser.add_argument("--events", required=True, help="the pulled event log (`ratingctr events pull` --out)")
    parser.add_argument("--out", required=True, help="run directory to write (never the --from run)")
    parser.add_argument("--window", type=int, default=None, help="use only the newest N new events (default: all)")
    parser.add_argument("--replay-share", type=float, default=1.0,
                        help="fraction of the base training rows trained on beside the events (1.0 = all)")
    parser.add_argument("--holdout-share", type=float, default=0.1,
                        help="newest fraction of the events held out for early stopping (with the base valid rows)")
    parser.add_argument("--max-stream-id", default=None,
                        help="ignore events after this stream id (reproducible 'everything pulled so far')")
    parser.add_argument("--exclude-events", default=None, metavar="FILE",
                        help="stream ids (one per line) never to train on, e.g. the promotion gate's holdout")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--lr", type=float, default=None, help="default: the base run's lr times --lr-scale")
    parser.add_argument("--lr-scale", type=float, default=1.0,
                        help="the base run's lr is multiplied by this when --lr is not given (default 1.0; "
                             "see reports/ml-100k/online/retrain-recipe.md)")
    parser.add_argument("--patience", type=int, default=3)
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--debug-shuffle-labels", action="store_true",
                        help="shuffle the training rows' ratings: a deliberately spoiled candidate for the gate")


def register(subparsers: argparse._SubParsersAction) -> None:
    ranker = subparsers.add_parser("retrain", help="warm-start a trained ranker on its data + pulled events")
    _arguments(ranker, "ranker")
    ranker.set_defaults(handler=cmd_retrain)
    retriever = subparsers.add_parser("retrain-retriever",
                                      help="warm-start a trained retriever on its data + pulled events")
    _arguments(retriever, "retriever")
    retriever.set_defaults(handler=cmd_retrain_retriever)
