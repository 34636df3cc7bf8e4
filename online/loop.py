"""``ratingctr loop``: pull → retrain (ranker and retriever) → promote, once or on a schedule.

Each stage is one of the verbs a person could run by hand (``events pull``, ``retrain``,
``retrain-retriever``, ``promote``), called in process with the same arguments, so the loop
adds orchestration and nothing the parts do not already prove.

Why it is safe to kill and restart at any point:

* the pull acknowledges only what is durable, and the log reader dedupes;
* a cycle's work lives in ``<state>/cycle-<n>/``; a retrained run that finished (its
  ``metrics.json`` exists, written last) is reused, an unfinished one is trained again;
* the state file (``<state>/loop.json``: which runs serve, what they were trained through) is
  replaced atomically, and only after the promotion's outcome is known; a loop killed after a
  promotion's reload but before the state was written redoes the cycle's promote on restart:
  the finished runs are reused and the gate compares the candidate with itself (now serving),
  which passes, so the state catches up without a second model.

The gate needs events no candidate was trained on: each cycle holds out part of the events
that arrived since the serving model's cutoff, trains on the rest, and the next cycle trains
on the held-out ones too.  Which part (``holdout_by``):

* ``user`` (default): each user's newest ``holdout_share`` of their new events
  (``newest_per_user``), written to ``cycle-<n>/holdout-ids.txt`` and given to ``retrain
  --exclude-events`` and ``promote --holdout-ids``.  Why: in time order the newest 10% of a
  10,000-event MovieLens chunk came from about 36 users, and on so few users the gate's
  decisions were noise (``reports/ml-100k/online/retrain-recipe.md``);
* ``time``: the newest ``holdout_share`` of them overall, a stream-id cutoff.

A cycle's plan (what it trains through, what it holds out) is written once to
``cycle-<n>/plan.json`` before anything trains, so a restarted cycle reuses its finished runs
with the holdout they were trained without, even when more events were pulled meanwhile.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ratingctr.errors import UserError
from ratingctr.online.holdout import events_after
from ratingctr.training.data.event_log import newest_per_user, read_event_log

STATE_FILE = "loop.json"
PLAN_FILE = "plan.json"
HOLDOUT_IDS_FILE = "holdout-ids.txt"
HOLDOUT_BY = ("user", "time")
PROMOTED, REFUSED = 0, 3  # exit statuses of `ratingctr promote`


@dataclass
class LoopConfig:
    """Everything one cycle needs; the CLI flags of ``ratingctr loop`` map onto it."""

    gateway: str
    ranker_run: Path  # the run serving now (the loop's starting point)
    retriever_run: Path
    bundle_root: Path
    events_dir: Path
    state_dir: Path
    model: str = "main"
    redis_url: str | None = None
    redis_dir: Path | None = None
    redis_prefix: str = "rc"
    admin_token: str | None = None
    holdout_share: float = 0.1
    holdout_by: str = "user"  # "user": each user's newest share; "time": the newest share overall
    min_new_events: int = 50
    ranker_epochs: int = 5
    retriever_epochs: int = 30
    replay_share: float = 1.0  # reports/ml-100k/online/retrain-recipe.md
    max_auc_drop: float = 0.002
    max_logloss_rise: float = 0.005
    debug_shuffle_labels: bool = False  # spoil this cycle's candidate: the gate must refuse it
    extra_retrain_args: list[str] = field(default_factory=list)


@dataclass
class LoopState:
    """What serves now and what it was trained through (stream id ``""`` = base data only)."""

    cycle: int = 0
    ranker_run: str = ""
    retriever_run: str = ""
    trained_through: str = ""
    history: list[dict] = field(default_factory=list)

    @classmethod
    def load(cls, state_dir: Path, config: LoopConfig) -> "LoopState":
        path = state_dir / STATE_FILE
        if not path.is_file():
            return cls(ranker_run=str(config.ranker_run), retriever_run=str(config.retriever_run))
        raw = json.loads(path.read_text())
        return cls(**{k: raw[k] for k in ("cycle", "ranker_run", "retriever_run", "trained_through", "history")})

    def save(self, state_dir: Path) -> None:
        _write_atomic(state_dir / STATE_FILE, json.dumps(asdict(self), indent=2))


def _say(cycle: int, stage: str, message: str, seconds: float | None = None) -> None:
    timing = f" ({seconds:.1f} s)" if seconds is not None else ""
    print(f"[cycle {cycle}] {stage:<9} {message}{timing}", flush=True)


def _cli(argv: list[str]) -> int:
    from ratingctr.cli import main

    return main(argv)


def _redis_args(config: LoopConfig) -> list[str]:
    if config.redis_url:
        return ["--redis-url", config.redis_url]
    if config.redis_dir:
        return ["--redis-dir", str(config.redis_dir)]
    raise UserError("the loop needs --redis-url or --redis-dir to pull the event stream")


def holdout_cutoff(stream_ids: list[str], share: float) -> str:
    """The last stream id to train on: everything but the newest ``share`` (at least one event)."""
    n_holdout = max(1, int(round(len(stream_ids) * share)))
    return stream_ids[len(stream_ids) - n_holdout - 1] if len(stream_ids) > n_holdout else ""


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def cycle_plan(work: Path, new, config: LoopConfig) -> dict:
    """What this cycle trains through and holds out; decided once per cycle (see the module docstring)."""
    path = work / PLAN_FILE
    if path.is_file():
        return json.loads(path.read_text())
    if config.holdout_by not in HOLDOUT_BY:
        raise UserError(f"--holdout-by must be one of {', '.join(HOLDOUT_BY)}, got {config.holdout_by!r}")
    stream_ids = new["stream_id"].tolist()
    if config.holdout_by == "time":
        plan = {"holdout_by": "time", "train_through": holdout_cutoff(stream_ids, config.holdout_share),
                "holdout_events": max(1, int(round(len(stream_ids) * config.holdout_share)))}
    else:
        held = new["stream_id"].to_numpy()[newest_per_user(new, config.holdout_share)]
        if held.size == 0:
            raise UserError(f"no user has two or more of the {len(stream_ids)} new events: nothing to hold out "
                            "per user (use --holdout-by time)")
        _write_atomic(work / HOLDOUT_IDS_FILE, "\n".join(held.tolist()) + "\n")
        plan = {"holdout_by": "user", "train_through": stream_ids[-1], "holdout_events": int(held.size),
                "holdout_users": int(new.loc[new["stream_id"].isin(held), "user_id"].nunique()),
                "holdout_ids": str(work / HOLDOUT_IDS_FILE)}
    _write_atomic(path, json.dumps(plan, indent=2))
    return plan


def run_cycle(config: LoopConfig) -> dict:
    """One pull → retrain → promote cycle; returns the cycle's record (also kept in the state)."""
    state = LoopState.load(config.state_dir, config)
    cycle = state.cycle + 1
    work = config.state_dir / f"cycle-{cycle}"
    record: dict = {"cycle": cycle, "started": time.time(), "seconds": {}, "windows": {}}

    started = time.perf_counter()
    status = _cli(["events", "pull", *_redis_args(config), "--prefix", config.redis_prefix,
                   "--out", str(config.events_dir), "--once"])
    if status != 0:
        raise UserError(f"events pull failed with status {status}")
    log = read_event_log(config.events_dir)
    new = events_after(log, state.trained_through or None)
    record["seconds"]["pull"] = time.perf_counter() - started
    record["events_in_log"], record["new_events"] = int(len(log)), int(len(new))
    _say(cycle, "pull", f"{len(log):,} events in the log, {len(new):,} since the serving model's cutoff",
         record["seconds"]["pull"])
    if len(new) < config.min_new_events:
        _say(cycle, "skip", f"fewer than {config.min_new_events} new events: nothing to retrain")
        record["decision"] = "skipped"
        return record

    plan = cycle_plan(work, new, config)
    cutoff = plan["train_through"]
    record["train_through"], record["holdout"] = cutoff, plan
    _say(cycle, "holdout", f"{plan['holdout_events']:,} new events held out for the gate "
         f"({'per user' if plan['holdout_by'] == 'user' else 'newest overall'})")
    ranker_out, retriever_out = work / "ranker", work / "retriever"
    by_ids = ["--exclude-events", plan["holdout_ids"]] if plan["holdout_by"] == "user" else []
    common = ["--events", str(config.events_dir), "--max-stream-id", cutoff, *by_ids, "--no-progress"]
    for name, verb, base, out, epochs in (
            ("retrain", "retrain", state.ranker_run, ranker_out, config.ranker_epochs),
            ("retriever", "retrain-retriever", state.retriever_run, retriever_out, config.retriever_epochs)):
        started = time.perf_counter()
        if (out / "metrics.json").is_file():
            _say(cycle, name, f"reusing the finished run {out}")
        else:
            argv = [verb, "--from", base, "--out", str(out), "--epochs", str(epochs), *common]
            if verb == "retrain":
                argv += ["--replay-share", str(config.replay_share), *config.extra_retrain_args]
                if config.debug_shuffle_labels:
                    argv.append("--debug-shuffle-labels")
            status = _cli(argv)
            if status != 0:
                raise UserError(f"{verb} failed with status {status}")
        record["seconds"][name] = time.perf_counter() - started
        _say(cycle, name, f"→ {out}", record["seconds"][name])

    started, wall = time.perf_counter(), time.time()
    argv = ["promote", "--candidate", str(ranker_out), "--retriever", str(retriever_out),
            "--serving", config.gateway, "--holdout", str(config.events_dir), "--bundle-root",
            str(config.bundle_root), "--model", config.model, "--gateway", config.gateway,
            "--log", str(config.state_dir / "promotions.jsonl"),
            *(["--holdout-ids", plan["holdout_ids"]] if plan["holdout_by"] == "user" else ["--holdout-after", cutoff]),
            "--max-auc-drop", str(config.max_auc_drop), "--max-logloss-rise", str(config.max_logloss_rise)]
    status = _cli(argv)
    record["seconds"]["promote"] = time.perf_counter() - started
    record["windows"]["promote"] = (wall, time.time())
    if status == PROMOTED:
        record["decision"] = "promoted"
        state.ranker_run, state.retriever_run, state.trained_through = str(ranker_out), str(retriever_out), cutoff
    elif status == REFUSED:
        record["decision"] = "refused"
    else:
        raise UserError(f"promote failed with status {status}")
    _say(cycle, "promote", record["decision"], record["seconds"]["promote"])
    state.cycle = cycle
    state.history.append(record)
    state.save(config.state_dir)
    return record
