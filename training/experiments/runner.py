"""Cached, resumable, parallel execution of a plan of training runs.

A run is keyed by a digest of its full configuration (``RunConfig`` minus the progress
switch; an FT / Base+ run's ``init_from`` path is replaced by its base run's key) and of
the code that trains it (``provenance.code_fingerprint``: a code or library change never
re-uses a stale run), and lives in ``RUNS_DIR/<label>-<key>``.  A run is finished when its artifacts exist:

* ``metrics.json`` + ``model.pt`` (written last by ``train_run``, atomically);
* ``trace.json`` when the plan asks for embedding gradient norms (Figure 2);
* ``noise.json`` holding the requested noise levels (Figure 3): absolute stds, and levels relative
  to the run's own embedding RMS (``rel:<level>``, with ``embedding_rms``);
* ``rm.json``: test AUC/logloss with middle ratings removed (EvalRM).

Re-running a plan executes only what is missing, so a finished experiment is a report
re-render and an interrupted one resumes.  ``jobs > 1`` runs independent runs in
``spawn``-ed worker processes (CUDA-safe); an FT run waits for its base.
"""
from __future__ import annotations

import json
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Callable

import numpy as np

from ratingctr.errors import UserError
from ratingctr.hashing import sha256_text
from ratingctr.training.config import DataConfig, RunConfig

KEY_LENGTH = 12


def run_key(config: RunConfig, base_key: str | None = None, fingerprint: str | None = None) -> str:
    """Digest of everything that can change a run's result: the configuration and the code.

    ``fingerprint`` defaults to this process's ``code_fingerprint()`` (training sources +
    library versions); ``""`` leaves the code out, which gives the configuration-only key
    runs had before keys included the code (tests pin it).  The split fractions and a
    temporal split mode are part of the key; the default random mode is left out (as it
    always was), and so are the default ``first_order="wide"`` and ``eval_users=None`` (the
    full protocol).
    """
    from ratingctr.training.experiments.provenance import code_fingerprint

    raw = config.to_dict()
    code = fingerprint if fingerprint is not None else code_fingerprint()
    if code:
        raw["code"] = code
    if raw["model"].get("first_order") == "wide":
        raw["model"].pop("first_order")
    raw["train"].pop("progress", None)
    if raw["train"].get("eval_users") is None:
        raw["train"].pop("eval_users", None)
    data = raw["data"]
    if data.get("split_mode") == "random":
        data.pop("split_mode")
    # ml-100k's files are sha256-checked wherever they are cached; other datasets are their path
    data["data_dir"] = None if data["dataset"] == "ml-100k" or data["data_dir"] is None \
        else str(Path(data["data_dir"]).resolve())
    if raw["encoder"].get("init_from") is not None:
        if base_key is None:
            raise ValueError("an FT run's key needs its base run's key")
        raw["encoder"]["init_from"] = f"run:{base_key}"
    text = json.dumps(raw, sort_keys=True, separators=(",", ":"))
    return sha256_text(text)[:KEY_LENGTH]


@dataclass
class Job:
    """One run and the extra artifacts the experiment needs from it."""

    key: str
    label: str
    config: RunConfig
    base: str | None = None
    trace: bool = False
    noise_stds: set[float] = field(default_factory=set)
    #: noise levels as fractions of the run's embedding RMS (Figure 3, scaled): the heads' embedding
    #: norms differ, so one absolute std is a different signal-to-noise ratio for each
    noise_relative: set[float] = field(default_factory=set)
    rm_eval: bool = False

    def missing(self, run_dir: Path, need_checkpoint: bool = False) -> list[str]:
        """What ``run_dir`` still lacks.  The checkpoint counts only when something will read it
        (``need_checkpoint``: an FT run starts from it; or a noise / EvalRM score is missing): a
        run restored from its record (``records.py``) has results but no ``model.pt``."""
        out = []
        if self.trace and not (run_dir / "trace.json").is_file():
            out.append("trace")
        if self.noise_stds or self.noise_relative:
            done = _read_json(run_dir / "noise.json") or {}
            if any(noise_name(s) not in done for s in self.noise_stds) or \
                    any(relative_noise_name(r) not in done for r in self.noise_relative):
                out.append("noise")
        if self.rm_eval and not (run_dir / "rm.json").is_file():
            out.append("rm")
        need_checkpoint = need_checkpoint or any(m in out for m in ("noise", "rm"))
        if not (run_dir / "metrics.json").is_file() or (need_checkpoint and not (run_dir / "model.pt").is_file()):
            out.insert(0, "train")
        return out


def noise_name(std: float) -> str:
    return f"{std:g}"


def relative_noise_name(level: float) -> str:
    return f"rel:{level:g}"


def embedding_rms(model) -> float:
    """Root mean square of the model's embedding table entries: the scale noise is relative to."""
    import torch

    with torch.no_grad():
        return float(model.encoder.table().detach().float().pow(2).mean().sqrt())


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


class Plan:
    """An ordered, de-duplicated set of jobs over one runs folder.

    Adding a configuration twice (e.g. the same rating run for Table 1 and Figure 4)
    yields one job carrying the union of the requested artifacts.
    """

    def __init__(self, runs_dir: Path, fingerprint: str | None = None, records: Path | None = None) -> None:
        from ratingctr.training.experiments.provenance import code_fingerprint

        self.runs_dir = Path(runs_dir)
        #: committable copy of finished runs' results (``records.py``); None: the runs folder only
        self.records = Path(records) if records is not None else None
        self.jobs: dict[str, Job] = {}
        self.fingerprint = fingerprint if fingerprint is not None else code_fingerprint()

    def run_dir(self, key: str) -> Path:
        return self.runs_dir / f"{self.jobs[key].label}-{key}"

    def add(self, config: RunConfig, label: str, base: str | None = None, trace: bool = False,
            noise_stds: tuple[float, ...] = (), rm_eval: bool = False,
            noise_relative: tuple[float, ...] = ()) -> str:
        if base is not None:
            config = replace(config, encoder=replace(config.encoder, init_from=str(self.run_dir(base))))
        key = run_key(config, base, self.fingerprint)
        job = self.jobs.get(key)
        if job is None:
            job = self.jobs[key] = Job(key, label, config, base)
        job.trace |= trace
        job.noise_stds |= set(noise_stds)
        job.noise_relative |= set(noise_relative)
        job.rm_eval |= rm_eval
        return key

    def pending(self) -> dict[str, list[str]]:
        """Job key → what it lacks, for the jobs that lack something, in plan order; first syncs
        ``records`` (restores runs from it, records finished runs it lacks).  A base run is re-trained for its checkpoint only when one
        of its FT runs still has to train."""
        if self.records is not None:
            from ratingctr.training.experiments import records

            for key in self.jobs:
                records.sync(self.records, self.run_dir(key))
        first = {k: self.jobs[k].missing(self.run_dir(k)) for k in self.jobs}
        bases = {self.jobs[k].base for k, lacks in first.items() if "train" in lacks and self.jobs[k].base}
        out = {}
        for key in self.jobs:
            lacks = self.jobs[key].missing(self.run_dir(key), need_checkpoint=key in bases)
            if lacks:
                out[key] = lacks
        return out

    def record(self, key: str) -> None:
        """Copy a finished run into ``records`` (no-op without one)."""
        if self.records is not None:
            from ratingctr.training.experiments import records

            records.save(self.records, self.run_dir(key))

    def metrics(self, key: str) -> dict:
        return _read_json(self.run_dir(key) / "metrics.json") or {}

    def artifact(self, key: str, name: str) -> dict:
        return _read_json(self.run_dir(key) / name) or {}


# ---------------------------------------------------------------- execution (worker side)

_DATA_CACHE: dict[DataConfig, object] = {}
_DATA_CACHE_SIZE = 16


def _dataset(config: DataConfig):
    from ratingctr.training.data.encode import load_dataset

    if config not in _DATA_CACHE:
        if len(_DATA_CACHE) >= _DATA_CACHE_SIZE:
            _DATA_CACHE.pop(next(iter(_DATA_CACHE)))
        _DATA_CACHE[config] = load_dataset(config)
    return _DATA_CACHE[config]


def traced_train_run(config: RunConfig, out_dir: Path, data) -> dict:
    """``train_run`` that also writes ``trace.json``: the L2 norms of the user-id and item-id
    embedding gradients at every step, and their weight norms after training.

    The norms stay on the device until training ends: no per-step sync.
    """
    import torch

    from ratingctr.training.models.ctr import id_rows
    from ratingctr.training.run import train_run

    (us, ue), (is_, ie) = id_rows(data.schema, "user_id"), id_rows(data.schema, "item_id")

    def hook(model):
        norms: list[torch.Tensor] = []
        table = model.encoder.embedding.weight
        handle = table.register_hook(lambda g: norms.append(torch.stack([g[us:ue].norm(), g[is_:ie].norm()])))

        def finish(result) -> dict:
            handle.remove()
            steps = torch.stack(norms).float().cpu().numpy() if norms else np.zeros((0, 2))
            weights = table.detach()
            return {"user_grad_norm": steps[:, 0].tolist(), "item_grad_norm": steps[:, 1].tolist(),
                    "epochs": len(result.history), "best_epoch": result.best_epoch,
                    "user_weight_norm": float(weights[us:ue].norm()), "item_weight_norm": float(weights[is_:ie].norm())}
        return finish

    return train_run(config, out_dir, data, trace=hook)


def _evaluate_extras(job: Job, run_dir: Path, data, missing: list[str]) -> None:
    """Noise levels and EvalRM of a finished run, re-scored from its checkpoint."""
    from ratingctr.training.data.encode import TEST
    from ratingctr.training.evaluation import pointwise_eval
    from ratingctr.training.run import load_checkpoint, restore_model, write_json
    from ratingctr.training.trainer import seed_everything, select_device

    payload, config = load_checkpoint(run_dir)
    device = select_device(config.train.device)
    model = restore_model(payload, config, data).to(device)
    test_rows = data.rows(TEST)
    batch = config.train.eval_rows
    if "noise" in missing:
        done = _read_json(run_dir / "noise.json") or {}
        done["embedding_rms"] = rms = embedding_rms(model)
        levels = [(noise_name(std), float(std)) for std in sorted(job.noise_stds)]
        levels += [(relative_noise_name(level), float(level) * rms) for level in sorted(job.noise_relative)]
        for name, std in levels:
            if name in done:
                continue
            model.encoder.noise_std = std
            seed_everything(config.train.seed)
            metrics, _ = pointwise_eval(model, data, test_rows, batch, device)
            done[name] = {"auc": metrics["auc"], "logloss": metrics["logloss"], "std": std}
        model.encoder.noise_std = 0.0
        write_json(run_dir / "noise.json", done)
    if "rm" in missing:
        rows = test_rows[~data.middle[test_rows]]
        metrics, _ = pointwise_eval(model, data, rows, batch, device)
        write_json(run_dir / "rm.json", {"auc": metrics["auc"], "logloss": metrics["logloss"], "rows": int(rows.size)})


def execute(job: Job, run_dir: Path, missing: list[str] | None = None) -> dict:
    """Produce whatever ``job`` is missing in ``run_dir`` (``missing``: as the plan decided, e.g. a
    checkpoint an FT run needs); returns what was done and how long it took."""
    from ratingctr.training.run import train_run, write_json

    start = time.perf_counter()
    missing = job.missing(run_dir) if missing is None else missing
    data = _dataset(job.config.data)
    if "train" in missing or "trace" in missing:
        run_dir.mkdir(parents=True, exist_ok=True)
        from ratingctr.training.experiments.provenance import code_fingerprint

        write_json(run_dir / "config.json", {"key": job.key, "label": job.label, "base": job.base,
                                             "code_fingerprint": code_fingerprint(), "config": job.config.to_dict()})
        if job.trace:
            traced_train_run(job.config, run_dir, data)
        else:
            train_run(job.config, run_dir, data)
    extras = [m for m in missing if m in ("noise", "rm")]
    if extras:
        _evaluate_extras(job, run_dir, data, extras)
    return {"key": job.key, "did": missing, "seconds": time.perf_counter() - start}


def _init_worker(threads: int) -> None:
    import torch

    from ratingctr.training.allocator import retain_freed_memory

    retain_freed_memory()  # a spawned worker is a training process's entry point
    torch.set_num_threads(threads)


# ---------------------------------------------------------------- scheduling (parent side)

def format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


@dataclass
class Progress:
    """Runs done / total and an ETA from the throughput of the runs executed so far."""

    total: int
    cached: int
    stream: object = None
    executed: int = 0
    start: float = field(default_factory=time.perf_counter)

    def line(self, label: str, result: dict) -> str:
        self.executed += 1
        done = self.cached + self.executed
        elapsed = time.perf_counter() - self.start
        remaining = self.total - done
        eta = elapsed / self.executed * remaining
        did = "+".join(result["did"])
        return (f"[{done}/{self.total}] {label} ({did}, {result['seconds']:.1f}s) | "
                f"elapsed {format_seconds(elapsed)} | ETA {format_seconds(eta)}")

    def emit(self, text: str) -> None:
        print(text, file=self.stream or sys.stderr, flush=True)


def run_plan(plan: Plan, jobs: int = 1, on_done: Callable[[Job, dict], None] | None = None,
             stream=None) -> dict:
    """Execute every job of ``plan`` that has something missing; returns counts.

    ``on_done`` is called in the parent after each executed job (progress, tests).
    A failed run fails its dependants; the others still run, then a ``UserError``
    lists the failures.
    """
    if jobs < 1:
        raise UserError(f"--jobs must be >= 1, got {jobs}")
    order = list(plan.jobs)
    lacking = plan.pending()
    pending = list(lacking)
    progress = Progress(total=len(order), cached=len(order) - len(pending), stream=stream)
    progress.emit(f"{len(order)} runs: {progress.cached} cached, {len(pending)} to run with {jobs} job(s)"
                  f" in {plan.runs_dir}")
    failed: dict[str, str] = {}

    def finished(key: str, result: dict) -> None:
        plan.record(key)
        progress.emit(progress.line(plan.jobs[key].label, result))
        if on_done is not None:
            on_done(plan.jobs[key], result)

    def blocked(key: str) -> str | None:
        base = plan.jobs[key].base
        return base if base is not None and base in failed else None

    if jobs == 1:
        for key in pending:
            if blocked(key):
                failed[key] = f"its base run {plan.jobs[key].label} failed"
                continue
            try:
                result = execute(plan.jobs[key], plan.run_dir(key), lacking[key])
            except (UserError, RuntimeError, ValueError) as exc:
                failed[key] = f"{exc.__class__.__name__}: {exc}"
                progress.emit(f"failed: {plan.jobs[key].label}: {failed[key]}")
                continue
            finished(key, result)
    else:
        threads = max(1, (os.cpu_count() or 1) // jobs)
        waiting = list(pending)
        in_flight: dict[Future, str] = {}
        with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn"), initializer=_init_worker,
                                 initargs=(threads,)) as pool:
            try:
                while waiting or in_flight:
                    for key in list(waiting):
                        if len(in_flight) >= jobs:
                            break
                        base = plan.jobs[key].base
                        if blocked(key):
                            failed[key] = f"its base run {plan.jobs[base].label} failed"
                            waiting.remove(key)
                        elif base is None or (base not in in_flight.values() and base not in waiting):
                            in_flight[pool.submit(execute, plan.jobs[key], plan.run_dir(key), lacking[key])] = key
                            waiting.remove(key)
                    if not in_flight:
                        continue
                    done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                    for future in done:
                        key = in_flight.pop(future)
                        try:
                            result = future.result()
                        except Exception as exc:  # a worker's error, re-raised here
                            failed[key] = f"{exc.__class__.__name__}: {exc}"
                            progress.emit(f"failed: {plan.jobs[key].label}: {failed[key]}")
                            continue
                        finished(key, result)
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)
                raise
    if failed:
        lines = "; ".join(f"{plan.jobs[k].label}: {why}" for k, why in list(failed.items())[:5])
        raise UserError(f"{len(failed)} of {len(pending)} runs failed (finished runs are cached; "
                        f"re-run to retry): {lines}")
    return {"total": len(order), "cached": progress.cached, "executed": progress.executed}
