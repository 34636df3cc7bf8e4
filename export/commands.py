"""Verbs owned by ``export/``: ``export``."""
from __future__ import annotations

import argparse
from pathlib import Path

from ratingctr.errors import UserError


def cmd_export(args: argparse.Namespace, extra: list[str]) -> int:
    from ratingctr.export.build import export_bundle
    from ratingctr.export.faiss_index import INDEX_KINDS

    if args.index not in INDEX_KINDS:
        raise UserError(f"--index must be one of {', '.join(INDEX_KINDS)}")
    export_bundle(Path(args.ranker), Path(args.retriever), Path(args.out), args.index, args.torchserve,
                  args.data_dir, args.name)
    print(f"wrote {args.out}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    export = subparsers.add_parser("export", help="checkpoint + retriever → torch-free serving bundle")
    export.add_argument("--ranker", required=True, help="run directory of `ratingctr train`")
    export.add_argument("--retriever", required=True, help="run directory of `ratingctr train-retriever`")
    export.add_argument("--out", required=True, help="bundle directory to write")
    export.add_argument("--name", default=None, help="model name served in responses (default: the folder name)")
    export.add_argument("--index", default="flat", help="flat (exact), ivf or hnsw")
    export.add_argument("--torchserve", action="store_true", help="also write ranker.mar and config.properties")
    export.add_argument("--data-dir", default=None, help="override the dataset location recorded in the run")
    export.set_defaults(handler=cmd_export)
