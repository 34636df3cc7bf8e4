"""Inverted-dropout masks ``{0, 1/(1−p)}`` from random bytes (a *training* kernel).

A mask keeps an element when its random byte is ≥ ``cut`` (p quantised to ``cut``/256),
so the keep probability is exact for the quantised p and the scale uses the same value.

The reference draws the bytes with ``torch.randint`` and casts the comparison to the
dtype.  The fast path differs in both steps, never in the distribution:

* ``fast_keep``: on CPU the bytes come from numpy's SFC64 and are compared in numpy, eight
  mask bytes per 64-bit draw (torch's Bernoulli sampling, and torch's unvectorised
  ``uint8 >=``, cost a large share of a DCNV2 epoch).  Each draw seeds its own SFC64 from
  torch's global generator, so ``torch.manual_seed`` still makes a run reproducible.
* ``fast_scale``: ``{0, scale}`` built as integer bit patterns (0 or scale's bits) and
  viewed as floats: one integer multiply instead of a float cast and a scale pass (and,
  on CPU, casting ``bool`` to bf16 directly is slow, hence the ``uint8`` view).
"""
from __future__ import annotations

import math

import numpy as np
import torch

#: float dtype → the integer dtype of the same width, for building masks as bit patterns
_BIT_TWINS = {torch.bfloat16: torch.int16, torch.float16: torch.int16, torch.float32: torch.int32}


def reference_keep(shape: tuple[int, ...], cut: int, device: torch.device) -> torch.Tensor:
    """Bool keep mask: uniform random bytes ≥ ``cut``."""
    return torch.randint(0, 256, shape, dtype=torch.uint8, device=device) >= cut


def fast_keep(shape: tuple[int, ...], cut: int, device: torch.device) -> torch.Tensor:
    """``reference_keep``'s distribution, eight bytes per 64-bit draw (numpy SFC64 on CPU)."""
    n = math.prod(shape)
    if torch.device(device).type == "cpu":
        seed = int(torch.randint(0, 2 ** 63 - 1, (1,)))
        return torch.from_numpy(np.random.SFC64(seed).random_raw((n + 7) // 8).view(np.uint8)[:n] >= cut).view(shape)
    bits = torch.randint(-(2 ** 63), 2 ** 63 - 1, ((n + 7) // 8,), dtype=torch.int64, device=device)
    return bits.view(torch.uint8)[:n].view(shape) >= cut


def reference_scale(keep: torch.Tensor, scale: float, dtype: torch.dtype) -> torch.Tensor:
    """``keep · scale`` in ``dtype``."""
    return keep.to(dtype) * scale


def fast_scale(keep: torch.Tensor, scale: float, dtype: torch.dtype) -> torch.Tensor:
    """``reference_scale`` through a ``uint8`` view, as integer bit patterns where the dtype has a twin."""
    twin = _BIT_TWINS.get(dtype) if keep.device.type == "cpu" else None
    if twin is not None:
        pattern = torch.tensor(scale, dtype=dtype).view(twin).item()  # sign bit 0: scale > 0
        return keep.view(torch.uint8).to(twin).mul_(pattern).view(dtype)
    return keep.view(torch.uint8).to(dtype).mul_(scale)


def reference_dropout_mask(shape: tuple[int, ...], cut: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The scaled keep mask of one draw, plain PyTorch."""
    return reference_scale(reference_keep(shape, cut, device), 1.0 / (1.0 - cut / 256.0), dtype)


def fast_dropout_mask(shape: tuple[int, ...], cut: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The scaled keep mask of one draw, through ``fast_keep`` and ``fast_scale``."""
    return fast_scale(fast_keep(shape, cut, device), 1.0 / (1.0 - cut / 256.0), dtype)
