"""The pulled event log: append-only Parquet partitions of what ``/v1/events`` stored.

One contract between the consumer that writes it (``ratingctr events pull``) and every
reader (retraining, the promotion gate, the online experiment):

* a directory of ``events-<first stream id>-<last stream id>[.<n>].parquet`` files, each written
  whole to a temporary name, fsynced, renamed and the directory fsynced, so a file that is
  visible is complete; a crash leaves at most a ``.tmp-*`` file, which readers ignore;
* columns ``COLUMNS`` (all strings but ``rating``, ``ts``, ``received``); ``event_id``,
  ``user_fields`` and ``item_fields`` may be null; the side fields are JSON objects
  (field name → token or list of tokens);
* the reader keeps the first copy of every stream id and of every non-null ``event_id``,
  so a partition written twice (a consumer killed between its rename and its XACK) or an
  event retried after its id expired in Redis is read once.

Stream ids (``<ms>-<seq>``) order events as Redis received them; ``order`` sorts by them.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from ratingctr.errors import UserError

COLUMNS = ("stream_id", "event_id", "user_id", "item_id", "rating", "ts", "received", "user_fields", "item_fields")
STRING_COLUMNS = ("stream_id", "event_id", "user_id", "item_id", "user_fields", "item_fields")
FLOAT_COLUMNS = ("rating", "ts", "received")
PARTITION_GLOB = "events-*.parquet"
STREAM_ID_PATTERN = re.compile(r"^\d+-\d+$")


def stream_id_key(stream_ids: pd.Series | np.ndarray) -> np.ndarray:
    """``[n, 2]`` int64 (milliseconds, sequence) of Redis stream ids, for ordering.

    Split and parsed by Arrow's compute kernels: pandas' ``str.split`` was most of the time
    the consumer spent per batch (measured: 46 ms vs 11 ms for 10k ids).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    if len(stream_ids) == 0:
        return np.zeros((0, 2), np.int64)
    parts = pc.split_pattern(pa.array(np.asarray(stream_ids, dtype=object), pa.string()), "-", max_splits=1)
    return np.stack([pc.list_element(parts, i).cast(pa.int64()).to_numpy() for i in (0, 1)], axis=1)


def order(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows in stream order (the order Redis stored them)."""
    if frame.empty:
        return frame.reset_index(drop=True)
    key = stream_id_key(frame["stream_id"])
    return frame.iloc[np.lexsort((key[:, 1], key[:, 0]))].reset_index(drop=True)


def empty_frame() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="float64" if c in FLOAT_COLUMNS else "object") for c in COLUMNS})


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


TMP_PREFIX = ".tmp-"


def stage_partition(directory: Path, frame: pd.DataFrame) -> tuple[Path, Path]:
    """Write ``frame`` (``COLUMNS``) whole and fsynced under a temporary name: ``(tmp, final)``.

    Split from :func:`publish_partition` so the consumer can be stopped exactly between the
    two (its crash-test hook); everyone else calls :func:`write_partition`.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    if frame.empty:
        raise ValueError("an empty partition is never written")
    directory.mkdir(parents=True, exist_ok=True)
    frame = order(frame[list(COLUMNS)])
    name = f"events-{frame['stream_id'].iat[0]}-{frame['stream_id'].iat[-1]}.parquet"
    schema = pa.schema([(c, pa.float64() if c in FLOAT_COLUMNS else pa.string()) for c in COLUMNS])
    table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
    final, tmp = directory / name, directory / f"{TMP_PREFIX}{name}"
    with open(tmp, "wb") as fh:
        pq.write_table(table, fh, compression="zstd")
        fh.flush()
        os.fsync(fh.fileno())
    return tmp, final


def publish_partition(tmp: Path, final: Path) -> Path:
    """Rename a staged partition into place and fsync the directory: from here it is durable.

    Never over another file: a partition of that name already there (the same stream ids,
    written again after a crash before their XACK) is kept, and this one takes the next free
    ``.<n>`` name.  Replacing would be harmless only while the two files hold the same rows;
    keeping both costs a duplicate the reader drops, never a lost row.
    """
    target, n = final, 1
    while target.exists():
        target = final.with_name(f"{final.stem}.{n}{final.suffix}")
        n += 1
    os.replace(tmp, target)
    _fsync_dir(target.parent)
    return target


def write_partition(directory: Path, frame: pd.DataFrame) -> Path:
    """Write ``frame`` (``COLUMNS``, any order) as one durable partition; returns its path.

    Durable means: when this returns, the file and its directory entry are on disk, so the
    caller may acknowledge these stream ids to Redis.
    """
    return publish_partition(*stage_partition(directory, frame))


def remove_stale_tmp(directory: Path) -> int:
    """Delete ``.tmp-*`` partitions a killed writer left (never read, never acknowledged); how many.

    Only for the one writer of ``directory`` at its start (``events pull`` holds a lock for that).
    """
    stale = list(Path(directory).glob(f"{TMP_PREFIX}events-*.parquet"))
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


def partitions(directory: Path) -> list[Path]:
    return sorted(Path(directory).glob(PARTITION_GLOB))


def read_event_log(directory: Path) -> pd.DataFrame:
    """Every event of the log once, in stream order (see the module docstring for the dedupe)."""
    import pyarrow.parquet as pq

    files = partitions(directory)
    if not files:
        return empty_frame()
    import pyarrow as pa

    frame = pa.concat_tables([pq.read_table(f) for f in files]).to_pandas()
    frame = order(frame).drop_duplicates("stream_id", keep="first")
    has_id = frame["event_id"].notna()
    repeated = has_id & frame.duplicated("event_id", keep="first")
    return frame[~repeated].reset_index(drop=True)


def latest_side_fields(frame: pd.DataFrame, side: str) -> dict[str, dict]:
    """id → its side fields from the newest event that carried any (``side``: user or item).

    A field absent from that newest object is absent here: an event states the whole record.
    """
    column, id_column = f"{side}_fields", f"{side}_id"
    carried = frame[frame[column].notna()]
    if carried.empty:
        return {}
    newest = carried.drop_duplicates(id_column, keep="last")
    return {uid: json.loads(raw) for uid, raw in zip(newest[id_column].to_numpy(), newest[column].to_numpy())}


def newest_per_user(frame: pd.DataFrame, share: float) -> np.ndarray:
    """Mask of each user's newest ``share`` of their rows in ``frame`` (stream order), the gate's holdout.

    Why per user and not the newest rows overall: a log in time order puts its newest rows
    on the few users active last (on MovieLens-100k 10% of a 10,000-event chunk is about 36
    users), so a gate judging on them has little power and decides by noise; every user's
    newest rows spread the same budget over every active user.  A user with ``n >= 2`` rows
    holds out ``max(1, round(share * n))`` of them (so the rows held out can exceed ``share``
    when many users have few events); a user's only row is never held out, so a new user is
    always trained on.  Whole-array pandas, no loop over users.
    """
    if not 0.0 < share < 1.0:
        raise ValueError(f"the per-user holdout share must be in (0, 1), got {share}")
    if frame.empty:
        return np.zeros(0, dtype=bool)
    users = frame["user_id"]
    count = users.map(users.value_counts()).to_numpy()
    wanted = np.where(count >= 2, np.maximum(1, np.round(share * count)), 0)
    from_newest = frame.groupby("user_id", sort=False).cumcount(ascending=False).to_numpy()
    return from_newest < wanted


def read_stream_id_file(path: str | None) -> frozenset[str]:
    """Stream ids, one per line (blank lines ignored); every line must be a Redis stream id."""
    if path is None:
        return frozenset()
    try:
        lines = [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read the stream id file {path}: {exc}") from exc
    ids = pd.Series(lines, dtype=object)
    bad = ids[~ids.str.fullmatch(STREAM_ID_PATTERN.pattern.strip("^$"))]
    if len(bad):
        raise UserError(f"{path}: {len(bad)} line(s) are not Redis stream ids (<ms>-<seq>), "
                        f"the first is {bad.iat[0][:40]!r}")
    return frozenset(lines)
