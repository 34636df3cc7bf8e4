"""CLI verbs of the online loop: pull the event stream, gate promotions, run the loop."""
from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """The online room's verbs (added by the modules that implement them)."""
