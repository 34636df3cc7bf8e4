"""A timestamped ratings log cut in time order, and replayed through the gateway's ``/v1/events``.

The online experiment needs the same data three ways: the oldest share as an ordinary
training dataset (RecBole atomic files, so every training verb reads it unchanged), the rest
as chunks in time order, and each chunk sent to a real gateway exactly as clients would send
it (batches, an ``event_id`` per event so a retried batch is stored once, the profile of a
user or item on its first event in the replay).
"""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ratingctr.errors import UserError
from ratingctr.training.data.readers import RawData

USER_SIDE, ITEM_SIDE = "user_fields", "item_fields"


@dataclass
class TimeCut:
    """The log in time order: ``initial`` rows, then ``chunks`` (each a DataFrame of events)."""

    initial: pd.DataFrame
    chunks: list[pd.DataFrame]
    raw: RawData


def cut_in_time(raw: RawData, initial_share: float, n_chunks: int) -> TimeCut:
    """Stable time order (ties keep file order); the oldest ``initial_share`` and ``n_chunks`` equal parts."""
    frame = raw.interactions
    if frame["timestamp"].isna().any():
        raise UserError(f"{raw.name} has interactions without a timestamp: the online replay needs time order")
    frame = frame.iloc[np.argsort(frame["timestamp"].to_numpy(), kind="stable")].reset_index(drop=True)
    frame["row"] = np.arange(len(frame))  # position in time order: the event_id of the replay
    n_initial = int(round(len(frame) * initial_share))
    rest = frame.iloc[n_initial:]
    bounds = np.linspace(0, len(rest), n_chunks + 1).round().astype(int)
    chunks = [rest.iloc[bounds[i]:bounds[i + 1]].reset_index(drop=True) for i in range(n_chunks)]
    return TimeCut(frame.iloc[:n_initial].reset_index(drop=True), chunks, raw)


def _token_column(values: pd.Series) -> pd.Series:
    return values.fillna("").astype(str)


def write_atomic(cut: TimeCut, directory: Path, name: str) -> Path:
    """The initial rows (+ the side tables) as ``NAME.inter/.user/.item``; returns the directory."""
    directory.mkdir(parents=True, exist_ok=True)
    inter = cut.initial[["user_id", "item_id", "rating", "timestamp"]].copy()
    inter.columns = ["user_id:token", "item_id:token", "rating:float", "timestamp:float"]
    inter.to_csv(directory / f"{name}.inter", sep="\t", index=False, float_format="%.17g")
    raw = cut.raw
    for side, table, key in (("user", raw.users, "user_id"), ("item", raw.items, "item_id")):
        if table is None:
            continue
        out = pd.DataFrame({f"{key}:token": table.index.astype(str)})
        for column in table.columns:
            kind = "token_seq" if column in raw.multi_valued else "token"
            out[f"{column}:{kind}"] = _token_column(table[column]).to_numpy()
        out.to_csv(directory / f"{name}.{side}", sep="\t", index=False)
    return directory


def _side_records(table: pd.DataFrame | None, ids: np.ndarray, multi: set[str]) -> list[dict | None]:
    """Per id, its side fields as the events API takes them (lists for multi-valued fields)."""
    if table is None:
        return [None] * len(ids)
    aligned = table.reindex(ids.astype(str))
    present = aligned.notna().any(axis=1).to_numpy()
    columns = {c: _token_column(aligned[c]).to_numpy() for c in aligned.columns}
    records: list[dict | None] = []
    for i in range(len(ids)):  # one dict per *new* id of a chunk, not per event
        if not present[i]:
            records.append(None)
            continue
        record = {}
        for c, values in columns.items():
            value = values[i]
            if value:
                record[c] = value.split() if c in multi else value
        records.append(record or None)
    return records


def event_bodies(chunk: pd.DataFrame, raw: RawData, batch: int, known_users: set[str],
                 known_items: set[str]) -> list[list[dict]]:
    """The chunk as ``/v1/events`` batches; the first event of a user/item not seen before in
    the replay carries its profile.  ``known_*`` are updated."""
    users, items = chunk["user_id"].astype(str).to_numpy(), chunk["item_id"].astype(str).to_numpy()
    first_user = ~pd.Series(users).duplicated().to_numpy() & ~np.isin(users, list(known_users))
    first_item = ~pd.Series(items).duplicated().to_numpy() & ~np.isin(items, list(known_items))
    user_profiles = dict(zip(users[first_user], _side_records(raw.users, users[first_user], raw.multi_valued)))
    item_profiles = dict(zip(items[first_item], _side_records(raw.items, items[first_item], raw.multi_valued)))
    known_users.update(users.tolist())
    known_items.update(items.tolist())
    events = [{"user_id": u, "item_id": i, "rating": float(r), "ts": float(t), "event_id": f"replay-{row}"}
              for u, i, r, t, row in zip(users, items, chunk["rating"].to_numpy(), chunk["timestamp"].to_numpy(),
                                         chunk["row"].to_numpy())]
    for event, new_user, new_item in zip(events, first_user, first_item):
        if new_user and user_profiles.get(event["user_id"]):
            event[USER_SIDE] = user_profiles[event["user_id"]]
        if new_item and item_profiles.get(event["item_id"]):
            event[ITEM_SIDE] = item_profiles[event["item_id"]]
    return [events[i:i + batch] for i in range(0, len(events), batch)]


def post_events(url: str, batches: list[list[dict]], headers: dict[str, str] | None = None,
                retries: int = 5) -> dict:
    """Send the batches; a batch whose answer is lost or 503 is retried with the same event ids.

    Returns ``{"sent", "acknowledged", "retries"}``; acknowledged counts the events of every
    202 answer (a retried batch is counted once: its ids were stored once).
    """
    sent = acknowledged = retried = 0
    for batch in batches:
        body = json.dumps({"events": batch}).encode()
        for attempt in range(retries + 1):
            request = urllib.request.Request(f"{url}/v1/events", data=body, method="POST",
                                             headers={"Content-Type": "application/json", **(headers or {})})
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    answer = json.loads(response.read())
                acknowledged += int(answer["accepted"])
                break
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                status = getattr(exc, "code", None)
                if status is not None and status < 500 or attempt == retries:
                    raise UserError(f"/v1/events refused a replay batch: {exc}") from exc
                retried += 1
                time.sleep(0.2 * 2 ** attempt)
        sent += len(batch)
    return {"sent": sent, "acknowledged": acknowledged, "retries": retried}
