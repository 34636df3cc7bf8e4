"""The event log's helpers that pick and name events: the per-user holdout and stream-id files."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ratingctr.errors import UserError
from ratingctr.training.data.event_log import newest_per_user, read_stream_id_file


def _frame(users: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"stream_id": [f"{k + 1}-0" for k in range(len(users))], "user_id": users})


def test_each_user_holds_out_their_newest_share_and_a_single_event_never() -> None:
    # a: 20 events (hold out 2), b: 3 events (round(0.3) = 0 -> at least 1), c: 1 event (never), d: 2 (1)
    users = ["a"] * 10 + ["b", "c", "d"] + ["a"] * 10 + ["b", "b", "d"]
    frame = _frame(users)
    held = newest_per_user(frame, 0.1)
    assert held.dtype == bool and held.shape == (len(users),)
    picked = frame[held]
    assert picked.groupby("user_id").size().to_dict() == {"a": 2, "b": 1, "d": 1}
    # the newest of each user: the last two of a's, b's third and d's second
    assert picked["stream_id"].tolist() == ["22-0", "23-0", "25-0", "26-0"]
    assert newest_per_user(frame, 0.5)[frame["user_id"].eq("a").to_numpy()].sum() == 10


def test_the_per_user_holdout_spreads_over_many_more_users_than_the_newest_rows() -> None:
    """Time-ordered bursts, as MovieLens logs are: the newest 10% overall covers few users."""
    rng = np.random.default_rng(0)
    sizes = rng.integers(5, 80, 150)
    users = np.repeat([f"u{k}" for k in range(150)], sizes)  # each user's events in one burst
    frame = _frame(users.tolist())
    per_user = frame.loc[newest_per_user(frame, 0.1), "user_id"].nunique()
    newest = frame["user_id"].iloc[-int(0.1 * len(frame)):].nunique()
    assert per_user == 150 and newest < 30


def test_a_share_outside_the_open_interval_is_refused() -> None:
    for share in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="per-user holdout share"):
            newest_per_user(_frame(["a", "a"]), share)
    assert newest_per_user(_frame([]), 0.1).shape == (0,)


def test_stream_id_files_are_read_strictly(tmp_path: Path) -> None:
    good = tmp_path / "ids.txt"
    good.write_text("1700000000000-0\n\n1700000000001-3\n1700000000000-0\n")
    assert read_stream_id_file(str(good)) == frozenset({"1700000000000-0", "1700000000001-3"})
    assert read_stream_id_file(None) == frozenset()
    bad = tmp_path / "bad.txt"
    bad.write_text("1700000000000-0\nyesterday\n")
    with pytest.raises(UserError, match="1 line\\(s\\) are not Redis stream ids.*'yesterday'"):
        read_stream_id_file(str(bad))
    with pytest.raises(UserError, match="cannot read the stream id file"):
        read_stream_id_file(str(tmp_path / "missing.txt"))
