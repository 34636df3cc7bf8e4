"""``ratingctr evaluate-bundle``: what ``/v1/recommend`` returns, judged against what users rated next.

Why through the serving modules: the ranker's AUC and the retriever's Recall@20 each
describe a part; the product is FAISS's candidates minus seen items, ranked by p̂, cut to
K.  So every list here comes from ``serving.ranker.Ranker`` — ``retrieve`` (FAISS search,
seen filter), ``rank`` (ONNX Runtime, top-K by p̂), ``popular_items`` — the same methods a
request runs, minus HTTP and Redis.  The user row is the bundle's own (what Redis holds
after the bulk load); the seen set is the user's train + validation items, so test items
stay recommendable (the bundle's own history holds every split: the gateway must never
re-recommend an item a user rated, but an evaluation must be able to).

Relevant = test items the user clicked (rating ≥ the bundle's threshold); users without
one are not evaluated.  Several bundles are judged on the same users and must come from
the same data (same user and item vocabularies).  ``--latency-seconds`` also starts a real
gateway per candidate count and measures ``/v1/recommend`` at one client over loopback.
"""
from __future__ import annotations

import http.client
import json
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ratingctr.errors import UserError
from ratingctr.online.served_quality import METRICS, Relevant, pad, paired, summarise
from ratingctr.report_files import short_commit, write_report
from ratingctr.tables import md_table

KS = (5, 10, 20)
CANDIDATE_SWEEP = (50, 100, 200, 500, 1000)
#: retriever weights of the served order (``RankingInfo``) judged beside the bundle's own
WEIGHT_SWEEP = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
PRIMARY_K = 10


@dataclass(frozen=True)
class EvaluateConfig:
    bundles: tuple[Path, ...]
    split: str = "test"
    data_dir: str | None = None
    ranker_run: Path | None = None
    candidates: int = 50  # the gateway's default (serving.ranker.DEFAULT_CANDIDATES; a test ties them)
    sweep: tuple[int, ...] = CANDIDATE_SWEEP
    weights: tuple[float, ...] = WEIGHT_SWEEP
    latency_seconds: float = 0.0
    max_users: int = 0
    out: Path | None = None


@dataclass
class Served:
    """The evaluation's users and, per list name, their ``[users, K]`` item lists."""

    relevant: Relevant
    n_items: int
    train_clicks: np.ndarray
    lists: dict[str, np.ndarray] = field(default_factory=dict)
    retrieved: dict[int, np.ndarray] = field(default_factory=dict)  # candidate count -> [users, N]


def _load_rankers(paths: tuple[Path, ...], candidates: int):
    from ratingctr.bundle import BundleError
    from ratingctr.serving.ranker import load_ranker

    rankers = []
    for path in paths:
        try:
            rankers.append(load_ranker(path, candidates=candidates, warmup_calls=0))
        except BundleError as exc:
            raise UserError(str(exc)) from exc
    first = rankers[0]
    for other in rankers[1:]:
        if other.user_ids != first.user_ids or other.item_ids != first.item_ids:
            raise UserError(f"{other.path} and {first.path} were trained on different data (their user or item "
                            f"vocabularies differ): they cannot be judged on the same users")
    return rankers


def _load_data(ranker, config: EvaluateConfig):
    """The encoded data of the bundle's ranker run (its own split), checked against the bundle."""
    from dataclasses import replace

    from ratingctr.training.config import RunConfig
    from ratingctr.training.data.stored import load_run_data

    run = config.ranker_run or Path(ranker.manifest.source.ranker)
    try:
        run_metrics = json.loads((run / "metrics.json").read_text())
        run_config = RunConfig.from_dict(run_metrics["config"])
    except (OSError, KeyError, ValueError) as exc:
        raise UserError(f"cannot read the ranker run's configuration from {run}/metrics.json ({exc}); "
                        f"pass --ranker-run RUN_DIR") from exc
    exported = ranker.manifest.metrics.get("ranker", {}).get("test")
    if exported is not None and run_metrics.get("test") != exported:
        # same vocabularies but another split or seed: its test rows may be the bundle's training rows
        raise UserError(f"{run} is not the run bundle {ranker.path} was exported from (their test metrics "
                        f"differ); pass the bundle's own ranker run")
    data_config = run_config.data if config.data_dir is None else replace(run_config.data, data_dir=config.data_dir)
    data, _ = load_run_data(run, data_config)
    if data.vocab["item_id"] != ranker.item_ids or data.vocab["user_id"] != ranker.user_ids:
        raise UserError(f"the data of {run} does not match bundle {ranker.path} (vocabularies differ)")
    return data


def serve_lists(rankers: list, data, config: EvaluateConfig) -> Served:
    """Run the serving path for every evaluated user: popular, retriever order, and each ranker at
    every candidate count of the sweep (and at ``config.candidates``)."""
    from ratingctr.export.build import history_csr
    from ratingctr.serving.ranker import top_k
    from ratingctr.training.data.encode import TEST, TRAIN, VALID

    parts = {"test": TEST, "valid": VALID}
    if config.split not in parts:
        raise UserError(f"--split must be test or valid, got {config.split!r}")
    target = data.rows(parts[config.split])
    target = target[data.rating[target] >= data.threshold]
    known = np.concatenate([data.rows(TRAIN), data.rows(VALID)]) if config.split == "test" else data.rows(TRAIN)
    relevant = Relevant.of(data.user[target], data.item[target], data.n_items)
    if config.max_users and relevant.users.size > config.max_users:
        keep = np.sort(np.random.default_rng(0).choice(relevant.users.size, config.max_users, replace=False))
        mask = np.isin(data.user[target], relevant.users[keep])
        relevant = Relevant.of(data.user[target][mask], data.item[target][mask], data.n_items)
    if relevant.users.size == 0:
        raise UserError(f"no user has a clicked {config.split} item: nothing to evaluate")
    indptr, seen_items = history_csr(data, known)
    train = data.rows(TRAIN)
    clicked = train[data.rating[train] >= data.threshold]
    served = Served(relevant, data.n_items, np.bincount(data.item[clicked], minlength=data.n_items + 1))
    kmax = max(KS)
    counts = sorted({*config.sweep, config.candidates})
    popular, retriever = [], []
    ranked: dict[tuple[int, int], list[np.ndarray]] = {(b, n): [] for b in range(len(rankers)) for n in counts}
    weighted: dict[tuple[int, float], list[np.ndarray]] = {(b, w): [] for b in range(len(rankers))
                                                           for w in config.weights}
    retrieved: dict[int, list[np.ndarray]] = {n: [] for n in counts}
    first = rankers[0]
    # bundles exported with the same retriever (both heads of one run) share its candidates
    shares = [_same_retriever(first, ranker) for ranker in rankers]
    for user in relevant.users.tolist():
        seen = seen_items[indptr[user]:indptr[user + 1]]
        popular.append(first.popular_items(seen, kmax))
        for n in counts:
            candidates = first.retrieve(user, seen, n)
            retrieved[n].append(candidates)
            for b, ranker in enumerate(rankers):
                items = candidates if shares[b] else ranker.retrieve(user, seen, n)
                k = min(kmax, len(items))
                if n != config.candidates or not config.weights or not k:
                    ranked[(b, n)].append(ranker.rank(ranker.user_fields[user], items, k, {}, user, seen).items
                                          if k else items)
                    for w in config.weights if n == config.candidates else ():
                        weighted[(b, w)].append(items)
                    continue
                # the served count: score once, then the bundle's own order (what rank() returns) and the sweep's
                p = ranker.score(ranker.user_fields[user], items)["p_click"]
                ranked[(b, n)].append(ranker.rank(ranker.user_fields[user], items, k, {}, user, seen).items
                                      if ranker.fresh_slots else items[top_k(ranker.order_scores(user, items, p), k)])
                for w in config.weights:
                    weighted[(b, w)].append(items[top_k(ranker.order_scores(user, items, p, w), k)])
        retriever.append(retrieved[config.candidates][-1][:kmax])
    served.lists["most popular (unseen)"] = pad(popular, kmax)
    served.lists["retriever order"] = pad(retriever, kmax)
    for b, ranker in enumerate(rankers):
        for n in counts:
            served.lists[_ranked_name(ranker, n)] = pad(ranked[(b, n)], kmax)
        for w in config.weights:
            served.lists[_weighted_name(ranker, w)] = pad(weighted[(b, w)], kmax)
    served.retrieved = {n: pad(rows, n) for n, rows in retrieved.items()}
    return served


def _same_retriever(a, b) -> bool:
    """Whether two bundles hold the same FAISS index and user vectors (so the same candidates)."""
    files = ("items.faiss", "user_vectors.npy")
    return all(a.manifest.files[f].sha256 == b.manifest.files[f].sha256 for f in files)


def _ranked_name(ranker, candidates: int) -> str:
    return f"retriever + {ranker.name} ({ranker.manifest.model.head} head) @{candidates}"


def _weighted_name(ranker, weight: float) -> str:
    return f"retriever + {ranker.name} ({ranker.manifest.model.head} head) weight {weight:g}"


def _latency(bundle: Path, users: list[str], candidates: int, seconds: float) -> dict:
    """``/v1/recommend`` at one client over loopback, keep-alive, against a gateway started with
    ``RATINGCTR_CANDIDATES=candidates``: p50/p99 in ms after a one-second warm-up."""
    from ratingctr.serving.process import running_gateway

    bodies = [json.dumps({"user_id": u, "k": PRIMARY_K}).encode() for u in users]
    with running_gateway({"main": bundle}, env={"RATINGCTR_CANDIDATES": str(candidates)}) as gateway:
        host, port = gateway.url.removeprefix("http://").rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        times: list[float] = []
        warm_until = time.monotonic() + 1.0
        stop = warm_until + seconds
        i = 0
        while (now := time.monotonic()) < stop:
            start = time.perf_counter()
            conn.request("POST", "/v1/recommend", body=bodies[i % len(bodies)],
                         headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise UserError(f"/v1/recommend answered {response.status} during the latency sweep")
            if now >= warm_until:
                times.append((time.perf_counter() - start) * 1000)
            i += 1
        conn.close()
    values = np.asarray(times)
    return {"requests": int(values.size), "p50_ms": float(np.percentile(values, 50)),
            "p99_ms": float(np.percentile(values, 99))}



def evaluate(config: EvaluateConfig) -> dict:
    if not config.bundles:
        raise UserError("name at least one bundle")
    if any(n < max(KS) for n in (*config.sweep, config.candidates)):
        raise UserError(f"candidate counts must be at least {max(KS)} (the largest K)")
    rankers = _load_rankers(config.bundles, config.candidates)
    data = _load_data(rankers[0], config)
    started = time.perf_counter()
    served = serve_lists(rankers, data, config)
    seconds = time.perf_counter() - started
    summaries = {name: summarise(lists, served.relevant, KS, served.n_items, served.train_clicks)
                 for name, lists in served.lists.items()}
    default = [_ranked_name(r, config.candidates) for r in rankers]
    baselines = ["most popular (unseen)", "retriever order"]
    comparisons = {}
    for name in default:
        for base in baselines:
            comparisons[f"{name} − {base}"] = paired(summaries[name]["per_user"][PRIMARY_K]["ndcg"],
                                                     summaries[base]["per_user"][PRIMARY_K]["ndcg"])
    heads = {r.manifest.model.head: _ranked_name(r, config.candidates) for r in rankers}
    if {"rating", "binary"} <= set(heads):
        comparisons["rating head − binary head"] = paired(
            summaries[heads["rating"]]["per_user"][PRIMARY_K]["ndcg"],
            summaries[heads["binary"]]["per_user"][PRIMARY_K]["ndcg"])
    sweep = []
    user_ids = [rankers[0].user_ids[u] for u in served.relevant.users[:200].tolist()]
    for n in sorted({*config.sweep, config.candidates}):
        hits = served.relevant.hits(served.retrieved[n]).sum(axis=1)
        row = {"candidates": n, "retriever_recall": float((hits / served.relevant.counts).mean())}
        for r in rankers:
            row[f"ndcg@{PRIMARY_K} {r.name}"] = summaries[_ranked_name(r, n)]["metrics"][PRIMARY_K]["ndcg"]["mean"]
            if config.latency_seconds > 0:
                row[f"latency {r.name}"] = _latency(r.path, user_ids, n, config.latency_seconds)
                print(f"candidates {n} {r.name}: /v1/recommend p50 {row[f'latency {r.name}']['p50_ms']:.2f} ms",
                      file=sys.stderr)
        sweep.append(row)
    weights = [{"weight": w, **{f"ndcg@{PRIMARY_K} {r.name}": summaries[_weighted_name(r, w)]["metrics"][PRIMARY_K]
                                ["ndcg"]["mean"] for r in rankers}} for w in config.weights]
    return {
        "command": "ratingctr " + " ".join(sys.argv[1:]) if sys.argv and sys.argv[0].endswith("ratingctr")
        else "ratingctr evaluate-bundle " + " ".join(str(b) for b in config.bundles),
        "commit": short_commit(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "python": platform.python_version(), "split": config.split, "users": int(served.relevant.users.size),
        "relevant_per_user": float(statistics.fmean(served.relevant.counts.tolist())),
        "catalogue": served.n_items, "candidates": config.candidates, "serving_seconds": seconds,
        "bundles": [{"path": str(r.path), "name": r.name, "version": r.version, "arch": r.manifest.model.arch,
                     "head": r.manifest.model.head} for r in rankers],
        "lists": {name: {str(k): m for k, m in s["metrics"].items()} for name, s in summaries.items()},
        "comparisons": comparisons, "sweep": sweep, "weights": weights,
        "retriever_weight": {r.name: r.retriever_weight for r in rankers},
    }


def _fmt(m: dict) -> str:
    return f"{m['mean']:.4f} [{m['low']:.4f}, {m['high']:.4f}]"


def render(results: dict) -> str:
    c = results["candidates"]
    main = [n for n in results["lists"] if not n.startswith("retriever + ") or n.endswith(f"@{c}")]
    served_weights = ", ".join(f"{n} {w:g}" for n, w in results.get("retriever_weight", {}).items())
    lines = [f"# End-to-end quality of the served top-K ({results['split']} split)", "",
             f"Commit `{results['commit']}`, {results['date']}.  Reproduce with:", "", "```", results["command"],
             "```", "",
             f"{results['users']} users with at least one clicked {results['split']} item "
             f"({results['relevant_per_user']:.2f} per user on average), full catalogue of {results['catalogue']} "
             f"items, {c} candidates.  Every list is produced by the gateway's own code path "
             f"(`serving.ranker.Ranker`: FAISS retrieval, seen filter over train + validation items, ONNX "
             f"scoring, top-K by log p̂ + w × retriever score with each bundle's own w: "
             f"{served_weights}).  Means over users with 95% intervals.", ""]
    for k in (PRIMARY_K, *[k for k in KS if k != PRIMARY_K]):
        lines += [f"## K = {k}", "",
                  md_table(["list", *[f"{m.upper() if m != 'hit' else 'HitRate'}@{k}" for m in METRICS],
                            "coverage", "mean training clicks"],
                           [[n, *[_fmt(_metric(results, n, k)[m]) for m in METRICS],
                             f"{_metric(results, n, k)['coverage']:.3f}",
                             f"{_metric(results, n, k)['popularity']:.1f}"] for n in main]), ""]
    lines += [f"## Paired differences in NDCG@{PRIMARY_K} (same users)", "",
              md_table(["difference", "mean [95% CI]", "paired t p", "users better / worse"],
                       [[name, _fmt(d), f"{d['p']:.2g}", f"{d['users_better']} / {d['users_worse']}"]
                        for name, d in results["comparisons"].items()]), "",
              "## Candidate count", "",
              "Retriever recall at N = share of a user's relevant items among the N candidates; "
              f"NDCG@{PRIMARY_K} of the final list; latency: `/v1/recommend` at one client over loopback "
              "against a gateway started with `RATINGCTR_CANDIDATES=N` (empty when not measured).", ""]
    names = [b["name"] for b in results["bundles"]]
    lines.append(md_table(
        ["N", "retriever recall@N", *[f"NDCG@{PRIMARY_K} {n}" for n in names],
         *[f"p50 ms {n}" for n in names]],
        [[r["candidates"], f"{r['retriever_recall']:.4f}", *[f"{r[f'ndcg@{PRIMARY_K} {n}']:.4f}" for n in names],
          *[f"{r[f'latency {n}']['p50_ms']:.2f}" if f"latency {n}" in r else "" for n in names]]
         for r in results["sweep"]]))
    if results.get("weights"):
        lines += ["", "## Retriever weight of the served order", "",
                  f"NDCG@{PRIMARY_K} at {c} candidates when the order is log p̂ + w × retriever score "
                  "(w = 0: p̂ alone; each bundle serves its manifest's `ranking.retriever_weight`).", "",
                  md_table(["w", *[f"NDCG@{PRIMARY_K} {n}" for n in names]],
                           [[f"{r['weight']:g}", *[f"{r[f'ndcg@{PRIMARY_K} {n}']:.4f}" for n in names]]
                            for r in results["weights"]])]
    return "\n".join(lines) + "\n"


def _metric(results: dict, name: str, k: int) -> dict:
    return results["lists"][name][str(k)]


def plot(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = results["candidates"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for name in results["lists"]:
        if name.startswith("retriever + ") and not name.endswith(f"@{c}"):  # sweeps: other plots
            continue
        ax.plot(KS, [_metric(results, name, k)["ndcg"]["mean"] for k in KS], marker="o", label=name)
    ax.set_xlabel("K")
    ax.set_ylabel("NDCG@K")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "metric_vs_k.png", dpi=120)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 4))
    ns = [r["candidates"] for r in results["sweep"]]
    for b in results["bundles"]:
        ax.plot(ns, [r[f"ndcg@{PRIMARY_K} {b['name']}"] for r in results["sweep"]], marker="o",
                label=f"NDCG@{PRIMARY_K} {b['name']}")
    ax.set_xscale("log")
    ax.set_xlabel("candidates N")
    ax.set_ylabel(f"NDCG@{PRIMARY_K}")
    if any(f"latency {b['name']}" in r for r in results["sweep"] for b in results["bundles"]):
        twin = ax.twinx()
        for b in results["bundles"]:
            twin.plot(ns, [r[f"latency {b['name']}"]["p50_ms"] for r in results["sweep"]], linestyle="--",
                      marker="x", label=f"p50 ms {b['name']}")
        twin.set_ylabel("/v1/recommend p50 ms (1 client)")
        twin.legend(fontsize=7, loc="lower right")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(out / "metric_vs_candidates.png", dpi=120)
    plt.close(fig)


def write(results: dict, out: Path) -> None:
    write_report(results, out, render, plot)
