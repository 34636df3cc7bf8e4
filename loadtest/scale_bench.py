"""``ratingctr bench scale``: every stage's cost against the number of ratings, on this machine.

Each point is a synthetic dataset (``ratingctr data synth``) with MovieLens-25M's shape
(≈154 ratings per user, ≈423 per item), taken through the real verbs as separate processes:
synthesise → train (one epoch, evaluation included, uni100 on a user sample) → train the
retriever (one epoch) → export → serve.  Each process's peak RSS comes from the kernel's
accounting of that child (``wait4``), its time from the wall clock; the training verbs' own
``metrics.json`` splits epoch and evaluation time.  The gateway is measured up: start-up to
ready (bundle load + Redis bulk load), its RSS, Redis memory per user, and ``/v1/recommend``
latency at one client.

Points are cached (``<work>/<ratings>/<stage>.json``): a killed bench resumes where it stopped,
and a size already measured is not measured again (``--fresh`` to redo).  The fitted exponent
per stage is the slope of log cost on log ratings over the measured sizes.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ratingctr.report_files import short_commit, write_report

RATINGS_PER_USER = 154  # MovieLens-25M: 25.0M ratings, 162k users, 59k items
RATINGS_PER_ITEM = 423
CLI = [sys.executable, "-c", "import sys; from ratingctr.cli import main; sys.exit(main())"]


@dataclass(frozen=True)
class ScaleBenchConfig:
    ratings: tuple[int, ...] = (1_000_000, 5_000_000, 25_000_000)
    # extra catalogue points, (ratings, items): a large catalogue at a given number of ratings,
    # k-core 1 so that rarely rated items stay in it (``--ratings 10M:1M``)
    catalogues: tuple[tuple[int, int], ...] = ()
    # the retriever batch at catalogue points: they measure serving a large catalogue, and one
    # epoch of ~1,000 full-graph steps over a million item rows would take most of an hour
    catalogue_retriever_batch: int = 32_768
    models: tuple[str, ...] = ("DCNV2",)
    heads: tuple[str, ...] = ("binary",)
    eval_users: int = 2000
    #: the training verb's --precision: ``auto`` (bf16 autocast where the CPU has it, as users train)
    #: or ``fp32``, the precision evaluation scores at, for a like-for-like rows/s comparison
    precision: str = "auto"
    requests: int = 500
    seed: int = 0
    work: Path = Path("runs/scale")
    out: Path = Path("reports/scale")
    fresh: bool = False
    extra_train_args: tuple[str, ...] = field(default_factory=tuple)


def shape(ratings: int) -> tuple[int, int]:
    """(users, items) of a point with ``ratings`` ratings, in MovieLens-25M's proportions; small
    points get at least 4 × 154 items, so the matrix stays at most a quarter full."""
    return max(100, ratings // RATINGS_PER_USER), max(4 * RATINGS_PER_USER, ratings // RATINGS_PER_ITEM)


def run_measured(args: list[str], log: Path, env: dict[str, str] | None = None) -> dict:
    """Run one CLI process to completion: wall seconds and its own peak RSS (bytes, from wait4)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log, "wb") as out:
        proc = subprocess.Popen([*CLI, *args], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**os.environ, **(env or {})})
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    proc.returncode = code
    if code != 0:
        raise RuntimeError(f"`ratingctr {' '.join(args)}` failed ({code}); see {log}:\n"
                           f"{log.read_text(errors='replace')[-2000:]}")
    return {"seconds": seconds, "peak_rss_bytes": int(usage.ru_maxrss) * 1024}


def _cached(path: Path, fresh: bool, measure) -> dict:
    if path.exists() and not fresh:
        return json.loads(path.read_text())
    result = {**measure(), "commit": short_commit()}  # stages of one point may come from different runs
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    return result


def retriever_breakdown(metrics: dict) -> dict:
    """Split one retriever epoch's stage into its parts, from the run's ``metrics.json``.

    An epoch is ``steps_per_epoch`` BPR steps, each a full propagation over the graph, so its cost
    is steps × (cost of one step ∝ edges): the per-step time and the step count are reported
    apart, because the step count grows with the data only until ``max_batches_per_epoch`` caps
    it (``RetrieverConfig``), and the epoch exponent over a range that crosses the cap mixes the
    two regimes.  Runs written before the set-up and evaluation times were recorded give only
    the epoch and step figures."""
    epoch = float(metrics["epoch_seconds"][0])
    edges, batch = int(metrics["graph_edges"]), int(metrics["batch_size"])
    steps = int(metrics.get("steps_per_epoch") or -(-edges // batch))
    out = {"epoch_seconds": epoch, "steps_per_epoch": steps, "batch_size": batch, "graph_edges": edges,
           "step_ms": 1e3 * epoch / steps, "test_recall@20": metrics["test"].get("recall@20"),
           "popular_recall@20": metrics["popular"].get("recall@20")}
    if "setup_seconds" in metrics:
        out["setup_seconds"] = float(metrics["setup_seconds"])
        out["eval_seconds"] = float(sum(metrics["valid_seconds"])) + float(metrics["final_eval_seconds"])
    return out


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def measure_point(ratings: int, config: ScaleBenchConfig, items: int | None = None) -> dict:
    users, default_items = shape(ratings)
    k_core = 5 if items is None else 1
    items = default_items if items is None else items
    root = config.work / (str(ratings) if k_core == 5 else f"{ratings}-items-{items}")
    data = root / "data"
    stages: dict[str, dict] = {}

    def synth() -> dict:
        if data.exists():
            shutil.rmtree(data)
        result = run_measured(["data", "synth", "--users", str(users), "--items", str(items), "--ratings",
                               str(ratings), "--seed", str(config.seed), "--out", str(data)],
                              root / "logs" / "synth.log")
        return {**result, "bytes": _dir_bytes(data)}

    stages["synth"] = _cached(root / "synth.json", config.fresh, synth)
    data_args = ["--dataset", "atomic", "--data-dir", str(data), "--k-core", str(k_core)]
    suffix = "" if config.precision == "auto" else f"-{config.precision}"
    for model in config.models:
        for head in config.heads:
            name = f"train-{model}-{head}{suffix}"
            run = root / "runs" / f"{model}-{head}{suffix}"

            def train(run: Path = run, model: str = model, head: str = head, name: str = name) -> dict:
                result = run_measured(["train", *data_args, "--model", model, "--head", head, "--epochs", "1",
                                       "--eval-users", str(config.eval_users), "--precision", config.precision,
                                       "--no-progress", "--out", str(run),
                                       *config.extra_train_args], root / "logs" / f"{name}.log")
                metrics = json.loads((run / "metrics.json").read_text())
                train_rows = int(metrics["dataset"].get("train", 0)) or None
                epoch = float(metrics["epoch_seconds"][0])
                eval_rows = metrics.get("eval_rows")
                return {**result, "epoch_seconds": epoch, "eval_seconds": float(metrics["eval_seconds"]),
                        "eval_rows": eval_rows,
                        "eval_rows_per_s": eval_rows / float(metrics["eval_seconds"]) if eval_rows else None,
                        "rows_per_s": (train_rows / epoch) if train_rows else None, "train_rows": train_rows,
                        "other_seconds": result["seconds"] - epoch - float(metrics["eval_seconds"]),
                        "test_auc": metrics["test"]["auc"], "dataset": metrics["dataset"],
                        "precision": metrics.get("precision")}

            stages[name] = _cached(root / f"{name}.json", config.fresh, train)
    for cached in sorted(root.glob("train-*.json")):  # models measured by an earlier invocation stay in the report
        stages.setdefault(cached.stem, json.loads(cached.read_text()))
    retriever = root / "runs" / "retriever"

    batch_args = [] if k_core == 5 else ["--batch-size", str(config.catalogue_retriever_batch)]

    def train_retriever() -> dict:
        return run_measured(["train-retriever", *data_args, "--epochs", "1", "--min-epochs", "1", "--min-steps", "1",
                             *batch_args, "--no-progress", "--out", str(retriever)], root / "logs" / "retriever.log")

    stages["retriever"] = _cached(root / "retriever.json", config.fresh, train_retriever)
    if (retriever / "metrics.json").exists():  # also for a stage cached before the split was recorded
        stages["retriever"] = {**stages["retriever"],
                               **retriever_breakdown(json.loads((retriever / "metrics.json").read_text()))}
    bundle = root / "bundle"
    first_run = root / "runs" / f"{config.models[0]}-{config.heads[0]}{suffix}"

    def export() -> dict:
        if bundle.exists():
            shutil.rmtree(bundle)
        result = run_measured(["export", "--ranker", str(first_run), "--retriever", str(retriever), "--out",
                               str(bundle)], root / "logs" / "export.log")
        manifest = json.loads((bundle / "manifest.json").read_text())
        return {**result, "bundle_bytes": _dir_bytes(bundle), "index": manifest["retriever"]["index"],
                "index_search": manifest["retriever"].get("search", {})}

    stages["export"] = _cached(root / "export.json", config.fresh, export)
    stages["serve"] = _cached(root / "serve.json", config.fresh, lambda: measure_gateway(bundle, config.requests,
                                                                                     root / "logs"))
    return {"ratings": ratings, "users": users, "items": items, "k_core": k_core, "stages": stages}


def _rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` and its children (uvicorn runs the app in the launcher's process)."""
    total = 0
    for task in [pid, *_children(pid)]:
        try:
            for line in Path(f"/proc/{task}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except FileNotFoundError:
            continue
    return total


def _children(pid: int) -> list[int]:
    try:
        kids = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []
    return [k for kid in kids for k in (kid, *_children(kid))]


def measure_gateway(bundle: Path, requests: int, logs: Path) -> dict:
    """Start-up to ready, memory of the gateway and of Redis per user, /v1/recommend at one client."""
    import httpx
    import redis

    from ratingctr.serving.embedded_redis import EmbeddedRedis
    from ratingctr.serving.process import running_gateway

    users = json.loads((bundle / "vocab.json").read_text())["user_id"][1:] if (bundle / "vocab.json").exists() \
        else None
    logs.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(logs / "redis", ignore_errors=True)  # an empty Redis: a re-measure must bulk-load again
    with EmbeddedRedis(logs / "redis") as server:
        client = redis.Redis.from_url(server.url)
        before = int(client.info("memory")["used_memory"])
        start = time.perf_counter()
        with running_gateway({"scale": bundle}, redis_url=server.url, startup_seconds=1800) as gw:
            ready_s = time.perf_counter() - start
            deadline = time.monotonic() + 600
            while not client.keys("rc:b:*:loaded") and time.monotonic() < deadline:
                time.sleep(0.2)  # the bulk load finishes after /readyz (it runs in the sync loop)
            loaded_s = time.perf_counter() - start
            redis_bytes = int(client.info("memory")["used_memory"]) - before
            rss = _rss_bytes(gw.process.pid)
            ids = users or [str(i) for i in range(1, 1000)]
            rng = np.random.default_rng(0)
            picks = [ids[i] for i in rng.integers(0, len(ids), requests)]
            times = []
            with httpx.Client(base_url=gw.url, timeout=30) as http:
                for user in picks[:20]:  # warm-up
                    http.post("/v1/recommend", json={"user_id": user, "k": 10})
                for user in picks:
                    t = time.perf_counter()
                    r = http.post("/v1/recommend", json={"user_id": user, "k": 10})
                    times.append(time.perf_counter() - t)
                    if r.status_code != 200:
                        raise RuntimeError(f"/v1/recommend answered {r.status_code}: {r.text[:200]}")
                stages = stage_means_ms(http.get("/metrics").text)
        client.close()
    n_users = len(users) if users else None
    return {"ready_seconds": ready_s, "bulk_loaded_seconds": loaded_s, "gateway_rss_bytes": rss,
            "redis_bytes": redis_bytes, "redis_bytes_per_user": redis_bytes / n_users if n_users else None,
            "recommend_p50_ms": float(np.percentile(times, 50) * 1e3),
            "recommend_p99_ms": float(np.percentile(times, 99) * 1e3), "requests": requests,
            "stage_mean_ms": stages}


def stage_means_ms(exposition: str) -> dict[str, float]:
    """Mean milliseconds per request stage (redis, faiss, onnx, …) from the gateway's own
    ``ratingctr_stage_seconds`` histogram, warm-up included: where a p50 goes, without a profiler."""
    from prometheus_client.parser import text_string_to_metric_families

    totals: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(exposition):
        if family.name != "ratingctr_stage_seconds":
            continue
        for sample in family.samples:
            if sample.name.endswith(("_sum", "_count")):
                part = totals.setdefault(sample.labels["stage"], {"_sum": 0.0, "_count": 0.0})
                part[sample.name[-4:] if sample.name.endswith("_sum") else "_count"] += sample.value
    return {stage: t["_sum"] / t["_count"] * 1e3 for stage, t in sorted(totals.items()) if t["_count"]}


# the cost of each stage that the report fits against ratings: (stage, field, label)
COSTS = (("synth", "seconds", "synthesise (s)"), ("synth", "peak_rss_bytes", "synthesise peak RSS"),
         ("retriever", "seconds", "retriever: 1 epoch + eval (s)"),
         ("retriever", "setup_seconds", "retriever: read + encode + graph (s)"),
         ("retriever", "epoch_seconds", "retriever: 1 epoch (s)"),
         ("retriever", "steps_per_epoch", "retriever: BPR steps per epoch"),
         ("retriever", "step_ms", "retriever: ms per step (full propagation)"),
         ("retriever", "eval_seconds", "retriever: validation + test (s)"),
         ("retriever", "peak_rss_bytes", "retriever peak RSS"),
         ("export", "seconds", "export (s)"), ("export", "peak_rss_bytes", "export peak RSS"),
         ("export", "bundle_bytes", "bundle size"), ("serve", "bulk_loaded_seconds", "gateway ready + bulk load (s)"),
         ("serve", "gateway_rss_bytes", "gateway RSS"), ("serve", "redis_bytes", "Redis memory"),
         ("serve", "redis_bytes_per_user", "Redis memory per user"),
         ("serve", "recommend_p50_ms", "/v1/recommend p50 (ms)"))


def fitted_exponent(xs: list[float], ys: list[float]) -> float | None:
    pairs = [(x, y) for x, y in zip(xs, ys) if y is not None and y > 0]
    if len(pairs) < 2:
        return None
    return float(np.polyfit(np.log([p[0] for p in pairs]), np.log([p[1] for p in pairs]), 1)[0])


def cost_rows(points: list[dict]) -> list[dict]:
    stages = sorted({s for p in points for s in p["stages"] if s.startswith("train-")})
    specs = [*COSTS[:2]]
    for stage in stages:
        specs += [(stage, "other_seconds", f"{stage}: read + encode + set-up (s)"),
                  (stage, "epoch_seconds", f"{stage}: 1 epoch (s)"), (stage, "rows_per_s", f"{stage}: rows/s"),
                  (stage, "eval_seconds", f"{stage}: evaluation (s)"),
                  (stage, "eval_rows_per_s", f"{stage}: evaluation rows/s"),
                  (stage, "peak_rss_bytes", f"{stage}: peak RSS")]
    specs += list(COSTS[2:])
    rows = []
    xs = [p["ratings"] for p in points]
    for stage, key, label in specs:
        values = [p["stages"].get(stage, {}).get(key) for p in points]
        rows.append({"stage": stage, "field": key, "label": label, "values": values,
                     "exponent": fitted_exponent(xs, values)})
    return rows


def _bundle_shape(point: dict) -> tuple[int, int] | None:
    """(users, items) the point's bundle holds: the trained dataset's, after the k-core."""
    train = next((v for k, v in point["stages"].items() if k.startswith("train-")), None)
    dataset = (train or {}).get("dataset") or {}
    return (int(dataset["users"]), int(dataset["items"])) if "users" in dataset and "items" in dataset else None


def memory_fit(points: list[dict]) -> dict | None:
    """Gateway RSS as ``a + b · items + c · users`` by least squares over every measured bundle.

    Why: the scale issue asks for the memory of a loaded bundle to be linear in items + users,
    which a fit over ratings alone cannot show (users and items grow together there); the
    large-catalogue points move items alone.  Reports the coefficients and each point's
    relative residual: a linear model that fits every point within a few percent is the claim.
    """
    rows = [(shape, p["stages"]["serve"]["gateway_rss_bytes"]) for p in points
            if (shape := _bundle_shape(p)) and p["stages"].get("serve", {}).get("gateway_rss_bytes")]
    if len(rows) < 4:  # three coefficients need a spare point before a residual means anything
        return None
    design = np.array([[1.0, items, users] for (users, items), _ in rows])
    rss = np.array([r for _, r in rows], dtype=np.float64)
    coef, *_ = np.linalg.lstsq(design, rss, rcond=None)
    predicted = design @ coef
    return {"base_bytes": float(coef[0]), "bytes_per_item": float(coef[1]), "bytes_per_user": float(coef[2]),
            "points": [{"users": u, "items": i, "rss_bytes": float(r), "predicted_bytes": float(f),
                        "relative_residual": float(r / f - 1.0)} for ((u, i), r), f in zip(rows, predicted)]}


def run_scale_bench(config: ScaleBenchConfig) -> dict:
    points, catalogues = [], []
    for ratings in config.ratings:
        print(f"bench scale: {ratings:,} ratings ...", flush=True)
        points.append(measure_point(ratings, config))
        write_results(points, catalogues, config)  # a partial report after every point
    for ratings, items in config.catalogues:
        print(f"bench scale: {ratings:,} ratings over {items:,} items ...", flush=True)
        catalogues.append(measure_point(ratings, config, items))
        write_results(points, catalogues, config)
    return write_results(points, catalogues, config)


def write_results(points: list[dict], catalogues: list[dict], config: ScaleBenchConfig) -> dict:
    cfg = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()}
    results = {"commit": short_commit(), "config": cfg, "points": points, "costs": cost_rows(points),
               "catalogues": catalogues, "gateway_memory": memory_fit(points + catalogues)}
    write_report(results, config.out, render_report, plot)
    return results


def _fmt(field_name: str, value) -> str:
    if value is None:
        return "–"
    if field_name.endswith("bytes") or field_name.endswith("bytes_per_user"):
        return f"{value / 2**20:,.0f} MiB" if value >= 10 * 2**20 else f"{value / 2**10:,.1f} KiB"
    return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"


def render_report(results: dict) -> str:
    points = results["points"]
    c = results["config"]
    lines = [f"# Cost of every stage against the number of ratings (commit {results['commit']})", "",
             "`ratingctr bench scale --ratings " + ",".join(str(p["ratings"]) for p in points) + "` on this "
             "machine (2 cores, 24 GiB, no GPU): synthetic data of MovieLens-25M's shape (`data synth`), "
             f"one training epoch per model and head ({', '.join(c['models'])} × {', '.join(c['heads'])}), "
             f"evaluation included with uni100 on {c['eval_users']:,} sampled users per split "
             "(`--eval-users`), the retriever for one epoch, `export` (index `auto`), and the gateway "
             f"with an embedded Redis; `/v1/recommend` p50 over {c['requests']} sequential requests at one "
             "client.  Peak RSS is each process's own (`wait4`).  One run per point: times are single "
             "measurements, not medians.", "",
             "| points | " + " | ".join(f"{p['ratings']:,} ratings ({p['users']:,} users, {p['items']:,} items)"
                                      for p in points) + " | exponent |",
             "|---|" + "---:|" * (len(points) + 1)]
    for row in results["costs"]:
        exp = "–" if row["exponent"] is None else f"{row['exponent']:.2f}"
        lines.append(f"| {row['label']} | " + " | ".join(_fmt(row["field"], v) for v in row["values"]) + f" | {exp} |")
    lines += ["", "Exponent: slope of log cost on log ratings over the measured points (1.0 = linear).", "",
              "Stages are cached and resumable, so one point's stages may have been measured at different "
              "commits: " + "; ".join(f"{p['ratings']:,}: " + ", ".join(
                  f"{name} {stage.get('commit', 'not recorded')}" for name, stage in p["stages"].items())
                  for p in points) + ".", ""]
    for p in points:
        export = p["stages"].get("export", {})
        if export:
            search = export.get("index_search", {})
            lines.append(f"* {p['ratings']:,} ratings: index {export.get('index')} "
                         f"{search.get('params', {})}, recall@{search.get('k')} {search.get('recall')}; "
                         + "; ".join(f"{s} test AUC {v['test_auc']:.4f}" for s, v in p["stages"].items()
                                     if s.startswith("train-")))
    if results.get("catalogues"):
        lines += ["", "Large catalogues (k-core 1, so rarely rated items stay in the catalogue; the retriever's one "
                  f"epoch there uses batches of {c.get('catalogue_retriever_batch', 2048):,}: these points measure "
                  "serving, not training):", "",
                  "| ratings | items in the bundle | index | search depth | recall@200 | export s | gateway RSS | "
                  "/v1/recommend p50 ms | p99 ms | mean ms per stage |", "|---:|---:|---|---|---:|---:|---:|---:|---:|---|"]
        for p in results["catalogues"]:
            export, serve = p["stages"]["export"], p["stages"]["serve"]
            search = export.get("index_search", {})
            train = next(v for k, v in p["stages"].items() if k.startswith("train-"))
            lines.append(f"| {p['ratings']:,} | {train['dataset']['items']:,} | {export['index']} | "
                         f"{search.get('params') or 'exact'} | {search.get('recall')} | {export['seconds']:.0f} | "
                         f"{serve['gateway_rss_bytes'] / 2**20:,.0f} MiB | {serve['recommend_p50_ms']:.2f} | "
                         f"{serve['recommend_p99_ms']:.2f} | " + ", ".join(
                             f"{k} {v:.2f}" for k, v in (serve.get("stage_mean_ms") or {}).items()) + " |")
    fit = results.get("gateway_memory")
    if fit:
        worst = max(abs(q["relative_residual"]) for q in fit["points"])
        lines += ["", f"Gateway memory per loaded bundle, fitted over {len(fit['points'])} bundles "
                  f"(least squares, RSS = a + b · items + c · users): a = {fit['base_bytes'] / 2**20:,.0f} MiB, "
                  f"b = {fit['bytes_per_item'] / 2**10:,.2f} KiB per item, c = {fit['bytes_per_user'] / 2**10:,.2f} "
                  f"KiB per user; largest relative residual {worst:.1%}.", "",
                  "| users | items | RSS | fitted | residual |", "|---:|---:|---:|---:|---:|"]
        lines += [f"| {q['users']:,} | {q['items']:,} | {q['rss_bytes'] / 2**20:,.0f} MiB | "
                  f"{q['predicted_bytes'] / 2**20:,.0f} MiB | {q['relative_residual']:+.1%} |" for q in fit["points"]]
    lines += ["", "![cost against ratings](scale.png)", ""]
    return "\n".join(lines) + "\n"


def plot(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [p["ratings"] for p in results["points"]]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for row in results["costs"]:
        ys = row["values"]
        if sum(y is not None for y in ys) < 1:
            continue
        if row["field"] in ("rows_per_s", "eval_rows_per_s", "redis_bytes_per_user"):
            continue  # rates and per-user figures, not costs that grow with the data
        ax = axes[1] if row["field"].endswith("bytes") else axes[0]
        pairs = [(x, y) for x, y in zip(xs, ys) if y]
        ax.loglog([p[0] for p in pairs], [p[1] for p in pairs], "o-", label=row["label"])
    axes[0].set(xlabel="ratings", ylabel="seconds / ms", title="time")
    axes[1].set(xlabel="ratings", ylabel="bytes", title="memory and size")
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out / "scale.png", dpi=100)
    plt.close(fig)
