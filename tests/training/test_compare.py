import json
import math
from pathlib import Path

import numpy as np
import pytest

from ratingctr.errors import UserError
from ratingctr.training.compare import compare_runs, format_comparison
from ratingctr.training.metrics import mci


def test_mci_monotonicity_cases_on_a_grid() -> None:
    p = np.linspace(0.55, 0.9, 15)
    c = np.linspace(-0.04, 0.04, 17)
    pp, cc = np.meshgrid(p, c, indexing="ij")
    values = mci(pp, cc)
    assert np.all(np.sign(values) == np.sign(cc))  # a gain is positive, a loss negative, zero is zero
    assert np.all(np.diff(values, axis=1) > 0)  # case 1: larger gain, larger MCI at any baseline
    gains = cc[0] > 0
    assert np.all(np.diff(values[:, gains], axis=0) > 0)  # case 2: same gain counts more on a stronger baseline
    losses = cc[0] < 0
    assert np.all(np.diff(values[:, losses], axis=0) < 0)  # case 3: same loss hurts more on a stronger baseline


def _run(tmp: Path, name: str, overall: float, groups: tuple[float, float, float]) -> Path:
    run = tmp / name
    run.mkdir()
    metrics = {"test": {"auc": overall}, "dataset": {"test": 100},
               "groups": {"low": {"auc": groups[0]}, "mid": {"auc": groups[1]}, "high": {"auc": groups[2]},
                          "variance": float(np.var(groups))}}
    (run / "metrics.json").write_text(json.dumps(metrics))
    return run


def test_compare_deltas_relative_change_and_mci(tmp_path: Path) -> None:
    base = _run(tmp_path, "base", 0.78, (0.70, 0.78, 0.82))
    other = _run(tmp_path, "ft", 0.79, (0.73, 0.785, 0.821))
    result = compare_runs(base, other)
    rows = {r["name"]: r for r in result["rows"]}
    assert rows["low"]["delta"] == pytest.approx(0.03)
    assert rows["low"]["relative"] == pytest.approx(0.03 / 0.70)
    assert rows["low"]["mci"] == pytest.approx(math.log(0.30 / 0.27))
    assert rows["overall"]["mci"] == pytest.approx(math.log(0.22 / 0.21))
    text = format_comparison(result)
    assert "low" in text and "+0.0300" in text and "+4.29%" in text


def test_compare_rejects_auc_outside_mci_domain(tmp_path: Path) -> None:
    base = _run(tmp_path, "b", 0.8, (0.7, 0.8, 0.9))
    other = _run(tmp_path, "o", 0.8, (0.7, 0.8, 1.0))
    with pytest.raises(UserError, match=r"high: MCI needs .* p_b \+ c in \(0, 1\)"):
        compare_runs(base, other)
    with pytest.raises(UserError, match="metrics.json not found"):
        compare_runs(tmp_path / "missing", other)


@pytest.fixture(scope="module")
def split_runs(tiny_atomic: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Real tiny runs: two architectures on one split, one on another seed, one on the temporal split."""
    from ratingctr.training.config import DataConfig, HeadConfig, ModelConfig, RunConfig, TrainConfig
    from ratingctr.training.run import train_run

    root = tmp_path_factory.mktemp("split-runs")
    runs = {}
    for name, model, seed, mode in (("dcn", "DCNV2", 1, "random"), ("wd", "WideDeep", 1, "random"),
                                    ("seed2", "DCNV2", 2, "random"), ("temporal", "DCNV2", 1, "temporal")):
        config = RunConfig(data=DataConfig(dataset="atomic", data_dir=str(tiny_atomic), k_core=3, seed=seed,
                                           split_mode=mode),
                           model=ModelConfig(model, 8, {"mlp_hidden_size": [16]}), head=HeadConfig("rating"),
                           train=TrainConfig(epochs=1, batch_size=512, lr=3e-3, seed=seed, progress=False,
                                             precision="fp32", device="cpu", num_negatives=5))
        train_run(config, root / name)
        runs[name] = root / name
    return runs


def test_compare_refuses_runs_on_other_test_rows(split_runs: dict[str, Path]) -> None:
    metrics = {k: json.loads((p / "metrics.json").read_text()) for k, p in split_runs.items()}
    # the old check passed all of these: same test-row count
    assert len({m["dataset"]["test"] for m in metrics.values()}) == 1
    assert metrics["dcn"]["split_hash"] == metrics["wd"]["split_hash"]
    assert compare_runs(split_runs["dcn"], split_runs["wd"])["warnings"] == []
    for other in ("seed2", "temporal"):
        with pytest.raises(UserError, match="different test rows"):
            compare_runs(split_runs["dcn"], split_runs[other])


def test_compare_says_when_a_run_predates_the_split_hash(split_runs: dict[str, Path], tmp_path: Path) -> None:
    old = tmp_path / "old"
    old.mkdir()
    metrics = json.loads((split_runs["seed2"] / "metrics.json").read_text())
    del metrics["split_hash"]
    (old / "metrics.json").write_text(json.dumps(metrics))
    result = compare_runs(split_runs["dcn"], old)  # only the counts can be checked: allowed, and said
    assert result["warnings"] == ["the other run predates the split hash: only the test-row counts could be "
                                  "checked (equal), not the rows themselves"]
    assert "warning: the other run predates the split hash" in format_comparison(result)
