"""``data synth``: ML-100k's marginals on a small draw, deterministic per seed, learnable, readable as atomic."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from ratingctr.cli import main
from ratingctr.training.data.synth import SynthSpec, synthesize
from ratingctr.training.data.synth_calibration import dataset_statistics, ml100k_calibration


@pytest.fixture(scope="module")
def calibration(ml100k_root: Path):
    return ml100k_calibration(str(ml100k_root))


@pytest.fixture(scope="module")
def draw(calibration, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "draw"
    synthesize(SynthSpec(users=1500, items=1200, ratings=150_000, seed=7, name="draw"), calibration, out,
               chunk_users=400)
    return out


def _digest(directory: Path) -> str:
    return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(directory.glob("*.inter")))).hexdigest()


def test_a_small_draw_has_ml100k_marginals(draw: Path, calibration) -> None:
    import pandas as pd

    inter = pd.read_csv(draw / "draw.inter", sep="\t")
    assert 0.97 * 150_000 <= len(inter) <= 150_000  # a user's repeats are replaced, not lost
    assert not inter.duplicated(["user_id:token", "item_id:token"]).any()
    stats = dataset_statistics(pd.factorize(inter["user_id:token"])[0], pd.factorize(inter["item_id:token"])[0],
                               inter["rating:float"].to_numpy())
    np.testing.assert_allclose(stats["rating_probs"], calibration.rating_probs, atol=0.01)
    assert stats["click_rate"] == pytest.approx(sum(calibration.rating_probs[3:]), abs=0.01)
    assert stats["user_log_std"] == pytest.approx(calibration.user_log_std, abs=0.15)
    assert stats["item_gini"] > 0.5 and stats["user_gini"] > 0.3  # long tails on both sides, as in ML-100k
    assert inter.groupby("user_id:token").size().min() >= 20  # ML-100k's floor, where it fits
    users = pd.read_csv(draw / "draw.user", sep="\t")
    share_f = (users["gender:token"] == "F").mean()
    assert share_f == pytest.approx(calibration.gender.probs[calibration.gender.tokens.index("F")], abs=0.04)
    low, high = calibration.time_range
    assert inter["timestamp:float"].between(low, high).all()


def test_same_seed_same_files_other_seed_other_files(draw: Path, calibration, tmp_path: Path) -> None:
    again = synthesize(SynthSpec(users=1500, items=1200, ratings=150_000, seed=7, name="draw"), calibration,
                       tmp_path / "again", chunk_users=400)
    assert _digest(tmp_path / "again") == _digest(draw) and again["ratings_written"] > 0
    synthesize(SynthSpec(users=1500, items=1200, ratings=150_000, seed=8, name="draw"), calibration,
               tmp_path / "other", chunk_users=400)
    assert _digest(tmp_path / "other") != _digest(draw)


def test_a_model_learns_the_draw_through_its_side_features(draw: Path, tmp_path: Path) -> None:
    import json

    assert main(["train", "--model", "DCNV2", "--dataset", "atomic", "--data-dir", str(draw), "--epochs", "3",
                 "--no-progress", "--out", str(tmp_path / "run")]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["test"]["auc"] > 0.70  # a clearly learnable signal (ML-100k's DCNV2: about 0.78)
    from ratingctr.training.config import DataConfig
    from ratingctr.training.data.encode import load_dataset

    schema = load_dataset(DataConfig(dataset="atomic", data_dir=str(draw))).schema
    assert {"user_id", "item_id", "age", "gender", "occupation", "release_year", "genre"} <= \
        {f.name for f in schema.fields}


def test_who_rates_what_is_personal_so_a_retriever_beats_popularity(draw: Path) -> None:
    from ratingctr.training.config import DataConfig
    from ratingctr.training.experiments.retriever_sizes import peer_recalls

    recalls = peer_recalls(DataConfig(dataset="atomic", data_dir=str(draw)))
    # popularity alone (γ = 0) gives EASE 0.97x most popular; ML-100k gives 2.04x
    assert recalls["ease"] / recalls["popular"] > 1.3
    assert recalls["item_knn"] / recalls["popular"] > 1.3


def test_every_user_gets_its_count_of_distinct_items_even_when_taste_is_narrow(calibration, tmp_path: Path) -> None:
    import pandas as pd


    spec = SynthSpec(users=300, items=200, ratings=20_000, seed=3, name="narrow")  # heavy users near the cap
    written = synthesize(spec, calibration, tmp_path / "narrow", chunk_users=128)["ratings_written"]
    assert written == pytest.approx(spec.ratings, abs=spec.users)  # only the activity solver's floor rounding
    inter = pd.read_csv(tmp_path / "narrow" / "narrow.inter", sep="\t")
    assert not inter.duplicated(["user_id:token", "item_id:token"]).any()
    assert inter.groupby("user_id:token").size().max() <= spec.items // 2


def test_impossible_sizes_are_one_line_errors(capsys) -> None:
    assert main(["data", "synth", "--users", "10", "--items", "10", "--ratings", "100", "--out", "/tmp/x"]) == 2
    assert "half full" in capsys.readouterr().err
    assert main(["data", "synth", "--users", "10", "--items", "10", "--ratings", "5", "--out", "/tmp/x"]) == 2
