"""Growing encoded data with events: appended ids, kept rows, side fields in the existing vocabularies."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ratingctr.errors import UserError
from ratingctr.training.config import DataConfig
from ratingctr.training.data.encode import EXCLUDED, TRAIN, VALID
from ratingctr.training.data.event_log import COLUMNS
from ratingctr.training.data.grow import grow
from ratingctr.training.data.stored import has_run_data, load_run_data, save_run_data


def events_frame(rows: list[dict]) -> pd.DataFrame:
    """Events in stream order with the event-log columns (stream ids 1000-0, 1001-0, ...)."""
    frame = pd.DataFrame(rows)
    frame["stream_id"] = [f"{1000 + k}-0" for k in range(len(frame))]
    for column in COLUMNS:
        if column not in frame:
            frame[column] = None
    frame["ts"] = np.arange(len(frame), dtype=np.float64) + 5e8
    frame["received"] = frame["ts"]
    for side in ("user_fields", "item_fields"):
        frame[side] = [json.dumps(v) if isinstance(v, dict) else None for v in frame[side]]
    return frame[list(COLUMNS)]


def _base_stream_id(data) -> np.ndarray:
    return np.full(data.rating.shape[0], "", dtype=str)


def test_new_ids_are_appended_and_old_rows_kept(tiny) -> None:
    age, job = tiny.vocab["age"][3], tiny.vocab["occupation"][2]
    genres = tiny.vocab["genre"][1:]
    known_user, known_item = tiny.vocab["user_id"][5], tiny.vocab["item_id"][7]
    frame = events_frame([
        {"user_id": "nu-b", "item_id": known_item, "rating": 5.0,
         "user_fields": {"age": age, "gender": "never-seen", "occupation": job}},
        {"user_id": known_user, "item_id": "ni-x", "rating": 3.0,
         "item_fields": {"release_year": "no-such-year", "genre": ["nope", genres[0], genres[1], genres[2], genres[3]]}},
        {"user_id": "nu-a", "item_id": "ni-x", "rating": 1.0},  # a new user without fields
        {"user_id": "nu-b", "item_id": "ni-y", "rating": 4.0,  # newest fields win; a string token_seq
         "user_fields": {"age": age, "occupation": "nobody"}, "item_fields": {"genre": f"{genres[4]} nope"}},
        {"user_id": known_user, "item_id": known_item, "rating": 2.0,  # a known id's fields are ignored
         "user_fields": {"age": tiny.vocab["age"][1]}},
    ])
    split = np.array([TRAIN, TRAIN, TRAIN, VALID, VALID], dtype=np.int8)
    grown = grow(tiny, _base_stream_id(tiny), frame, split, "train", "events")
    data, n = grown.data, tiny.rating.shape[0]
    assert grown.growth.to_dict() == {"new_users": 2, "new_items": 2, "new_interactions": 5}
    assert data.vocab["user_id"] == [*tiny.vocab["user_id"], "nu-b", "nu-a"]  # first appearance in stream order
    assert data.vocab["item_id"] == [*tiny.vocab["item_id"], "ni-x", "ni-y"]
    assert all(data.vocab[k] == tiny.vocab[k] for k in ("age", "gender", "occupation", "release_year", "genre"))
    assert np.array_equal(data.user_rows[:tiny.user_rows.shape[0]], tiny.user_rows)
    assert np.array_equal(data.item_rows[:tiny.item_rows.shape[0]], tiny.item_rows)
    nu_b, nu_a = tiny.n_users + 1, tiny.n_users + 2
    ni_x, ni_y = tiny.n_items + 1, tiny.n_items + 2
    # nu-b: its newest event's fields (no gender there → 0, an unknown occupation → 0)
    assert data.user_rows[nu_b].tolist() == [nu_b, 3, 0, 0]
    assert data.user_rows[nu_a].tolist() == [nu_a, 0, 0, 0]
    genre = tiny.schema.side_slice("genre")
    slots = genre.stop - genre.start
    # unknown tokens dropped, the rest in order up to the field's slots
    assert data.item_rows[ni_x, genre].tolist() == [1, 2, 3, 4][:slots] + [0] * (slots - 4)
    assert data.item_rows[ni_x, tiny.schema.side_slice("release_year")].tolist() == [0]
    assert data.item_rows[ni_y, genre].tolist() == [5] + [0] * (slots - 1)
    assert data.item_rows[ni_y, 0] == ni_y and data.item_rows[ni_x, 0] == ni_x
    assert data.schema.fields[0].vocab_size == tiny.schema.fields[0].vocab_size + 2
    # the base interactions are a prefix; the events follow
    for name in ("user", "item", "rating", "split", "middle"):
        assert np.array_equal(getattr(data, name)[:n], getattr(tiny, name)), name
    assert data.user[n:].tolist() == [nu_b, 5, nu_a, nu_b, 5]
    assert data.item[n:].tolist() == [7, ni_x, ni_x, ni_y, 7]
    assert data.rating[n:].tolist() == [5, 3, 1, 4, 2]
    # drop_middle=train: the middle rating (3) of a training event is excluded, a valid one is not
    assert data.split[n:].tolist() == [TRAIN, EXCLUDED, TRAIN, VALID, VALID]
    assert grown.stream_id[:n].tolist() == [""] * n and grown.stream_id[n:].tolist() == list(frame["stream_id"])
    assert data.stats["users"] == tiny.n_users + 2 and data.stats["interactions"] == n + 5


def test_bad_events_are_user_errors(tiny) -> None:
    frame = events_frame([{"user_id": "u1", "item_id": "i1", "rating": 6.0}])
    with pytest.raises(UserError, match="outside the integer scale 1..5"):
        grow(tiny, _base_stream_id(tiny), frame, np.zeros(1, np.int8), "none", "events")
    frame = events_frame([{"user_id": None, "item_id": "i1", "rating": 4.0}])
    with pytest.raises(UserError, match="without a user_id"):
        grow(tiny, _base_stream_id(tiny), frame, np.zeros(1, np.int8), "none", "events")


def test_a_run_carries_its_data_and_prefers_it(tiny, tiny_atomic: Path, tmp_path: Path) -> None:
    config = DataConfig(dataset="atomic", data_dir=str(tiny_atomic), k_core=3)
    assert not has_run_data(tmp_path)
    from_dataset, stream_id = load_run_data(tmp_path, config)  # no copy: the dataset
    assert np.array_equal(from_dataset.user, tiny.user) and set(stream_id.tolist()) == {""}
    frame = events_frame([{"user_id": "new", "item_id": tiny.vocab["item_id"][1], "rating": 4.0}])
    grown = grow(tiny, _base_stream_id(tiny), frame, np.zeros(1, np.int8), "none", "events")
    save_run_data(tmp_path, grown.data, grown.stream_id)
    loaded, loaded_ids = load_run_data(tmp_path, config)
    assert loaded.vocab == grown.data.vocab and loaded.schema == grown.data.schema
    for name, value in vars(grown.data).items():
        if isinstance(value, np.ndarray):
            assert np.array_equal(getattr(loaded, name), value, equal_nan=value.dtype.kind == "f"), name
            assert getattr(loaded, name).dtype == value.dtype
    assert loaded.stats == grown.data.stats and loaded_ids.tolist() == grown.stream_id.tolist()
    (tmp_path / "data" / "user.npy").write_bytes(b"not numpy")
    with pytest.raises(UserError, match="not a readable copy"):
        load_run_data(tmp_path, config)
