"""The ``events`` verb and its ``events pull`` subcommand: argparse only, ``online.pull`` loaded on use
(so ``ratingctr --help`` never imports redis or pandas)."""
from __future__ import annotations

import argparse
from pathlib import Path


def cmd_events_pull(args: argparse.Namespace, extra: list[str]) -> int:
    from ratingctr.online.pull import PullConfig, pull_events, resolve_redis_url

    config = PullConfig(redis_url=resolve_redis_url(args.redis_url, args.redis_dir), out=args.out,
                        prefix=args.prefix, group=args.group, consumer=args.consumer, batch=args.batch,
                        follow=args.follow, block_ms=args.block_ms, trim=args.trim)
    print(pull_events(config).line(), flush=True)
    return 0


def register_events(subparsers: argparse._SubParsersAction) -> None:
    events = subparsers.add_parser("events", help="the event stream: `events pull` writes it to the Parquet event log")
    # the CLI's own parser class, so a mistake under `events` is one `error:` line too
    verbs = events.add_subparsers(dest="events_verb", required=True, parser_class=type(events))
    pull = verbs.add_parser(
        "pull", help="read <prefix>:events through a consumer group into Parquet partitions; XACK only what is on disk",
        description="Writes each batch as a partition (temporary file, fsync, rename), then acknowledges it. "
                    "Killed at any point and restarted, it loses nothing; the reader drops the duplicates a "
                    "restart may write (at-least-once writes, exactly-once reads).")
    where = pull.add_mutually_exclusive_group()
    where.add_argument("--redis-url", default=None, help="the Redis to read (default: REDIS_URL)")
    where.add_argument("--redis-dir", type=Path, default=None,
                       help="the data directory of an embedded Redis started by `ratingctr serve` (its redis.url); "
                            "default RATINGCTR_REDIS_DIR when REDIS_URL is unset")
    pull.add_argument("--out", type=Path, required=True, help="the event log directory (append-only partitions)")
    pull.add_argument("--prefix", default="rc", help="the gateway's key prefix (RATINGCTR_REDIS_PREFIX); default rc")
    pull.add_argument("--group", default="ratingctr-log", help="consumer group, created at the stream's start if missing")
    pull.add_argument("--consumer", default="pull",
                      help="consumer name; keep it across restarts: a restart re-reads this consumer's pending entries")
    pull.add_argument("--batch", type=int, default=10_000, help="entries per read, one partition each")
    mode = pull.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="drain what is there and exit (the default)")
    mode.add_argument("--follow", action="store_true", help="keep reading until SIGTERM / Ctrl-C")
    pull.add_argument("--block-ms", type=int, default=1000, help="--follow: how long one read waits for new events")
    pull.add_argument("--trim", action="store_true",
                      help="XTRIM the stream to the oldest entry any consumer group has not acknowledged")
    pull.set_defaults(handler=cmd_events_pull)
