"""Verbs owned by ``training/``: ``train``, ``evaluate``, ``bench train``."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ratingctr.errors import UserError

if TYPE_CHECKING:
    from ratingctr.training.config import DataConfig
from ratingctr.training.allocator import training_entry_point


def parse_overrides(extra: list[str]) -> dict:
    """``--key=value`` pairs left over by argparse → {key: YAML-typed value}."""
    from ratingctr.training.config import parse_override

    overrides = {}
    for token in extra:
        if not token.startswith("--") or "=" not in token:
            raise UserError(f"unrecognized argument {token!r}: model hyper-parameters are given as --key=value")
        key, value = token[2:].split("=", 1)
        overrides[key.replace("-", "_")] = parse_override(value)
    return overrides


def add_data_arguments(parser: argparse.ArgumentParser) -> list[str]:
    """The dataset flags shared by every verb that loads ratings; returns their destinations."""
    actions = [
        parser.add_argument("--dataset", default="ml-100k", help="ml-100k (bundled), ml-1m, atomic or csv"),
        parser.add_argument("--data-dir", default=None,
                            help="ml-100k: cache root; ml-1m: folder of .dat files; atomic: folder of "
                                 "NAME.inter/.user/.item; csv: the file"),
        parser.add_argument("--levels", type=int, default=5, help="rating scale 1..N"),
        parser.add_argument("--threshold", type=int, default=4, help="rating >= threshold is a click"),
        parser.add_argument("--k-core", type=int, default=10, help="keep users and items with at least k ratings"),
        parser.add_argument("--drop-middle", choices=["none", "train", "eval", "both"], default="none",
                            help="drop ratings equal to threshold-1 from training and/or evaluation"),
        parser.add_argument("--split", "--split-mode", dest="split_mode", choices=["random", "temporal"],
                            default="random",
                            help="random: seeded (the papers); temporal: global time order, the oldest "
                                 "interactions train and the newest test (needs timestamps)"),
        parser.add_argument("--split-fractions", default=None, metavar="TRAIN,VALID,TEST",
                            help="fractions of the interactions in train, valid, test (default 0.8,0.1,0.1)"),
    ]
    return [action.dest for action in actions]


def _split_fractions(args: argparse.Namespace) -> dict[str, Any]:
    """``--split-fractions`` as the ``split`` override, when given."""
    from ratingctr.training.config import parse_fractions

    text = vars(args).get("split_fractions")
    return {} if text is None else {"split": parse_fractions(text)}


def run_overrides(args: argparse.Namespace, extra: list[str]) -> dict[str, Any]:
    """Parsed flags that are run settings (their destinations are override keys), then the
    ``--key=value`` pairs, which win: the overrides ``build_run_config`` takes."""
    from ratingctr.training.config import run_keys

    keys = run_keys()
    given = {key: value for key, value in vars(args).items() if key in keys}
    if "no_progress" in vars(args):
        given["progress"] = not args.no_progress
    return {**given, **_split_fractions(args), **parse_overrides(extra)}


def data_config(args: argparse.Namespace) -> DataConfig:
    """The ``DataConfig`` of a verb that loads ratings but trains no ranker (retriever, benches)."""
    from dataclasses import fields

    from ratingctr.training.config import DataConfig, build_run_config

    keys = {f.name for f in fields(DataConfig)}
    given = {key: value for key, value in vars(args).items() if key in keys}
    return build_run_config({**given, **_split_fractions(args)}).data


@training_entry_point
def cmd_train(args: argparse.Namespace, extra: list[str]) -> int:
    from ratingctr.training.config import build_run_config
    from ratingctr.training.run import train_run

    config = build_run_config(run_overrides(args, extra))
    if args.distributed:
        from ratingctr.training.distributed import process_group

        with process_group(config.train.device) as ctx:
            metrics = train_run(config, Path(args.out), distributed=ctx)
        if not ctx.is_main:
            return 0
    else:
        from ratingctr.training.distributed import under_torchrun

        if under_torchrun():
            raise UserError("started by torchrun with several ranks but without --distributed: add "
                            "--distributed, or run `ratingctr train` alone")
        metrics = train_run(config, Path(args.out))
    test = metrics["test"]
    print(f"{config.model.name} {config.head.kind}: test auc {test['auc']:.4f} logloss {test['logloss']:.4f} "
          f"ndcg@10 {test['ndcg@10']:.4f} recall@10 {test['recall@10']:.4f} "
          f"(best epoch {metrics['best_epoch']}, {metrics['train_seconds']:.1f}s) -> {args.out}")
    return 0


def cmd_evaluate(args: argparse.Namespace, extra: list[str]) -> int:
    from ratingctr.training.run import evaluate_run

    if args.noise_std < 0:
        raise UserError(f"--noise-std must be >= 0, got {args.noise_std}")
    result = evaluate_run(Path(args.checkpoint), args.noise_std, args.device, ranking=not args.no_ranking,
                          data_dir=args.data_dir)
    text = json.dumps(result, indent=2, default=float)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0


def cmd_compare(args: argparse.Namespace, extra: list[str]) -> int:
    from ratingctr.training.compare import compare_runs, format_comparison

    result = compare_runs(Path(args.base), Path(args.other))
    print(json.dumps(result, indent=2) if args.json else format_comparison(result))
    return 0


@training_entry_point
def cmd_train_retriever(args: argparse.Namespace, extra: list[str]) -> int:
    from ratingctr.training.retriever import RetrieverConfig, train_retriever

    data = data_config(args)
    stopping = {k: v for k, v in (("patience", args.patience), ("min_epochs", args.min_epochs),
                                  ("min_steps", args.min_steps)) if v is not None}
    if any(v < 0 for v in stopping.values()):
        raise UserError("--patience, --min-epochs and --min-steps must be >= 0")
    if args.eval_users is not None:
        if args.eval_users < 0:
            raise UserError("--eval-users must be >= 0 (0: every user)")
        stopping["eval_users"] = args.eval_users or None
    config = RetrieverConfig(embedding_dim=args.embedding_dim, layers=args.gcn_layers, lr=args.lr,
                             reg_weight=args.reg_weight, batch_size=args.batch_size, epochs=args.epochs,
                             positives=args.positives, seed=args.seed, device=args.device,
                             progress=not args.no_progress, **stopping)
    if args.distributed:
        from ratingctr.training.distributed import process_group

        with process_group(config.device) as ctx:
            metrics = train_retriever(data, config, Path(args.out), distributed=ctx)
        if not ctx.is_main:
            return 0
    else:
        from ratingctr.training.distributed import under_torchrun

        if under_torchrun():
            raise UserError("started by torchrun with several ranks but without --distributed: add "
                            "--distributed, or run `ratingctr train-retriever` alone")
        metrics = train_retriever(data, config, Path(args.out))
    print(f"retriever: test recall@20 {metrics['test']['recall@20']:.4f} ndcg@20 {metrics['test']['ndcg@20']:.4f} | "
          f"most-popular recall@20 {metrics['popular']['recall@20']:.4f} ndcg@20 {metrics['popular']['ndcg@20']:.4f} "
          f"-> {args.out}")
    return 0


def cmd_bench_propagate(args: argparse.Namespace, extra: list[str]) -> int:
    from ratingctr.training.bench import run_bench_propagate

    return run_bench_propagate(args)


def cmd_bench_train(args: argparse.Namespace, extra: list[str]) -> int:
    from ratingctr.training.bench import run_bench_train

    return run_bench_train(args)


def register(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser("train", help="train one CTR model (binary or rating head)")
    train.add_argument("--model", default="DCNV2")
    add_data_arguments(train)
    train.add_argument("--head", choices=["binary", "rating"], default="rating")
    train.add_argument("--ratio", type=float, default=0.5, help="λr: weight of the rating cross-entropy")
    train.add_argument("--aggregate", choices=["logit_sum", "prob_sum"], default="logit_sum")
    train.add_argument("--first-order", choices=["wide", "broadcast"], default="wide",
                       help="WideDeep/NFM/AutoInt/xDeepFM: wide = one first-order (and CIN) logit per rating "
                            "level; broadcast = one scalar on all levels, as the authors' released code")
    train.add_argument("--encoder", choices=["table", "lightgcn"], default="table",
                       help="lightgcn: propagate user/item embeddings over the training graph")
    train.add_argument("--gcn-layers", type=int, default=2)
    train.add_argument("--layer-weights", type=float, nargs="+", default=None,
                       help="a_0..a_L for the LightGCN layers (default 1/(L+1) each)")
    train.add_argument("--init-from", default=None,
                       help="a trained table-encoder run to initialise from: FT with --encoder lightgcn, "
                            "Base+ (continued training, the control) with the table encoder")
    train.add_argument("--seed", type=int, default=2020)
    train.add_argument("--epochs", type=int, default=30)
    train.add_argument("--batch-size", type=int, default=4096)
    train.add_argument("--lr", type=float, default=None, help="default: the model's YAML value")
    train.add_argument("--patience", type=int, default=3, help="epochs without valid AUC gain before stopping")
    train.add_argument("--eval-users", type=int, default=None, metavar="N",
                       help="uni100 ranking metrics on a seeded sample of N users per split, with 95%% confidence "
                            "intervals (default: every user; pointwise AUC/logloss always use every row)")
    train.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:1 ...")
    train.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                       help="auto: bf16 autocast where the CPU/GPU computes bf16 natively, else fp32")
    train.add_argument("--no-progress", action="store_true")
    train.add_argument("--distributed", action="store_true",
                       help="one rank of a torchrun job: DistributedDataParallel (gloo on CPU, NCCL on GPU), "
                            "rank 0 validates and writes, resumes from OUT/train_state.pt after a restart")
    train.add_argument("--out", required=True, help="run directory for model.pt and metrics.json")
    train.set_defaults(handler=cmd_train, accepts_overrides=True)

    evaluate = subparsers.add_parser("evaluate", help="re-score a saved run")
    evaluate.add_argument("--checkpoint", required=True, help="run directory (or its model.pt)")
    evaluate.add_argument("--noise-std", type=float, default=0.0, help="Gaussian noise std added to embeddings")
    evaluate.add_argument("--data-dir", default=None, help="override the dataset location recorded in the run")
    evaluate.add_argument("--device", default="auto")
    evaluate.add_argument("--no-ranking", action="store_true", help="skip the uni100 ranking metrics")
    evaluate.add_argument("--out", default=None, help="also write the JSON here")
    evaluate.set_defaults(handler=cmd_evaluate)

    compare = subparsers.add_parser("compare", help="AUC deltas, relative change and MCI per activity group")
    compare.add_argument("base", help="baseline run directory")
    compare.add_argument("other", help="run to compare against the baseline")
    compare.add_argument("--json", action="store_true")
    compare.set_defaults(handler=cmd_compare)

    data = subparsers.add_parser("data", help="datasets: synth (a MovieLens-like dataset of any size)")
    data_verbs = data.add_subparsers(dest="data_verb", required=True)
    synth = data_verbs.add_parser("synth", help="a RecBole atomic dataset calibrated on ML-100k, deterministic per seed")
    synth.add_argument("--users", type=int, required=True)
    synth.add_argument("--items", type=int, required=True)
    synth.add_argument("--ratings", type=int, required=True, help="ratings to draw (a user's repeats are dropped)")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--name", default=None, help="file stem (default: the --out folder's name)")
    synth.add_argument("--data-dir", default=None, help="where ML-100k (the calibration source) is cached")
    synth.add_argument("--out", required=True)
    synth.set_defaults(handler=cmd_data_synth)

    retriever = subparsers.add_parser("train-retriever", help="LightGCN + BPR candidate retriever")
    add_data_arguments(retriever)
    retriever.add_argument("--embedding-dim", type=int, default=64)
    retriever.add_argument("--gcn-layers", type=int, default=3)
    retriever.add_argument("--lr", type=float, default=1e-3)
    retriever.add_argument("--reg-weight", type=float, default=1e-4)
    retriever.add_argument("--batch-size", type=int, default=2048)
    retriever.add_argument("--epochs", type=int, default=300)
    retriever.add_argument("--patience", type=int, default=None,
                           help="evaluations without valid Recall@20 gain (default: RetrieverConfig's)")
    retriever.add_argument("--min-steps", type=int, default=None,
                           help="never stop before this many BPR steps (default: RetrieverConfig's 1000)")
    retriever.add_argument("--min-epochs", type=int, default=None,
                           help="never stop before this many epochs: the popularity plateau (default: "
                                "RetrieverConfig's; reports/ml-100k/retriever)")
    retriever.add_argument("--eval-users", type=int, default=None, metavar="N",
                           help="validation and test Recall@20 on a seeded sample of N users with positives "
                                "(default: RetrieverConfig's 10,000; 0: every user). Full ranking costs users x "
                                "items per evaluation")
    retriever.add_argument("--positives", choices=("ratings", "clicks"), default="ratings",
                           help="BPR positives and graph edges: every rated item (default: the retriever then "
                                "estimates what a user will rate and the ranker's p̂ whether they like it; "
                                "reports/ml-100k/pipeline) or clicks only (rating >= threshold)")
    retriever.add_argument("--seed", type=int, default=2020)
    retriever.add_argument("--device", default="auto")
    retriever.add_argument("--no-progress", action="store_true")
    retriever.add_argument("--distributed", action="store_true",
                           help="one rank of a torchrun job: the BPR batches split over ranks, the graph replicated "
                                "(training/retriever_parallel.py says where that stops holding); rank 0 validates "
                                "and writes, resumes from OUT/train_state.pt after a restart")
    retriever.add_argument("--out", required=True)
    retriever.set_defaults(handler=cmd_train_retriever)


def cmd_data_synth(args: argparse.Namespace, extra: list[str]) -> int:
    from ratingctr.training.data.synth import SynthSpec, synthesize
    from ratingctr.training.data.synth_calibration import ml100k_calibration

    spec = SynthSpec(users=args.users, items=args.items, ratings=args.ratings, seed=args.seed,
                     name=args.name or Path(args.out).name)
    spec.check()
    summary = synthesize(spec, ml100k_calibration(args.data_dir), Path(args.out))
    print(f"wrote {summary['ratings_written']:,} ratings of {spec.users:,} users on {spec.items:,} items to "
          f"{args.out}/{spec.name}.inter (star shares {summary['rating_probs']}); train on it with "
          f"--dataset atomic --data-dir {args.out}")
    return 0


def cmd_bench_ddp(args: argparse.Namespace, extra: list[str]) -> int:
    from ratingctr.training.distributed_bench import run_bench_ddp

    return run_bench_ddp(args)


def cmd_bench_auc(args: argparse.Namespace, extra: list[str]) -> int:
    import shlex
    import sys

    from ratingctr.training.peer_auc import run_bench_auc

    if extra:
        raise UserError(f"bench auc takes no extra arguments: {' '.join(extra)}")
    args.command_line = "ratingctr " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    return run_bench_auc(args)


def register_bench(bench_verbs: argparse._SubParsersAction) -> None:
    bench_train = bench_verbs.add_parser("train", help="seconds per epoch and peak memory per architecture and head")
    bench_train.add_argument("--models", default="all", help="comma-separated architectures, or all")
    bench_train.add_argument("--heads", default="binary,rating")
    bench_train.add_argument("--epochs", type=int, default=3, help="timed epochs per run (after one warm-up)")
    bench_train.add_argument("--runs", type=int, default=3, help="processes per architecture and head")
    bench_train.add_argument("--batch-size", type=int, default=4096)
    bench_train.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    bench_train.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    bench_train.add_argument("--data-dir", default=None)
    bench_train.add_argument("--recbole-python", default=None,
                             help="python of an environment with recbole==1.2.1 to time the same models there")
    bench_train.add_argument("--out", default=None, help="write the table as JSON here")
    bench_train.set_defaults(handler=cmd_bench_train)
    auc = bench_verbs.add_parser("auc", help="our binary head vs RecBole 1.2.1 trained on exactly our split "
                                             "(test AUC / logloss, paired over seeds)")
    auc.add_argument("--recbole-python", required=True,
                     help="python of an environment with recbole==1.2.1 (README: bench train)")
    auc.add_argument("--models", default="all", help="comma-separated architectures RecBole has, or all")
    auc.add_argument("--seeds", type=int, default=5, help="number of seeds (each fixes split, init, batch order)")
    auc.add_argument("--seed", type=int, default=2020, help="first seed; the others follow it")
    auc.add_argument("--dataset", default="ml-100k", help="ml-100k, or an atomic folder with ML-100k's fields")
    auc.add_argument("--data-dir", default=None)
    auc.add_argument("--k-core", type=int, default=None)
    auc.add_argument("--epochs", type=int, default=None, help="epoch budget (default: the experiments')")
    auc.add_argument("--patience", type=int, default=None, help="default: the experiments'")
    auc.add_argument("--jobs", type=int, default=1, help="runs in parallel processes (each side)")
    auc.add_argument("--runs-dir", default="runs/experiments", help="cache of finished runs, shared with experiments")
    auc.add_argument("--out", default="reports/ml-100k/peers")
    auc.set_defaults(handler=cmd_bench_auc)
    bench_prop = bench_verbs.add_parser("propagate", help="time one full LightGCN propagation")
    bench_prop.add_argument("--dataset", default="ml-100k")
    bench_prop.add_argument("--data-dir", default=None)
    bench_prop.add_argument("--dims", default="16,64")
    bench_prop.add_argument("--layers", type=int, default=2)
    bench_prop.add_argument("--repeats", type=int, default=200)
    bench_prop.add_argument("--threads", type=int, default=0)
    bench_prop.set_defaults(handler=cmd_bench_propagate)
    ddp = bench_verbs.add_parser("ddp", help="one process vs N torchrun ranks (gloo) on the same global batch: "
                                             "test AUC and rows/s")
    ddp.add_argument("--model", default="DCNV2")
    ddp.add_argument("--procs", default="1,2", help="process counts, the first must be 1 (the baseline)")
    ddp.add_argument("--seeds", default="1,2,3")
    ddp.add_argument("--epochs", type=int, default=30)
    ddp.add_argument("--batch-size", type=int, default=2048, help="the global batch, split over the ranks")
    ddp.add_argument("--threads", type=int, default=1, help="OMP threads per process")
    ddp.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="fp32")
    ddp.add_argument("--data-dir", default=None)
    ddp.add_argument("--out", default=None, help="write OUT.md and OUT.json")
    ddp.set_defaults(handler=cmd_bench_ddp)
