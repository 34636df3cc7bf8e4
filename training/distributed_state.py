"""The resume point of a distributed run: ``OUT/train_state.pt``, rewritten after every epoch.

Why: a rank that dies (OOM, a lost node, a preempted VM) takes the job down with it;
``torchrun --max-restarts K`` then starts every rank again, and they continue from the
last finished epoch instead of from scratch.  The file holds what the next epoch depends
on: weights, optimiser state, the batch-order generator, every rank's dropout stream and
the early-stopping state (best weights, best score, stale count, history), all tensors and
plain containers, so it loads with ``torch.load(..., weights_only=True)``.  It is written
by rank 0 to a temporary name and renamed, so a rank killed mid-write leaves the previous
epoch's file whole; it is deleted once ``metrics.json`` is written.  A file from another
configuration is refused rather than silently resumed.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ratingctr.errors import UserError
from ratingctr.training.early_stopping import Stopped

TRAIN_STATE = "train_state.pt"
STATE_FORMAT = 1


@dataclass
class TrainState:
    """Everything the epoch after ``epoch`` needs, as rank 0 saw it when ``epoch`` ended."""

    epoch: int
    world_size: int
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    generator: torch.Tensor
    rng: torch.Tensor  # [world_size, bytes]: every rank's generator state
    stopped: Stopped
    best_state: dict[str, torch.Tensor]


def _cpu(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in state.items()}


def save_train_state(path: Path, state: TrainState, config: dict) -> None:
    payload = {
        "format": STATE_FORMAT, "config": config, "epoch": state.epoch, "world_size": state.world_size,
        "model": _cpu(state.model), "optimizer": state.optimizer, "generator": state.generator.cpu(),
        "rng": state.rng.cpu(), "best_state": _cpu(state.best_state),
        "stopped": {"best_epoch": state.stopped.best_epoch, "best_score": float(state.stopped.best_score),
                    "history": state.stopped.history, "stale": state.stopped.stale},
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def load_train_state(path: Path, config: dict) -> TrainState | None:
    """The saved state, None when there is none; a ``UserError`` for a foreign or mismatched file."""
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated or foreign: say so, never unpickle
        raise UserError(f"{path} is not a readable training state ({exc.__class__.__name__}: {exc}); "
                        f"delete it to start the run afresh") from exc
    if not isinstance(payload, dict) or payload.get("format") != STATE_FORMAT:
        raise UserError(f"{path} is not a ratingctr training state (format {STATE_FORMAT}); delete it to start afresh")
    if payload["config"] != config:
        raise UserError(f"{path} was saved by a run with another configuration; delete it or choose another --out")
    stopped = payload["stopped"]
    return TrainState(epoch=int(payload["epoch"]), world_size=int(payload["world_size"]), model=payload["model"],
                      optimizer=payload["optimizer"], generator=payload["generator"], rng=payload["rng"],
                      best_state=payload["best_state"],
                      stopped=Stopped(best_epoch=int(stopped["best_epoch"]), best_score=float(stopped["best_score"]),
                                      history=list(stopped["history"]), stale=int(stopped["stale"])))
