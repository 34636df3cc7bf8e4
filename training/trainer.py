"""The training loop: AdamW, early stopping on validation AUC, best-epoch restore
(the stopping policy is ``training.early_stopping``, shared with the retriever).

Data lives on the device as whole tensors; a batch is an index slice of a per-epoch
permutation, so there is no DataLoader, no collate and no per-row Python.
"""
from __future__ import annotations

import random
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch
from tqdm import tqdm

from ratingctr.training.config import TrainConfig
from ratingctr.training.data.encode import TRAIN, VALID, EncodedData
from ratingctr.training.early_stopping import train_until_stale
from ratingctr.training.evaluation import pointwise_eval
from ratingctr.training.models.ctr import CTRModel

if TYPE_CHECKING:
    from ratingctr.training.distributed_fit import DataParallelRun


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def select_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else CPU; an explicit CUDA request without CUDA is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but torch sees no CUDA device")
    return device


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: bf16 matmuls run natively, not emulated."""
    try:
        with open("/proc/cpuinfo") as fh:
            flags = fh.read()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """Mixed-precision dtype for the forward/backward pass, or None for plain fp32.

    ``auto`` uses bf16 autocast where the hardware computes bf16 natively (weights,
    optimizer state and evaluation stay fp32); ``fp32`` and ``bf16`` force a choice.
    """
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision != "auto":
        raise ValueError(f"precision must be auto, fp32 or bf16, got {precision!r}")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return torch.bfloat16 if cpu_has_native_bf16() else None


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW, fused into one kernel per step where torch supports it (CPU and CUDA fp32).

    The unfused ``foreach`` AdamW issues a dozen small ops per step, a visible share of
    an epoch for the small CTR models.
    """
    try:
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)


@dataclass
class TrainTensors:
    x: torch.Tensor
    rating: torch.Tensor
    click: torch.Tensor

    @classmethod
    def from_rows(cls, data: EncodedData, rows: np.ndarray, device: torch.device) -> TrainTensors:
        x = torch.from_numpy(data.features(data.user[rows], data.item[rows]))
        return cls(x.to(device), torch.from_numpy(data.rating[rows]).to(device),
                   torch.from_numpy(data.click[rows]).to(device))


@dataclass
class TrainResult:
    best_epoch: int
    best_valid_auc: float
    precision: str = "float32"
    epoch_seconds: list[float] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)


def precision_name(amp_dtype: torch.dtype | None) -> str:
    return str(amp_dtype).replace("torch.", "") if amp_dtype else "float32"


class HasLoss(Protocol):
    """What a step trains: a ``CTRModel``, or one rank's DDP-wrapped view of it (``distributed.ParallelLoss``)."""

    def loss(self, x: torch.Tensor, rating: torch.Tensor, click: torch.Tensor) -> torch.Tensor: ...


def train_step(model: HasLoss, optimizer: torch.optim.Optimizer, train: TrainTensors, idx: torch.Tensor,
               amp_dtype: torch.dtype | None, scale: float = 1.0) -> torch.Tensor:
    """One optimiser step on the rows ``idx``; the gradients stay readable until the next step.

    ``scale`` weighs the loss before backward (a rank's share of a global batch); the
    returned loss is unscaled.
    """
    with torch.autocast(train.x.device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        # index_select, not ``t[idx]``: advanced indexing is several times slower on CPU
        loss = model.loss(train.x.index_select(0, idx), train.rating.index_select(0, idx),
                          train.click.index_select(0, idx))
    optimizer.zero_grad(set_to_none=True)
    (loss * scale if scale != 1.0 else loss).backward()
    optimizer.step()
    return loss.detach()


def _embedding_weight(model: CTRModel) -> torch.Tensor | None:
    table = getattr(model.encoder, "embedding", None)
    return table.weight if isinstance(table, torch.nn.Embedding) else None


def fit(model: CTRModel, data: EncodedData, config: TrainConfig, device: torch.device,
        lr: float | None = None, distributed: DataParallelRun | None = None) -> TrainResult:
    """Train ``model`` in place and leave it holding its best-validation-AUC weights.

    ``distributed``: this process is one rank of a data-parallel job (``training.distributed_fit``):
    it steps on its shard of each global batch, only rank 0 validates (and reports
    progress), the epoch's loss is summed over ranks, and a resume point is saved after
    every epoch.  Batches, stopping and the returned weights are those of one process.
    """
    model.to(device)
    train = TrainTensors.from_rows(data, data.rows(TRAIN), device)
    valid_rows = data.rows(VALID)
    optimizer = make_optimizer(model, lr if lr is not None else config.lr, config.weight_decay)
    generator = torch.Generator(device="cpu").manual_seed(config.seed)
    resumed = distributed.attach(model, optimizer, generator) if distributed is not None else None
    main = distributed is None or distributed.is_main
    progress = config.progress and main
    n, bs = train.x.shape[0], config.batch_size
    steps = (n + bs - 1) // bs
    emb_weight = _embedding_weight(model)
    amp_dtype = autocast_dtype(config.precision, device)
    epoch_seconds: list[float] = list(resumed.epoch_seconds) if resumed is not None else []

    def run_epoch(epoch: int) -> tuple[float, dict]:
        model.train()
        start = time.perf_counter()
        order = torch.randperm(n, generator=generator).to(device)
        total_loss = torch.zeros((), device=device)
        grad_norms = torch.zeros((), device=device)
        bar = tqdm(range(steps), desc=f"epoch {epoch:>3}", unit="batch", leave=False, file=sys.stderr,
                   disable=not progress, dynamic_ncols=True)
        for step in bar:
            idx = order[step * bs:(step + 1) * bs]
            if distributed is None:
                loss, rows = train_step(model, optimizer, train, idx, amp_dtype), idx.shape[0]
            else:
                loss, rows = distributed.step(train, idx, amp_dtype)
            if emb_weight is not None and emb_weight.grad is not None:
                grad_norms += emb_weight.grad.detach().norm()
            total_loss += loss * rows
            if progress and step % 5 == 4:
                rate = (step + 1) * bs / max(time.perf_counter() - start, 1e-9)
                bar.set_postfix(loss=f"{loss.item():.4f}", rows_per_s=f"{rate:,.0f}")
        if distributed is not None:
            total_loss = distributed.sum(total_loss)
        train_seconds = time.perf_counter() - start
        epoch_seconds.append(train_seconds)
        if not main:  # rank 0 validates; this rank takes its score
            return distributed.share_score(float("nan")), {}
        valid, _ = pointwise_eval(model, data, valid_rows, config.eval_rows, device)
        record = {"epoch": epoch, "train_loss": float(total_loss) / n, "valid_auc": valid["auc"],
                  "valid_logloss": valid["logloss"], "seconds": train_seconds,
                  "embedding_grad_norm": float(grad_norms) / steps,
                  "embedding_weight_norm": float(emb_weight.detach().norm()) if emb_weight is not None else None}
        if progress:
            print(f"epoch {epoch:>3}  loss {record['train_loss']:.4f}  valid auc {valid['auc']:.4f}  "
                  f"logloss {valid['logloss']:.4f}  {train_seconds:.2f}s  {n / train_seconds:,.0f} rows/s",
                  file=sys.stderr)
        score = valid["auc"] if distributed is None else distributed.share_score(valid["auc"])
        return score, record

    after_epoch = None
    if distributed is not None:
        def after_epoch(epoch: int, stopped, best_state: dict) -> None:
            distributed.save(epoch, stopped, best_state, model)

    first = resumed.first_epoch if resumed is not None else 0
    stopped = train_until_stale(model, range(first, config.epochs), config.patience, run_epoch,
                                start=resumed.stopped if resumed is not None else None,
                                start_best_state=resumed.best_state if resumed is not None else None,
                                after_epoch=after_epoch)
    return TrainResult(best_epoch=stopped.best_epoch, best_valid_auc=stopped.best_score,
                       precision=precision_name(amp_dtype), epoch_seconds=epoch_seconds, history=stopped.history)
