"""A run's own copy of its encoded data, for runs whose data is not the dataset any more.

A trained run names its dataset in its config and everything downstream (export,
evaluation, the LightGCN graph) re-reads it from there. A retrained run was grown with
pulled events, so re-reading the dataset would give other vocabularies, rows and
graph: it carries its grown data instead, as ``<run>/data/`` (one ``.npy`` per array,
``data.json`` for the schema, vocabularies and scalars; nothing pickled), and
``load_run_data`` prefers that copy over the dataset.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import fields
from pathlib import Path

import numpy as np

from ratingctr.bundle import BundleError
from ratingctr.errors import UserError
from ratingctr.training.config import DataConfig
from ratingctr.training.data.encode import EncodedData, load_dataset
from ratingctr.training.data.schema import FieldSchema

DATA_DIR = "data"
STREAM_ID = "stream_id"  # str per interaction: "" for the dataset's own rows


def has_run_data(run_dir: Path) -> bool:
    return (Path(run_dir) / DATA_DIR / "data.json").is_file()


def save_run_data(run_dir: Path, data: EncodedData, stream_id: np.ndarray) -> None:
    """Write ``run_dir/data/`` whole (a temporary folder renamed into place)."""
    final = Path(run_dir) / DATA_DIR
    tmp = Path(run_dir) / f".{DATA_DIR}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    scalars: dict = {}
    for f in fields(data):
        value = getattr(data, f.name)
        if isinstance(value, np.ndarray):
            np.save(tmp / f"{f.name}.npy", value, allow_pickle=False)
        elif f.name == "schema":
            scalars["schema"] = value.to_dict()
        else:
            scalars[f.name] = value
    np.save(tmp / f"{STREAM_ID}.npy", np.asarray(stream_id, dtype=str), allow_pickle=False)
    (tmp / "data.json").write_text(json.dumps(scalars) + "\n")
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)


def load_run_data(run_dir: Path, config: DataConfig) -> tuple[EncodedData, np.ndarray]:
    """(data, stream ids): the run's own copy when it has one, else its dataset (no stream ids)."""
    folder = Path(run_dir) / DATA_DIR
    if not has_run_data(run_dir):
        data = load_dataset(config)
        return data, np.full(data.rating.shape[0], "", dtype=str)
    try:
        scalars = json.loads((folder / "data.json").read_text())
        values = {}
        for f in fields(EncodedData):
            if f.name == "schema":
                values[f.name] = FieldSchema.from_dict(scalars["schema"])
            elif (folder / f"{f.name}.npy").is_file():
                values[f.name] = np.load(folder / f"{f.name}.npy", allow_pickle=False)
            elif f.name in scalars:
                values[f.name] = scalars[f.name]
        stream_id = np.load(folder / f"{STREAM_ID}.npy", allow_pickle=False)
        return EncodedData(**values), stream_id
    except (OSError, ValueError, KeyError, TypeError, BundleError) as exc:
        raise UserError(f"{folder} is not a readable copy of a run's data: {exc.__class__.__name__}: {exc}") from exc


def trained_stream_ids(run_dir: Path, split: int | None = None) -> np.ndarray:
    """Stream ids of the pulled events in a run's data with ``split`` (default TRAIN: what its
    weights were trained on); empty for a run without its own data copy (it trained on its
    dataset only, no pulled event)."""
    from ratingctr.training.data.encode import TRAIN

    folder = Path(run_dir) / DATA_DIR
    if not has_run_data(run_dir):
        return np.zeros(0, dtype=str)
    try:
        stream_id = np.load(folder / f"{STREAM_ID}.npy", allow_pickle=False)
        splits = np.load(folder / "split.npy", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise UserError(f"{folder} is not a readable copy of a run's data: {exc}") from exc
    return stream_id[(splits == (TRAIN if split is None else split)) & (stream_id != "")]
