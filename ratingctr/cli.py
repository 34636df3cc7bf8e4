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
# and, where it has them, the sub-verbs of a group (``bench …``, ``experiment …``) it defines
# with the group's hook (``GROUPS``).
COMMANDS: dict[str, tuple[str, ...]] = {
    "ratingctr.training.commands": ("train", "evaluate", "compare", "data", "train-retriever", "bench train",
                                    "bench propagate", "bench ddp", "bench auc"),
    "ratingctr.training.retrain_commands": ("retrain", "retrain-retriever"),
    "ratingctr.training.experiments.commands": ("experiment supervision", "experiment connectivity",
                                                "experiment retriever"),
    "ratingctr.export.commands": ("export", "bench ann"),
    "ratingctr.serving.commands": ("serve", "redis-cluster"),
    "ratingctr.loadtest.commands": ("loadtest", "bench score", "bench gateway", "bench scale"),
    "ratingctr.online.commands": ("events", "loop", "promote", "evaluate-bundle", "experiment online",
                                  "experiment pipeline"),
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


# Verb groups whose sub-verbs several rooms contribute: group → (help, the hook a module defines).
GROUPS: dict[str, tuple[str, str]] = {
    "bench": ("benchmarks: train, auc, propagate, ddp, ann, score, gateway, scale", "register_bench"),
    "experiment": ("the papers' tables and figures and the online study: cached, resumable runs",
                   "register_experiment"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ratingctr", description="Rating-aware CTR training, export and serving.")
    subparsers = parser.add_subparsers(dest="verb", required=True, parser_class=_Parser)
    modules = installed_command_modules()
    for module in modules:
        module.register(subparsers)
    for group, (help_text, hook) in GROUPS.items():
        owners = [m for m in modules if hasattr(m, hook)]
        if not owners:  # e.g. the gateway image: no room that benchmarks or experiments
            continue
        group_parser = subparsers.add_parser(group, help=help_text)
        verbs = group_parser.add_subparsers(dest=f"{group}_verb", required=True, parser_class=_Parser)
        for module in owners:  # each room contributes what it owns
            getattr(module, hook)(verbs)
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
