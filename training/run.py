"""One training run end to end: data → model → fit → evaluate → ``model.pt`` + ``metrics.json``.

The checkpoint holds only tensors and plain containers (config, schema, vocabulary),
so it loads with ``torch.load(..., weights_only=True)``: nothing is unpickled.
"""
from __future__ import annotations

import json
import math
import platform
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ratingctr.errors import UserError
from ratingctr.training.config import RunConfig
from ratingctr.training.data.encode import TEST, TRAIN, EncodedData, load_dataset
from ratingctr.training.data.schema import FieldSchema
from ratingctr.training.evaluation import full_eval
from ratingctr.training.graph import cached_adjacency
from ratingctr.training.models.build import build_model
from ratingctr.training.models.ctr import CTRModel
from ratingctr.training.trainer import TrainResult, fit, seed_everything, select_device

if TYPE_CHECKING:
    from ratingctr.training.distributed import DistContext

CHECKPOINT_FORMAT = 1


def training_graph(config: RunConfig, data: EncodedData) -> torch.Tensor | None:
    """The LightGCN adjacency over *training* edges only, or None for the table encoder."""
    if config.encoder.kind == "table":
        return None
    if config.encoder.kind != "lightgcn":
        raise UserError(f"unknown encoder '{config.encoder.kind}'; choose table or lightgcn")
    train = data.split == TRAIN
    return cached_adjacency(data.user[train], data.item[train], data.n_users, data.n_items)


def _check_fine_tune_base(config: RunConfig, base: RunConfig, payload: dict, data: EncodedData) -> None:
    problems = []
    if base.encoder.kind != "table":
        problems.append(f"its encoder is {base.encoder.kind}, FT and Base+ start from a table-encoder run")
    if base.model != config.model:
        problems.append(f"it trained {base.model.name} with other hyper-parameters")
    if base.head.kind != config.head.kind:
        problems.append(f"its head is {base.head.kind}, not {config.head.kind}")
    if replace(base.data, data_dir=None) != replace(config.data, data_dir=None):
        problems.append("its data settings (k-core, threshold, drop-middle, seed) differ, so its split differs")
    if payload["schema"] != data.schema.to_dict():
        problems.append("its field schema differs from this dataset's")
    if problems:
        raise UserError(f"cannot continue from {config.encoder.init_from}: " + "; ".join(problems))


def make_model(config: RunConfig, data: EncodedData) -> CTRModel:
    """Build the configured model; ``init_from`` also loads a table-encoder run's weights into it.

    With the graph encoder that is FT (the id table seeds the graph's E⁰); with the table
    encoder it is Base+, the connectivity study's control: the same checkpoint trained on
    under FT's budget, optimiser and stopping rule, without message passing.
    """
    adjacency = training_graph(config, data)
    try:
        model = build_model(data.schema, config, adjacency)
    except (ValueError, TypeError) as exc:
        raise UserError(str(exc)) from exc
    if config.encoder.init_from:
        payload, base = load_checkpoint(Path(config.encoder.init_from))
        _check_fine_tune_base(config, base, payload, data)
        model.load_state_dict(payload["state_dict"])  # FT: the id table seeds the graph's E⁰
    return model


def split_hash(data: EncodedData) -> str:
    """sha256 of the test rows as (raw user id, raw item id, rating), in row order.

    ``ratingctr compare`` refuses two runs whose hashes differ: equal test-row *counts*
    do not make equal test sets (another seed or split mode gives other rows).  Raw ids,
    not codes, so the same rows hash alike under any encoding.
    """
    import hashlib

    import numpy as np

    test = data.rows(TEST)
    digest = hashlib.sha256()
    for name, codes in (("user_id", data.user[test]), ("item_id", data.item[test])):
        digest.update(np.asarray(data.vocab[name], dtype=str)[codes].tobytes() + b"\0")
    digest.update(data.rating[test].astype("<i8").tobytes())
    return digest.hexdigest()


def _finite(value: Any) -> Any:
    """JSON has no NaN: write ``null`` for undefined metrics (e.g. AUC of a one-class group)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def write_json(path: Path, payload: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(_finite(payload), indent=2, sort_keys=False) + "\n")
    tmp.replace(path)


def save_checkpoint(path: Path, model: CTRModel, config: RunConfig, data: EncodedData) -> None:
    payload = {
        "format": CHECKPOINT_FORMAT,
        "config": config.to_dict(),
        "schema": data.schema.to_dict(),
        "vocab": data.vocab,
        "stats": data.stats,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    torch.save(payload, path)


def load_checkpoint(run_dir: Path) -> tuple[dict, RunConfig]:
    path = Path(run_dir)
    path = path / "model.pt" if path.is_dir() else path
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file: say so, never unpickle
        raise UserError(f"{path} is not a readable ratingctr checkpoint: {exc.__class__.__name__}: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{path} is not a ratingctr checkpoint (format {CHECKPOINT_FORMAT} expected)")
    return payload, RunConfig.from_dict(payload["config"])


def restore_model(payload: dict, config: RunConfig, data: EncodedData | None = None) -> CTRModel:
    """Rebuild a saved model; a LightGCN model needs its dataset to rebuild the graph."""
    schema = FieldSchema.from_dict(payload["schema"])
    adjacency = None
    if config.encoder.kind == "lightgcn":
        if data is None:
            raise UserError("a LightGCN checkpoint needs its dataset to rebuild the training graph")
        adjacency = training_graph(config, data)
    model = build_model(schema, config, adjacency)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[1:2] or [str(exc)]
        raise UserError(f"checkpoint weights do not fit this version's {config.model.name}: "
                        f"{first[0].strip()} (retrain the run)") from exc
    return model


def _load_data(config: RunConfig, distributed: DistContext | None) -> EncodedData:
    """The dataset; in a data-parallel job rank 0 reads it first (it may fetch and cache it),
    then the other ranks read what it left."""
    if distributed is None:
        return load_dataset(config.data)
    from ratingctr.training.distributed import barrier

    if not distributed.is_main:
        barrier(distributed)  # wait for rank 0's read
    data = load_dataset(config.data)
    if distributed.is_main:
        barrier(distributed)
    return data


def train_run(config: RunConfig, out_dir: Path, data: EncodedData | None = None,
              trace: Callable[[torch.nn.Module], Callable[[TrainResult], dict]] | None = None,
              distributed: DistContext | None = None) -> dict:
    """Train, evaluate and write ``out_dir/model.pt`` and ``out_dir/metrics.json`` (last).

    ``trace(model)`` is called on the built model before training (to hook it); the
    function it returns gets the fit result and returns what goes into ``trace.json``.

    ``distributed``: this process is one rank of a torchrun job (``training.distributed``).
    Every rank trains; rank 0 alone evaluates and writes, and the other ranks return ``{}``.
    ``out_dir/train_state.pt`` is the resume point until ``metrics.json`` is written.
    """
    out_dir = Path(out_dir)
    main = distributed is None or distributed.is_main
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(config.train.seed)
    data = data if data is not None else _load_data(config, distributed)
    try:
        device = distributed.device if distributed is not None else select_device(config.train.device)
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    seed_everything(config.train.seed)
    model = make_model(config, data).to(device)
    finish_trace = trace(model) if trace is not None else None
    parallel = None
    if distributed is not None:
        from ratingctr.training.distributed_fit import DataParallelRun
        from ratingctr.training.distributed_state import TRAIN_STATE

        parallel = DataParallelRun(distributed, out_dir / TRAIN_STATE, config.to_dict(), config.train.seed)
    result = fit(model, data, config.train, device, distributed=parallel)
    if not main:
        return {}
    traced = finish_trace(result) if finish_trace is not None else None
    eval_start = time.perf_counter()
    metrics = full_eval(model, data, config.train.num_negatives, config.train.ranking_positives == "clicks",
                        seed=config.data.seed, batch_size=config.train.eval_rows, device=device,
                        eval_users=config.train.eval_users, ranking_on_valid=config.train.ranking_on_valid)
    eval_seconds = time.perf_counter() - eval_start
    payload = {
        "model": config.model.name, "head": config.head.kind, "aggregate": config.head.aggregate,
        "encoder": config.encoder.kind, "mode": ("FT" if config.encoder.init_from else "TS")
        if config.encoder.kind == "lightgcn" else ("base+" if config.encoder.init_from else "base"),
        "ratio": config.head.ratio, "dataset": data.stats, "split_hash": split_hash(data),
        "test": metrics["test"], "valid": metrics["valid"], "groups": metrics["groups"],
        "best_epoch": result.best_epoch, "epoch_seconds": result.epoch_seconds,
        "train_seconds": sum(result.epoch_seconds), "eval_seconds": eval_seconds,
        "eval_rows": metrics.get("scored_rows"),
        "history": result.history, "parameters": sum(p.numel() for p in model.parameters()),
        "device": str(device), "precision": result.precision, "torch": torch.__version__, "python": platform.python_version(),
        "config": config.to_dict(),
    }
    if parallel is not None:
        payload["distributed"] = {"world_size": distributed.world_size, "backend": distributed.backend,
                                  "resumed_from_epoch": parallel.resumed_from_epoch}
    save_checkpoint(out_dir / "model.pt", model, config, data)
    if traced is not None:
        write_json(out_dir / "trace.json", traced)
    write_json(out_dir / "metrics.json", payload)  # last: its presence marks the run finished
    if parallel is not None:
        parallel.finish()
    return payload


def evaluate_run(run_dir: Path, noise_std: float = 0.0, device_name: str = "auto", ranking: bool = True,
                 data_dir: str | None = None) -> dict:
    """Re-score a saved run on its own split, optionally with Gaussian noise on the embeddings."""
    payload, config = load_checkpoint(run_dir)
    if data_dir is not None:
        config = replace(config, data=replace(config.data, data_dir=data_dir))
    from ratingctr.training.data.stored import load_run_data

    run = Path(run_dir) if Path(run_dir).is_dir() else Path(run_dir).parent
    data, _ = load_run_data(run, config.data)  # a retrained run carries its grown data
    if data.schema.to_dict() != payload["schema"]:
        raise UserError("the dataset no longer matches the checkpoint's field schema; "
                        "was the data changed since training?")
    model = restore_model(payload, config, data)
    device = select_device(device_name)
    model.to(device)
    model.encoder.noise_std = float(noise_std)
    seed_everything(config.train.seed)
    metrics = full_eval(model, data, config.train.num_negatives, config.train.ranking_positives == "clicks",
                        seed=config.data.seed, batch_size=config.train.eval_rows, device=device,
                        ranking=ranking, eval_users=config.train.eval_users)
    return {"noise_std": noise_std, **metrics}
