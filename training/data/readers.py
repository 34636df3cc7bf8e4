"""Readers: each input format → one ``RawData`` of string tokens.

All parsing goes through pandas' C parser (no per-row Python); malformed input becomes a
``UserError`` naming the file, the line and what is wrong.  Multi-valued side fields
(genres) are kept as space-separated token strings, RecBole's ``token_seq`` convention.
"""
from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ratingctr.errors import UserError

DATASETS = ("ml-100k", "ml-1m", "atomic", "csv")


@dataclass
class RawData:
    """Interactions plus optional side tables, all as strings.

    ``users`` / ``items`` are indexed by the raw id token; their columns are the side
    fields to encode, named as the models will see them.  ``multi_valued`` lists the
    columns whose values are space-separated token sets.
    """

    name: str
    interactions: pd.DataFrame  # user_id: str, item_id: str, rating: float64, timestamp: float64 (NaN: none)
    users: pd.DataFrame | None = None
    items: pd.DataFrame | None = None
    multi_valued: set[str] = field(default_factory=set)


def _require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise UserError(f"{what} not found: {path}")
    return path


def _read_table(path: Path, sep: str, names: list[str] | None, header: int | None,
                encoding: str = "utf-8") -> pd.DataFrame:
    try:
        if sep == "::":  # the C parser takes one-character separators only
            text = path.read_text(encoding=encoding).replace("::", "\t")
            return pd.read_csv(io.StringIO(text), sep="\t", names=names, header=header, dtype=str,
                               keep_default_na=False, quoting=3, engine="c")
        return pd.read_csv(path, sep=sep, names=names, header=header, dtype=str, keep_default_na=False,
                           quoting=3 if sep == "\t" else 0, engine="c", encoding=encoding)
    except pd.errors.ParserError as exc:
        raise UserError(f"malformed file {path}: {str(exc).strip()}") from exc
    except UnicodeDecodeError as exc:
        raise UserError(f"{path} is not {encoding} text: {exc.reason} at byte {exc.start}") from exc
    except pd.errors.EmptyDataError as exc:
        raise UserError(f"{path} is empty") from exc


def _fast_floats(column: pd.Series) -> np.ndarray | None:
    """The column parsed as float64 by Arrow's vectorised cast (missing cells → NaN), or None
    when a cell is not a plain number (spaces, empty text, words): the caller then takes the
    slower ``pd.to_numeric`` path that strips, tolerates and names the bad line.

    Why: ``pd.to_numeric`` on 25M Arrow-backed strings took ~25 s per column at MovieLens-25M's
    size (rating and timestamp: ~40% of reading the data); the cast takes ~0.5 s.
    """
    import pyarrow as pa

    try:
        return column.astype("float64[pyarrow]").to_numpy(dtype=np.float64, na_value=np.nan)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, TypeError, ValueError):
        return None


def _timestamps(frame: pd.DataFrame, path: Path, first_data_line: int) -> np.ndarray:
    """The ``timestamp`` column as float64 seconds; NaN where the file has none (no column,
    or an empty cell), a ``UserError`` naming the first line whose value is not a number."""
    if "timestamp" not in frame.columns:
        return np.full(len(frame), np.nan)
    values = _fast_floats(frame["timestamp"])
    if values is not None:  # every present cell parsed: only a written "nan" or "inf" can be bad
        bad = (np.isnan(values) & frame["timestamp"].notna().to_numpy()) | np.isinf(values)
    else:
        text = frame["timestamp"].str.strip()
        values = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64)
        bad = (np.isnan(values) & (text != "").to_numpy()) | np.isinf(values)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise UserError(f"{path}: {int(bad.sum())} malformed timestamp(s), first at line {row + first_data_line}: "
                        f"timestamp={frame['timestamp'].iat[row]!r} (a number of seconds is expected)")
    return values


def _numeric_ratings(frame: pd.DataFrame, path: Path, first_data_line: int) -> pd.DataFrame:
    fast = _fast_floats(frame["rating"])
    ratings = pd.Series(fast) if fast is not None else pd.to_numeric(frame["rating"], errors="coerce")
    bad = ratings.isna().to_numpy() | (frame["user_id"] == "").to_numpy() | (frame["item_id"] == "").to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise UserError(f"{path}: {int(bad.sum())} malformed row(s), first at line {row + first_data_line}: "
                        f"user_id={frame['user_id'].iat[row]!r} item_id={frame['item_id'].iat[row]!r} "
                        f"rating={frame['rating'].iat[row]!r}")
    return pd.DataFrame({"user_id": frame["user_id"].to_numpy(), "item_id": frame["item_id"].to_numpy(),
                         "rating": ratings.to_numpy(dtype=np.float64),
                         "timestamp": _timestamps(frame, path, first_data_line)})


def _atomic_header(path: Path) -> tuple[list[str], dict[str, str]]:
    with open(path, encoding="utf-8") as fh:
        header = fh.readline().rstrip("\n\r").split("\t")
    names, types = [], {}
    for col in header:
        name, _, kind = col.partition(":")
        names.append(name)
        types[name] = kind or "token"
    return names, types


def _read_atomic_side(path: Path, key: str, fields: dict[str, str] | None) -> tuple[pd.DataFrame, set[str]]:
    """Side table of an atomic file; ``fields`` maps source column → field name (None = all tokens)."""
    names, types = _atomic_header(path)
    if key not in names:
        raise UserError(f"{path}: header has no '{key}' column (got {', '.join(names)})")
    frame = _read_table(path, "\t", names, header=0)
    if fields is None:
        fields = {c: c for c in names if c != key and types[c] in ("token", "token_seq")}
    missing = [c for c in fields if c not in names]
    if missing:
        raise UserError(f"{path}: no column(s) {', '.join(missing)} (got {', '.join(names)})")
    table = frame[[key, *fields]].rename(columns=fields).drop_duplicates(subset=key, keep="first")
    multi = {fields[c] for c in fields if types[c] == "token_seq"}
    return table.set_index(key), multi


def read_atomic(directory: Path, name: str | None = None, user_fields: dict[str, str] | None = None,
                item_fields: dict[str, str] | None = None) -> RawData:
    """RecBole atomic files ``NAME.inter`` (+ optional ``NAME.user``, ``NAME.item``).

    A ``timestamp`` column of ``NAME.inter`` (RecBole's ``timestamp:float``) is kept for the
    temporal split; without one the timestamps are NaN.
    """
    directory = Path(directory)
    if directory.is_file() and directory.suffix == ".inter":
        name, directory = directory.stem, directory.parent
    if not directory.is_dir():
        raise UserError(f"atomic dataset directory not found: {directory}")
    name = name or directory.name
    inter = _require_file(directory / f"{name}.inter", "atomic interaction file")
    names, _ = _atomic_header(inter)
    for needed in ("user_id", "item_id", "rating"):
        if needed not in names:
            raise UserError(f"{inter}: header has no '{needed}' column (got {', '.join(names)})")
    frame = _read_table(inter, "\t", names, header=0)
    raw = RawData(name=name, interactions=_numeric_ratings(frame, inter, first_data_line=2))
    user_file, item_file = directory / f"{name}.user", directory / f"{name}.item"
    if user_file.is_file():
        raw.users, multi = _read_atomic_side(user_file, "user_id", user_fields)
        raw.multi_valued |= multi
    if item_file.is_file():
        raw.items, multi = _read_atomic_side(item_file, "item_id", item_fields)
        raw.multi_valued |= multi
    return raw


def read_ml100k(directory: Path) -> RawData:
    """The bundled ML-100k with the fields both papers use (RecBole's context-aware setup)."""
    return read_atomic(Path(directory), "ml-100k",
                       user_fields={"age": "age", "gender": "gender", "occupation": "occupation"},
                       item_fields={"release_year": "release_year", "class": "genre"})


def read_ml1m(directory: Path) -> RawData:
    """Raw ML-1M ``ratings.dat``, ``users.dat``, ``movies.dat`` ("::"-separated, latin-1);
    the fourth column of ``ratings.dat`` is the timestamp (seconds since the epoch)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise UserError(f"ML-1M directory not found: {directory}")
    ratings_path = _require_file(directory / "ratings.dat", "ML-1M ratings file")
    frame = _read_table(ratings_path, "::", ["user_id", "item_id", "rating", "timestamp"], None, "latin-1")
    raw = RawData(name="ml-1m", interactions=_numeric_ratings(frame, ratings_path, first_data_line=1))
    users_path, movies_path = directory / "users.dat", directory / "movies.dat"
    if users_path.is_file():
        users = _read_table(users_path, "::", ["user_id", "gender", "age", "occupation", "zip"], None, "latin-1")
        raw.users = users[["user_id", "age", "gender", "occupation"]].drop_duplicates("user_id").set_index("user_id")
    if movies_path.is_file():
        movies = _read_table(movies_path, "::", ["item_id", "title", "genres"], None, "latin-1")
        year = movies["title"].str.extract(r"\((\d{4})\)\s*$", flags=re.ASCII)[0].fillna("")
        genre = movies["genres"].str.replace("|", " ", regex=False)
        raw.items = pd.DataFrame({"release_year": year.to_numpy(), "genre": genre.to_numpy()},
                                 index=movies["item_id"].to_numpy()).loc[lambda f: ~f.index.duplicated()]
        raw.multi_valued.add("genre")
    return raw


def read_csv(path: Path) -> RawData:
    """Plain CSV with header ``user_id,item_id,rating[,timestamp]``; no side features.

    The optional fourth column must be named ``timestamp`` (numbers, e.g. Unix seconds):
    a column of another name would otherwise be silently read as, or instead of, the time.
    """
    path = _require_file(Path(path), "CSV ratings file")
    frame = _read_table(path, ",", None, header=0)
    expected = ["user_id", "item_id", "rating"]
    if list(frame.columns) not in (expected, [*expected, "timestamp"]):
        raise UserError(f"{path}: header must be user_id,item_id,rating[,timestamp], got {','.join(frame.columns)}")
    return RawData(name=path.stem, interactions=_numeric_ratings(frame, path, first_data_line=2))
