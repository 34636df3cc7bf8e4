"""Data-parallel training under ``torchrun``: the process group and what the trainer asks of it.

``torchrun --nproc-per-node N -m ratingctr.cli train … --distributed`` starts N ranks; each
holds the whole (small) training set and the whole model, reads its contiguous shard of
every global batch of the epoch's permutation (the permutation one process would draw with
the same seed), and DistributedDataParallel all-reduces the gradients.  Each rank's loss is
weighted by its share of the global batch, so the averaged gradient is exactly the
one-process gradient of the global batch (BatchNorm uses global statistics:
``distributed_batchnorm``).  Rank 0 alone validates; its score is broadcast and every rank
applies the same early-stopping rule to it, so all ranks stop together.  Rank 0 alone
writes files (``distributed_state`` for the per-epoch resume point).

The switch is explicit (``--distributed``): a command started under torchrun without it
is refused, because N processes would otherwise each train the whole run into one
``--out``.  gloo on CPU, NCCL on GPU (one GPU per local rank).
"""
from __future__ import annotations

import datetime
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from ratingctr.errors import UserError

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job, and the device and backend it trains with."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def under_torchrun() -> bool:
    """Whether this process was started by torchrun (or anything exporting its variables) with several ranks."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1) > 1


def _device_for(name: str, local_rank: int) -> torch.device:
    """One device per local rank: ``auto`` is ``cuda:LOCAL_RANK`` when CUDA is present, else the CPU."""
    if name not in ("auto", "cpu", "cuda"):
        raise UserError(f"--device {name} cannot be used with --distributed: each rank takes cuda:LOCAL_RANK "
                        f"(give auto, cpu or cuda)")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UserError("device 'cuda' requested but torch sees no CUDA device")
    if local_rank >= torch.cuda.device_count():
        raise UserError(f"local rank {local_rank} has no GPU: this node has {torch.cuda.device_count()}; "
                        f"start at most that many processes per node")
    return torch.device("cuda", local_rank)


def _attempt_store(rank: int, world: int, timeout: datetime.timedelta) -> dist.Store:
    """torchrun's store, with this restart's keys apart from the last one's.

    Why: after ``--max-restarts`` restarts the workers, they rendezvous on the agent's
    store, which still holds the dead generation's gloo addresses under the same keys;
    the new ranks read those and fail with "connectFullMesh failed … Connection refused"
    (torch 2.13, seen here on every restart).  ``TORCHELASTIC_RESTART_COUNT`` names the
    generation, so each one gets its own key space.
    """
    from torch.distributed.rendezvous import rendezvous

    store, _, _ = next(rendezvous("env://", rank=rank, world_size=world, timeout=timeout))
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    return dist.PrefixStore(f"ratingctr/attempt_{attempt}", store)


@contextmanager
def process_group(device_name: str = "auto", timeout_s: float = 1800.0) -> Iterator[DistContext]:
    """Join the torchrun job (env:// rendezvous); leave it on exit, error or not."""
    missing = [name for name in TORCHRUN_VARIABLES if name not in os.environ]
    if missing:
        raise UserError(f"--distributed runs under torchrun (missing {', '.join(missing)}): "
                        f"torchrun --nproc-per-node N -m ratingctr.cli train … --distributed")
    rank, world, local = (int(os.environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    device = _device_for(device_name, local)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    timeout = datetime.timedelta(seconds=timeout_s)
    dist.init_process_group(backend, store=_attempt_store(rank, world, timeout), rank=rank, world_size=world,
                            timeout=timeout, device_id=device if device.type == "cuda" else None)
    ctx = DistContext(rank, world, local, device, backend)
    try:
        yield ctx
        # Leave together: a rank that tears its group down while rank 0 still evaluates
        # and writes aborted at exit now and then (gloo's "terminate called without an
        # active exception"), which torchrun reports as a failed job.
        barrier(ctx)
    finally:
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    dist.barrier(device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)


def shard(idx: torch.Tensor, ctx: DistContext) -> tuple[torch.Tensor, float]:
    """This rank's contiguous share of a global batch and the weight of its loss.

    The weight ``n_rank · world / n_global`` makes DDP's gradient average the global
    batch's mean gradient also when shards differ by a row.  A rank whose share is empty
    (a last batch with fewer rows than ranks) still steps, because DDP and the BatchNorm
    all-reduces are collectives every rank must join: it takes the batch's first row with
    weight 0, which adds nothing to the gradient (that row does enter BatchNorm's batch
    statistics once more, in that one step).
    """
    local = torch.tensor_split(idx, ctx.world_size)[ctx.rank]
    if local.numel() == 0:
        return idx[:1], 0.0
    return local, local.numel() * ctx.world_size / idx.numel()


class _LossForward(nn.Module):
    """DDP syncs gradients of what ran through its ``forward``; the training objective is ``CTRModel.loss``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, rating: torch.Tensor, click: torch.Tensor) -> torch.Tensor:
        return self.model.loss(x, rating, click)


class ParallelLoss:
    """``.loss`` of a model wrapped in DistributedDataParallel, for ``trainer.train_step``."""

    def __init__(self, model: nn.Module, ctx: DistContext) -> None:
        broadcast_state(model, ctx)
        # init_sync=False: the parameters were broadcast above; DDP's own initial sync would
        # also broadcast every buffer, the LightGCN encoder's sparse adjacency included,
        # which each rank builds identically from the data.
        self.ddp = nn.parallel.DistributedDataParallel(
            _LossForward(model), device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
            init_sync=False, forward_sync_buffers=False)

    def loss(self, x: torch.Tensor, rating: torch.Tensor, click: torch.Tensor) -> torch.Tensor:
        return self.ddp(x, rating, click)


@torch.no_grad()
def broadcast_state(model: nn.Module, ctx: DistContext) -> None:
    """Rank 0's parameters and persistent buffers on every rank (the state a checkpoint holds)."""
    for tensor in model.state_dict().values():
        if tensor.is_sparse or tensor.layout != torch.strided:
            continue
        dist.broadcast(tensor, src=0)


def sum_over_ranks(value: torch.Tensor) -> torch.Tensor:
    total = value.detach().clone()
    dist.all_reduce(total)
    return total


def broadcast_score(score: float, ctx: DistContext) -> float:
    """Rank 0's validation score on every rank, so each applies the same stopping rule to the same number."""
    value = torch.tensor([score if ctx.is_main else 0.0], dtype=torch.float64, device=ctx.device)
    dist.broadcast(value, src=0)
    return float(value.item())


def gather_rng_states(ctx: DistContext) -> torch.Tensor:
    """``[world, bytes]``: every rank's generator state (CPU, and the rank's GPU when it has one),
    so a resumed run draws the same dropout masks the lost one would have."""
    state = torch.get_rng_state()
    if ctx.device.type == "cuda":
        state = torch.cat([state, torch.cuda.get_rng_state(ctx.device)])
    local = state.to(ctx.device)
    parts = [torch.empty_like(local) for _ in range(ctx.world_size)]
    dist.all_gather(parts, local)
    return torch.stack(parts).cpu()


def set_rng_state(states: torch.Tensor, ctx: DistContext) -> None:
    """Restore this rank's row of ``gather_rng_states``."""
    cpu_bytes = torch.get_rng_state().numel()
    row = states[ctx.rank]
    torch.set_rng_state(row[:cpu_bytes].clone())
    if ctx.device.type == "cuda":
        torch.cuda.set_rng_state(row[cpu_bytes:].clone(), ctx.device)


def seed_rank_streams(seed: int, ctx: DistContext) -> None:
    """Give ranks 1.. their own dropout streams; rank 0 keeps the one-process stream.

    Every rank seeds identically before building the model (identical initial weights);
    after that, identical streams would drop the same units for the i-th row of every
    shard.  Rank 0 left alone makes a one-rank job draw exactly what ``ratingctr train`` draws.
    """
    if ctx.rank:
        torch.manual_seed(seed + ctx.rank)
        if ctx.device.type == "cuda":
            torch.cuda.manual_seed(seed + ctx.rank)
