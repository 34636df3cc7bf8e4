"""``ratingctr``: the one command line, dispatching verbs to the folder that owns them.

Handlers import their heavy dependencies lazily, so ``ratingctr --help`` is instant and
verbs that never need torch never load it.  A ``UserError`` prints one ``error:`` line
and exits with status 2.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Callable, Sequence

from training.errors import UserError

# Modules exposing ``register(subparsers)``; each folder owns its verbs.
COMMAND_MODULES = ("training.commands", "training.experiments.commands", "export.commands", "serving.commands", "loadtest.commands")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one clear line, exit 2 (argparse's own code)
        self.exit(2, f"error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ratingctr", description="Rating-aware CTR training, export and serving.")
    subparsers = parser.add_subparsers(dest="verb", required=True, parser_class=_Parser)
    modules = [importlib.import_module(name) for name in COMMAND_MODULES]
    for module in modules:
        module.register(subparsers)
    bench = subparsers.add_parser("bench", help="benchmarks: train, propagate, score, gateway")
    bench_verbs = bench.add_subparsers(dest="bench_verb", required=True, parser_class=_Parser)
    for module in modules:  # each folder benchmarks what it owns
        if hasattr(module, "register_bench"):
            module.register_bench(bench_verbs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    handler: Callable[[argparse.Namespace, list[str]], int] = args.handler
    if extra and not getattr(args, "accepts_overrides", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return int(handler(args, extra) or 0)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
