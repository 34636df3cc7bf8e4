"""The epoch loop both trainers share: early stopping on a validation score, best-state restore.

The ranker (``trainer.fit``, validation AUC) and the retriever (``retriever``, validation
Recall@K) differ in what an epoch does, not in when to stop or which weights to keep,
so that policy lives here once.  A resumed run (``training.distributed_state``) hands the
loop back the state it had saved, so the policy is not re-implemented for resumption either.
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class Stopped:
    """How a loop ended: the best epoch (-1: none scored), its score and one record per epoch run.

    ``stale`` counts the epochs since the best one; a loop resumed with ``stale >= patience``
    had already stopped and runs no further epoch.
    """

    best_epoch: int = -1
    best_score: float = float("-inf")
    history: list[dict] = field(default_factory=list)
    stale: int = 0


AfterEpoch = Callable[[int, Stopped, dict[str, torch.Tensor]], None]


def train_until_stale(model: nn.Module, epochs: Iterable[int], patience: int,
                      run_epoch: Callable[[int], tuple[float, dict]], start: Stopped | None = None,
                      start_best_state: dict[str, torch.Tensor] | None = None,
                      after_epoch: AfterEpoch | None = None, min_epochs: int = 0) -> Stopped:
    """Run ``run_epoch(epoch)`` (train one epoch, validate) until ``patience`` epochs in a row
    fail to beat the best validation score, or ``epochs`` runs out.

    ``run_epoch`` returns the epoch's validation score (higher is better; NaN never counts as
    better) and its history record. The model ends holding the weights of its best epoch,
    or its starting weights when no epoch scored, so evaluation after the loop sees what
    validation chose.

    ``min_epochs``: no stop before this many epochs have run, however stale (a model whose
    validation score plateaus early, as a retriever does at popularity, before it learns
    the users; ``retriever`` explains the choice).

    ``start`` / ``start_best_state``: the loop's state as a checkpoint saved it (a resumed
    run; ``epochs`` then begins after the saved epoch).  ``after_epoch(epoch, stopped,
    best_state)`` runs after every epoch's decision, before the loop may break, so a
    checkpoint written there also records a decision to stop.
    """
    stopped = copy.deepcopy(start) if start is not None else Stopped()
    best_state = start_best_state if start_best_state is not None else copy.deepcopy(model.state_dict())
    if stopped.stale < patience or len(stopped.history) < min_epochs:
        for epoch in epochs:
            score, record = run_epoch(epoch)
            stopped.history.append(record)
            if score > stopped.best_score:
                stopped.best_score, stopped.best_epoch, stopped.stale = score, epoch, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                stopped.stale += 1
            if after_epoch is not None:
                after_epoch(epoch, stopped, best_state)
            if stopped.stale >= patience and len(stopped.history) >= min_epochs:
                break
    model.load_state_dict(best_state)
    return stopped
