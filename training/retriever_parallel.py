"""``train-retriever --distributed``: the retriever's BPR steps data-parallel under torchrun.

What is split and what is replicated.  Every rank holds the whole graph: the normalised
adjacency, the ``nodes × d`` embedding table and its Adam state, and runs the whole
propagation in every step.  Every rank draws the same epoch permutation and negatives a
single process draws (same seed, same numpy stream), takes its contiguous shard of each
global batch of (user, positive, negative) triples, weights its loss by its share
(``distributed.shard``), and DistributedDataParallel all-reduces the embedding gradient, so
each step applies exactly the one-process gradient of the global batch.  Rank 0 alone
validates (its Recall@K is broadcast and every rank applies the same stopping rule),
evaluates and writes; the per-epoch resume point is ``distributed_state``'s, with the
numpy stream's state in its ``generator`` slot.

Where replication stops holding.  The table, its gradient and Adam's two moments are
``4 · nodes · d · 4`` bytes per rank (MovieLens-25M, 221k nodes, d = 64: 227 MB; a
100M-node graph: 100 GB), the adjacency ``12 · 2 · edges`` bytes (25M ratings: 480 MB), and
the all-reduce moves the dense table gradient every step.  The propagation, which is most
of a step on CPU (``reports/scale/spmm``), is not split: more ranks shorten only the BPR
part.  Past one machine's memory, or when the propagation dominates, the graph must be
partitioned (row blocks of Â per rank with an all-gather per layer), which is not built.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ratingctr.training.distributed import (
    DistContext,
    broadcast_score,
    broadcast_state,
    gather_rng_states,
    shard,
    sum_over_ranks,
)
from ratingctr.training.distributed_fit import Resumed, agreed_train_state
from ratingctr.training.distributed_state import TrainState, save_train_state
from ratingctr.training.early_stopping import Stopped

_PCG_BYTES = 16  # PCG64's state and increment are 128-bit integers


def numpy_stream_tensor(rng: np.random.Generator) -> torch.Tensor:
    """A ``PCG64`` generator's state as bytes (a tensor, so the resume point loads with ``weights_only``)."""
    state = rng.bit_generator.state
    if state["bit_generator"] != "PCG64":
        raise ValueError(f"only PCG64 streams are saved, got {state['bit_generator']}")
    raw = (state["state"]["state"].to_bytes(_PCG_BYTES, "little") + state["state"]["inc"].to_bytes(_PCG_BYTES, "little")
           + int(state["has_uint32"]).to_bytes(1, "little") + int(state["uinteger"]).to_bytes(4, "little"))
    return torch.tensor(list(raw), dtype=torch.uint8)


def restore_numpy_stream(rng: np.random.Generator, saved: torch.Tensor) -> None:
    raw = bytes(saved.tolist())
    rng.bit_generator.state = {
        "bit_generator": "PCG64",
        "state": {"state": int.from_bytes(raw[:_PCG_BYTES], "little"),
                  "inc": int.from_bytes(raw[_PCG_BYTES:2 * _PCG_BYTES], "little")},
        "has_uint32": raw[2 * _PCG_BYTES], "uinteger": int.from_bytes(raw[2 * _PCG_BYTES + 1:], "little")}


class _BPRForward(nn.Module):
    """DDP syncs the gradients of what runs through its ``forward``; the objective is ``LightGCN.bpr_loss``."""

    def __init__(self, model: nn.Module, reg_weight: float) -> None:
        super().__init__()
        self.model = model
        self.reg_weight = reg_weight

    def forward(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        return self.model.bpr_loss(users, pos, neg, self.reg_weight)


@dataclass
class RetrieverParallel:
    """One rank's part in a retriever run: its context, the resume point's path and the run's
    configuration (a saved state must come from the same one)."""

    ctx: DistContext
    state_path: Path
    config: dict
    resumed_from_epoch: int | None = None
    _ddp: nn.parallel.DistributedDataParallel | None = None
    _optimizer: torch.optim.Optimizer | None = None
    _rng: np.random.Generator | None = None

    @property
    def is_main(self) -> bool:
        return self.ctx.is_main

    def attach(self, model: nn.Module, optimizer: torch.optim.Optimizer, rng: np.random.Generator,
               reg_weight: float) -> Resumed:
        """Wrap ``model`` for data-parallel steps; load the resume point when there is one."""
        state = agreed_train_state(self.state_path, self.config, self.ctx)
        if state is not None:
            model.load_state_dict(state.model)
            optimizer.load_state_dict(state.optimizer)
            restore_numpy_stream(rng, state.generator)
        broadcast_state(model, self.ctx)
        # init_sync=False: broadcast above; DDP's own sync would also send the sparse adjacency buffer
        self._ddp = nn.parallel.DistributedDataParallel(
            _BPRForward(model, reg_weight), device_ids=[self.ctx.device.index] if self.ctx.device.type == "cuda"
            else None, init_sync=False, forward_sync_buffers=False)
        self._optimizer, self._rng = optimizer, rng
        if state is None:
            return Resumed()
        self.resumed_from_epoch = state.epoch
        return Resumed(first_epoch=state.epoch + 1, stopped=state.stopped, best_state=state.best_state,
                                epoch_seconds=[float(r["seconds"]) for r in state.stopped.history])

    def loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> tuple[torch.Tensor, float]:
        """This rank's loss on its shard of the global batch ``users/pos/neg``, weighted so DDP's
        average is the global batch's gradient, and the shard's summed loss (for the epoch's mean)."""
        local, weight = shard(torch.arange(users.shape[0], device=users.device), self.ctx)
        raw = self._ddp(users[local], pos[local], neg[local])
        return raw * weight, float(raw.detach()) * (local.numel() if weight else 0)

    def sum(self, value: float) -> float:
        return float(sum_over_ranks(torch.tensor([value], dtype=torch.float64, device=self.ctx.device)).item())

    def share_score(self, score: float) -> float:
        return broadcast_score(score, self.ctx)

    def save(self, epoch: int, stopped: Stopped, best_state: dict[str, torch.Tensor], model: nn.Module) -> None:
        """The resume point after ``epoch`` (every rank joins the gather; rank 0 writes)."""
        rng = gather_rng_states(self.ctx)
        if self.is_main:
            save_train_state(self.state_path, TrainState(
                epoch=epoch, world_size=self.ctx.world_size, model=model.state_dict(),
                optimizer=self._optimizer.state_dict(), generator=numpy_stream_tensor(self._rng), rng=rng,
                stopped=stopped, best_state=best_state), self.config)

    def finish(self) -> None:
        if self.is_main:
            self.state_path.unlink(missing_ok=True)
