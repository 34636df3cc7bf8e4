from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ratingctr.errors import UserError
from ratingctr.training.config import DataConfig
from ratingctr.training.data.encode import (
    EXCLUDED,
    TEST,
    TRAIN,
    VALID,
    encode,
    k_core_mask,
    load_dataset,
    random_split,
    temporal_split,
)
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


# ---- the temporal split ------------------------------------------------------------------
# sha256 of split ++ user ++ item bytes, computed with the code before the temporal split
# existed (commit cd6d492): the random split must stay bit-for-bit what it was.
RANDOM_SPLIT_SHA = {
    ("tiny", 2020, (0.8, 0.1, 0.1)): "9de0f4ebad1901c6b4f2772b6d997bccdaee5aec667b59e3e93e0496e624c418",
    ("tiny", 7, (0.7, 0.2, 0.1)): "32efd31d680cd127b98e44f67261ec6981f0661ce04ab1390856dbd603479fd7",
    ("ml-100k", 2020, (0.8, 0.1, 0.1)): "58deaf95f7efbc0e3b378034fdde8ee1bd6159737139e5855fdf4a071a8e79d1",
}


def _split_sha(data) -> str:
    import hashlib

    return hashlib.sha256(data.split.tobytes() + data.user.tobytes() + data.item.tobytes()).hexdigest()


def _assert_time_ordered(data) -> None:
    train, valid, test = (data.ts[data.split == part] for part in (TRAIN, VALID, TEST))
    assert train.size and valid.size and test.size
    assert train.max() <= valid.min() and valid.max() <= test.min()


def test_temporal_split_fractions_time_order_and_stable_ties() -> None:
    rng = np.random.default_rng(3)
    ts = rng.integers(0, 50, 1000).astype(np.float64)  # ~20 rows per timestamp: ties everywhere
    split = temporal_split(ts, (0.8, 0.1, 0.1))
    assert np.bincount(split).tolist() == [800, 100, 100]
    assert ts[split == TRAIN].max() <= ts[split == VALID].min() <= ts[split == VALID].max() <= ts[split == TEST].min()
    # a tie cut by a boundary: its earlier rows (input order) go to the earlier part
    order = np.lexsort((np.arange(ts.size), ts))
    assert np.array_equal(split[order], np.repeat([TRAIN, VALID, TEST], [800, 100, 100]))
    boundary = ts[order[799]]
    assert ts[order[800]] == boundary  # the seed above really puts a tie across the train/valid cut
    tied = np.flatnonzero(ts == boundary)
    assert (np.diff(split[tied]) >= 0).all() and {TRAIN, VALID} <= set(split[tied].tolist())
    assert np.array_equal(temporal_split(ts, (0.8, 0.1, 0.1)), split)  # no seed: one answer
    other = temporal_split(ts, (0.6, 0.3, 0.1))
    assert np.bincount(other).tolist() == [600, 300, 100]
    assert np.array_equal(temporal_split(np.array([5.0, 1.0, 3.0, 2.0, 4.0]), (0.4, 0.2, 0.4)),
                          np.array([TEST, TRAIN, VALID, TRAIN, TEST], dtype=np.int8))
    with pytest.raises(UserError, match="sum"):
        temporal_split(ts, (0.8, 0.1, 0.2))


def test_temporal_split_refuses_missing_timestamps(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--split temporal .* but toy has no timestamps"):
        encode(_raw([4, 5, 3, 2]), DataConfig(k_core=1, split_mode="temporal"))
    raw = _raw([4, 5, 3, 2])
    raw.interactions["timestamp"] = [1.0, np.nan, 3.0, 4.0]
    with pytest.raises(UserError, match="toy lacks a timestamp on 1 of 4 interactions"):
        encode(raw, DataConfig(k_core=1, split_mode="temporal"))
    assert np.isnan(encode(raw, DataConfig(k_core=1)).ts[1])  # random mode does not need them
    csv = tmp_path / "plain.csv"
    csv.write_text("user_id,item_id,rating\n1,10,5\n1,11,2\n2,10,4\n")
    with pytest.raises(UserError, match="but plain has no timestamps; use --split random"):
        load_dataset(DataConfig(dataset="csv", data_dir=str(csv), k_core=1, split_mode="temporal"))


def test_temporal_split_on_the_tiny_dataset(tiny_atomic: Path) -> None:
    config = DataConfig(dataset="atomic", data_dir=str(tiny_atomic), k_core=3, split_mode="temporal")
    data = load_dataset(config)
    inter = pd.read_csv(tiny_atomic / "tiny.inter", sep="\t")
    assert data.ts.dtype == np.float64 and np.array_equal(data.ts, inter["timestamp:float"].to_numpy(float))
    _assert_time_ordered(data)
    assert np.bincount(data.split).tolist() == [1440, 180, 180]
    assert data.stats["split_mode"] == "temporal" and data.stats["split_fractions"] == [0.8, 0.1, 0.1]
    # the fixture writes users in blocks, so the newest 20% of the log are users never seen in train
    assert data.stats["test_cold_user_rows"] == 180 and data.stats["train_time"] == [1000.0, 2439.0]
    dropped = load_dataset(replace(config, drop_middle="both"))  # middle ratings leave the same cut
    assert np.array_equal(dropped.split[dropped.split != EXCLUDED], data.split[dropped.split != EXCLUDED])
    shorter = load_dataset(replace(config, split=(0.5, 0.25, 0.25)))
    assert np.bincount(shorter.split).tolist() == [900, 450, 450]
    _assert_time_ordered(shorter)


def test_random_split_is_unchanged_by_the_temporal_mode(tiny_atomic: Path) -> None:
    for (name, seed, fractions), digest in RANDOM_SPLIT_SHA.items():
        if name == "tiny":
            data = load_dataset(DataConfig(dataset="atomic", data_dir=str(tiny_atomic), k_core=3, seed=seed,
                                           split=fractions))
            assert _split_sha(data) == digest and data.stats["split_mode"] == "random"


def test_ml100k_temporal_split(ml100k_root: Path) -> None:
    random = load_dataset(DataConfig(data_dir=str(ml100k_root), k_core=10))
    assert _split_sha(random) == RANDOM_SPLIT_SHA[("ml-100k", 2020, (0.8, 0.1, 0.1))]
    data = load_dataset(DataConfig(data_dir=str(ml100k_root), k_core=10, split_mode="temporal"))
    assert np.array_equal(data.user, random.user) and np.array_equal(data.ts, random.ts)  # same rows, other cut
    assert np.bincount(data.split).tolist() == [78362, 9795, 9796]
    _assert_time_ordered(data)
    # ML-100k's timestamps: Sep 1997 (874724710) to Apr 1998 (893286638)
    assert data.ts.min() == 874724710 and data.ts.max() == 893286638
    assert data.stats["test_time"][0] >= data.stats["valid_time"][1] >= data.stats["train_time"][1]
    assert (data.stats["test_cold_user_rows"], data.stats["test_cold_item_rows"]) == (8449, 71)  # quoted in README
