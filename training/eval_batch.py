"""How many rows an evaluation batch may hold: from the model's activation size, not a constant.

Why: evaluation scored every model in batches of 65,536 rows.  For most architectures
that is a few hundred MB of activations; xDeepFM's CIN forms, per row and layer, the
products of every hidden map with every field (``H_k · F · d`` floats: 12,800 per row on
ML-100k), so one batch held 3+ GB per layer, the process peaked near 9.7 GB and the
machine paged: ``train --model xDeepFM --epochs 1`` took 6.5 minutes for a 9-second epoch.

The size is measured, not declared per architecture: one forward pass over a few rows
with a hook on every module sums what the modules return per row (an upper bound of
what is alive at once under ``no_grad``, where each intermediate dies after use), and a
module whose largest tensor never leaves its ``forward`` (the CIN's products) says so
through ``transient_floats_per_row``.  The batch is then the largest that keeps those
activations under ``ACTIVATION_BUDGET_BYTES``, within [``MIN_ROWS``, the configured batch].
"""
from __future__ import annotations

import torch
from torch import nn

ACTIVATION_BUDGET_BYTES = 256 * 2**20
MIN_ROWS = 256
PROBE_ROWS = 4


@torch.no_grad()
def activation_floats_per_row(model: nn.Module, num_columns: int, device: torch.device) -> float:
    """Floats of activation per scored row: module outputs plus declared in-forward transients."""
    total = 0
    handles = []

    def count_output(module: nn.Module, inputs: tuple, output) -> None:
        nonlocal total
        tensors = output if isinstance(output, (tuple, list)) else (output,)
        total += sum(t.numel() for t in tensors if isinstance(t, torch.Tensor))
        transient = getattr(module, "transient_floats_per_row", None)
        if transient is not None and inputs and isinstance(inputs[0], torch.Tensor):
            total += transient(inputs[0].shape) * PROBE_ROWS

    for module in model.modules():
        handles.append(module.register_forward_hook(count_output))
    was_training = model.training
    try:
        model.eval()
        model(torch.zeros(PROBE_ROWS, num_columns, dtype=torch.long, device=device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return total / PROBE_ROWS


def eval_batch_rows(model: nn.Module, num_columns: int, device: torch.device, limit: int,
                    budget_bytes: int = ACTIVATION_BUDGET_BYTES) -> int:
    """The evaluation batch for ``model``: at most ``limit`` rows, and at most what fits the budget."""
    per_row = max(activation_floats_per_row(model, num_columns, device), 1.0) * 4  # float32
    return int(max(min(limit, budget_bytes // per_row), min(MIN_ROWS, limit)))
