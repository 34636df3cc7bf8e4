"""The traffic model of the load test, and the checks every response must pass.

Plain Python + numpy, so it is tested without Locust; ``locustfile.py`` only wires it to
HTTP.  Traffic comes from a bundle (the one the gateway serves, or any bundle of the
same dataset):

* user ids are drawn with probability proportional to each user's training activity
  (the length of their history in ``history_indptr``), plus a share of unknown users
  (ids the gateway has never seen: the cold-start path);
* ``k`` is drawn from a list of sizes;
* a share of requests are ``/v1/events`` writes: a known user rates one of the items
  last recommended to them (or an item they have not seen).

A response is correct when its status is right, it has ``k`` items (fewer only when the
user's unseen candidates run out), no item is in the user's seen set (training history
plus the events this process had confirmed before the request was sent), items are
distinct, known and in the served order (``bundle.RankingInfo``: log p_click + w × the
retriever's score for a known user, p_click for an unknown one, recomputed here from the
traffic bundle's own vectors), and the probabilities are well formed.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from ratingctr.bundle import load_bundle
from ratingctr.loadtest.config import TrafficConfig

__all__ = ["EventLedger", "Traffic", "TrafficConfig", "UNKNOWN_PREFIX"]

UNKNOWN_PREFIX = "loadtest-unknown-"


class EventLedger:
    """When the gateway accepted (202) each event this process sent.

    An event accepted before a request was sent must be honoured by that request.  One
    still in flight may or may not be, which only matters to the exact item count, and
    that count is checked only for traffic without events.
    """

    def __init__(self) -> None:
        self._confirmed: dict[str, dict[str, float]] = {}

    def record(self, user_id: str, item_id: str, at: float | None = None) -> None:
        self._confirmed.setdefault(user_id, {})[item_id] = time.monotonic() if at is None else at

    def seen_before(self, user_id: str, moment: float) -> set[str]:
        """Items of ``user_id`` whose event was confirmed at or before ``moment``."""
        return {item for item, at in self._confirmed.get(user_id, {}).items() if at <= moment}


class Traffic:
    """Users, their activity and seen sets, and the response checks, from one bundle."""

    def __init__(self, config: TrafficConfig) -> None:
        self.config = config
        bundle = load_bundle(Path(config.bundle), verify=False)  # the gateway verifies; we only read
        self.manifest = bundle.manifest
        self.levels = bundle.levels
        self.version = bundle.version
        self.user_ids: list[str] = bundle.vocab["user_id"]
        self.item_ids: list[str] = bundle.vocab["item_id"]
        self.item_index = {item: i for i, item in enumerate(self.item_ids) if i}
        self.n_items = len(self.item_ids) - 1
        self.indptr = bundle["history_indptr.npy"].astype(np.int64)
        self.history = bundle["history_items.npy"].astype(np.int64)
        activity = np.diff(self.indptr)[: len(self.user_ids)].astype(np.float64)
        activity[0] = 0.0  # index 0 is the unknown/padding user
        if activity.sum() <= 0:
            raise ValueError(f"{config.bundle}: no user has any history; cannot weigh users by activity")
        self.activity = activity
        self.cdf = np.cumsum(activity / activity.sum())
        self.user_fields = bundle["user_fields.npy"]
        self.item_fields = bundle["item_fields.npy"]
        self.user_vectors = bundle["user_vectors.npy"]
        self.item_vectors = bundle["item_vectors.npy"]
        self.popular = bundle["popular.npy"].astype(np.int64)
        self._seen_cache: dict[int, frozenset[str]] = {}
        self._body_cache: dict[int, tuple[bytes, int]] = {}
        self._candidate_cache: dict[int, np.ndarray] = {}

    # ---- drawing traffic -------------------------------------------------------------
    def sample_user(self, rng: np.random.Generator, allow_unknown: bool = True) -> tuple[str, int]:
        """(raw user id, vocabulary index); index 0 is an unknown user with a fresh id."""
        if allow_unknown and rng.random() < self.config.unknown_share:
            return f"{UNKNOWN_PREFIX}{int(rng.integers(1 << 62))}", 0
        index = int(np.searchsorted(self.cdf, rng.random(), side="right"))
        index = min(max(index, 1), len(self.user_ids) - 1)
        while self.activity[index] == 0:  # float round-off at the edges of the CDF
            index -= 1 if index > 1 else -1
        return self.user_ids[index], index

    def sample_k(self, rng: np.random.Generator) -> int:
        return int(self.config.k_values[int(rng.integers(len(self.config.k_values)))])

    def seen(self, index: int) -> frozenset[str]:
        """Raw item ids in the user's training history (the seen set the bundle seeds)."""
        if index not in self._seen_cache:
            rows = self.history[self.indptr[index]:self.indptr[index + 1]]
            self._seen_cache[index] = frozenset(self.item_ids[i] for i in rows if i > 0)
        return self._seen_cache[index]

    def event_item(self, rng: np.random.Generator, index: int, recommended: list[str] | None) -> str:
        """The item a user rates: one of their last recommendations, else an item they have not seen."""
        if recommended:
            return recommended[int(rng.integers(len(recommended)))]
        seen = self.seen(index)
        for _ in range(64):
            item = self.item_ids[int(rng.integers(1, self.n_items + 1))]
            if item not in seen:
                return item
        return self.item_ids[int(rng.integers(1, self.n_items + 1))]

    def candidate_items(self, index: int) -> np.ndarray:
        """Item indices the user's request scores: their top-N retrieved unseen items.

        The same retrieval the gateway does (inner product of retriever vectors, seen items
        removed); unknown users get the most popular items, as the gateway's cold start.
        """
        if index not in self._candidate_cache:
            n = min(self.config.candidates, self.n_items)
            if index == 0:
                items = self.popular[self.popular > 0][:n]
            else:
                scores = self.item_vectors[1:] @ self.user_vectors[index]
                seen = self.history[self.indptr[index]:self.indptr[index + 1]]
                scores[seen[seen > 0] - 1] = -np.inf
                order = np.argsort(-scores, kind="stable")
                items = order[np.isfinite(scores[order])][:n] + 1
            self._candidate_cache[index] = items
        return self._candidate_cache[index]

    def candidate_rows(self, index: int) -> np.ndarray:
        """``[N, C]`` int64 TorchServe input: the user's field row against each candidate's item row."""
        items = self.candidate_items(index)
        user = np.broadcast_to(self.user_fields[index], (items.size, self.user_fields.shape[1]))
        return np.concatenate([user, self.item_fields[items]], axis=1).astype(np.int64)

    def prediction_body(self, index: int) -> tuple[bytes, int]:
        """TorchServe request body (JSON bytes) for ``index`` and its row count, built once per user.

        The generator shares the CPU with the server under test, so retrieving, ranking and
        encoding 200 rows on every call would slow the TorchServe side of a comparison only.
        """
        cached = self._body_cache.get(index)
        if cached is None:
            rows = self.candidate_rows(index)
            body = orjson.dumps({"fields": rows}, option=orjson.OPT_SERIALIZE_NUMPY)
            cached = self._body_cache[index] = (body, rows.shape[0])
        return cached

    # ---- checking responses -----------------------------------------------------------
    def check_recommend(self, status: int, body: Any, user_id: str, index: int, k: int,
                        confirmed: set[str] | frozenset[str] = frozenset(), model: str = "") -> str | None:
        """None when the ``/v1/recommend`` response is right, else what is wrong (one line).

        ``confirmed``: items whose events were accepted before the request was sent (must be
        excluded).  Events written by other processes (other Locust workers, earlier rounds against the
        same Redis) are unknown here, so with events in the traffic a short list cannot be
        told apart from a catalogue those writers used up: the "exactly k unless candidates
        run out" check is applied only when this traffic writes no events (the generator
        then knows every seen item); with events, fewer than k is accepted, more never is.
        """
        if status != 200:
            return f"status {status}: {str(body)[:200]}"
        if not isinstance(body, dict) or not isinstance(body.get("items"), list):
            return "response has no items list"
        items = body["items"]
        fallback = body.get("fallback")
        if index == 0 and fallback != "cold_start":
            return f"unknown user served with fallback={fallback!r}, expected 'cold_start'"
        if index > 0 and fallback is not None:
            return f"known user served with fallback={fallback!r}"
        if body.get("user_id") not in (None, user_id):
            return f"response is for user {body.get('user_id')!r}, asked for {user_id!r}"
        served = body.get("model") or {}
        if model and served.get("name") != model:
            return f"served by model {served.get('name')!r}, asked for {model!r}"
        ids = [it.get("item_id") if isinstance(it, dict) else None for it in items]
        if len(set(ids)) != len(ids):
            return "duplicate items in the response"
        unknown = [i for i in ids if i not in self.item_index]
        if unknown:
            return f"unknown item ids {unknown[:3]}"
        seen = self.seen(index) | confirmed if index else frozenset()
        returned_seen = [i for i in ids if i in seen]
        if returned_seen:
            return f"seen items returned with exclude_seen=true: {returned_seen[:3]}"
        available = self.n_items - len(seen) if index else self.n_items
        exact = self.config.events_share == 0.0
        if len(items) > k or (exact and len(items) < k and len(items) < available):
            return f"{len(items)} items for k={k} ({available} unseen candidates known to the load generator)"
        p = [it.get("p_click") for it in items]
        if not all(isinstance(x, (int, float)) and 0.0 <= x <= 1.0 for x in p):
            return "p_click missing or outside [0, 1]"
        fresh = body.get("fresh_item_ids") or []
        if fresh and (index == 0 or ids[len(ids) - len(fresh):] != fresh):
            return f"fresh_item_ids {fresh[:3]} are not the last items of a known user's list"
        p, ids = p[:len(p) - len(fresh)], ids[:len(ids) - len(fresh)]  # slot items sit outside the order
        if len(p) > 1:
            order = np.asarray(p, dtype=np.float64)
            weight = self.manifest.ranking.retriever_weight
            if index > 0 and weight > 0:
                rows = np.fromiter((self.item_index[i] for i in ids), dtype=np.int64, count=len(ids))
                retrieval = self.item_vectors[rows].astype(np.float64) @ self.user_vectors[index].astype(np.float64)
                order = np.log(np.maximum(order, 1e-12)) + weight * retrieval
            if (order[1:] > order[:-1] + 1e-4).any():
                return ("items are not ordered by log p_click + w x retriever score" if index > 0 and weight > 0
                        else "items are not ordered by p_click")
        if self.levels and items:
            return self._check_ratings(items)
        return None

    def _check_ratings(self, items: list[dict]) -> str | None:
        """Every item carries a distribution over the levels and an on-scale expected rating.

        One numpy check over the ``[k, levels]`` matrix: the generator shares the machine
        with the gateway, so per-item Python here would tax the rating variant only.
        """
        try:
            probs = np.array([it["rating_probs"] for it in items], dtype=np.float64)
            rating = np.array([it["expected_rating"] for it in items], dtype=np.float64)
        except (KeyError, TypeError, ValueError):
            return f"rating_probs or expected_rating missing or malformed (expected {self.levels} levels)"
        # None becomes NaN in a float array, hence the finiteness test
        if (probs.shape != (len(items), self.levels) or not np.isfinite(probs).all()
                or (np.abs(probs.sum(axis=1) - 1.0) > 1e-3).any()):
            return f"rating_probs is not a distribution over {self.levels} levels"
        if rating.shape != (len(items),) or not ((rating >= 1.0 - 1e-4) & (rating <= self.levels + 1e-4)).all():
            return "expected_rating missing or off the scale"
        return None

    def check_event(self, status: int, body: Any, count: int = 1) -> str | None:
        if status != 202:
            return f"status {status}: {str(body)[:200]}"
        if not isinstance(body, dict) or body.get("accepted") != count:
            return f"expected accepted={count}, got {body!r}"[:200]
        return None

    def check_prediction(self, status: int, body: Any, rows: int) -> str | None:
        """A TorchServe ``/predictions/<model>`` answer for ``rows`` candidate rows."""
        if status != 200:
            return f"status {status}: {str(body)[:200]}"
        if not isinstance(body, dict) or not isinstance(body.get("p_click"), list) or len(body["p_click"]) != rows:
            return f"expected p_click for {rows} rows"
        if not all(isinstance(x, (int, float)) and 0.0 <= x <= 1.0 for x in body["p_click"]):
            return "p_click outside [0, 1]"
        if self.levels:
            probs = body.get("rating_probs")
            if not isinstance(probs, list) or len(probs) != rows or any(len(r) != self.levels for r in probs):
                return f"rating_probs is not [{rows}, {self.levels}]"
        return None
