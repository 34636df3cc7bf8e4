"""CLI verbs of the online loop: pull the event stream, gate promotions, run the loop.

A thin list: each verb's parser lives beside the module that implements it.
"""
from __future__ import annotations

import argparse

from ratingctr.online.experiment_command import register_experiment  # noqa: F401 - the `experiment online` hook
from ratingctr.online.evaluate_bundle_command import register_evaluate_bundle
from ratingctr.online.loop_command import register_loop
from ratingctr.online.promote_command import register_promote
from ratingctr.online.pull_command import register_events


def register(subparsers: argparse._SubParsersAction) -> None:
    """The online room's verbs (added by the modules that implement them)."""
    register_events(subparsers)
    register_loop(subparsers)
    register_promote(subparsers)
    register_evaluate_bundle(subparsers)
