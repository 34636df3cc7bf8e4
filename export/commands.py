"""Verbs owned by ``export/``: ``export`` and ``bench score``."""
from __future__ import annotations

import argparse
from pathlib import Path

from training.errors import UserError


def cmd_export(args: argparse.Namespace, extra: list[str]) -> int:
    from export.build import export_bundle
    from export.faiss_index import INDEX_KINDS

    if args.index not in INDEX_KINDS:
        raise UserError(f"--index must be one of {', '.join(INDEX_KINDS)}")
    export_bundle(Path(args.ranker), Path(args.retriever), Path(args.out), args.index, args.torchserve,
                  args.data_dir, args.name)
    print(f"wrote {args.out}")
    return 0


def cmd_bench_score(args: argparse.Namespace, extra: list[str]) -> int:
    from export.bench_score import run_bench_score

    return run_bench_score(args)


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


def register_bench(bench_verbs: argparse._SubParsersAction) -> None:
    score = bench_verbs.add_parser("score", help="ONNX Runtime scoring time, binary vs rating bundle")
    score.add_argument("--binary", required=True, help="binary-head bundle")
    score.add_argument("--rating", required=True, help="rating-head bundle of the same architecture")
    score.add_argument("--candidates", default="100,500,2000")
    score.add_argument("--calls", type=int, default=300, help="timed calls per size, per bundle, per round")
    score.add_argument("--rounds", type=int, default=5, help="interleaved A/B rounds")
    score.add_argument("--threads", type=int, default=1, help="ORT intra-op threads")
    score.add_argument("--torchserve", action="store_true", help="also time the same calls through TorchServe")
    score.add_argument("--out", default=None, help="write the results as JSON here")
    score.set_defaults(handler=cmd_bench_score)
