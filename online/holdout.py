"""Held-out events → labels and p̂ of one bundle, scored the way the gateway scores them.

The promotion gate compares two bundles on events neither was trained on; this module picks
those events from the pulled event log (``select_holdout``) and scores them with a bundle
(``score_events``).  Why through a bundle and not the training run: the bundle's ONNX graph,
vocabularies and field rows are exactly what would serve, so a defect of export (a lost
vocabulary row, a wrong field order) shows up in the gate's numbers instead of in production.

Raw ids map to the bundle's indices; an unknown id is index 0, the unknown row (what the
gateway does).  An unknown user whose events carried ``user_fields`` gets the gateway's
cold-start row built from the newest of them (one Python call per *new user*, never per row).
Everything else is whole-array numpy, and ONNX Runtime runs over chunks of ``CHUNK_ROWS``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ratingctr.bundle import BundleError
from ratingctr.errors import UserError
from ratingctr.training.data.event_log import latest_side_fields, read_event_log, stream_id_key

CHUNK_ROWS = 65536
LINEAGE_KEY = "last_stream_id"  # metrics.json → lineage.last_stream_id, written by `ratingctr retrain`


@dataclass(frozen=True)
class Holdout:
    """The events the gate scores, and why these: everything after ``after`` (newest ``newest``)."""

    events: pd.DataFrame
    after: str | None  # None: the whole log (no model being compared trained on pulled events) or by ids
    after_source: str  # "lineage", "--holdout-after", "none" or "--holdout-ids"
    newest: int | None

    @property
    def rows(self) -> int:
        return len(self.events)

    def describe(self) -> dict:
        ids = self.events["stream_id"]
        return {"after": self.after, "after_source": self.after_source, "newest": self.newest, "rows": self.rows,
                "first_stream_id": str(ids.iat[0]) if len(ids) else None,
                "last_stream_id": str(ids.iat[-1]) if len(ids) else None,
                "users": int(self.events["user_id"].nunique()), "items": int(self.events["item_id"].nunique())}


@dataclass(frozen=True)
class ScoredEvents:
    """One bundle's view of the held-out rows, aligned with the event frame's rows."""

    labels: np.ndarray  # float64 0/1: rating >= the bundle's threshold
    p_click: np.ndarray  # float64
    users: np.ndarray  # raw user ids (object), the bootstrap's resampling unit
    user_known: np.ndarray  # bool: the user is in the bundle's vocabulary
    item_known: np.ndarray  # bool
    cold_start_users: int  # unknown users scored with a row built from their user_fields
    threshold: float
    version: str


def _key(stream_id: str) -> np.ndarray:
    try:
        return stream_id_key(np.array([stream_id], dtype=object))[0]
    except Exception as exc:  # Arrow's cast error for a malformed id
        raise UserError(f"{stream_id!r} is not a Redis stream id (<ms>-<seq>)") from exc


def run_last_stream_id(run: Path) -> tuple[bool, str | None]:
    """``(has_lineage, last stream id)`` from a run's ``metrics.json``.

    A run without lineage (``ratingctr train``) trained on no pulled event; a retrained run
    whose lineage says ``None`` trained on none either (only replayed base rows).
    """
    path = Path(run) / "metrics.json"
    if not path.is_file():
        return False, None
    try:
        lineage = json.loads(path.read_text()).get("lineage")
    except (json.JSONDecodeError, OSError) as exc:
        raise UserError(f"{path} is unreadable: {exc}") from exc
    if not isinstance(lineage, dict):
        return False, None
    last = lineage.get(LINEAGE_KEY)
    return True, (str(last) if last else None)


def later_stream_id(a: str | None, b: str | None) -> str | None:
    """The later of two stream ids (None = before every event)."""
    if a is None or b is None:
        return a if b is None else b
    ka, kb = _key(a), _key(b)
    return a if (ka[0], ka[1]) >= (kb[0], kb[1]) else b


def events_after(frame: pd.DataFrame, stream_id: str | None) -> pd.DataFrame:
    """Rows of ``frame`` (stream order) strictly after ``stream_id``; all of them for None."""
    if stream_id is None or frame.empty:
        return frame
    key, cut = stream_id_key(frame["stream_id"]), _key(stream_id)
    newer = (key[:, 0] > cut[0]) | ((key[:, 0] == cut[0]) & (key[:, 1] > cut[1]))
    return frame[newer].reset_index(drop=True)


def select_holdout(events_dir: Path, trained_through: list[str | None], explicit_after: str | None = None,
                   newest: int | None = None) -> Holdout:
    """The events after every compared model's training cutoff (and after ``explicit_after``).

    ``trained_through``: the last stream id each model trained on, from lineage (None: no pulled
    event).  The cut is the latest of them, so no model is scored on an event it learned from;
    ``explicit_after`` (``--holdout-after``) may only move the cut later, never earlier.
    """
    if newest is not None and newest < 1:
        raise UserError(f"--holdout-newest must be at least 1, got {newest}")
    if not Path(events_dir).is_dir():
        raise UserError(f"event log directory not found: {events_dir}")
    lineage_cut: str | None = None
    for stream_id in trained_through:
        lineage_cut = later_stream_id(lineage_cut, stream_id)
    if explicit_after is not None:
        _key(explicit_after)
        if lineage_cut is not None and later_stream_id(explicit_after, lineage_cut) != explicit_after:
            raise UserError(f"--holdout-after {explicit_after} is before {lineage_cut}, the newest event a compared "
                            "model trained on: the gate would score events it learned from")
        after, source = explicit_after, "--holdout-after"
    else:
        after, source = lineage_cut, "lineage" if lineage_cut is not None else "none"
    frame = events_after(read_event_log(Path(events_dir)), after)
    if newest is not None:
        frame = frame.iloc[-newest:].reset_index(drop=True)
    if frame.empty:
        raise UserError(f"no held-out events in {events_dir} after stream id {after}: nothing to judge a candidate on")
    return Holdout(events=frame, after=after, after_source=source, newest=newest)


def select_holdout_ids(events_dir: Path, stream_ids: frozenset[str], trained: dict[str, np.ndarray]) -> Holdout:
    """The events named by ``stream_ids`` (``--holdout-ids``: the loop's per-user holdout).

    ``trained``: model name → the stream ids its weights were trained on (its run's data copy).
    Named events a compared model learned from are refused outright: unlike a cutoff, a list
    of ids can name anything, so the guard checks the ids themselves.
    """
    if not Path(events_dir).is_dir():
        raise UserError(f"event log directory not found: {events_dir}")
    if not stream_ids:
        raise UserError("--holdout-ids names no events: nothing to judge a candidate on")
    log = read_event_log(Path(events_dir))
    frame = log[log["stream_id"].isin(stream_ids)].reset_index(drop=True)
    missing = len(stream_ids) - len(frame)
    if missing:
        raise UserError(f"{missing} of the {len(stream_ids)} held-out stream ids are not in the event log "
                        f"{events_dir}: the log and the holdout list do not belong together")
    for name, ids in trained.items():
        learned = int(frame["stream_id"].isin(ids).sum())
        if learned:
            raise UserError(f"the {name} model was trained on {learned} of the {len(frame)} held-out events: "
                            "the gate would score events it learned from")
    return Holdout(events=frame, after=None, after_source="--holdout-ids", newest=None)


def _user_rows(ranker, users: np.ndarray, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, int]:
    """``[N, user columns]`` rows, the known-user mask and how many new users got a cold-start row."""
    index = pd.Index(ranker.user_ids[1:]).get_indexer(users) + 1  # -1 (unknown) → 0, the unknown row
    rows = ranker.user_fields[index]
    known = index > 0
    new_users = set(pd.unique(users[~known]))
    fields = {u: f for u, f in latest_side_fields(frame[~known], "user").items() if u in new_users}
    allowed = {name for name, _ in ranker.user_field_slots if name != "user_id"}
    cold = {u: ranker.cold_start_row({k: v for k, v in f.items() if k in allowed})
            for u, f in fields.items() if isinstance(f, dict)}  # one call per new user, as the gateway does
    if cold:
        codes = pd.Index(list(cold)).get_indexer(users)
        has = codes >= 0
        rows = rows.copy()
        rows[has] = np.stack(list(cold.values()))[codes[has]]
    return rows, known, len(cold)


def score_events(bundle: Path, frame: pd.DataFrame, threads: int = 2) -> ScoredEvents:
    """Labels and p̂ of ``bundle`` on every row of an event frame (columns of the event log)."""
    from ratingctr.serving.ranker import load_ranker

    try:
        ranker = load_ranker(Path(bundle), threads=threads, warmup_calls=0)
    except BundleError as exc:
        raise UserError(f"cannot score with {bundle}: {exc}") from exc
    users = frame["user_id"].astype(str).to_numpy(dtype=object)
    user_rows, user_known, cold = _user_rows(ranker, users, frame)
    items = ranker.item_indices(frame["item_id"].astype(str).to_numpy(dtype=str))
    width = user_rows.shape[1]
    features = np.empty((len(frame), width + ranker.item_fields.shape[1]), dtype=np.int64)
    features[:, :width] = user_rows
    features[:, width:] = ranker.item_fields[items]
    p = np.concatenate([ranker.predict(features[start:start + CHUNK_ROWS])["p_click"]
                        for start in range(0, len(features), CHUNK_ROWS)]) if len(features) else np.zeros(0)
    if not np.isfinite(p).all():
        raise UserError(f"bundle {ranker.version} at {bundle} produced non-finite scores on the held-out events")
    threshold = float(ranker.manifest.model.threshold)
    labels = (frame["rating"].to_numpy(dtype=np.float64) >= threshold).astype(np.float64)
    return ScoredEvents(labels=labels, p_click=p.astype(np.float64), users=users, user_known=user_known,
                        item_known=items > 0, cold_start_users=cold, threshold=threshold, version=ranker.version)
