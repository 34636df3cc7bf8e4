"""``ratingctr``: the one command line, dispatching verbs to the room that owns them.

Handlers import their heavy dependencies lazily, so ``ratingctr --help`` is instant and
verbs that never need torch never load it.  A ``UserError`` prints one ``error:`` line
and exits with status 2.  A room that is not installed (the gateway image has only
``serving``) contributes no verbs instead of breaking the command line.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from types import ModuleType
from typing import Callable, Sequence

from ratingctr.errors import UserError

# The verb registry, in help order: module → the verbs it defines with ``register(subparsers)``
# and, where it has them, the benchmarks it defines with ``register_bench(bench_verbs)``.
COMMANDS: dict[str, tuple[str, ...]] = {
    "ratingctr.training.commands": ("train", "evaluate", "compare", "train-retriever", "bench train",
                                    "bench propagate"),
    "ratingctr.training.retrain_commands": ("retrain", "retrain-retriever"),
    "ratingctr.training.experiments.commands": ("experiment",),
    "ratingctr.export.commands": ("export",),
    "ratingctr.serving.commands": ("serve",),
    "ratingctr.loadtest.commands": ("loadtest", "bench score", "bench gateway"),
    "ratingctr.online.commands": (),
}


def installed_command_modules() -> list[ModuleType]:
    """The registry's modules whose room is installed (``ratingctr.<room>`` importable)."""
    modules = []
    for name in COMMANDS:
        room = ".".join(name.split(".")[:2])
        if importlib.util.find_spec(room) is not None:
            modules.append(importlib.import_module(name))
    return modules


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one clear line, exit 2 (argparse's own code)
        self.exit(2, f"error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ratingctr", description="Rating-aware CTR training, export and serving.")
    subparsers = parser.add_subparsers(dest="verb", required=True, parser_class=_Parser)
    modules = installed_command_modules()
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
