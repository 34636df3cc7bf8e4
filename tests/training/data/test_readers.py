from pathlib import Path

import numpy as np
import pytest

from ratingctr.errors import UserError
from ratingctr.training.config import DataConfig
from ratingctr.training.data.encode import load_dataset
from ratingctr.training.data.readers import read_csv, read_ml1m


def _write_ml1m(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    ratings = [f"{u}::{i}::{(u * 7 + i) % 5 + 1}::97830{u}{i}" for u in range(1, 13) for i in range(1, 13)]
    (directory / "ratings.dat").write_text("\n".join(ratings) + "\n", encoding="latin-1")
    users = [f"{u}::{'MF'[u % 2]}::{[1, 18, 25][u % 3]}::{u % 4}::0{u}000" for u in range(1, 13)]
    (directory / "users.dat").write_text("\n".join(users) + "\n", encoding="latin-1")
    movies = [f"{i}::Movie {i} é (19{80 + i})::{'Action|Comedy' if i % 2 else 'Drama'}" for i in range(1, 13)]
    (directory / "movies.dat").write_text("\n".join(movies) + "\n", encoding="latin-1")
    return directory


def test_ml1m_dat_files(tmp_path: Path) -> None:
    raw = read_ml1m(_write_ml1m(tmp_path / "ml-1m"))
    assert len(raw.interactions) == 144 and raw.interactions["rating"].between(1, 5).all()
    assert raw.users.loc["3"].to_dict() == {"age": "1", "gender": "F", "occupation": "3"}
    assert raw.items.loc["3"].to_dict() == {"release_year": "1983", "genre": "Action Comedy"}
    data = load_dataset(DataConfig(dataset="ml-1m", data_dir=str(tmp_path / "ml-1m"), k_core=10))
    assert data.schema.names == ["user_id", "age", "gender", "occupation", "item_id", "release_year", "genre"]
    assert data.schema.fields[-1].slots == 2


def test_csv_reader_and_header_check(tmp_path: Path) -> None:
    good = tmp_path / "r.csv"
    good.write_text("user_id,item_id,rating,timestamp\n1,10,5,1\n1,11,2,2\n2,10,4,3\n")
    data = load_dataset(DataConfig(dataset="csv", data_dir=str(good), k_core=1))
    assert data.schema.names == ["user_id", "item_id"] and data.rating.tolist() == [5, 2, 4]
    bad = tmp_path / "bad.csv"
    bad.write_text("user,item,stars\n1,2,3\n")
    with pytest.raises(UserError, match="header must be user_id,item_id,rating"):
        read_csv(bad)


def test_malformed_rows_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("user_id,item_id,rating\n1,10,5\n1,11,five\n2,10,4\n")
    with pytest.raises(UserError, match=r"1 malformed row\(s\), first at line 3: .*'five'"):
        read_csv(path)
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("user_id,item_id,rating\n1,10,5\n1,11,4,9,9\n")
    with pytest.raises(UserError, match="malformed file"):
        read_csv(ragged)


def test_missing_files_and_unknown_dataset(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not found"):
        load_dataset(DataConfig(dataset="csv", data_dir=str(tmp_path / "nope.csv")))
    with pytest.raises(UserError, match="ML-1M ratings file not found"):
        (tmp_path / "empty").mkdir()
        load_dataset(DataConfig(dataset="ml-1m", data_dir=str(tmp_path / "empty")))
    with pytest.raises(UserError, match="unknown dataset 'ml-20m'"):
        load_dataset(DataConfig(dataset="ml-20m"))
    with pytest.raises(UserError, match="--data-dir is required"):
        load_dataset(DataConfig(dataset="atomic"))


def test_timestamps_are_kept_where_the_source_has_them(tmp_path: Path, tiny_atomic: Path) -> None:
    from ratingctr.training.data.readers import read_atomic

    ml1m = read_ml1m(_write_ml1m(tmp_path / "ml-1m")).interactions
    assert ml1m["timestamp"].dtype == np.float64 and ml1m["timestamp"].iat[0] == 9783011  # "97830" + "1" + "1"
    assert ml1m["timestamp"].iat[-1] == 978301212
    atomic = read_atomic(tiny_atomic).interactions
    assert np.array_equal(atomic["timestamp"].to_numpy(), 1000.0 + np.arange(1800))
    with_time = tmp_path / "t.csv"
    with_time.write_text("user_id,item_id,rating,timestamp\n1,10,5,1700000000\n1,11,2, 1700000001.5\n2,10,4,\n")
    assert read_csv(with_time).interactions["timestamp"].tolist()[:2] == [1700000000.0, 1700000001.5]
    assert np.isnan(read_csv(with_time).interactions["timestamp"].iat[2])  # an empty cell is "no timestamp"
    without = tmp_path / "n.csv"
    without.write_text("user_id,item_id,rating\n1,10,5\n")
    assert np.isnan(read_csv(without).interactions["timestamp"]).all()


def test_malformed_timestamps_name_the_file_and_line(tmp_path: Path) -> None:
    csv = tmp_path / "m.csv"
    csv.write_text("user_id,item_id,rating,timestamp\n1,10,5,100\n1,11,4,yesterday\n2,10,4,inf\n")
    with pytest.raises(UserError, match=r"m.csv: 2 malformed timestamp\(s\), first at line 3: timestamp='yesterday'"):
        read_csv(csv)
    other = tmp_path / "o.csv"
    other.write_text("user_id,item_id,rating,time\n1,10,5,100\n")
    with pytest.raises(UserError, match="header must be user_id,item_id,rating\\[,timestamp\\], got .*,time"):
        read_csv(other)
    ml1m = _write_ml1m(tmp_path / "ml-1m")
    lines = (ml1m / "ratings.dat").read_text(encoding="latin-1").splitlines()
    lines[4] = "1::5::3::soon"
    (ml1m / "ratings.dat").write_text("\n".join(lines) + "\n", encoding="latin-1")
    with pytest.raises(UserError, match=r"ratings.dat: 1 malformed timestamp\(s\), first at line 5: timestamp='soon'"):
        read_ml1m(ml1m)


def test_fast_number_parsing_agrees_with_the_careful_path(tmp_path: Path) -> None:
    """Clean columns take Arrow's cast; it must give what ``pd.to_numeric`` gives, and a written
    "nan" timestamp (which the cast accepts) is still a malformed line."""
    import pandas as pd

    from ratingctr.training.data.readers import _fast_floats

    text = pd.Series(["5", "4.5", "1e3", "-2", "0.125", None], dtype="string[pyarrow]")
    assert np.array_equal(_fast_floats(text), pd.to_numeric(text, errors="coerce").to_numpy(np.float64), equal_nan=True)
    assert _fast_floats(pd.Series([" 3", "4"], dtype="string[pyarrow]")) is None  # spaces: the careful path
    clean = tmp_path / "c.csv"
    clean.write_text("user_id,item_id,rating,timestamp\n1,10,5,100\n1,11,3.5,101.25\n2,10,4,\n")
    frame = read_csv(clean).interactions
    assert frame["rating"].tolist() == [5.0, 3.5, 4.0] and frame["timestamp"].tolist()[:2] == [100.0, 101.25]
    assert np.isnan(frame["timestamp"].iat[2])
    written_nan = tmp_path / "w.csv"
    written_nan.write_text("user_id,item_id,rating,timestamp\n1,10,5,100\n1,11,4,nan\n")
    with pytest.raises(UserError, match=r"w.csv: 1 malformed timestamp\(s\), first at line 3: timestamp='nan'"):
        read_csv(written_nan)
    bad_rating = tmp_path / "r.csv"
    bad_rating.write_text("user_id,item_id,rating\n1,10,5\n1,11,nan\n")
    with pytest.raises(UserError, match="r.csv: 1 malformed row"):
        read_csv(bad_rating)
