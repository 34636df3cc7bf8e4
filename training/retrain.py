"""Warm-start retraining: a trained run + pulled events → a new run that starts where it stopped.

``retrain_ranker`` / ``retrain_retriever`` (verbs ``retrain`` / ``retrain-retriever``):

1. the base run's data (its own grown copy, ``data/stored.py``, or its dataset);
2. the events to learn from (``select_events``): the log up to ``max_stream_id``, minus
   events already in the base's data and the ``exclude_stream_ids`` (the loop's per-user
   gate holdout, trained on by the next cycle), the newest ``window`` of them;
3. the newest ``holdout_share`` of those is held out: with the base validation rows it is
   the validation set early stopping watches. Why the newest: the retrained model will
   serve the events that come next, so the freshest events are the best stand-in for
   them, and the older ones are trained on; why the base validation rows too: they keep
   early stopping from trading the old users' quality for the new events';
4. the data grows (``data/grow.py``: new ids get appended rows) and the model grows
   (``models/grow.py``: a fresh bigger model holding every trained row);
5. training rows = a ``replay_share`` sample of the base training rows + the new training
   events; the LightGCN graph (ranker encoder and retriever) is built over every base
   training edge + the new ones, which is also the graph export rebuilds;
6. the out run holds ``model.pt``, ``data/`` (the grown data, so export and the next
   retrain read exactly this data) and ``metrics.json`` with its ``lineage``.

``lineage.last_stream_id`` is the newest event any weight of this run was trained on:
the promotion gate scores candidates on events after it (the held-out slice included,
which early stopping saw but no gradient did). Held-out events of a base run are not
kept as base rows: they are events like any other for the next retrain.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ratingctr.errors import UserError
from ratingctr.training.config import DataConfig, RunConfig
from ratingctr.training.data.encode import EXCLUDED, TRAIN, VALID, EncodedData
from ratingctr.training.data.event_log import STREAM_ID_PATTERN, read_event_log, stream_id_key
from ratingctr.training.data.grow import ROW_TABLES, Grown, grow
from ratingctr.training.data.schema import FieldSchema
from ratingctr.training.data.stored import load_run_data, save_run_data
from ratingctr.training.evaluation import full_eval, pointwise_eval
from ratingctr.training.models.grow import copy_blocks, grow_model
from ratingctr.training.retriever import LightGCN, RetrieverConfig, train_retriever
from ratingctr.training.run import load_checkpoint, save_checkpoint, training_graph, write_json
from ratingctr.training.trainer import fit, seed_everything, select_device

STREAM_ID = STREAM_ID_PATTERN


@dataclass(frozen=True)
class RetrainConfig:
    """Which events, how much of the base to replay, and the training settings of the continuation.

    ``window``: the newest N selected events (None = all). ``replay_share``: fraction of
    the base training rows trained on beside the events (1.0 = all, 0.0 = events only).
    ``max_stream_id``: ignore events after this stream id (reproducible "everything pulled
    so far"). ``epochs``/``patience`` default to 5/3. ``lr`` defaults to the base run's lr
    times ``lr_scale`` (1.0).  A lower rate looked better on one cycle's 1,000
    held-out events and was worse prequentially on the next 40,000
    (``reports/ml-100k/online/retrain-recipe.md``), so the default stays the base rate.
    ``debug_shuffle_labels``: permute the training rows' ratings, a deliberately spoiled
    candidate for testing the promotion gate.  ``exclude_stream_ids``: events never to learn
    from in this run (``--exclude-events FILE``), e.g. what the promotion gate will judge on.
    """

    window: int | None = None
    replay_share: float = 1.0
    holdout_share: float = 0.1
    max_stream_id: str | None = None
    epochs: int = 5
    lr: float | None = None
    lr_scale: float = 1.0
    patience: int = 3
    seed: int = 2020
    device: str = "auto"
    progress: bool = True
    debug_shuffle_labels: bool = False
    exclude_stream_ids: frozenset[str] = frozenset()

    def check(self) -> None:
        if self.window is not None and self.window < 1:
            raise UserError(f"--window must be >= 1, got {self.window}")
        if not 0.0 <= self.replay_share <= 1.0:
            raise UserError(f"--replay-share must be in [0, 1], got {self.replay_share}")
        if not 0.0 <= self.holdout_share < 1.0:
            raise UserError(f"--holdout-share must be in [0, 1), got {self.holdout_share}")
        if self.max_stream_id is not None and not STREAM_ID.match(self.max_stream_id):
            raise UserError(f"--max-stream-id must be a Redis stream id like 1700000000000-0, "
                            f"got {self.max_stream_id!r}")
        if self.epochs < 1 or self.patience < 1:
            raise UserError("--epochs and --patience must be >= 1")
        if self.lr is not None and not self.lr > 0:
            raise UserError(f"--lr must be > 0, got {self.lr}")
        if not self.lr_scale > 0:
            raise UserError(f"--lr-scale must be > 0, got {self.lr_scale}")

    def to_dict(self) -> dict:
        """JSON-ready (the excluded ids are counted, not listed: the lineage names how many)."""
        return {**asdict(self), "exclude_stream_ids": len(self.exclude_stream_ids)}

    def learning_rate(self, base_lr: float) -> float:
        """``lr`` when given, else the base run's times ``lr_scale``."""
        return self.lr if self.lr is not None else base_lr * self.lr_scale


def read_events(events_dir: Path) -> pd.DataFrame:
    events_dir = Path(events_dir)
    if not events_dir.is_dir():
        raise UserError(f"events directory not found: {events_dir}")
    log = read_event_log(events_dir)
    if log.empty:
        raise UserError(f"{events_dir} holds no events (no events-*.parquet partition; run `ratingctr events pull`)")
    return log


def _at_or_before(stream_ids: pd.Series, limit: str) -> np.ndarray:
    key = stream_id_key(stream_ids)
    ms, seq = (int(part) for part in limit.split("-"))
    return (key[:, 0] < ms) | ((key[:, 0] == ms) & (key[:, 1] <= seq))


def select_events(log: pd.DataFrame, known: np.ndarray, config: RetrainConfig, source: str) -> pd.DataFrame:
    """The events to learn from, in stream order (see the module docstring)."""
    events = log
    if config.max_stream_id is not None:
        events = events[_at_or_before(events["stream_id"], config.max_stream_id)]
    events = events[~events["stream_id"].isin(known)]
    if config.exclude_stream_ids:
        events = events[~events["stream_id"].isin(config.exclude_stream_ids)]
    if config.window is not None:
        events = events.tail(config.window)
    if events.empty:
        raise UserError(f"{source}: no new events to retrain on (every event is after --max-stream-id, "
                        "excluded, or already in the base run's data)")
    return events.reset_index(drop=True)


def drop_rows(data: EncodedData, stream_id: np.ndarray, keep: np.ndarray) -> tuple[EncodedData, np.ndarray]:
    """``data`` with only the interactions ``keep`` (vocabularies and feature rows unchanged)."""
    updates = {name: value[keep] for name, value in vars(data).items()
               if isinstance(value, np.ndarray) and name not in ROW_TABLES}
    return replace(data, **updates), stream_id[keep]


@dataclass
class Prepared:
    """Grown data, the rows this run trains on, and its lineage record."""

    grown: Grown
    fit_data: EncodedData  # the grown data with unreplayed base rows EXCLUDED (and labels shuffled if asked)
    lineage: dict


def prepare(base: EncodedData, base_stream_id: np.ndarray, data_config: DataConfig, from_run: Path,
            events_dir: Path, config: RetrainConfig) -> Prepared:
    config.check()
    untrained_events = (base_stream_id != "") & (base.split != TRAIN)
    base, base_stream_id = drop_rows(base, base_stream_id, ~untrained_events)
    events = select_events(read_events(events_dir), base_stream_id[base_stream_id != ""], config, str(events_dir))
    n_valid = int(np.floor(config.holdout_share * len(events)))
    split = np.full(len(events), TRAIN, dtype=np.int8)
    split[len(events) - n_valid:] = VALID
    grown = grow(base, base_stream_id, events, split, data_config.drop_middle, str(events_dir))
    data, n_base = grown.data, base.rating.shape[0]
    rng = np.random.default_rng(config.seed)
    base_train = np.flatnonzero(base.split == TRAIN)
    replayed = rng.choice(base_train, size=round(config.replay_share * base_train.size), replace=False)
    fit_split = data.split.copy()
    fit_split[np.setdiff1d(base_train, replayed)] = EXCLUDED
    rating = data.rating
    train_rows = np.flatnonzero(fit_split == TRAIN)
    if train_rows.size == 0:
        raise UserError("nothing to train on: no replayed base rows and no new training events")
    if config.debug_shuffle_labels:
        rating = rating.copy()
        rating[train_rows] = rating[train_rows][rng.permutation(train_rows.size)]
    fit_data = replace(data, split=fit_split, rating=rating)
    trained = (grown.stream_id != "") & (data.split == TRAIN)
    trained_ids = grown.stream_id[trained]
    last = trained_ids[np.lexsort(stream_id_key(trained_ids).T[::-1])[-1]] if trained_ids.size else None
    new_train = int((split == TRAIN).sum())
    lineage = {
        "from": str(from_run), "events_dir": str(events_dir), "events_used": len(events),
        "events_trained": new_train, "events_held_out": n_valid,
        "first_stream_id": str(events["stream_id"].iat[0]), "last_stream_id": last,
        "max_stream_id": config.max_stream_id, "window": config.window, "replay_share": config.replay_share,
        "replayed_rows": int(replayed.size), "base_rows": int(n_base), "holdout_share": config.holdout_share,
        "debug_shuffle_labels": config.debug_shuffle_labels,
        "events_excluded": len(config.exclude_stream_ids), **grown.growth.to_dict(),
    }
    return Prepared(grown=grown, fit_data=fit_data, lineage=lineage)


def _out_dir(out_dir: Path, from_run: Path) -> Path:
    out_dir = Path(out_dir)
    if out_dir.resolve() == Path(from_run).resolve():
        raise UserError("--out must differ from --from: retraining never overwrites its base run")
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir


def retrain_ranker(from_run: Path, events_dir: Path, out_dir: Path, config: RetrainConfig) -> dict:
    """Continue the ranker of ``from_run`` on its base data + the events; returns ``metrics.json``."""
    from_run = Path(from_run)
    payload, base_config = load_checkpoint(from_run)
    base, base_stream_id = load_run_data(from_run, base_config.data)
    if base.schema.to_dict() != payload["schema"]:
        raise UserError(f"the data of {from_run} no longer matches its checkpoint's field schema")
    prepared = prepare(base, base_stream_id, base_config.data, from_run, events_dir, config)
    data = prepared.grown.data
    lr = config.learning_rate(base_config.train.lr)
    train = replace(base_config.train, epochs=config.epochs, lr=lr,
                    patience=config.patience, seed=config.seed, device=config.device, progress=config.progress)
    run_config = RunConfig(data=base_config.data, model=base_config.model, head=base_config.head, train=train,
                           encoder=replace(base_config.encoder, init_from=None))
    try:
        device = select_device(config.device)
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    out_dir = _out_dir(out_dir, from_run)
    seed_everything(config.seed)
    model = grow_model(payload["state_dict"], FieldSchema.from_dict(payload["schema"]), data.schema, run_config,
                       training_graph(run_config, data)).to(device)
    result = fit(model, prepared.fit_data, train, device)
    start = time.perf_counter()
    metrics = full_eval(model, prepared.fit_data, train.num_negatives, train.ranking_positives == "clicks",
                        seed=base_config.data.seed, batch_size=train.eval_rows, device=device,
                        eval_users=train.eval_users)
    held = np.flatnonzero((prepared.grown.stream_id != "") & (data.split == VALID))
    held = held[held >= prepared.lineage["base_rows"]]
    events_valid = pointwise_eval(model, data, held, train.eval_rows, device)[0] if held.size else None
    out = {
        "model": run_config.model.name, "head": run_config.head.kind, "aggregate": run_config.head.aggregate,
        "encoder": run_config.encoder.kind, "mode": "retrain", "ratio": run_config.head.ratio, "dataset": data.stats,
        "test": metrics["test"], "valid": metrics["valid"], "groups": metrics["groups"],
        "events_valid": events_valid, "best_epoch": result.best_epoch, "epoch_seconds": result.epoch_seconds,
        "train_seconds": sum(result.epoch_seconds), "eval_seconds": time.perf_counter() - start,
        "history": result.history, "parameters": sum(p.numel() for p in model.parameters()),
        "device": str(device), "precision": result.precision, "torch": torch.__version__,
        "config": run_config.to_dict(), "lineage": prepared.lineage,
    }
    save_run_data(out_dir, data, prepared.grown.stream_id)
    save_checkpoint(out_dir / "model.pt", model, run_config, data)
    write_json(out_dir / "metrics.json", out)  # last: its presence marks the run finished
    return out


def load_retriever(run: Path) -> tuple[dict, DataConfig]:
    path = Path(run) / "model.pt"
    if not path.is_file():
        raise UserError(f"retriever checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        raw = dict(payload["data"])
        return payload, DataConfig(**{**raw, "split": tuple(raw["split"])})
    except Exception as exc:  # a truncated or foreign file: say so, never unpickle
        raise UserError(f"{path} is not a readable retriever checkpoint: {exc.__class__.__name__}: {exc}") from exc


def retrain_retriever(from_run: Path, events_dir: Path, out_dir: Path, config: RetrainConfig) -> dict:
    """Continue the LightGCN retriever of ``from_run``: new ids get ego rows, the graph gains the new edges."""
    from_run = Path(from_run)
    payload, data_config = load_retriever(from_run)
    base, base_stream_id = load_run_data(from_run, data_config)
    if payload["vocab"]["user_id"] != base.vocab["user_id"] or payload["vocab"]["item_id"] != base.vocab["item_id"]:
        raise UserError(f"the data of {from_run} no longer matches its retriever's ids")
    prepared = prepare(base, base_stream_id, data_config, from_run, events_dir, config)
    data = prepared.grown.data
    known = {k: v for k, v in payload["config"].items() if k in RetrieverConfig.__dataclass_fields__}
    retriever = replace(RetrieverConfig(**known), epochs=config.epochs, lr=config.learning_rate(known.get("lr", 1e-3)),
                        patience=config.patience, seed=config.seed, device=config.device, progress=config.progress,
                        min_steps=0, min_epochs=0, patience_steps=0,  # warm-started: past the plateaus already
                        min_batches_per_epoch=known.get("min_batches_per_epoch", 0),
                        positives=known.get("positives", "clicks"))  # runs before the field trained on clicks
    old = payload["state_dict"]["embedding.weight"]
    old_sizes = [len(base.vocab["user_id"]), len(base.vocab["item_id"])]
    new_sizes = [len(data.vocab["user_id"]), len(data.vocab["item_id"])]

    def warm_start(model: LightGCN) -> None:
        copy_blocks(old, model.embedding.weight, old_sizes, new_sizes)

    sampled = np.ones(data.rating.shape[0], dtype=bool)
    sampled[prepared.fit_data.split != data.split] = False  # unreplayed base rows
    fit_data = replace(data, rating=prepared.fit_data.rating)  # shuffled ratings move the BPR positives too
    out_dir = _out_dir(out_dir, from_run)
    save_run_data(out_dir, data, prepared.grown.stream_id)
    return train_retriever(data_config, retriever, out_dir, fit_data, init=warm_start, sampled=sampled,
                           extra_metrics={"lineage": prepared.lineage, "retrain": config.to_dict()})
