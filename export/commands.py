"""Verbs owned by ``export/``: ``export``."""
from __future__ import annotations

import argparse
from pathlib import Path

from ratingctr.errors import UserError


DEFAULT_RETRIEVER_WEIGHT = 1.0


def cmd_export(args: argparse.Namespace, extra: list[str]) -> int:
    from ratingctr.export.build import export_bundle
    from ratingctr.export.faiss_index import INDEX_KINDS

    if args.index not in INDEX_KINDS:
        raise UserError(f"--index must be one of {', '.join(INDEX_KINDS)}")
    from ratingctr.bundle import BundleError, check_fresh_slots, check_retriever_weight

    try:
        check_retriever_weight(args.retriever_weight, "--retriever-weight")
        check_fresh_slots(args.fresh_slots, "--fresh-slots")
    except BundleError as exc:
        raise UserError(str(exc)) from exc
    sign_key = None
    if args.sign_key_file is not None:  # read before the (slow) export, so a bad key fails at once
        from ratingctr.bundle import BundleError, read_key_file

        try:
            sign_key = read_key_file(Path(args.sign_key_file))
        except BundleError as exc:
            raise UserError(str(exc)) from exc
    export_bundle(Path(args.ranker), Path(args.retriever), Path(args.out), args.index, args.torchserve,
                  args.data_dir, args.name, sign_key=sign_key, retriever_weight=args.retriever_weight,
                  fresh_slots=args.fresh_slots)
    print(f"wrote {args.out}" + (" (signed)" if sign_key is not None else ""))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    export = subparsers.add_parser("export", help="checkpoint + retriever → torch-free serving bundle")
    export.add_argument("--ranker", required=True, help="run directory of `ratingctr train`")
    export.add_argument("--retriever", required=True, help="run directory of `ratingctr train-retriever`")
    export.add_argument("--out", required=True, help="bundle directory to write")
    export.add_argument("--name", default=None, help="model name served in responses (default: the folder name)")
    export.add_argument("--index", default="auto",
                        help="auto (default: flat up to 20,000 items, IVF above), flat (exact), ivf or hnsw; "
                             "an approximate index's search depth is tuned to recall@200 >= 0.97 on a sample of users")
    export.add_argument("--retriever-weight", type=float, default=DEFAULT_RETRIEVER_WEIGHT, metavar="W",
                        help="/v1/recommend orders a known user's candidates by log p̂ + W x retriever score "
                             "(default 1: P(rated) x P(click | rated); 0: p̂ alone; reports/ml-100k/pipeline "
                             "measures the choice)")
    export.add_argument("--fresh-slots", type=int, default=1, metavar="N",
                        help="for a retrained run: up to N places of a known user's top-K (at most one in 5) go to "
                             "the items this run added, by p̂ (default 1; 0: none; bundle.RankingInfo says why)")
    export.add_argument("--torchserve", action="store_true", help="also write ranker.mar and config.properties")
    export.add_argument("--data-dir", default=None, help="override the dataset location recorded in the run")
    export.add_argument("--sign-key-file", default=None, metavar="PATH",
                        help="sign the bundle: write signature.json, an HMAC-SHA256 of manifest.json under the key "
                             "in PATH (>= 16 bytes); gateways with RATINGCTR_BUNDLE_KEY refuse unsigned bundles")
    export.set_defaults(handler=cmd_export)


def cmd_bench_ann(args: argparse.Namespace, extra: list[str]) -> int:
    from ratingctr.export.ann_bench import KINDS, AnnBenchConfig, run_ann_bench

    try:
        items = tuple(int(float(v.replace("k", "e3").replace("M", "e6"))) for v in args.items.split(","))
    except ValueError as exc:
        raise UserError(f"--items: comma-separated counts (10000, 100k, 1M): {exc}") from exc
    kinds = tuple(args.kinds.split(","))
    if not items or min(items) < args.k or set(kinds) - set(KINDS):
        raise UserError(f"--items must each be at least --k ({args.k}); --kinds from {', '.join(KINDS)}")
    run_ann_bench(AnnBenchConfig(items=items, kinds=kinds, dim=args.dim, k=args.k, queries=args.queries,
                                 passes=args.passes, out=Path(args.out)))
    print(f"wrote {args.out}/report.md")
    return 0


def register_bench(bench_verbs: argparse._SubParsersAction) -> None:
    """``bench ann``: FAISS index kinds against catalogue size (what ``--index auto`` rests on)."""
    ann = bench_verbs.add_parser("ann", help="FAISS flat / IVF / HNSW: build, recall@k and search p50 by catalogue size")
    ann.add_argument("--items", default="10k,100k,1M", help="catalogue sizes, comma-separated (10k, 100k, 1M)")
    ann.add_argument("--kinds", default="flat,ivf,hnsw")
    ann.add_argument("--dim", type=int, default=64)
    ann.add_argument("--k", type=int, default=200)
    ann.add_argument("--queries", type=int, default=500)
    ann.add_argument("--passes", type=int, default=5)
    ann.add_argument("--out", default="reports/bench/ann")
    ann.set_defaults(handler=cmd_bench_ann)
