"""Evaluation batches sized from the model's activations: xDeepFM's CIN gets small ones, scores do not change."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ratingctr.training.eval_batch import MIN_ROWS, activation_floats_per_row, eval_batch_rows


def _model(tiny_atomic: Path, tiny, name: str):
    from ratingctr.training.config import build_run_config
    from ratingctr.training.run import make_model

    config = build_run_config({"model": name, "dataset": "atomic", "data_dir": str(tiny_atomic), "k_core": 3,
                               "embedding_dim": 16})
    return make_model(config, tiny)


def test_cin_products_dominate_xdeepfm_and_shrink_its_batch(tiny_atomic: Path, tiny) -> None:
    cpu = torch.device("cpu")
    columns = tiny.features(tiny.user[:1], tiny.item[:1]).shape[1]
    xdeepfm = _model(tiny_atomic, tiny, "xDeepFM")
    fields, dim = xdeepfm.body.cin.num_fields, 16
    widest = max(fields, *xdeepfm.body.cin.hidden_sizes[:-1]) * fields * dim
    floats = activation_floats_per_row(xdeepfm, columns, cpu)
    assert floats >= 2 * widest  # the in-forward products are counted, not only what modules return
    dcnv2 = _model(tiny_atomic, tiny, "DCNV2")
    assert activation_floats_per_row(dcnv2, columns, cpu) < floats / 4
    budget = 64 * 2**20
    rows = eval_batch_rows(xdeepfm, columns, cpu, limit=65536, budget_bytes=budget)
    assert rows == int(budget // (floats * 4)) and MIN_ROWS <= rows < 65536
    assert eval_batch_rows(dcnv2, columns, cpu, limit=65536, budget_bytes=budget) > rows
    assert eval_batch_rows(xdeepfm, columns, cpu, limit=65536, budget_bytes=1) == MIN_ROWS  # never below the floor
    assert eval_batch_rows(dcnv2, columns, cpu, limit=100, budget_bytes=2**40) == 100  # never above the limit


def test_scores_do_not_depend_on_the_batch(tiny_atomic: Path, tiny) -> None:
    from ratingctr.training.evaluation import predict_arrays

    model = _model(tiny_atomic, tiny, "xDeepFM")
    rows = np.arange(min(3000, tiny.user.size))
    features = tiny.features(tiny.user[rows], tiny.item[rows])
    auto = predict_arrays(model, features, 65536, torch.device("cpu"))
    small = predict_arrays(model, features, 97, torch.device("cpu"))
    np.testing.assert_allclose(auto["p_click"], small["p_click"], rtol=1e-5, atol=1e-6)
    assert not model.training  # evaluation leaves the model in eval mode, as before
