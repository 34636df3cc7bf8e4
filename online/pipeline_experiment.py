"""``ratingctr experiment pipeline``: the served top-K of several rankers and both heads, over seeds.

Why: ``evaluate-bundle`` judges one set of bundles on one split; whether the ranker
improves on the retriever's own order, and whether the rating head changes what users
receive, is a claim about the method, which needs seeds.  Per seed s the split, the
retriever and every ranker use seed s (the retriever is trained on the rankers' own split,
so no test edge enters its graph); each (model, head) is trained, exported with that
retriever and judged with ``evaluate-bundle``'s code on the same users.

Cached and resumable: a step whose output exists and still matches what this code would
produce (a retriever trained with the same ``RetrieverConfig``, a bundle exported with this
retriever and retriever weight, an evaluation of exactly these bundle versions) is not redone,
so an interrupted run continues and a changed default never reuses a stale step.

The served order is log p̂ + w × retriever score (``bundle.RankingInfo``) with w fixed at 1
before looking at any result (the product P(rated) · P(click | rated)); every seed is also
evaluated on its validation split over a grid of w, and the report gives the w validation
would choose and its test NDCG, so whether the fixed choice is near the best is measured.
"""
from __future__ import annotations

import json
import math
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ratingctr.errors import UserError
from ratingctr.report_files import short_commit, write_report
from ratingctr.tables import md_table

PRIMARY = "10"
HEADS = ("binary", "rating")


@dataclass(frozen=True)
class PipelineConfig:
    models: tuple[str, ...] = ("DCNV2", "WideDeep", "AutoInt")
    seeds: tuple[int, ...] = (1, 2, 3, 4, 5)
    dataset: str = "ml-100k"
    data_dir: str | None = None
    candidates: int = 200
    sweep: tuple[int, ...] = (50, 100, 200, 500, 1000)
    latency_seconds: float = 10.0
    k_core: int = 10
    epochs: int | None = None  # None: each trainer's default budget (tests shorten it)
    retriever_weight: float = 1.0
    runs: Path = Path("runs/experiments/pipeline")
    out: Path = Path("reports/ml-100k/pipeline")


def _retriever(config: PipelineConfig, seed: int) -> Path:
    from ratingctr.training.config import DataConfig
    from ratingctr.training.retriever import RetrieverConfig, train_retriever

    from dataclasses import asdict

    run = config.runs / f"retriever-s{seed}"
    budget = {"epochs": config.epochs} if config.epochs else {}
    retriever_config = RetrieverConfig(seed=seed, progress=False, **budget)
    if _cached_config(run) != asdict(retriever_config):
        train_retriever(DataConfig(dataset=config.dataset, data_dir=config.data_dir, k_core=config.k_core, seed=seed),
                        retriever_config, run)
    return run


def _cached_config(run: Path) -> dict | None:
    try:
        return json.loads((run / "metrics.json").read_text())["config"]
    except (OSError, KeyError, ValueError):
        return None


def _cached_manifest(bundle: Path):
    from ratingctr.bundle import BundleError, read_manifest

    try:
        return read_manifest(bundle)
    except BundleError:
        return None


def _bundle(config: PipelineConfig, model: str, head: str, seed: int, retriever: Path) -> Path:
    from ratingctr.export.build import export_bundle
    from ratingctr.training.config import build_run_config
    from ratingctr.training.run import train_run

    run = config.runs / f"{model}-{head}-s{seed}"
    if not (run / "metrics.json").is_file():
        budget = {"epochs": config.epochs} if config.epochs else {}
        train_run(build_run_config({"model": model, "head": head, "dataset": config.dataset, "k_core": config.k_core,
                                    "data_dir": config.data_dir, "seed": seed, "progress": False, **budget}), run)
    bundle = config.runs / "bundles" / f"{model.lower()}-{head}-s{seed}"
    manifest = _cached_manifest(bundle)
    retriever_trained = (retriever / "metrics.json").stat().st_mtime
    if (manifest is None or manifest.ranking.retriever_weight != config.retriever_weight
            or (bundle / "manifest.json").stat().st_mtime < retriever_trained):
        export_bundle(run, retriever, bundle, retriever_weight=config.retriever_weight)
    return bundle


def _evaluate(config: PipelineConfig, model: str, seed: int, bundles: list[Path], latency: bool,
              split: str = "test") -> dict:
    from ratingctr.online.evaluate_bundle import EvaluateConfig, evaluate, write

    out = config.runs / "evaluations" / (f"{model}-s{seed}" if split == "test" else f"{model}-s{seed}-{split}")
    versions = [_cached_manifest(b).version for b in bundles]
    if (out / "results.json").is_file():
        cached = json.loads((out / "results.json").read_text())
        same = [b.get("version") for b in cached.get("bundles", [])] == versions and "weights" in cached
        if same and (not latency or any(k.startswith("latency ") for k in cached["sweep"][0])):
            return cached
    sweep = config.sweep if split == "test" else (config.candidates,)
    results = evaluate(EvaluateConfig(bundles=tuple(bundles), split=split, candidates=config.candidates, sweep=sweep,
                                      latency_seconds=config.latency_seconds if latency else 0.0))
    write(results, out)
    return results


def run_pipeline(config: PipelineConfig) -> dict:
    if not config.models or not config.seeds:
        raise UserError("--models and --seeds must name at least one each")
    evaluations: dict[str, dict[int, dict]] = {m: {} for m in config.models}
    validations: dict[str, dict[int, dict]] = {m: {} for m in config.models}
    for seed in config.seeds:
        retriever = _retriever(config, seed)
        for model in config.models:
            bundles = [_bundle(config, model, head, seed, retriever) for head in HEADS]
            latency = config.latency_seconds > 0 and seed == config.seeds[0] and model == config.models[0]
            evaluations[model][seed] = _evaluate(config, model, seed, bundles, latency)
            validations[model][seed] = _evaluate(config, model, seed, bundles, False, split="valid")
            print(f"seed {seed} {model}: evaluated", file=sys.stderr, flush=True)
    return summarise(config, evaluations, validations)


def _t_interval(values: list[float]) -> dict:
    """Mean over seeds with a t-based 95% interval (few seeds: the normal interval would be too narrow)."""
    from scipy import stats

    n = len(values)
    mean = statistics.fmean(values)
    if n < 2:
        return {"mean": mean, "low": math.nan, "high": math.nan, "n": n}
    half = stats.t.ppf(0.975, n - 1) * statistics.stdev(values) / math.sqrt(n)
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": n}


def _list_names(result: dict, candidates: int) -> dict[str, str]:
    by_head = {b["head"]: f"retriever + {b['name']} ({b['head']} head) @{candidates}" for b in result["bundles"]}
    return {"most popular": "most popular (unseen)", "retriever order": "retriever order",
            "+ binary-head ranker": by_head["binary"], "+ rating-head ranker": by_head["rating"]}


def _weight_study(test: dict[int, dict], valid: dict[int, dict]) -> dict:
    """Per head: NDCG@10 at every swept w on test and validation (mean over seeds), the w with the
    best mean validation NDCG@10, and test NDCG@10 at that w (a t-interval over seeds)."""
    out = {}
    for head in HEADS:
        def at(results: dict, weight: float) -> float:
            name = next(b["name"] for b in results["bundles"] if b["head"] == head)
            row = next(r for r in results["weights"] if r["weight"] == weight)
            return row[f"ndcg@{PRIMARY} {name}"]

        weights = [r["weight"] for r in next(iter(test.values()))["weights"]]
        valid_mean = {w: statistics.fmean(at(r, w) for r in valid.values()) for w in weights}
        chosen = max(weights, key=lambda w: (valid_mean[w], -w))
        out[head] = {"weights": weights, "valid": [valid_mean[w] for w in weights],
                     "test": [statistics.fmean(at(r, w) for r in test.values()) for w in weights],
                     "chosen": chosen, "test_at_chosen": _t_interval([at(r, chosen) for r in test.values()])}
    return out


def _sweep_over_runs(evaluations: dict[str, dict[int, dict]]) -> list[dict]:
    """Per candidate count: retriever recall@N and final NDCG@10 per head, each a t-interval over
    every (model, seed) evaluation, so the default candidate count rests on all of them, not one."""
    runs = [r for per_seed in evaluations.values() for r in per_seed.values()]
    rows = []
    for n in sorted({row["candidates"] for r in runs for row in r["sweep"]}):
        at = [(r, next(row for row in r["sweep"] if row["candidates"] == n)) for r in runs
              if any(row["candidates"] == n for row in r["sweep"])]
        out = {"candidates": n, "runs": len(at), "retriever_recall": _t_interval([row["retriever_recall"] for _, row in at])}
        for head in HEADS:
            out[f"ndcg@{PRIMARY} {head}"] = _t_interval(
                [row[f"ndcg@{PRIMARY} {next(b['name'] for b in r['bundles'] if b['head'] == head)}"] for r, row in at])
        rows.append(out)
    return rows


def summarise(config: PipelineConfig, evaluations: dict[str, dict[int, dict]],
              validations: dict[str, dict[int, dict]] | None = None) -> dict:
    table, differences, weights = {}, {}, {}
    for model, per_seed in evaluations.items():
        rows = {}
        for label in ("most popular", "retriever order", "+ binary-head ranker", "+ rating-head ranker"):
            rows[label] = {}
            for k in ("5", "10", "20"):
                for metric in ("ndcg", "recall", "hit", "mrr"):
                    values = [r["lists"][_list_names(r, config.candidates)[label]][k][metric]["mean"]
                              for r in per_seed.values()]
                    rows[label][f"{metric}@{k}"] = _t_interval(values)
            rows[label]["coverage@10"] = _t_interval(
                [r["lists"][_list_names(r, config.candidates)[label]][PRIMARY]["coverage"] for r in per_seed.values()])
        table[model] = rows
        if validations:
            weights[model] = _weight_study(per_seed, validations[model])
        diff = [r["comparisons"]["rating head − binary head"] for r in per_seed.values()]
        differences[model] = {"per_seed": diff, "seeds": _t_interval([d["mean"] for d in diff]),
                              "ranker_minus_retriever": {
                                  head: _t_interval([
                                      r["lists"][_list_names(r, config.candidates)[f"+ {head}-head ranker"]][PRIMARY]
                                      ["ndcg"]["mean"] - r["lists"]["retriever order"][PRIMARY]["ndcg"]["mean"]
                                      for r in per_seed.values()]) for head in HEADS},
                              "ranker_minus_popular": {
                                  head: _t_interval([
                                      r["lists"][_list_names(r, config.candidates)[f"+ {head}-head ranker"]][PRIMARY]
                                      ["ndcg"]["mean"] - r["lists"]["most popular (unseen)"][PRIMARY]["ndcg"]["mean"]
                                      for r in per_seed.values()]) for head in HEADS}}
    first = evaluations[config.models[0]][config.seeds[0]]
    return {"config": {"models": list(config.models), "seeds": list(config.seeds), "dataset": config.dataset,
                       "candidates": config.candidates, "sweep": list(config.sweep),
                       "latency_seconds": config.latency_seconds, "retriever_weight": config.retriever_weight},
            "table": table, "differences": differences, "weights": weights, "sweep": first["sweep"],
            "sweep_over_runs": _sweep_over_runs(evaluations),
            "sweep_from": f"{config.models[0]}, seed {config.seeds[0]}",
            "users": {m: [r["users"] for r in per.values()] for m, per in evaluations.items()},
            "commit": short_commit(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "command": " ".join(["ratingctr", *sys.argv[1:]])}



def _ci(m: dict, digits: int = 4) -> str:
    if math.isnan(m["low"]):
        return f"{m['mean']:.{digits}f}"
    return f"{m['mean']:.{digits}f} [{m['low']:.{digits}f}, {m['high']:.{digits}f}]"


def render(results: dict) -> str:
    c = results["config"]
    lines = [f"# End-to-end pipeline on {c['dataset']}: what users receive, per ranker and head", "",
             f"Commit `{results['commit']}`, {results['date']}.  Reproduce with:", "", "```", results["command"],
             "```", "",
             f"Seeds {', '.join(map(str, c['seeds']))}: each seed fixes the split, the retriever and every ranker. "
             f"Every list comes from the gateway's serving code (`evaluate-bundle`): {c['candidates']} FAISS "
             f"candidates minus the user's train + validation items, ranked by log p̂ + w × retriever score "
             f"(w = {c.get('retriever_weight', 0):g}, the bundles' `ranking.retriever_weight`), top-K, judged against the "
             f"user's clicked test items over the full catalogue.  Means over seeds with t-based 95% intervals "
             f"(each seed's value is a mean over its users: {', '.join(f'{m} {u}' for m, u in results['users'].items())} "
             f"users).", ""]
    for model, rows in results["table"].items():
        lines += [f"## {model}", "",
                  md_table(["list", "NDCG@10", "Recall@10", "HitRate@10", "MRR@10", "NDCG@5", "NDCG@20",
                            "Recall@20", "coverage@10"],
                           [[label, *[_ci(r[key]) for key in ("ndcg@10", "recall@10", "hit@10", "mrr@10", "ndcg@5",
                                                              "ndcg@20", "recall@20", "coverage@10")]]
                            for label, r in rows.items()]), ""]
    lines += ["## Differences in NDCG@10", "",
              "Seed-level: the mean over seeds of each seed's mean over users, with a t-interval over seeds. "
              "Per seed, the paired difference over users (rating − binary) and its paired t-test p.", "",
              md_table(["model", "ranker(binary) − retriever", "ranker(rating) − retriever",
                        "ranker(binary) − popular", "ranker(rating) − popular", "rating − binary",
                        "rating − binary per seed (p)"],
                       [[m, _ci(d["ranker_minus_retriever"]["binary"]), _ci(d["ranker_minus_retriever"]["rating"]),
                         _ci(d["ranker_minus_popular"]["binary"]), _ci(d["ranker_minus_popular"]["rating"]),
                         _ci(d["seeds"]), ", ".join(f"{x['mean']:+.4f} ({x['p']:.2g})" for x in d["per_seed"])]
                        for m, d in results["differences"].items()]), "",
              f"## Candidate count ({results['sweep_from']})", "",
              "Retriever recall@N = share of a user's clicked test items among the N candidates; final NDCG@10; "
              "`/v1/recommend` p50 at one client against a gateway started with `RATINGCTR_CANDIDATES=N`.", ""]
    sweep = results["sweep"]
    names = [k.removeprefix("ndcg@10 ") for k in sweep[0] if k.startswith("ndcg@10 ")]
    lines.append(md_table(
        ["N", "retriever recall@N", *[f"NDCG@10 {n}" for n in names], *[f"p50 ms {n}" for n in names]],
        [[r["candidates"], f"{r['retriever_recall']:.4f}", *[f"{r[f'ndcg@10 {n}']:.4f}" for n in names],
          *[f"{r[f'latency {n}']['p50_ms']:.2f}" if f"latency {n}" in r else "" for n in names]] for r in sweep]))
    if results.get("sweep_over_runs"):
        over = results["sweep_over_runs"]
        lines += ["", f"Over every model and seed ({over[0]['runs']} evaluations per N; t-intervals over them):", "",
                  md_table(["N", "retriever recall@N", *[f"NDCG@10 {h} head" for h in HEADS]],
                           [[r["candidates"], _ci(r["retriever_recall"]), *[_ci(r[f"ndcg@10 {h}"]) for h in HEADS]]
                            for r in over])]
    if results.get("weights"):
        lines += ["", "## Retriever weight w of the served order", "",
                  "NDCG@10 (mean over seeds) when the 200 candidates are ordered by log p̂ + w × retriever score; "
                  "w = 0 is p̂ alone.  Validation = each seed's validation split (train items masked), test as above. "
                  "The chosen w maximises mean validation NDCG@10; the served bundles use the fixed w above.", ""]
        rows = []
        for model, heads in results["weights"].items():
            for head, study in heads.items():
                rows.append([model, head, *[f"{v:.4f} / {t:.4f}" for v, t in zip(study["valid"], study["test"])],
                             f"{study['chosen']:g}", _ci(study["test_at_chosen"])])
        weights = next(iter(next(iter(results["weights"].values())).values()))["weights"]
        lines.append(md_table(["model", "head", *[f"w={w:g} valid / test" for w in weights], "chosen w (valid)",
                               "test NDCG@10 at chosen w"], rows))
    return "\n".join(lines) + "\n"


def plot(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(results["table"])
    fig, axes = plt.subplots(1, len(models), figsize=(4.5 * len(models), 3.6), sharey=True, squeeze=False)
    for ax, model in zip(axes[0], models):
        for label, row in results["table"][model].items():
            ax.plot([5, 10, 20], [row[f"ndcg@{k}"]["mean"] for k in (5, 10, 20)], marker="o", label=label)
        ax.set_title(model)
        ax.set_xlabel("K")
    axes[0][0].set_ylabel("NDCG@K (mean over seeds)")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "ndcg_vs_k.png", dpi=120)
    plt.close(fig)
    sweep = results["sweep"]
    names = [k.removeprefix("ndcg@10 ") for k in sweep[0] if k.startswith("ndcg@10 ")]
    ns = [r["candidates"] for r in sweep]
    fig, ax = plt.subplots(figsize=(6, 4))
    for n in names:
        ax.plot(ns, [r[f"ndcg@10 {n}"] for r in sweep], marker="o", label=f"NDCG@10 {n}")
    ax.set_xscale("log")
    ax.set_xlabel("candidates N")
    ax.set_ylabel("NDCG@10")
    ax.legend(fontsize=7, loc="upper left")
    if any(f"latency {n}" in r for r in sweep for n in names):
        twin = ax.twinx()
        for n in names:
            twin.plot(ns, [r[f"latency {n}"]["p50_ms"] for r in sweep], linestyle="--", marker="x",
                      label=f"p50 ms {n}")
        twin.set_ylabel("/v1/recommend p50 ms (1 client)")
        twin.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(out / "ndcg_vs_candidates.png", dpi=120)
    plt.close(fig)


def write(results: dict, out: Path) -> None:
    write_report(results, out, render, plot)
