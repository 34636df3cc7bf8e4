"""Response encoding: float32 scores survive exactly, and a model's NaN never reaches a client."""
import json

import numpy as np
import pytest

from ratingctr.serving.ranker import load_ranker
from ratingctr.serving.responses import dumps


def test_float32_scores_round_trip_exactly_and_shorter_than_stdlib() -> None:
    rng = np.random.default_rng(3)
    p = rng.random(50).astype(np.float32)
    probs = rng.dirichlet(np.ones(5), 50).astype(np.float32)
    items = [{"item_id": str(i), "p_click": pc, "rating_probs": rp} for i, pc, rp in zip(range(50), p, probs)]
    parsed = json.loads(dumps({"items": items}))["items"]
    assert np.array_equal(np.array([it["p_click"] for it in parsed], dtype=np.float32), p)
    assert np.array_equal(np.array([it["rating_probs"] for it in parsed], dtype=np.float32), probs)
    stdlib = json.dumps({"items": [{"item_id": str(i), "p_click": float(pc), "rating_probs": rp.tolist()}
                                   for i, pc, rp in zip(range(50), p, probs)]}, separators=(",", ":"))
    assert len(dumps({"items": items})) < 0.8 * len(stdlib)


def test_non_finite_scores_raise_instead_of_becoming_null(tiny_bundles: dict) -> None:
    ranker = load_ranker(tiny_bundles["rating"], candidates=20, warmup_calls=0)
    items = np.arange(1, 6)
    row = ranker.user_fields[1]
    assert np.isfinite(ranker.score(row, items)["p_click"]).all()
    real_predict = ranker.predict

    def with_a_nan(features: np.ndarray) -> dict:
        out = dict(real_predict(features))
        out["p_click"] = out["p_click"].copy()
        out["p_click"][2] = np.nan
        return out

    ranker.predict = with_a_nan
    with pytest.raises(FloatingPointError, match="non-finite"):
        ranker.rank(row, items, 3, {})
