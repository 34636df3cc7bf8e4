"""The explicit switch between the hand-optimised kernels and the reference maths.

Three modes, set on a whole model with ``use_kernels(model, mode)``:

* ``TRAINING`` (the default, so a freshly built model trains fast): every kernel.  The
  *training* kernels (hand-written backward, split weights, random-byte dropout masks)
  run only in a module in train mode: in eval mode there is no backward to speed up, and
  evaluation then computes exactly the graph export traces.
* ``INFERENCE``: only the *forward* kernels (plain tensor ops in a faster layout); this is
  the graph ``export.onnx_export.prepare_for_export`` traces, unchanged from before the
  kernels were fenced off.
* ``REFERENCE``: the papers' maths everywhere (tests, reading, comparing with RecBole /
  FuxiCTR).

Why a mode on the modules rather than ``torch.is_grad_enabled()``: the graph a module runs
must be a decision someone made (the trainer's default, export's switch), not a side
effect of the autograd context it happens to be called in.
"""
from __future__ import annotations

from enum import Enum
from typing import TypeVar

from torch import nn

ModuleT = TypeVar("ModuleT", bound=nn.Module)


class KernelMode(str, Enum):
    """Which computations a model runs; see the module docstring."""

    TRAINING = "training"
    INFERENCE = "inference"
    REFERENCE = "reference"


class KernelSwitch:
    """Mixin for a module that calls a kernel: holds its mode and answers which path to run.

    The mode is a plain attribute (class default ``TRAINING``), not a constructor
    argument, so body signatures, state dicts and checkpoints are untouched.
    """

    kernels: KernelMode = KernelMode.TRAINING
    training: bool  # nn.Module's

    def training_kernels(self) -> bool:
        """Run a *training* kernel: ``TRAINING`` mode and the module in train mode."""
        return self.kernels is KernelMode.TRAINING and self.training

    def forward_kernels(self) -> bool:
        """Run a *forward* kernel: any mode but ``REFERENCE``."""
        return self.kernels is not KernelMode.REFERENCE


def use_kernels(model: ModuleT, mode: KernelMode | str) -> ModuleT:
    """Set ``mode`` on every kernel-calling module of ``model``; returns ``model``.

    Example:
        >>> from ratingctr.training.models.layers import Dropout
        >>> use_kernels(nn.Sequential(Dropout(0.1)), "reference")[0].kernels
        <KernelMode.REFERENCE: 'reference'>
    """
    mode = KernelMode(mode)
    for module in model.modules():
        if isinstance(module, KernelSwitch):
            module.kernels = mode
    return model
