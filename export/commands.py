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
    sign_key = None
    if args.sign_key_file is not None:  # read before the (slow) export, so a bad key fails at once
        from ratingctr.bundle import BundleError, read_key_file

        try:
            sign_key = read_key_file(Path(args.sign_key_file))
        except BundleError as exc:
            raise UserError(str(exc)) from exc
    export_bundle(Path(args.ranker), Path(args.retriever), Path(args.out), args.index, args.torchserve,
                  args.data_dir, args.name, sign_key=sign_key)
    print(f"wrote {args.out}" + (" (signed)" if sign_key is not None else ""))
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
    export.add_argument("--sign-key-file", default=None, metavar="PATH",
                        help="sign the bundle: write signature.json, an HMAC-SHA256 of manifest.json under the key "
                             "in PATH (>= 16 bytes); gateways with RATINGCTR_BUNDLE_KEY refuse unsigned bundles")
    export.set_defaults(handler=cmd_export)
