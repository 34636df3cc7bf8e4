"""``ratingctr bench auc``: our binary head against RecBole 1.2.1 on exactly our split.

A peer comparison is only evidence when everything but the implementation is equal.  Per
seed, the split our trainer draws is written as RecBole's pre-split benchmark files
(:func:`write_benchmark_files`: the same train / valid / test rows, and the user and item
features our encoder used, as tokens), and RecBole trains on them under
``training/bench_recbole_auc.py`` with our hyper-parameters (``bench_recbole.REFERENCE``
and each model's YAML learning rate), batch size, epoch budget and stopping rule.  The worker
reports the rows RecBole loaded per split; a run on other rows is refused.

Ours are the experiment runner's runs (``runs/experiments`` cache, keyed by configuration
and code) at fp32, because RecBole has no mixed precision on CPU and a peer is compared at
equal precision; Table 1's runs use ``--precision auto`` (bf16 autocast on this CPU) and are
separate runs.  Each architecture gets the paired difference ours − RecBole over seeds with
its 95% t interval, the paired p-value and Holm's adjustment over the architectures.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ratingctr.errors import UserError
from ratingctr.training.data.encode import TEST, TRAIN, VALID, EncodedData

#: the architectures RecBole 1.2.1 has (FinalMLP, AFN and GDCN are ours alone)
PEER_MODELS = ("WideDeep", "NFM", "xDeepFM", "AutoInt", "FiGNN", "DCNV2", "EulerNet")
WORKER = Path(__file__).resolve().parent / "bench_recbole_auc.py"
REFERENCE_FILE = Path(__file__).resolve().parent / "bench_recbole.py"
PARTS = ((TRAIN, "train"), (VALID, "valid"), (TEST, "test"))
NAME = "peer"  # the dataset name the worker's RecBole config reads (not ml-100k: RecBole would read its bundled copy)


@dataclass(frozen=True)
class PeerSpec:
    models: tuple[str, ...]
    seeds: tuple[int, ...]
    recbole_python: str
    runs_dir: Path
    jobs: int = 1


def _tokens(vocab: list[str], codes: np.ndarray) -> np.ndarray:
    """Tokens of a ``[n, slots]`` code matrix, the slots of one row joined by spaces (0 = missing)."""
    words = np.asarray(["", *vocab[1:]], dtype=object)
    picked = words[codes]
    joined = picked[:, 0]
    for column in picked[:, 1:].T:  # one vectorised step per slot, not a Python loop per row
        joined = np.where(column != "", joined + " " + column, joined)
    return np.char.strip(joined.astype(str)).astype(object)


def _side_file(data: EncodedData, side: str, rows: np.ndarray, path: Path) -> None:
    import pandas as pd

    columns, start = {}, 0
    for spec in data.schema.side_fields(side):  # type: ignore[arg-type]
        codes = rows[1:, start:start + spec.slots]
        kind = "token_seq" if spec.slots > 1 else "token"
        columns[f"{spec.name}:{kind}"] = _tokens(data.vocab[spec.name], codes)
        start += spec.slots
    pd.DataFrame(columns).to_csv(path, sep="\t", index=False)


def write_benchmark_files(data: EncodedData, out_dir: Path) -> dict[str, int]:
    """RecBole's pre-split atomic files for ``data``'s split in ``out_dir/peer/``: the rows of
    each part as ``peer.{train,valid,test}.inter`` (raw ids, rating, timestamp) and the user
    and item features as the encoder saw them.  Returns the rows per part."""
    import pandas as pd

    target = out_dir / NAME
    target.mkdir(parents=True, exist_ok=True)
    users = np.asarray(data.vocab["user_id"], dtype=object)
    items = np.asarray(data.vocab["item_id"], dtype=object)
    counts = {}
    for part, label in PARTS:
        rows = data.rows(part)
        pd.DataFrame({"user_id:token": users[data.user[rows]], "item_id:token": items[data.item[rows]],
                      "rating:float": data.rating[rows], "timestamp:float": data.ts[rows]}
                     ).to_csv(target / f"{NAME}.{label}.inter", sep="\t", index=False)
        counts[label] = int(rows.size)
    _side_file(data, "user", data.user_rows, target / f"{NAME}.user")
    _side_file(data, "item", data.item_rows, target / f"{NAME}.item")
    return counts


def recbole_key(model: str, seed: int, lr: float, settings: dict, split_hash: str) -> str:
    """Cache key of one RecBole run: its arguments, the split's hash and the worker's code."""
    digest = hashlib.sha256(json.dumps({"model": model, "seed": seed, "lr": lr, "settings": settings,
                                        "split": split_hash}, sort_keys=True).encode())
    for source in (WORKER, REFERENCE_FILE):
        digest.update(source.read_bytes())
    return digest.hexdigest()[:12]


def run_recbole(python: str, model: str, seed: int, lr: float, split_dir: Path, settings: dict,
                threads: int, expected_rows: dict[str, int]) -> dict:
    """One worker process; raises when it fails or loaded other rows than our split."""
    args = [python, str(WORKER), "--model", model, "--data-dir", str(split_dir), "--seed", str(seed),
            "--lr", repr(lr), "--epochs", str(settings["epochs"]), "--patience", str(settings["patience"]),
            "--batch-size", str(settings["batch_size"]), "--threads", str(threads)]
    proc = subprocess.run(args, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          env={**os.environ, "PYTHONHASHSEED": "0"})
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"RecBole {model} seed {seed} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    result = json.loads(lines[-1])
    if result["rows"] != expected_rows:
        raise RuntimeError(f"RecBole {model} seed {seed} loaded rows {result['rows']}, our split has "
                           f"{expected_rows}: it did not train on our split")
    return result


def check_recbole_python(python: str) -> str:
    """The environment's RecBole version; a ``UserError`` when it has none."""
    proc = subprocess.run([python, "-c", "import recbole; print(recbole.__version__)"], capture_output=True,
                          text=True, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise UserError(f"--recbole-python {python} cannot import recbole: {proc.stderr.strip()[-300:]}")
    return proc.stdout.strip()


def recbole_runs(spec: PeerSpec, tasks: list[dict], progress=print) -> dict[tuple[str, int], dict]:
    """Run (or read from the cache) every RecBole task; ``jobs`` worker processes at once."""
    cache = spec.runs_dir / "peers"
    cache.mkdir(parents=True, exist_ok=True)
    threads = max(1, (os.cpu_count() or 1) // max(1, spec.jobs))
    out: dict[tuple[str, int], dict] = {}

    def one(task: dict) -> tuple[tuple[str, int], dict]:
        path = cache / f"recbole-{task['model']}-s{task['seed']}-{task['key']}.json"
        if path.exists():
            return (task["model"], task["seed"]), json.loads(path.read_text())
        result = run_recbole(spec.recbole_python, task["model"], task["seed"], task["lr"], task["split_dir"],
                             task["settings"], threads, task["rows"])
        path.write_text(json.dumps(result, indent=1) + "\n")
        progress(f"RecBole {task['model']} s{task['seed']}: test AUC {result['test']['auc']:.4f} "
                 f"({result['epochs_trained']} epochs, {result['seconds']:.0f}s)")
        return (task["model"], task["seed"]), result

    with ThreadPoolExecutor(max_workers=max(1, spec.jobs)) as pool:
        for key, result in pool.map(one, tasks):
            out[key] = result
    return out


def peer_rows(models: tuple[str, ...], seeds: tuple[int, ...], ours: dict[tuple[str, int], dict],
              theirs: dict[tuple[str, int], dict]) -> list[dict]:
    """Per architecture: both sides' test AUC / logloss over seeds, the paired difference ours −
    RecBole with its 95% interval and p, and Holm's adjustment over the architectures."""
    from ratingctr.training.experiments.stats import holm, mean_std, paired_difference

    rows = []
    for model in models:
        row: dict = {"model": model}
        for metric in ("auc", "logloss"):
            a = [theirs[(model, s)]["test"][metric] for s in seeds]
            b = [ours[(model, s)]["test"][metric] for s in seeds]
            row[metric] = {"ours": mean_std(b), "recbole": mean_std(a), "diff": paired_difference(a, b)}
        row["epochs"] = {"ours": [len(ours[(model, s)]["history"]) for s in seeds],
                         "recbole": [theirs[(model, s)]["epochs_trained"] for s in seeds]}
        rows.append(row)
    for metric in ("auc", "logloss"):
        adjusted = holm([r[metric]["diff"]["p_value"] for r in rows])
        for row, p in zip(rows, adjusted):
            row[metric]["diff"]["holm_p"] = p
    return rows


def verdicts(rows: list[dict]) -> list[str]:
    """One sentence per architecture against the target (our AUC not lower beyond the interval)."""
    out = []
    for row in rows:
        d = row["auc"]["diff"]
        if d.get("ci_high") is None:
            out.append(f"{row['model']}: too few seeds for an interval (mean difference {d.get('mean')}).")
        elif d["ci_high"] < 0:
            out.append(f"{row['model']}: our AUC is lower than RecBole's by {-d['mean']:.4f} "
                       f"(95% CI [{d['ci_low']:+.4f}, {d['ci_high']:+.4f}], Holm p {d['holm_p']:.3g}): target missed.")
        elif d["ci_low"] > 0:
            out.append(f"{row['model']}: our AUC is higher by {d['mean']:.4f} "
                       f"(95% CI [{d['ci_low']:+.4f}, {d['ci_high']:+.4f}], Holm p {d['holm_p']:.3g}).")
        else:
            out.append(f"{row['model']}: no difference the seeds resolve ({d['mean']:+.4f}, "
                       f"95% CI [{d['ci_low']:+.4f}, {d['ci_high']:+.4f}]).")
    return out


def _our_configs(args, models: tuple[str, ...], seeds: tuple[int, ...]) -> dict:
    """Our binary-head configurations, built exactly as the experiment verbs build theirs (one
    factory, so defaults cannot drift), at fp32."""
    from ratingctr.cli import build_parser
    from ratingctr.training.experiments.commands import _config_factory

    argv = ["experiment", "supervision", "--out", "unused", "--precision", "fp32", "--dataset", args.dataset]
    for flag, value in (("--data-dir", args.data_dir), ("--k-core", args.k_core), ("--epochs", args.epochs),
                        ("--patience", args.patience)):
        if value is not None:
            argv += [flag, str(value)]
    exp_args, extra = build_parser().parse_known_args(argv)
    make = _config_factory(exp_args, extra)
    return {(model, seed): make(model, seed, head="binary") for model in models for seed in seeds}


def run_bench_auc(args) -> int:
    from ratingctr.report_files import write_report
    from ratingctr.training.data.encode import load_dataset
    from ratingctr.training.experiments.commands import _csv
    from ratingctr.training.experiments.provenance import provenance
    from ratingctr.training.experiments.runner import Plan, run_plan
    from ratingctr.training.run import split_hash

    models = PEER_MODELS if args.models == "all" else _csv(args.models)
    unknown = [m for m in models if m not in PEER_MODELS]
    if unknown:
        raise UserError(f"RecBole 1.2.1 has no {', '.join(unknown)}; choose from {', '.join(PEER_MODELS)}")
    if args.seeds < 2:
        raise UserError(f"--seeds must be at least 2 (a paired interval needs two), got {args.seeds}")
    seeds = tuple(range(args.seed, args.seed + args.seeds))
    version = check_recbole_python(args.recbole_python)
    if version != "1.2.1":
        raise UserError(f"--recbole-python has RecBole {version}; the peer table is defined on 1.2.1")
    spec = PeerSpec(models, seeds, args.recbole_python, Path(args.runs_dir), args.jobs)
    configs = _our_configs(args, models, seeds)
    plan = Plan(spec.runs_dir)
    keys = {ms: plan.add(config, f"{ms[0]}-binary-fp32-s{ms[1]}") for ms, config in configs.items()}
    run_plan(plan, jobs=args.jobs)
    ours = {ms: plan.metrics(key) for ms, key in keys.items()}
    tasks = []
    for seed in seeds:
        data_configs = {configs[(m, seed)].data for m in models}
        if len(data_configs) != 1:
            raise RuntimeError(f"seed {seed}: the architectures' runs are on different data settings")
        data = load_dataset(data_configs.pop())
        digest = split_hash(data)
        split_dir = spec.runs_dir / "peers" / f"split-s{seed}-{digest[:12]}"
        counts = write_benchmark_files(data, split_dir)
        for model in models:
            if ours[(model, seed)].get("split_hash") != digest:
                raise RuntimeError(f"our {model} run of seed {seed} is on other test rows than the files written")
            train = configs[(model, seed)].train
            settings = {"epochs": train.epochs, "patience": train.patience, "batch_size": train.batch_size}
            tasks.append({"model": model, "seed": seed, "lr": train.lr, "settings": settings, "rows": counts,
                          "split_dir": split_dir, "key": recbole_key(model, seed, train.lr, settings, digest)})
    theirs = recbole_runs(spec, tasks)
    rows = peer_rows(models, seeds, ours, theirs)
    first = configs[(models[0], seeds[0])]
    results = {"provenance": provenance(), "recbole": version, "models": list(models), "seeds": list(seeds),
               "settings": {"dataset": first.data.dataset, "k_core": first.data.k_core, "epochs": first.train.epochs,
                            "patience": first.train.patience, "batch_size": first.train.batch_size,
                            "precision": "fp32", "lr": {m: configs[(m, seeds[0])].train.lr for m in models}},
               "rows": rows, "verdicts": verdicts(rows), "command": args.command_line}
    write_report(results, Path(args.out), render_peers, lambda results, out: None)
    print(f"wrote {args.out}/report.md")
    return 0


def render_peers(results: dict) -> str:
    from ratingctr.tables import fmt, md_table, p_value, pm
    from ratingctr.training.experiments.provenance import provenance_line
    from ratingctr.training.experiments.stats import diff_ci

    s = results["settings"]
    lines = [f"# Our binary head against RecBole {results['recbole']} on the same split", "",
             f"`{results['command']}`", "",
             f"{s['dataset']}, k-core {s['k_core']}, seeds {', '.join(map(str, results['seeds']))}: per seed one "
             f"random 80/10/10 split, written as RecBole's pre-split files, so both implementations train, validate "
             f"and test on the same rows with the same user and item features (RecBole's loaded row counts are "
             f"checked against ours).  Both: binary click label (rating ≥ 4), Adam at each model's learning rate, "
             f"batch {s['batch_size']}, embedding 16, the same architecture hyper-parameters, at most "
             f"{s['epochs']} epochs, stop after {s['patience']} epochs without a higher validation AUC, test on "
             f"the best epoch's weights; fp32 on both sides (RecBole has no mixed precision on CPU).", "",
             provenance_line(results), "",
             "Difference = ours − RecBole, paired by seed; 95% t interval; p of the paired t-test; Holm over "
             "the architectures per metric.  Lower logloss is better.", ""]
    headers = ["model", "ours AUC", "RecBole AUC", "Δ AUC [95% CI]", "p", "Holm p",
               "ours logloss", "RecBole logloss", "Δ logloss [95% CI]", "Holm p", "epochs ours / RecBole"]
    body = []
    for r in results["rows"]:
        a, l = r["auc"], r["logloss"]
        body.append([r["model"], pm(*a["ours"]), pm(*a["recbole"]), diff_ci(a["diff"]), p_value(a["diff"]["p_value"]),
                     p_value(a["diff"]["holm_p"]), pm(*l["ours"]), pm(*l["recbole"]), diff_ci(l["diff"]),
                     p_value(l["diff"]["holm_p"]),
                     f"{fmt(float(np.mean(r['epochs']['ours'])), 1)} / {fmt(float(np.mean(r['epochs']['recbole'])), 1)}"])
    lines += [md_table(headers, body), "", "## Against the target (our AUC not lower beyond its interval)", ""]
    lines += [f"* {v}" for v in results["verdicts"]]
    return "\n".join(lines) + "\n"
