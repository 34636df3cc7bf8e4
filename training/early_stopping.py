"""The epoch loop both trainers share: early stopping on a validation score, best-state restore.

The ranker (``trainer.fit``, validation AUC) and the retriever (``retriever``, validation
Recall@K) differ in what an epoch does, not in when to stop or which weights to keep,
so that policy lives here once.
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from torch import nn


@dataclass
class Stopped:
    """How a loop ended: the best epoch (-1: none scored), its score and one record per epoch run."""

    best_epoch: int = -1
    best_score: float = float("-inf")
    history: list[dict] = field(default_factory=list)


def train_until_stale(model: nn.Module, epochs: Iterable[int], patience: int,
                      run_epoch: Callable[[int], tuple[float, dict]]) -> Stopped:
    """Run ``run_epoch(epoch)`` (train one epoch, validate) until ``patience`` epochs in a row
    fail to beat the best validation score, or ``epochs`` runs out.

    ``run_epoch`` returns the epoch's validation score (higher is better; NaN never counts as
    better) and its history record. The model ends holding the weights of its best epoch,
    or its starting weights when no epoch scored, so evaluation after the loop sees what
    validation chose.
    """
    stopped = Stopped()
    best_state = copy.deepcopy(model.state_dict())
    stale = 0
    for epoch in epochs:
        score, record = run_epoch(epoch)
        stopped.history.append(record)
        if score > stopped.best_score:
            stopped.best_score, stopped.best_epoch, stale = score, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            stale += 1
            if stale >= patience:
                break
    model.load_state_dict(best_state)
    return stopped
