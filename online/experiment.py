"""``ratingctr experiment online``: the loop judged prequentially, as online systems are.

Train the ranker and the retriever on the oldest share of a timestamped log, serve them from
a real gateway with an embedded Redis, then for each later chunk in time order:

1. score the chunk (before it is replayed, so never trained on) with the frozen initial
   bundle and with the bundle the loop serves now;
2. replay it through ``/v1/events`` (batches, event ids, profiles on first sight);
3. run one loop cycle (pull → retrain ranker and retriever → gate → reload), timing each
   stage and measuring ``/v1/recommend`` latency while it runs;
4. ask ``/v1/recommend`` for a sample of the chunk's users and count answers holding an item
   the frozen bundle never knew.

One chosen cycle pulls with a consumer killed mid-write first; another first runs a
deliberately spoiled candidate (shuffled labels) that the gate must refuse.  Everything is
cached under ``--work`` and resumable: a finished chunk is kept in ``progress.json`` and a
restart serves the bundle the loop had promoted, from the same Redis data directory.
"""
from __future__ import annotations

import json
import os
import secrets
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ratingctr.errors import UserError
from ratingctr.online.experiment_config import OnlineExperimentConfig
from ratingctr.online.loop import LoopConfig, LoopState, run_cycle
from ratingctr.online.replay import TimeCut, cut_in_time, event_bodies, post_events, write_atomic
from ratingctr.training.data.event_log import COLUMNS, partitions, read_event_log

DATASET_NAME = "initial"
MODEL_NAME = "main"


@dataclass
class Paths:
    work: Path
    data: Path = field(init=False)
    runs: Path = field(init=False)
    bundles: Path = field(init=False)
    events: Path = field(init=False)
    redis: Path = field(init=False)
    state: Path = field(init=False)

    def __post_init__(self) -> None:
        w = self.work
        self.data, self.runs, self.bundles = w / "data" / DATASET_NAME, w / "runs", w / "bundles"
        self.events, self.redis, self.state = w / "events", w / "redis", w / "loop"


def _cli(argv: list[str]) -> None:
    from ratingctr.cli import main

    status = main(argv)
    if status != 0:
        raise UserError(f"`ratingctr {' '.join(argv[:2])}` failed with status {status}")


def _say(message: str) -> None:
    print(f"[online] {message}", flush=True)


# ---- initial model ------------------------------------------------------------------------
def initial_bundle(config: OnlineExperimentConfig, paths: Paths, cut: TimeCut) -> Path:
    """Train (cached) the initial ranker and retriever on the oldest share and export them."""
    if not (paths.data / f"{DATASET_NAME}.inter").is_file():
        write_atomic(cut, paths.data, DATASET_NAME)
    # The ranker validates on the newest rows (temporal), as it will be judged.  The retriever
    # cannot: 86% of ML-100k's temporal validation rows belong to users it has no vector for,
    # so its Recall@20 stays near zero and early stopping ends it in the popularity phase
    # (measured: 5 s of training, Recall@20 0.089 against most-popular 0.121).  It validates
    # on a random split of the same initial rows instead.
    data = ["--dataset", "atomic", "--data-dir", str(paths.data), "--seed", str(config.seed), "--no-progress"]
    ranker, retriever = paths.runs / "initial-ranker", paths.runs / "initial-retriever"
    timings = {}
    for run, argv in ((ranker, ["train", "--model", config.model, "--head", config.head,
                                "--epochs", str(config.epochs), "--split", "temporal"]),
                      (retriever, ["train-retriever", "--epochs", str(config.retriever_epochs), "--split", "random"])):
        if not (run / "metrics.json").is_file():
            started = time.perf_counter()
            _cli([*argv, *data, "--out", str(run)])
            timings[run.name] = time.perf_counter() - started
            _say(f"{run.name} trained in {timings[run.name]:.0f} s")
    bundle = paths.bundles / f"{MODEL_NAME}-initial"
    if not (bundle / "manifest.json").is_file():
        _cli(["export", "--ranker", str(ranker), "--retriever", str(retriever), "--out", str(bundle),
              "--name", MODEL_NAME])
    return bundle


# ---- measuring a gateway ------------------------------------------------------------------
class LatencyProbe:
    """``/v1/recommend`` at one client in a thread, with the wall time of every answer."""

    def __init__(self, url: str, users: list[str], k: int) -> None:
        self.url, self.users, self.k = url, users, k
        self.samples: list[tuple[float, float, bool]] = []  # (end time, seconds, ok)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            body = json.dumps({"user_id": self.users[i % len(self.users)], "k": self.k}).encode()
            request = urllib.request.Request(f"{self.url}/v1/recommend", data=body, method="POST",
                                             headers={"Content-Type": "application/json"})
            started = time.perf_counter()
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    response.read()
                    ok = response.status == 200
            except Exception:  # noqa: BLE001 - a failed request is what this counts
                ok = False
            self.samples.append((time.time(), time.perf_counter() - started, ok))
            i += 1

    def __enter__(self) -> "LatencyProbe":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def window(self, start: float, end: float) -> dict:
        inside = [(s, ok) for t, s, ok in self.samples if start <= t <= end]
        return _latency_summary(inside)

    def everything(self) -> dict:
        return _latency_summary([(s, ok) for _, s, ok in self.samples])


def _latency_summary(samples: list[tuple[float, bool]]) -> dict:
    ms = np.array([s * 1000 for s, _ in samples])
    failed = sum(1 for _, ok in samples if not ok)
    if ms.size == 0:
        return {"requests": 0, "failed": failed, "p50_ms": None, "p99_ms": None}
    return {"requests": int(ms.size), "failed": failed, "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99))}


def recommend_many(url: str, users: list[str], k: int) -> list[tuple[list[str], list[str]]]:
    """Each probe user's served ids and, of them, the ones the fresh-item slot placed."""
    answers = []
    for user in users:  # one HTTP request per probe user: this is what clients receive
        body = json.dumps({"user_id": user, "k": k}).encode()
        request = urllib.request.Request(f"{url}/v1/recommend", data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            answer = json.loads(response.read())
        answers.append(([item["item_id"] for item in answer["items"]], answer.get("fresh_item_ids") or []))
    return answers


def serving_version(url: str) -> tuple[str, str]:
    from ratingctr.online.promote import gateway_model

    model = gateway_model(url, MODEL_NAME)
    return model["version"], model["path"]


# ---- one chunk ------------------------------------------------------------------------------
def chunk_frame(batches: list[list[dict]]) -> pd.DataFrame:
    """The replayed events as an event-log frame (for scoring before they are sent)."""
    events = [e for batch in batches for e in batch]
    frame = pd.DataFrame({
        "stream_id": [f"{i + 1}-0" for i in range(len(events))],
        "event_id": [e["event_id"] for e in events],
        "user_id": [e["user_id"] for e in events], "item_id": [e["item_id"] for e in events],
        "rating": np.array([e["rating"] for e in events], dtype=np.float64),
        "ts": np.array([e["ts"] for e in events], dtype=np.float64),
        "received": np.array([e["ts"] for e in events], dtype=np.float64),
        "user_fields": [json.dumps(e["user_fields"]) if "user_fields" in e else None for e in events],
        "item_fields": [json.dumps(e["item_fields"]) if "item_fields" in e else None for e in events],
    })
    return frame[list(COLUMNS)]


def _crashed_pull(paths: Paths, prefix: str) -> dict:
    """A consumer killed between its partition's rename and its XACK (the after-rename window)."""
    before = sum(1 for _ in partitions(paths.events))
    env = {**os.environ, "RATINGCTR_PULL_CRASH": "after-rename"}
    result = subprocess.run([sys.executable, "-m", "ratingctr.cli", "events", "pull", "--redis-dir", str(paths.redis),
                             "--prefix", prefix, "--out", str(paths.events), "--once"],
                            env=env, capture_output=True, text=True, timeout=600)
    return {"exit_status": result.returncode, "partitions_written_before_the_kill":
            sum(1 for _ in partitions(paths.events)) - before}


def _raw_rows(paths: Paths) -> int:
    import pyarrow.parquet as pq

    return sum(pq.read_metadata(p).num_rows for p in partitions(paths.events))


def _score(bundle: Path, frame: pd.DataFrame) -> dict:
    """Per-row labels and p̂ of ``bundle`` on an event frame, plus each row's user (for the CI)."""
    from ratingctr.online.holdout import score_events  # the gate's own scoring path

    scored = score_events(bundle, frame)
    return {"y": scored.labels, "p": scored.p_click, "user": frame["user_id"].to_numpy()}


def _scores(y: np.ndarray, p: np.ndarray) -> dict:
    from ratingctr.online.gate import scores  # the gate's own numbers

    return scores(y, p).to_dict()


def loop_minus_frozen(predictions: dict, resamples: int, seed: int) -> dict:
    """AUC(loop) − AUC(frozen) on the same rows with the gate's bootstrap over users
    (users, not rows, are resampled: a user's ratings are not independent)."""
    from ratingctr.online.gate import paired_difference

    d = paired_difference(predictions["user"], predictions["y"], predictions["frozen"], predictions["loop"],
                          resamples=resamples, seed=seed)
    return {"delta": d.auc_delta or 0.0, "ci95": list(d.auc_ci95), "resamples": d.resamples,
            "logloss_delta": d.logloss_delta, "logloss_ci95": list(d.logloss_ci95)}


def run_chunk(index: int, chunk: pd.DataFrame, cut: TimeCut, config: OnlineExperimentConfig, paths: Paths,
              gateway_url: str, frozen: Path, known: dict[str, set[str]], loop: LoopConfig) -> dict:
    frozen_vocab = {side: set(json.loads((frozen / "vocab.json").read_text())[f"{side}_id"][1:])
                    for side in ("user", "item")}
    batches = event_bodies(chunk, cut.raw, config.batch, known["user"], known["item"])
    frame = chunk_frame(batches)
    version, serving_path = serving_version(gateway_url)
    scored_frozen, scored_loop = _score(frozen, frame), _score(Path(serving_path), frame)
    y = scored_frozen["y"]
    predictions = paths.work / "predictions"
    predictions.mkdir(exist_ok=True)
    np.savez(predictions / f"chunk-{index}.npz", y=y, frozen=scored_frozen["p"], loop=scored_loop["p"],
             user=np.asarray(scored_frozen["user"], dtype=str))
    record: dict = {
        "chunk": index, "rows": int(len(chunk)),
        "time_range": [float(chunk["timestamp"].min()), float(chunk["timestamp"].max())],
        "new_users_vs_frozen": int(len(set(chunk["user_id"].astype(str)) - frozen_vocab["user"])),
        "new_items_vs_frozen": int(len(set(chunk["item_id"].astype(str)) - frozen_vocab["item"])),
        "rows_with_new_item": float((~chunk["item_id"].astype(str).isin(frozen_vocab["item"])).mean()),
        "serving_version_before": version,
        "frozen": _scores(y, scored_frozen["p"]), "loop": _scores(y, scored_loop["p"]),
    }
    _say(f"chunk {index}: {len(chunk):,} rows, AUC frozen {record['frozen']['auc']:.4f} "
         f"loop {record['loop']['auc']:.4f}")

    started = time.perf_counter()
    record["replay"] = post_events(gateway_url, batches)
    record["replay"]["seconds"] = time.perf_counter() - started
    _say(f"chunk {index}: replayed {record['replay']['acknowledged']:,} events in {record['replay']['seconds']:.1f} s")

    if index == config.crash_chunk:
        record["crash"] = _crashed_pull(paths, loop.redis_prefix)
        _say(f"chunk {index}: consumer killed after its rename, before XACK (exit {record['crash']['exit_status']})")
    probe_users = sorted(set(chunk["user_id"].astype(str)))
    probe_users = [probe_users[i] for i in np.random.default_rng(index).permutation(len(probe_users))]
    with LatencyProbe(gateway_url, probe_users[:50], config.k) as probe:
        steady_start = time.time()
        time.sleep(3.0)
        record["latency_steady"] = probe.window(steady_start, time.time())
        if index == config.spoil_chunk:
            spoiled = LoopConfig(**{**asdict(loop), "debug_shuffle_labels": True})
            record["spoiled_cycle"] = run_cycle(spoiled)
            after, _ = serving_version(gateway_url)
            record["spoiled_cycle"]["serving_version_after"] = after
            _say(f"chunk {index}: spoiled candidate {record['spoiled_cycle']['decision']}, serving {after}")
        record["cycle"] = run_cycle(loop)
        window = record["cycle"].get("windows", {}).get("promote")
        record["latency_during_promote"] = probe.window(*window) if window else None
        record["latency_whole_cycle"] = probe.window(record["cycle"]["started"], time.time())
    record["serving_version_after"] = serving_version(gateway_url)[0]
    answers = recommend_many(gateway_url, probe_users[:config.probe_users], config.k)
    new_item = [[i not in frozen_vocab["item"] for i in ids] for ids, _ in answers]
    record["recommend_with_new_item"] = float(np.mean([any(a) for a in new_item])) if answers else None
    record["recommend_with_new_item_by_order"] = float(np.mean(  # outside the fresh-item slot
        [any(a[:len(a) - len(fresh)]) for a, (_, fresh) in zip(new_item, answers)])) if answers else None
    record["events_in_log"] = int(len(read_event_log(paths.events)))
    record["raw_partition_rows"] = _raw_rows(paths)
    return record


# ---- the whole experiment -------------------------------------------------------------------
def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).resolve().parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def run_experiment(config: OnlineExperimentConfig) -> dict:
    from ratingctr.serving.process import running_gateway
    from ratingctr.training.config import DataConfig
    from ratingctr.training.data.encode import read_raw

    paths = Paths(Path(config.work).resolve())
    paths.work.mkdir(parents=True, exist_ok=True)
    progress_path = paths.work / "progress.json"
    progress = json.loads(progress_path.read_text()) if progress_path.is_file() else {"chunks": []}
    progress.setdefault("commit", _git_commit())  # the code the first chunk ran with, not the one at the end
    cut = cut_in_time(read_raw(DataConfig(dataset=config.dataset, data_dir=config.data_dir)),
                      config.initial_share, config.chunks)
    if len(progress["chunks"]) >= config.chunks:  # finished: re-render the report from what the run kept
        results = summarize(config, paths, cut, progress)
        write_report(config, results)
        return results
    started = time.perf_counter()
    frozen = initial_bundle(config, paths, cut)
    progress.setdefault("initial_seconds", time.perf_counter() - started)
    token_file = paths.work / "admin.token"
    if not token_file.is_file():
        token_file.write_text(secrets.token_urlsafe(24))
        token_file.chmod(0o600)
    os.environ["RATINGCTR_ADMIN_TOKEN"] = token_file.read_text().strip()  # read by `ratingctr promote`
    state = LoopState.load(paths.state, LoopConfig(gateway="", ranker_run=Path(), retriever_run=Path(),
                                                   bundle_root=paths.bundles, events_dir=paths.events,
                                                   state_dir=paths.state))
    serving = Path(progress.get("serving_bundle", frozen))
    env = {"RATINGCTR_ADMIN_TOKEN": os.environ["RATINGCTR_ADMIN_TOKEN"], "RATINGCTR_BUNDLE_ROOT": str(paths.bundles),
           "RATINGCTR_REDIS_DIR": str(paths.redis)}
    known = {"user": set(cut.initial["user_id"].astype(str)), "item": set(cut.initial["item_id"].astype(str))}
    for done in cut.chunks[:len(progress["chunks"])]:
        known["user"].update(done["user_id"].astype(str))
        known["item"].update(done["item_id"].astype(str))
    with running_gateway({MODEL_NAME: serving}, env=env) as gateway:
        loop = LoopConfig(gateway=gateway.url, ranker_run=paths.runs / "initial-ranker",
                          retriever_run=paths.runs / "initial-retriever", bundle_root=paths.bundles,
                          events_dir=paths.events, state_dir=paths.state, model=MODEL_NAME, redis_dir=paths.redis,
                          ranker_epochs=config.retrain_epochs, retriever_epochs=config.retrain_retriever_epochs,
                          holdout_by=config.holdout_by)
        for index in range(len(progress["chunks"]) + 1, config.chunks + 1):
            record = run_chunk(index, cut.chunks[index - 1], cut, config, paths, gateway.url, frozen, known, loop)
            progress["chunks"].append(record)
            progress["serving_bundle"] = serving_version(gateway.url)[1]
            tmp = progress_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(progress, indent=2, default=float))
            os.replace(tmp, progress_path)
    del state
    results = summarize(config, paths, cut, progress)
    write_report(config, results)
    return results


def summarize(config: OnlineExperimentConfig, paths: Paths, cut: TimeCut, progress: dict) -> dict:
    """``results.json``: the chunk records plus the pooled comparison and the accounting."""
    chunks = progress["chunks"]
    log = read_event_log(paths.events)
    replay_ids = log["event_id"].dropna()
    roles = _final_ranker_roles(paths)
    accounting = []
    for c in chunks:
        ids = ("replay-" + cut.chunks[c["chunk"] - 1]["row"].astype(str)).unique()
        in_log = int(replay_ids.isin(ids).sum())
        counts = roles[roles.index.isin(ids)].value_counts()
        trained, validation = int(counts.get("trained", 0)), int(counts.get("validation", 0))
        accounting.append({"chunk": c["chunk"], "sent": c["replay"]["sent"], "acknowledged": c["replay"]["acknowledged"],
                           "in_log": in_log, "trained_on_by_the_serving_model": trained,
                           "early_stopping_rows_of_the_serving_model": validation,
                           "not_yet_learned_from": in_log - trained - validation,
                           "duplicates_in_log": int(log["event_id"].isin(ids).sum()) - in_log})
    wins = sum(1 for c in chunks if c["loop"]["auc"] > c["frozen"]["auc"])
    saved = [dict(np.load(paths.work / "predictions" / f"chunk-{c['chunk']}.npz")) for c in chunks]
    for c, predictions in zip(chunks, saved):  # derived from the saved predictions, never stored twice
        c["loop_minus_frozen"] = loop_minus_frozen(predictions, resamples=200, seed=c["chunk"])
    pooled = {key: np.concatenate([p[key] for p in saved]) for key in ("y", "frozen", "loop", "user")}
    pooled_result = {"frozen": _scores(pooled["y"], pooled["frozen"]), "loop": _scores(pooled["y"], pooled["loop"]),
                     "loop_minus_frozen": loop_minus_frozen(pooled, resamples=500, seed=0)}
    return {"config": asdict(config), "commit": progress.get("commit"), "commit_at_report": _git_commit(), "initial_seconds": progress.get("initial_seconds"),
            "initial_rows": int(len(cut.initial)), "chunks": chunks, "accounting": accounting,
            "loop_beats_frozen_chunks": wins, "pooled": pooled_result,
            "promotions": _promotions(paths), "raw_partition_rows": _raw_rows(paths), "log_rows": int(len(log))}


def _final_ranker_roles(paths: Paths) -> pd.Series:
    """event id → "trained" / "validation" in the data of the ranker the loop serves at the end.

    Events in neither are the last cycle's gate holdout (or everything after the serving
    cutoff when the last cycle was refused): the next cycle would train on them.  A state that
    names a run whose data is gone is an error, never a silent zero.
    """
    none = pd.Series(dtype=object)
    state_file = paths.state / "loop.json"
    if not state_file.is_file():
        return none
    from ratingctr.training.data.encode import TRAIN, VALID
    from ratingctr.training.data.stored import has_run_data, trained_stream_ids

    run = Path(json.loads(state_file.read_text())["ranker_run"])
    if not has_run_data(run):
        if (run / "metrics.json").is_file() and "lineage" not in json.loads((run / "metrics.json").read_text()):
            return none  # the initial run: trained on no pulled event
        raise UserError(f"the loop's serving ranker {run} has no data copy to count trained events from")
    log = read_event_log(paths.events).dropna(subset=["event_id"])
    roles = [pd.Series(name, index=log.loc[log["stream_id"].isin(trained_stream_ids(run, split)), "event_id"])
             for name, split in (("trained", TRAIN), ("validation", VALID))]
    return pd.concat(roles)


def _promotions(paths: Paths) -> list[dict]:
    log = paths.state / "promotions.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.is_file() else []


# ---- report ---------------------------------------------------------------------------------
def _f(value, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _plots(results: dict, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chunks = results["chunks"]
    x = [c["chunk"] for c in chunks]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    axes[0].plot(x, [c["frozen"]["auc"] for c in chunks], "o-", color="tab:gray", label="frozen initial bundle")
    axes[0].plot(x, [c["loop"]["auc"] for c in chunks], "o-", color="tab:red", label="bundle the loop serves")
    axes[0].set(xlabel="chunk (time order)", ylabel="AUC before replay", xticks=x)
    axes[0].legend(fontsize=8)
    axes[1].bar([i - 0.2 for i in x], [c["rows_with_new_item"] for c in chunks], width=0.4, color="tab:gray",
                label="rows whose item the frozen bundle lacks")
    axes[1].bar([i + 0.2 for i in x], [c["recommend_with_new_item"] or 0 for c in chunks], width=0.4,
                color="tab:red", label="/v1/recommend answers with such an item")
    axes[1].set(xlabel="chunk (answers after its cycle)", ylabel="share", xticks=x)
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "online.png", dpi=120)
    plt.close(fig)
    return ["online.png"]


def write_report(config: OnlineExperimentConfig, results: dict) -> None:
    from ratingctr.tables import md_table

    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=float) + "\n")
    figures = _plots(results, out)
    chunks, pooled = results["chunks"], results["pooled"]
    rows = []
    for c in chunks:
        d = c["loop_minus_frozen"]
        rows.append([c["chunk"], f"{c['rows']:,}", c["new_users_vs_frozen"], c["new_items_vs_frozen"],
                     _f(c["frozen"]["auc"]), _f(c["loop"]["auc"]), f"{d['delta']:+.4f} [{d['ci95'][0]:+.4f}, "
                     f"{d['ci95'][1]:+.4f}]", _f(c["frozen"]["logloss"]), _f(c["loop"]["logloss"]),
                     c["cycle"].get("decision", "–")])
    d = pooled["loop_minus_frozen"]
    rows.append(["pooled", f"{pooled['frozen']['rows']:,}", "", "", _f(pooled["frozen"]["auc"]),
                 _f(pooled["loop"]["auc"]), f"{d['delta']:+.4f} [{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}]",
                 _f(pooled["frozen"]["logloss"]), _f(pooled["loop"]["logloss"]), ""])
    quality = md_table(["chunk", "rows", "new users", "new items", "AUC frozen", "AUC loop",
                        "Δ AUC [95% CI over users]", "logloss frozen", "logloss loop", "cycle after it"], rows)
    coverage = md_table(["chunk", "rows whose item is new", "answers with a new item (after the cycle)",
                         "of which placed by the served order (not the fresh-item slot)"],
                        [[c["chunk"], _f(c["rows_with_new_item"], 3), _f(c["recommend_with_new_item"], 3),
                          _f(c.get("recommend_with_new_item_by_order"), 3)] for c in chunks])
    accounting = md_table(["chunk", "sent", "acknowledged", "in the pulled log", "duplicates read",
                           "final serving ranker: trained on", "its early-stopping rows", "not yet learned from"],
                          [[a["chunk"], a["sent"], a["acknowledged"], a["in_log"], a["duplicates_in_log"],
                            a["trained_on_by_the_serving_model"], a.get("early_stopping_rows_of_the_serving_model", "–"),
                            a.get("not_yet_learned_from", "–")] for a in results["accounting"]])
    gate_rows = []
    for c in chunks:
        for label, cycle in (("spoiled", c.get("spoiled_cycle")), ("normal", c.get("cycle"))):
            if not cycle or "holdout" not in cycle:
                continue
            entry = next((p for p in results["promotions"]
                          if f"cycle-{cycle['cycle']}/ranker" in str(p.get("candidate", {}).get("run"))), None)
            paired = (entry or {}).get("gate", {}).get("paired", {})
            ci = paired.get("auc_ci95") or [None, None]
            lci = paired.get("logloss_ci95") or [None, None]
            gate_rows.append([c["chunk"], cycle["cycle"], label, f"{cycle['holdout']['holdout_events']:,}",
                              paired.get("users", "–"),
                              f"{_f(paired.get('auc_delta'))} [{_f(ci[0])}, {_f(ci[1])}]",
                              f"{_f(paired.get('logloss_delta'))} [{_f(lci[0])}, {_f(lci[1])}]",
                              cycle.get("decision", "–")])
    gates = md_table(["after chunk", "cycle", "candidate", "held-out events", "users",
                      "Δ AUC candidate − serving [95% CI]", "Δ logloss [95% CI]", "decision"], gate_rows)
    stages = []
    for c in chunks:
        s = c["cycle"].get("seconds", {})
        during, steady = c.get("latency_during_promote") or {}, c.get("latency_steady") or {}
        stages.append([c["chunk"], _f(c["replay"]["seconds"], 1), _f(s.get("pull"), 1), _f(s.get("retrain"), 1),
                       _f(s.get("retriever"), 1), _f(s.get("promote"), 1), _f(steady.get("p99_ms"), 1),
                       _f(during.get("p99_ms"), 1), (c.get("latency_whole_cycle") or {}).get("failed", "–")])
    timing = md_table(["chunk", "replay s", "pull s", "retrain s", "retriever s", "gate+export+reload s",
                       "steady p99 ms", "p99 ms during promote", "failed requests (whole cycle)"], stages)
    spoiled = next((c["spoiled_cycle"] for c in chunks if "spoiled_cycle" in c), None)
    crash = next(((c["chunk"], c["crash"]) for c in chunks if "crash" in c), None)
    refusals = [p for p in results["promotions"] if p.get("decision") == "refused"]
    lines = [
        f"# Online loop on {config.dataset}: prequential evaluation",
        "",
        f"Commit `{results['commit']}` (chunks run from it; report written at `{results['commit_at_report']}`). "
        f"Command: `ratingctr experiment online --dataset {config.dataset} "
        f"--chunks {config.chunks}` (defaults: {config.model} {config.head} head; initial {config.initial_share:.0%} "
        f"of the log by time = {results['initial_rows']:,} rows, trained with a temporal split; each cycle retrains "
        f"the ranker {config.retrain_epochs} epochs and the retriever {config.retrain_retriever_epochs} epochs with "
        f"the loop's defaults: {LoopConfig.replay_share:.0%} of the base rows replayed, at the base runs' learning "
        f"rates). Every chunk is scored *before* it is replayed, so neither model has seen it.",
        "",
        "## Quality per chunk",
        "",
        quality,
        "",
        f"The loop's bundle has the higher AUC on {results['loop_beats_frozen_chunks']} of {len(chunks)} chunks "
        f"(target: at least 4 of 5); pooled over {pooled['frozen']['rows']:,} rows the difference is "
        f"{d['delta']:+.4f} AUC with a 95% interval of [{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}] "
        f"({d['resamples']} bootstrap resamples of users). Chunk 1 is scored by the initial bundle in both columns "
        f"(the loop has not run yet), so its difference is 0 by construction.",
        "",
        "## New items",
        "",
        coverage,
        "",
        f"A new item is one the frozen bundle does not know. Answers are top-{config.k} lists for up to "
        f"{config.probe_users} users of the chunk, asked after its cycle. Each promoted bundle gives one of the ten "
        "places to the fresh-item slot (`bundle.RankingInfo`): that place goes to the item with the highest p̂ "
        "among the unseen items its own retrain added, so the last column counts only the new items "
        "that the served order itself (log p̂ + w × retriever score) ranked in.",
        "",
        "## Nothing lost, nothing doubled",
        "",
        accounting,
        "",
        f"Raw Parquet partitions hold {results['raw_partition_rows']:,} rows; the log reader returns "
        f"{results['log_rows']:,} (every stream id and event id once).",
    ]
    if crash:
        lines += ["", f"In chunk {crash[0]}'s cycle a consumer was killed after renaming its partition and before "
                  f"XACK (exit status {crash[1]['exit_status']}, {crash[1]['partitions_written_before_the_kill']} "
                  f"partition(s) written); the loop's own pull then re-delivered the pending entries."]
    holdout_text = ("each user's newest 10% of the cycle's new events (users with two or more; "
                    "`loop --holdout-by user`)" if config.holdout_by == "user"
                    else "the newest 10% of the cycle's new events overall (`loop --holdout-by time`)")
    lines += ["", "## The gate's decisions", "",
              f"Each cycle's candidate is judged against the serving bundle on {holdout_text}, which neither "
              f"model trained on; the next cycle trains on them. Rule: AUC drop ≤ {LoopConfig.max_auc_drop:g} and "
              f"logloss rise ≤ {LoopConfig.max_logloss_rise:g} on the point estimates.", "", gates]
    lines += ["", "## Time per stage and latency during reloads", "", timing]
    if spoiled:
        lines += ["", "## A spoiled candidate", "",
                  f"Before chunk {next(c['chunk'] for c in chunks if 'spoiled_cycle' in c)}'s normal cycle a candidate "
                  f"retrained on shuffled labels went through the gate: **{spoiled['decision']}**; the gateway served "
                  f"version {spoiled.get('serving_version_after')} afterwards."]
        if refusals:
            lines += ["", "```json", json.dumps(refusals[0], indent=2, default=float)[:4000], "```"]
    lines += ["", *[f"![{f}]({f})" for f in figures], ""]
    (out / "report.md").write_text("\n".join(lines))
