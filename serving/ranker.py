"""One loaded bundle, ready to serve: its ONNX session, FAISS index, lookups and the request path's array work.

The verified ``Bundle`` (``ratingctr.bundle``, numpy only) and this object are the only
two layers: everything a request needs is built here once (start-up or reload), so the
request path only does array work.  Everything per-request is whole-array numpy; the only
Python loops run over the K items of a response.  Torch-free by construction (a test
asserts it).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ratingctr.bundle import FRESH_EVERY, INPUT_NAME, Bundle, BundleError, BundleManifest, load_bundle
from ratingctr.serving.runtime import faiss_index, ort_session

#: FAISS candidates scored per recommendation.  Measured (reports/ml-100k/pipeline): with the
#: blended order, NDCG@10 over 15 (model, seed) evaluations is 0.2942 at 50 candidates and
#: 0.2941 at 200 / 500 / 1,000 (binary head; rating 0.2953 at every N), while /v1/recommend p50
#: at one client rises 1.17 → 2.00 → 6.33 ms: the knee is at or below 50.  A larger catalogue or
#: a weaker retriever may need more: ``evaluate-bundle`` measures it for yours.
DEFAULT_CANDIDATES = 50
MAX_FRESH_SCORED = 256  # fresh items scored per request for the fresh-item slot (by retriever score)


class UnknownFieldError(ValueError):
    """``user_fields`` names a field the model does not have."""


@dataclass
class Ranked:
    """Scored items (bundle item indices), best first, plus per-stage timings in seconds."""

    items: np.ndarray
    p_click: np.ndarray
    rating_probs: np.ndarray | None
    expected_rating: np.ndarray | None
    timings: dict[str, float] = field(default_factory=dict)
    fresh: int = 0  # how many of the last items the fresh-item slot placed (bundle.RankingInfo)


def _sorted_keys(raw_ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Byte-string ids sorted for ``searchsorted`` lookups, and their original positions."""
    keys = np.array([s.encode() for s in raw_ids], dtype=bytes)
    order = np.argsort(keys, kind="stable")
    return keys[order], order


class Ranker:
    """One bundle ready to serve.  Immutable after construction, so swapping is atomic.

    Metadata (name, version, path, levels, manifest) is read from ``bundle``, never copied;
    the attributes set here are the request path's own shapes of the bundle's arrays
    (contiguous, the dtypes ONNX Runtime and FAISS take) and lookups built once.
    """

    def __init__(self, bundle: Bundle, session: Any, index: Any, candidates: int = DEFAULT_CANDIDATES) -> None:
        fields = bundle.manifest.fields
        inputs = session.get_inputs()
        if [i.name for i in inputs] != [INPUT_NAME] or inputs[0].shape[1] != fields.num_columns:
            raise BundleError(f"{bundle.path}: ranker.onnx input does not match the manifest's field schema")
        self.output_names: list[str] = [o.name for o in session.get_outputs()]
        if "p_click" not in self.output_names:
            raise BundleError(f"{bundle.path}: ranker.onnx has no p_click output")
        if index.ntotal != len(bundle.vocab["item_id"]) - 1:
            raise BundleError(f"{bundle.path}: items.faiss holds {index.ntotal} items, the vocabulary has "
                              f"{len(bundle.vocab['item_id']) - 1}")
        self.bundle, self.session, self.index, self.candidates = bundle, session, index, candidates
        self.user_fields = np.ascontiguousarray(bundle["user_fields.npy"], dtype=np.int64)
        self.item_fields = np.ascontiguousarray(bundle["item_fields.npy"], dtype=np.int64)
        self.user_vectors = np.ascontiguousarray(bundle["user_vectors.npy"], dtype=np.float32)
        # the retriever's inner products for the blended order (RankingInfo), exact whatever the index
        self.retriever_weight = float(bundle.manifest.ranking.retriever_weight)
        self.query_vectors = self.user_vectors
        self.item_vectors = np.ascontiguousarray(bundle["item_vectors.npy"], dtype=np.float32)
        if self.item_vectors.shape != (len(bundle.vocab["item_id"]), self.user_vectors.shape[1]):
            raise BundleError(f"{bundle.path}: item_vectors.npy has shape {self.item_vectors.shape}, expected "
                              f"{(len(bundle.vocab['item_id']), self.user_vectors.shape[1])}")
        if index.d == self.user_vectors.shape[1] + 1:
            # an HNSW index built on inner-product vectors augmented to Euclidean search
            # (export/faiss_index.py): its queries carry a zero in the extra coordinate
            self.user_vectors = np.ascontiguousarray(
                np.hstack([self.user_vectors, np.zeros((len(self.user_vectors), 1), np.float32)]))
        elif index.d != self.user_vectors.shape[1]:
            raise BundleError(f"{bundle.path}: items.faiss has {index.d} dimensions, the user vectors "
                              f"{self.user_vectors.shape[1]}")
        ranking = bundle.manifest.ranking
        if ranking.fresh_from > len(bundle.vocab["item_id"]) - 1:
            raise BundleError(f"{bundle.path}: ranking.fresh_from {ranking.fresh_from} is past the last item index "
                              f"{len(bundle.vocab['item_id']) - 1}")
        self.fresh_slots = ranking.fresh_slots if ranking.fresh_from else 0
        self.fresh_items = (np.arange(ranking.fresh_from, len(bundle.vocab["item_id"]), dtype=np.int64)
                            if self.fresh_slots else np.zeros(0, np.int64))
        self.popular = np.asarray(bundle["popular.npy"], dtype=np.int64)
        self.history_indptr = bundle["history_indptr.npy"]
        self.history_items = bundle["history_items.npy"]
        self.user_ids: list[str] = bundle.vocab["user_id"]
        self.item_ids: list[str] = bundle.vocab["item_id"]
        self.item_ids_array = np.array(self.item_ids, dtype=object)
        self.n_items = len(self.item_ids) - 1
        self.user_index = {u: i for i, u in enumerate(self.user_ids) if i}
        self._item_keys, self._item_order = _sorted_keys(self.item_ids)
        # user-side columns in order, for cold-start rows built from request fields
        self.user_field_slots: list[tuple[str, int]] = [(f.name, f.slots) for f in fields.side_fields("user")]
        # exclusive upper bound of every user-side column: a row from Redis is checked against it
        user_specs = fields.side_fields("user")
        self.user_row_limits = np.repeat(np.array([f.vocab_size for f in user_specs], dtype=np.int64),
                                         [f.slots for f in user_specs])
        self._field_vocab = {name: {v: i for i, v in enumerate(bundle.vocab[name]) if i}
                             for name, _ in self.user_field_slots if name != "user_id" and name in bundle.vocab}

    @property
    def manifest(self) -> BundleManifest:
        return self.bundle.manifest

    @property
    def name(self) -> str:
        return self.bundle.name

    @property
    def version(self) -> str:
        return self.bundle.version

    @property
    def path(self) -> Path:
        return self.bundle.path

    @property
    def levels(self) -> int | None:
        return self.bundle.levels

    # ---- lookups -------------------------------------------------------------------
    def item_indices(self, raw_ids: list[str] | list[bytes]) -> np.ndarray:
        """Raw item ids (request strings or Redis bytes) → bundle item indices, 0 where unknown."""
        if len(raw_ids) == 0:
            return np.zeros(0, dtype=np.int64)
        keys = np.asarray(raw_ids)
        if keys.dtype.kind == "U":
            keys = np.char.encode(keys, "utf-8")
        pos = np.searchsorted(self._item_keys, keys).clip(max=len(self._item_keys) - 1)
        found = self._item_keys[pos] == keys
        return np.where(found, self._item_order[pos], 0).astype(np.int64)

    def valid_user_row(self, row: np.ndarray) -> bool:
        """Whether a user row read from outside the bundle (Redis) indexes inside every
        embedding table: ONNX Runtime would otherwise fail, or read out of bounds."""
        return row.shape == self.user_row_limits.shape and bool(((row >= 0) & (row < self.user_row_limits)).all())

    def history(self, user: int) -> np.ndarray:
        """Training-history item indices of a known user (the bundle's own seen set)."""
        return self.history_items[self.history_indptr[user]:self.history_indptr[user + 1]]

    def cold_start_row(self, fields: dict[str, object] | None) -> np.ndarray:
        """A user row for an unknown user: supplied fields mapped through the vocabulary, else 0."""
        row = np.zeros(self.user_fields.shape[1], dtype=np.int64)
        fields = fields or {}
        allowed = {name for name, _ in self.user_field_slots if name != "user_id"}
        unknown = sorted(set(fields) - allowed)
        if unknown:
            raise UnknownFieldError(f"user_fields has unknown field(s) {', '.join(unknown)}; "
                                    f"this model's user fields are: {', '.join(sorted(allowed)) or 'none'}")
        col = 0
        for name, slots in self.user_field_slots:
            value = fields.get(name)
            if value is not None and name in self._field_vocab:
                values = value if isinstance(value, list) else [value]
                indices = [self._field_vocab[name].get(str(v), 0) for v in values[:slots]]
                row[col:col + len(indices)] = indices
            col += slots
        return row

    # ---- the request path ----------------------------------------------------------
    def retrieve(self, user: int, seen: np.ndarray, n: int) -> np.ndarray:
        """Top-``n`` item indices for a known user from FAISS, seen items and padding removed."""
        query = self.user_vectors[user:user + 1]
        fetch = min(self.n_items, n + len(seen))
        _, ids = self.index.search(query, fetch)
        items = ids[0] + 1  # FAISS id = item index - 1; its -1 padding becomes 0 (unknown)
        keep = items > 0
        if len(seen):
            keep &= ~np.isin(items, seen, assume_unique=False)
        return items[keep][:n]

    def popular_items(self, seen: np.ndarray, n: int) -> np.ndarray:
        items = self.popular
        if len(seen):
            items = items[~np.isin(items, seen)]
        return items[:n]

    def features(self, user_row: np.ndarray, items: np.ndarray) -> np.ndarray:
        """The ``[N, C]`` int64 model input: the user row broadcast against the items' rows."""
        features = np.empty((len(items), self.user_fields.shape[1] + self.item_fields.shape[1]), dtype=np.int64)
        features[:, :self.user_fields.shape[1]] = user_row
        features[:, self.user_fields.shape[1]:] = self.item_fields[items]
        return features

    def predict(self, fields: np.ndarray) -> dict[str, np.ndarray]:
        """One ONNX Runtime call over a ``[N, C]`` int64 matrix: output name → array."""
        return dict(zip(self.output_names, self.session.run(None, {INPUT_NAME: fields})))

    def score(self, user_row: np.ndarray, items: np.ndarray) -> dict[str, np.ndarray]:
        """One ONNX Runtime call over the candidates' feature matrix.

        Non-finite scores raise: a broken model must fail loudly (a 500), never rank on NaN
        or reach the client as the ``null`` a JSON encoder would write for it.
        """
        out = self.predict(self.features(user_row, items))
        if not np.isfinite(out["p_click"]).all():
            raise FloatingPointError(f"bundle {self.version} produced non-finite scores")
        return out

    def order_scores(self, user: int, items: np.ndarray, p_click: np.ndarray,
                     weight: float | None = None) -> np.ndarray:
        """What the top-K is taken by: ``log p̂ + w · retrieval score`` for a known user when the
        weight w (default: the bundle's ``ranking.retriever_weight``; ``evaluate-bundle`` sweeps
        it) is positive, else p̂ (``RankingInfo`` says why)."""
        weight = self.retriever_weight if weight is None else weight
        if not user or weight <= 0.0:
            return p_click
        retrieval = self.item_vectors[items] @ self.query_vectors[user]
        return np.log(np.maximum(p_click, np.float32(1e-12))) + np.float32(weight) * retrieval

    def fresh_candidates(self, user: int, items: np.ndarray, seen: np.ndarray | None) -> np.ndarray:
        """Fresh items (``RankingInfo``) to score beside ``items``: unseen, not already candidates,
        the ``MAX_FRESH_SCORED`` with the highest retriever score (one small matrix product)."""
        fresh = self.fresh_items
        drop = np.concatenate([items, seen]) if seen is not None and len(seen) else items
        if len(drop):
            fresh = fresh[~np.isin(fresh, drop)]
        if len(fresh) > MAX_FRESH_SCORED:
            fresh = fresh[top_k(self.item_vectors[fresh] @ self.query_vectors[user], MAX_FRESH_SCORED)]
        return fresh

    def rank(self, user_row: np.ndarray, items: np.ndarray, k: int, timings: dict[str, float],
             user: int = 0, seen: np.ndarray | None = None) -> Ranked:
        """The top ``k`` of ``items`` by ``order_scores`` (``user`` 0: unknown, p̂ alone).

        With a fresh-item slot (a known user, ``k >= FRESH_EVERY``): the last
        ``min(fresh_slots, k // FRESH_EVERY)`` places go to the fresh items with the highest p̂
        among the candidates and ``fresh_candidates`` (scored in the same ONNX call), unless
        none is left; ``seen`` keeps seen fresh items out.
        """
        slots = min(self.fresh_slots, k // FRESH_EVERY) if user else 0
        extra = self.fresh_candidates(user, items, seen) if slots else np.zeros(0, np.int64)
        pool = np.concatenate([items, extra]) if len(extra) else items
        start = time.perf_counter()
        out = self.score(user_row, pool) if len(pool) else None
        timings["onnx"] = time.perf_counter() - start
        if out is None:
            return Ranked(items, np.zeros(0, np.float32), None, None, timings)
        p = out["p_click"]
        ranked = top_k(self.order_scores(user, items, p[:len(items)]), min(k, len(items))) if len(items) \
            else np.zeros(0, np.int64)
        fresh = 0
        if slots:
            kept = ranked[:k - slots]
            open_ = np.ones(len(pool), dtype=bool)
            open_[kept] = False
            candidates = np.flatnonzero(open_ & (pool >= self.fresh_items[0]))
            picks = candidates[top_k(p[candidates], min(slots, len(candidates)))] if len(candidates) \
                else np.zeros(0, np.int64)
            fill = ranked[k - slots:k - len(picks)]  # too few fresh items left: the blend fills in
            ranked, fresh = np.concatenate([kept, fill, picks]), len(picks)
        probs = out.get("rating_probs")
        expected = out.get("expected_rating")
        return Ranked(pool[ranked], p[ranked], probs[ranked] if probs is not None else None,
                      expected[ranked] if expected is not None else None, timings, fresh)

    def score_items(self, user_row: np.ndarray, items: np.ndarray) -> Ranked:
        """Scores in the given order (``/v1/score``)."""
        start = time.perf_counter()
        out = self.score(user_row, items)
        timings = {"onnx": time.perf_counter() - start}
        return Ranked(items, out["p_click"], out.get("rating_probs"), out.get("expected_rating"), timings)

    def warm_up(self, calls: int) -> None:
        """A few realistic scoring calls, so the first request after a (re)load pays no set-up."""
        if calls <= 0 or self.n_items == 0:
            return
        rng = np.random.default_rng(0)
        for i in range(calls):
            user = int(rng.integers(1, len(self.user_ids))) if len(self.user_ids) > 1 else 0
            items = self.retrieve(user, self.history(user), self.candidates)
            self.rank(self.user_fields[user], items, min(10, max(1, len(items))), {}, user)


def top_k(order: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` largest values, largest first (ties: the earlier position first)."""
    top = np.argpartition(-order, k - 1)[:k] if k < len(order) else np.arange(len(order))
    return top[np.argsort(-order[top], kind="stable")]


def load_ranker(path: Path, candidates: int = DEFAULT_CANDIDATES, threads: int = 1, device: str | None = None,
                warmup_calls: int = 5, key: bytes | None = None) -> Ranker:
    """Open, verify and warm up a bundle; raises BundleError for anything unusable
    (with ``key``: also for an unsigned or forged bundle)."""
    bundle = load_bundle(Path(path), key=key)
    try:
        session = ort_session(bundle.ranker_path, threads, device)
    except Exception as exc:  # onnxruntime raises its own types for a corrupt model
        raise BundleError(f"{path}: ranker.onnx cannot be loaded by ONNX Runtime: {exc}") from exc
    try:
        index = faiss_index(bundle.index_path, device)
    except Exception as exc:
        raise BundleError(f"{path}: items.faiss cannot be read by FAISS: {exc}") from exc
    ranker = Ranker(bundle, session, index, candidates)
    ranker.warm_up(warmup_calls)
    return ranker
