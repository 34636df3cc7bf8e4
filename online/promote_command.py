"""``ratingctr promote``: the promotion gate's flags (the work is in ``online/promote.py``)."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ratingctr.errors import UserError

ADMIN_TOKEN_ENV = "RATINGCTR_ADMIN_TOKEN"


def _admin_token(args: argparse.Namespace) -> str | None:
    """The gateway admin token: ``--admin-token-file`` first, else the environment (never a flag value,
    which ``ps`` would show)."""
    if args.admin_token_file:
        try:
            token = Path(args.admin_token_file).read_text().strip()
        except OSError as exc:
            raise UserError(f"cannot read --admin-token-file {args.admin_token_file}: {exc}") from exc
        if not token:
            raise UserError(f"--admin-token-file {args.admin_token_file} is empty")
        return token
    return os.environ.get(ADMIN_TOKEN_ENV) or None


def _sign_key(path: str | None) -> bytes | None:
    if path is None:
        return None
    from ratingctr.bundle import BundleError, read_key_file

    try:
        return read_key_file(Path(path))
    except BundleError as exc:
        raise UserError(str(exc)) from exc


def cmd_promote(args: argparse.Namespace, extra: list[str]) -> int:
    from ratingctr.online.gate import GateRule
    from ratingctr.online.promote import PromoteConfig, promote, summary

    from ratingctr.training.data.event_log import read_stream_id_file

    if args.max_auc_drop < 0 or args.max_logloss_rise < 0:
        raise UserError("--max-auc-drop and --max-logloss-rise must be >= 0")
    if args.holdout_ids and (args.holdout_after or args.holdout_newest):
        raise UserError("--holdout-ids names the held-out events itself: it cannot be combined with "
                        "--holdout-after or --holdout-newest")
    config = PromoteConfig(
        candidate=Path(args.candidate), retriever=Path(args.retriever), serving=args.serving.rstrip("/"),
        holdout=Path(args.holdout), bundle_root=Path(args.bundle_root), model=args.model,
        gateways=tuple(url.rstrip("/") for url in args.gateway), admin_token=_admin_token(args),
        log=Path(args.log) if args.log else None,
        rule=GateRule(max_auc_drop=args.max_auc_drop, max_logloss_rise=args.max_logloss_rise),
        holdout_after=args.holdout_after, holdout_newest=args.holdout_newest, dry_run=args.dry_run,
        holdout_ids=read_stream_id_file(args.holdout_ids) if args.holdout_ids else None,
        sign_key=_sign_key(args.sign_key_file))
    status, record = promote(config)
    print(summary(record), file=sys.stdout, flush=True)
    return status


def register_promote(subparsers: argparse._SubParsersAction) -> None:
    from ratingctr.online.gate import DEFAULT_MAX_AUC_DROP, DEFAULT_MAX_LOGLOSS_RISE

    p = subparsers.add_parser(
        "promote", help="gate a retrained candidate against the serving bundle on held-out events; swap if not worse",
        description="Exit status: 0 promoted (or passed with --dry-run), 3 refused by the gate, 4 the gate passed "
                    "but a gateway did not end up serving the new version, 2 a usage error.")
    p.add_argument("--candidate", required=True, help="run directory of the retrained ranker")
    p.add_argument("--retriever", required=True,
                   help="run directory of the retriever to bundle with it (the loop retrains it every cycle, so it "
                        "is always given; the serving bundle's vectors are never reused)")
    p.add_argument("--serving", required=True,
                   help="the serving bundle directory, or a gateway URL whose /readyz names it")
    p.add_argument("--holdout", required=True, metavar="EVENT_LOG_DIR", help="the pulled event log (`events pull`)")
    p.add_argument("--bundle-root", required=True,
                   help="where the promoted bundle goes, as <root>/<model>-<version> (the gateways' "
                        "RATINGCTR_BUNDLE_ROOT)")
    p.add_argument("--model", default="main", help="the model name the gateways serve it under")
    p.add_argument("--gateway", action="append", default=[], metavar="URL",
                   help="a gateway to reload after a promotion (repeat for several; none: only the bundle is written)")
    p.add_argument("--admin-token-file", default=None, metavar="F",
                   help=f"file holding the gateways' admin token (default: ${ADMIN_TOKEN_ENV})")
    p.add_argument("--log", default=None, help="promotion log, one JSON line per decision "
                                               "(default: <bundle-root>/promotions.jsonl)")
    p.add_argument("--max-auc-drop", type=float, default=DEFAULT_MAX_AUC_DROP,
                   help="refuse when AUC(candidate) < AUC(serving) - this")
    p.add_argument("--max-logloss-rise", type=float, default=DEFAULT_MAX_LOGLOSS_RISE,
                   help="refuse when logloss(candidate) > logloss(serving) + this")
    p.add_argument("--holdout-after", default=None, metavar="STREAM_ID",
                   help="score events after this stream id (default: after the newest event the candidate or the "
                        "serving run trained on, from metrics.json lineage.last_stream_id; may only move that later)")
    p.add_argument("--holdout-newest", type=int, default=None, metavar="N", help="only the newest N held-out events")
    p.add_argument("--holdout-ids", default=None, metavar="FILE",
                   help="score exactly these events (stream ids, one per line; `ratingctr loop` writes its per-user "
                        "holdout so); refused if a compared run trained on any of them")
    p.add_argument("--dry-run", action="store_true", help="judge and log, but write no bundle and reload nothing")
    p.add_argument("--sign-key-file", default=None, metavar="PATH",
                   help="sign the promoted bundle (gateways with RATINGCTR_BUNDLE_KEY refuse unsigned ones)")
    p.set_defaults(handler=cmd_promote)
