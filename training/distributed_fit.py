"""What ``trainer.fit`` does differently on one rank of a data-parallel job, in one object.

``fit`` keeps its single-process loop; when handed a ``DataParallelRun`` it asks it to
attach to the model (global BatchNorm, DDP, resume), to take a step on this rank's shard,
to sum the epoch's loss over ranks, to share rank 0's validation score and to save the
resume point after each epoch.  With ``distributed=None`` none of this runs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ratingctr.errors import UserError
from ratingctr.training.distributed import (
    DistContext,
    ParallelLoss,
    broadcast_score,
    gather_rng_states,
    seed_rank_streams,
    set_rng_state,
    shard,
    sum_over_ranks,
)
from ratingctr.training.distributed_batchnorm import globalize_batch_norm
from ratingctr.training.distributed_state import TrainState, load_train_state, save_train_state
from ratingctr.training.early_stopping import Stopped
from ratingctr.training.models.ctr import CTRModel


@dataclass
class Resumed:
    """Where the epoch loop picks up: the first epoch to run and the stopping state so far."""

    first_epoch: int = 0
    stopped: Stopped | None = None
    best_state: dict[str, torch.Tensor] | None = None
    epoch_seconds: list[float] = field(default_factory=list)


def agreed_train_state(state_path: Path, config: dict, ctx: DistContext) -> TrainState | None:
    """The saved state every rank reads; an error on all ranks when some rank sees another one
    (a multi-node job whose ``--out`` is not on storage every node shares)."""
    state = load_train_state(state_path, config)
    mine = -1 if state is None else state.epoch
    main = torch.tensor([mine], dtype=torch.int64, device=ctx.device)
    torch.distributed.broadcast(main, src=0)
    differs = torch.tensor([int(int(main.item()) != mine)], dtype=torch.int64, device=ctx.device)
    torch.distributed.all_reduce(differs)
    if int(differs.item()):
        raise UserError(f"the ranks see different resume points in {state_path} (rank 0: epoch "
                        f"{int(main.item())}); a multi-node run needs --out on storage every node shares")
    return state


@dataclass
class DataParallelRun:
    """One rank's part in a run: its context, where the resume point lives, the run's config
    (a saved state must come from the same configuration) and the run's seed."""

    ctx: DistContext
    state_path: Path
    config: dict
    seed: int
    resumed_from_epoch: int | None = None
    _parallel: ParallelLoss | None = None
    _optimizer: torch.optim.Optimizer | None = None
    _generator: torch.Generator | None = None

    @property
    def is_main(self) -> bool:
        return self.ctx.is_main

    def attach(self, model: CTRModel, optimizer: torch.optim.Optimizer, generator: torch.Generator) -> Resumed:
        """Make ``model`` train data-parallel and load the resume point if there is one."""
        globalize_batch_norm(model)
        state = self._agreed_state()
        if state is not None:
            model.load_state_dict(state.model)
            optimizer.load_state_dict(state.optimizer)
            generator.set_state(state.generator)
        self._parallel = ParallelLoss(model, self.ctx)
        self._optimizer, self._generator = optimizer, generator
        if state is None:
            seed_rank_streams(self.seed, self.ctx)
            return Resumed()
        if state.world_size == self.ctx.world_size:
            set_rng_state(state.rng, self.ctx)
        else:  # resumed on another number of ranks: fresh, distinct dropout streams
            torch.manual_seed(self.seed + 7919 * (state.epoch + 1) + self.ctx.rank)
        self.resumed_from_epoch = state.epoch
        return Resumed(first_epoch=state.epoch + 1, stopped=state.stopped, best_state=state.best_state,
                       epoch_seconds=[float(r["seconds"]) for r in state.stopped.history])

    def _agreed_state(self) -> TrainState | None:
        return agreed_train_state(self.state_path, self.config, self.ctx)

    def step(self, train, idx: torch.Tensor, amp_dtype: torch.dtype | None) -> tuple[torch.Tensor, int]:
        """One step of the global batch ``idx`` on this rank's shard: (this shard's mean loss, its rows)."""
        from ratingctr.training.trainer import train_step

        local, weight = shard(idx, self.ctx)
        loss = train_step(self._parallel, self._optimizer, train, local, amp_dtype, scale=weight)
        return loss, (local.numel() if weight else 0)

    def sum(self, value: torch.Tensor) -> torch.Tensor:
        return sum_over_ranks(value)

    def share_score(self, score: float) -> float:
        return broadcast_score(score, self.ctx)

    def save(self, epoch: int, stopped: Stopped, best_state: dict[str, torch.Tensor], model: CTRModel) -> None:
        """The resume point after ``epoch`` (every rank joins the RNG gather; rank 0 writes)."""
        rng = gather_rng_states(self.ctx)
        if self.is_main:
            save_train_state(self.state_path, TrainState(
                epoch=epoch, world_size=self.ctx.world_size, model=model.state_dict(),
                optimizer=self._optimizer.state_dict(), generator=self._generator.get_state(), rng=rng,
                stopped=stopped, best_state=best_state), self.config)

    def finish(self) -> None:
        """The run's files are written: the resume point has served (rank 0 removes it)."""
        if self.is_main:
            self.state_path.unlink(missing_ok=True)
