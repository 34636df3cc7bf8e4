from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ratingctr.errors import UserError
from ratingctr.training.config import DataConfig
from ratingctr.training.data.encode import EXCLUDED, TEST, TRAIN, VALID, encode, k_core_mask, load_dataset, random_split
from ratingctr.training.data.readers import RawData


def _naive_k_core(pairs: list[tuple[int, int]], k: int) -> set[tuple[int, int]]:
    kept = set(range(len(pairs)))
    while True:
        users = pd.Series([pairs[i][0] for i in kept]).value_counts()
        items = pd.Series([pairs[i][1] for i in kept]).value_counts()
        new = {i for i in kept if users[pairs[i][0]] >= k and items[pairs[i][1]] >= k}
        if new == kept:
            return kept
        kept = new


def test_k_core_matches_naive_iteration() -> None:
    rng = np.random.default_rng(0)
    user, item = rng.integers(0, 40, 600), rng.integers(0, 50, 600)
    for k in (2, 5, 10, 14):
        mask = k_core_mask(user, item, k)
        assert set(np.flatnonzero(mask)) == _naive_k_core(list(zip(user, item)), k)
        if mask.any():  # the fixed point really is a k-core
            assert np.bincount(user[mask]).max() >= k
            assert np.bincount(user[mask])[np.bincount(user[mask]) > 0].min() >= k
            assert np.bincount(item[mask])[np.bincount(item[mask]) > 0].min() >= k


def test_random_split_fractions_and_seed() -> None:
    a, b, c = random_split(1000, (0.8, 0.1, 0.1), 1), random_split(1000, (0.8, 0.1, 0.1), 1), random_split(1000, (0.8, 0.1, 0.1), 2)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.bincount(a).tolist() == [800, 100, 100]
    with pytest.raises(UserError, match="sum"):
        random_split(10, (0.5, 0.1, 0.1), 0)


def test_atomic_encoding_fields_and_features(tiny_atomic: Path) -> None:
    data = load_dataset(DataConfig(dataset="atomic", data_dir=str(tiny_atomic), k_core=1))
    assert data.schema.names == ["user_id", "age", "gender", "occupation", "item_id", "release_year", "genre"]
    assert data.n_users == 60 and data.n_items == 80 and data.rating.shape == (1800,)
    genre = data.schema.fields[-1]
    assert genre.slots == 3 and genre.vocab_size == 6  # 5 genres + [UNK]
    # features are user row ++ item row, and decode back to the raw tokens of the file
    inter = pd.read_csv(tiny_atomic / "tiny.inter", sep="\t")
    x = data.features(data.user, data.item)
    assert x.shape == (1800, data.schema.num_columns) and x.dtype == np.int64
    uid = data.vocab["user_id"]
    iid = data.vocab["item_id"]
    decoded = pd.DataFrame({"u": [uid[i] for i in x[:, 0]], "i": [iid[i] for i in x[:, 4]], "r": data.rating})
    expected = inter.rename(columns={"user_id:token": "u", "item_id:token": "i", "rating:float": "r"})[["u", "i", "r"]]
    pd.testing.assert_frame_equal(decoded.sort_values(["u", "i"]).reset_index(drop=True),
                                  expected.astype({"r": np.int64}).sort_values(["u", "i"]).reset_index(drop=True))
    items = pd.read_csv(tiny_atomic / "tiny.item", sep="\t").set_index("item_id:token")
    row = data.item_rows[1]
    tokens = sorted(data.vocab["genre"][g] for g in row[data.schema.side_slice("genre")] if g)
    assert tokens == sorted(items.loc[data.vocab["item_id"][1], "genre:token_seq"].split())
    assert (data.user_rows[0] == 0).all() and (data.item_rows[0] == 0).all()  # unknown rows


def test_labels_threshold_and_drop_middle(tiny_atomic: Path) -> None:
    base = load_dataset(DataConfig(dataset="atomic", data_dir=str(tiny_atomic), k_core=1, threshold=4))
    assert np.array_equal(base.click, (base.rating >= 4).astype(np.float32))
    dropped = load_dataset(DataConfig(dataset="atomic", data_dir=str(tiny_atomic), k_core=1, threshold=4, drop_middle="train"))
    assert np.array_equal(dropped.middle, dropped.rating == 3)
    assert not (dropped.middle & (dropped.split == TRAIN)).any()
    assert (dropped.middle & (dropped.split == TEST)).any()  # eval keeps them
    both = load_dataset(DataConfig(dataset="atomic", data_dir=str(tiny_atomic), k_core=1, drop_middle="both"))
    assert set(both.rating[both.split != EXCLUDED]) == {1, 2, 4, 5}
    assert both.stats["excluded_middle"] == int((both.rating == 3).sum())


def test_ml100k_pipeline(ml100k_root: Path) -> None:
    data = load_dataset(DataConfig(data_dir=str(ml100k_root), k_core=10))
    assert data.schema.names == ["user_id", "age", "gender", "occupation", "item_id", "release_year", "genre"]
    assert data.stats["interactions_before_k_core"] == 100_000
    assert data.n_users == 943 and data.n_items == 1152 and data.stats["interactions"] == 97_953
    assert abs(data.stats["click_rate"] - 0.5589) < 1e-3  # 55.9% of ML-100k ratings are >= 4
    counts = np.bincount(data.split[data.split >= 0])
    assert abs(counts[TRAIN] / counts.sum() - 0.8) < 1e-3 and abs(counts[VALID] - counts[TEST]) <= 1


def _raw(ratings: list[float]) -> RawData:
    return RawData("toy", pd.DataFrame({"user_id": ["a", "b"] * (len(ratings) // 2), "item_id": ["x", "y"] * (len(ratings) // 2),
                                        "rating": np.array(ratings, dtype=float)}))


@pytest.mark.parametrize("ratings, message", [([1, 6], "outside the integer scale 1..5"),
                                              ([0, 3], "outside the integer scale"),
                                              ([2.5, 3], "outside the integer scale")])
def test_ratings_outside_scale_are_user_errors(ratings: list[float], message: str) -> None:
    with pytest.raises(UserError, match=message):
        encode(_raw(ratings), DataConfig(k_core=1))


@pytest.mark.parametrize("threshold", [0, 1, 6])
def test_threshold_outside_scale(threshold: int) -> None:
    with pytest.raises(UserError, match="outside the rating scale"):
        encode(_raw([1, 5]), DataConfig(k_core=1, threshold=threshold))


def test_k_core_removing_everything_is_a_user_error() -> None:
    with pytest.raises(UserError, match="removed every interaction"):
        encode(_raw([1, 5]), DataConfig(k_core=5))
