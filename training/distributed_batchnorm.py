"""BatchNorm over the *global* batch when every rank holds a shard of it (CPU and GPU).

Why: DCNV2, NFM and AFN normalise with BatchNorm.  Under data parallelism each rank sees
only its shard, so a plain ``BatchNorm1d`` would normalise with per-shard statistics and
the model would no longer compute what one process computes on the same global batch.
torch's ``SyncBatchNorm`` fixes that on GPUs only (it refuses CPU tensors), and gloo on
CPU is what ranks here train with, so this is the same idea written with torch's
differentiable all-reduce (``torch.distributed.nn.functional.all_reduce``), which works on
every backend: the mean and the variance are all-reduced sums, and their gradients flow
back to every rank's rows, so the all-reduced parameter gradients equal the one-process
ones.

Two collectives per layer and step (the mean, then the centred sum of squares): the
two-pass variance of ``BatchNorm1d`` itself, not ``E[x²] − E[x]²``, which cancels badly.
``GlobalBatchNorm1d`` subclasses ``BatchNorm1d`` and keeps its state-dict keys, so a
checkpoint, the export's BatchNorm folding and evaluation (running statistics, no
collective) see the ordinary layer.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.nn.functional import all_reduce


class GlobalBatchNorm1d(nn.BatchNorm1d):
    """``BatchNorm1d`` whose training-mode statistics cover every rank's rows."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        dims = [0] if x.dim() == 2 else [0, 2]
        shape = (1, -1) if x.dim() == 2 else (1, -1, 1)
        xf = x.float()
        local_count = x.numel() // x.shape[1]
        summed = all_reduce(torch.cat([xf.sum(dims), xf.new_full((1,), float(local_count))]))
        count = summed[-1]
        mean = summed[:-1] / count
        centred = xf - mean.view(shape)
        var = all_reduce((centred * centred).sum(dims)) / count  # biased, as BatchNorm normalises
        if self.track_running_stats:
            self._update_running_stats(mean.detach(), var.detach(), count.detach())
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out.to(x.dtype)

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, var: torch.Tensor, count: torch.Tensor) -> None:
        """``BatchNorm1d``'s update: an exponential (or, with ``momentum=None``, cumulative) average,
        the variance unbiased by ``count / (count − 1)``."""
        self.num_batches_tracked.add_(1)
        factor = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
        unbiased = var * count / (count - 1.0).clamp_min(1.0)
        self.running_mean.mul_(1 - factor).add_(mean.to(self.running_mean.dtype), alpha=factor)
        self.running_var.mul_(1 - factor).add_(unbiased.to(self.running_var.dtype), alpha=factor)


def globalize_batch_norm(module: nn.Module) -> int:
    """Swap every ``BatchNorm1d`` under ``module`` for a ``GlobalBatchNorm1d`` holding the same
    parameters and buffers (shared, not copied); returns how many were swapped."""
    swapped = 0
    for name, child in list(module.named_children()):
        if type(child) is nn.BatchNorm1d:
            replacement = GlobalBatchNorm1d(child.num_features, child.eps, child.momentum, child.affine,
                                            child.track_running_stats)
            if child.affine:
                replacement.weight, replacement.bias = child.weight, child.bias
            if child.track_running_stats:
                replacement.running_mean, replacement.running_var = child.running_mean, child.running_var
                replacement.num_batches_tracked = child.num_batches_tracked
            replacement.train(child.training)
            setattr(module, name, replacement)
            swapped += 1
        else:
            swapped += globalize_batch_norm(child)
    return swapped
