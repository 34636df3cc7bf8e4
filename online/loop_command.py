"""``ratingctr loop``: pull → retrain → promote, ``--once`` or ``--every 1h``."""
from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

from ratingctr.errors import UserError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_every(text: str) -> float:
    """``90s``, ``15m``, ``1h``, ``1d`` → seconds."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", text.strip())
    if not match or float(match.group(1)) <= 0:
        raise UserError(f"--every takes a positive duration like 90s, 15m, 1h or 1d, got {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def cmd_loop(args: argparse.Namespace, extra: list[str]) -> int:
    from ratingctr.online.loop import LoopConfig, run_cycle

    if not (args.redis_url or args.redis_dir):
        raise UserError("give --redis-url URL or --redis-dir DIR (the gateway's embedded Redis) to pull events from")
    every = parse_every(args.every) if args.every else None
    state_dir = Path(args.state or Path(args.bundle_root) / "loop")
    config = LoopConfig(gateway=args.gateway.rstrip("/"), ranker_run=Path(args.run), retriever_run=Path(args.retriever),
                        bundle_root=Path(args.bundle_root), events_dir=Path(args.events), state_dir=state_dir,
                        model=args.model, redis_url=args.redis_url, redis_dir=Path(args.redis_dir) if args.redis_dir
                        else None, redis_prefix=args.prefix, holdout_share=args.holdout_share,
                        holdout_by=args.holdout_by,
                        min_new_events=args.min_new_events, ranker_epochs=args.epochs,
                        retriever_epochs=args.retriever_epochs, replay_share=args.replay_share,
                        max_auc_drop=args.max_auc_drop, max_logloss_rise=args.max_logloss_rise)
    while True:
        started = time.monotonic()
        record = run_cycle(config)
        print(f"cycle {record['cycle']}: {record.get('decision')} in {time.monotonic() - started:.1f} s", flush=True)
        if every is None:
            return 0
        time.sleep(max(0.0, every - (time.monotonic() - started)))


def register_loop(subparsers: argparse._SubParsersAction) -> None:
    loop = subparsers.add_parser("loop", help="the online loop: pull events → retrain ranker and retriever → "
                                              "promote through the gate, once or on a schedule")
    loop.add_argument("--gateway", required=True, help="the running gateway (reloaded on promotion)")
    loop.add_argument("--run", required=True, help="the ranker run the gateway serves now (the starting point)")
    loop.add_argument("--retriever", required=True, help="the retriever run of the serving bundle")
    loop.add_argument("--bundle-root", required=True, help="where promoted bundles go (the gateway's "
                                                           "RATINGCTR_BUNDLE_ROOT)")
    loop.add_argument("--events", required=True, help="the pulled event log directory")
    loop.add_argument("--state", default=None, help="loop state and cycle work (default: BUNDLE_ROOT/loop)")
    loop.add_argument("--redis-url", default=None)
    loop.add_argument("--redis-dir", default=None, help="the gateway's RATINGCTR_REDIS_DIR (embedded Redis)")
    loop.add_argument("--prefix", default="rc", help="the gateway's RATINGCTR_REDIS_PREFIX")
    loop.add_argument("--model", default="main", help="the gateway's model name to promote")
    when = loop.add_mutually_exclusive_group(required=True)
    when.add_argument("--once", action="store_true", help="one cycle, then exit")
    when.add_argument("--every", default=None, help="a cycle every 90s / 15m / 1h / 1d")
    loop.add_argument("--holdout-share", type=float, default=0.1,
                      help="share of the new events kept from training for the gate (see --holdout-by)")
    loop.add_argument("--holdout-by", choices=("user", "time"), default="user",
                      help="user: each user's newest share of their new events (default; more users, more power); "
                           "time: the newest share overall")
    loop.add_argument("--min-new-events", type=int, default=50, help="skip a cycle with fewer new events")
    loop.add_argument("--epochs", type=int, default=5, help="ranker retraining epochs per cycle")
    loop.add_argument("--retriever-epochs", type=int, default=30, help="retriever retraining epochs per cycle")
    loop.add_argument("--replay-share", type=float, default=1.0,
                      help="share of the base training rows replayed beside the events (measured in "
                           "reports/ml-100k/online/retrain-recipe.md)")
    loop.add_argument("--max-auc-drop", type=float, default=0.002)
    loop.add_argument("--max-logloss-rise", type=float, default=0.005)
    loop.set_defaults(handler=cmd_loop)
