"""``ratingctr export``: a trained ranker + a retriever → a verified, torch-free bundle."""
from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from ratingctr.bundle import (BundleManifest, ModelInfo, Parity, RankingInfo, RetrieverInfo, Source,
                             write_bundle)
from ratingctr.errors import UserError
from ratingctr.export.faiss_index import build_tuned_index, write_index
from ratingctr.export.onnx_export import export_onnx, parity, prepare_for_export
from ratingctr.training.data.encode import TEST, TRAIN, EncodedData
from ratingctr.training.data.stored import load_run_data
from ratingctr.training.run import load_checkpoint, restore_model
from ratingctr.unique import sorted_unique

PARITY_BOUND = 1e-5
PARITY_ROWS = 4096


DEFAULT_FRESH_SLOTS = 1


def fresh_from(ranker_metrics: dict, n_vocab: int) -> int:
    """Index of the first item a retrained run added (grown vocabularies append: ``data/grow.py``);
    0 when the run added none (a run of ``ratingctr train`` has no lineage)."""
    new_items = int((ranker_metrics.get("lineage") or {}).get("new_items") or 0)
    return n_vocab - new_items if 0 < new_items < n_vocab else 0


def _ranking(weight: float, first_fresh: int, slots: int) -> RankingInfo:
    """The manifest says what is in force: no slot where the run added no item."""
    return RankingInfo(retriever_weight=weight, fresh_from=first_fresh if slots else 0,
                       fresh_slots=slots if first_fresh else 0)


def _read_metrics(run: Path) -> dict:
    path = run / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _retriever_vectors(run: Path, data: EncodedData) -> tuple[np.ndarray, np.ndarray, dict]:
    run = Path(run)
    for name in ("model.pt", "user_vectors.npy", "item_vectors.npy"):
        if not (run / name).is_file():
            raise UserError(f"retriever run {run} lacks {name} (train it with `ratingctr train-retriever`)")
    payload = torch.load(run / "model.pt", map_location="cpu", weights_only=True)
    if payload.get("vocab", {}).get("item_id") != data.vocab["item_id"] or \
            payload["vocab"].get("user_id") != data.vocab["user_id"]:
        raise UserError(f"retriever {run} was trained on other users/items than the ranker "
                        "(dataset, k-core or threshold differ)")
    users = np.load(run / "user_vectors.npy", allow_pickle=False)
    items = np.load(run / "item_vectors.npy", allow_pickle=False)
    metrics = _read_metrics(run)
    return users.astype(np.float32), items.astype(np.float32), metrics


def history_csr(data: EncodedData, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Every known (user, item) interaction as CSR: the seen sets the gateway loads into Redis.

    ``rows``: only these interactions (``evaluate-bundle``'s train + validation seen sets).
    """
    user, item = (data.user, data.item) if rows is None else (data.user[rows], data.item[rows])
    keys = sorted_unique(user * (data.n_items + 1) + item)
    users, items = keys // (data.n_items + 1), keys % (data.n_items + 1)
    indptr = np.concatenate([[0], np.cumsum(np.bincount(users, minlength=data.n_users + 1))])
    return indptr.astype(np.int64), items.astype(np.int64)


def popularity_order(data: EncodedData) -> np.ndarray:
    """Items by number of training clicks, most popular first (ties by item index)."""
    rows = (data.split == TRAIN) & (data.rating >= data.threshold)
    counts = np.bincount(data.item[rows], minlength=data.n_items + 1)[1:]
    return (np.lexsort((np.arange(counts.size), -counts)) + 1).astype(np.int64)


def export_bundle(ranker_run: Path, retriever_run: Path, out_dir: Path, index_kind: str = "auto",
                  torchserve: bool = False, data_dir: str | None = None, name: str | None = None,
                  sign_key: bytes | None = None, retriever_weight: float = 1.0,
                  fresh_slots: int = DEFAULT_FRESH_SLOTS) -> BundleManifest:
    """Export, check ONNX parity, and write the bundle (signed when ``sign_key`` is given);
    returns its complete manifest.  ``retriever_weight``: the served order's blend
    (``bundle.RankingInfo``; 1 = P(rated) · P(click | rated)); ``fresh_slots``: places of a
    top-K for items new in this run (``fresh_from``, from a retrained run's lineage)."""
    payload, config = load_checkpoint(Path(ranker_run))
    if data_dir is not None:
        config = replace(config, data=replace(config.data, data_dir=data_dir))
    data, _ = load_run_data(Path(ranker_run), config.data)  # a retrained run's own grown data, else the dataset
    if payload["schema"] != data.schema.to_dict():
        raise UserError("the dataset no longer matches the ranker's field schema; was it changed since training?")
    model = prepare_for_export(restore_model(payload, config, data))
    user_vectors, item_vectors, retriever_metrics = _retriever_vectors(Path(retriever_run), data)
    test = data.rows(TEST)
    rows = np.random.default_rng(0).choice(test, size=min(PARITY_ROWS, test.size), replace=False)
    sample = data.features(data.user[rows], data.item[rows])
    with tempfile.TemporaryDirectory(prefix="ratingctr-export-") as tmp:
        onnx_path, index_path = Path(tmp) / "ranker.onnx", Path(tmp) / "items.faiss"
        outputs = export_onnx(model, sample[:8], onnx_path)
        report = parity(model, onnx_path, sample)
        worst = report["max_abs_diff_p_click"]
        if not worst <= PARITY_BOUND:
            raise UserError(f"ONNX parity failed: max |Δp̂| = {worst:.3g} > {PARITY_BOUND:g} on {report['rows']} "
                            "held-out rows; bundle not written")
        index, tuning = build_tuned_index(item_vectors, index_kind, user_vectors)
        write_index(index, index_path)
        indptr, items = history_csr(data)
        arrays = {"user_vectors.npy": user_vectors, "item_vectors.npy": item_vectors,
                  "user_fields.npy": data.user_rows, "item_fields.npy": data.item_rows,
                  "history_indptr.npy": indptr, "history_items.npy": items, "popular.npy": popularity_order(data)}
        ranker_metrics = _read_metrics(Path(ranker_run))
        manifest = BundleManifest(
            name=name or Path(out_dir).name,
            model=ModelInfo(arch=config.model.name, head=config.head.kind, aggregate=config.head.aggregate,
                            ratio=config.head.ratio, levels=config.data.levels, threshold=config.data.threshold,
                            encoder=config.encoder.kind, embedding_dim=config.model.embedding_dim,
                            params=config.model.params),
            fields=data.schema, outputs=tuple(outputs),
            retriever=RetrieverInfo(dim=int(item_vectors.shape[1]), index=tuning.kind, metric="inner_product",
                                    ntotal=int(index.ntotal), id_offset=1, search=tuning.to_dict()),
            parity=Parity(rows=report["rows"], providers=tuple(report["providers"]), bound=PARITY_BOUND,
                          max_abs_diff={out: report[f"max_abs_diff_{out}"] for out in outputs}),
            source=Source(ranker=str(ranker_run), retriever=str(retriever_run)),
            metrics={"ranker": {k: ranker_metrics.get(k) for k in ("test", "valid", "groups")},
                     "retriever": {k: retriever_metrics.get(k) for k in ("test", "popular")}},
            dataset=data.stats,
            ranking=_ranking(float(retriever_weight), fresh_from(ranker_metrics, len(data.vocab["item_id"])),
                             int(fresh_slots)),
        )
        extra = {}
        if torchserve:
            from ratingctr.export.torchserve import build_archive

            extra = build_archive(onnx_path, manifest, Path(tmp))
        manifest = write_bundle(Path(out_dir), manifest, data.vocab, arrays, onnx_path, index_path, extra,
                                sign_key=sign_key)
    print(f"bundle {out_dir}: parity max |Δp̂| {worst:.2e} on {report['rows']} rows, "
          f"{index.ntotal} items indexed ({tuning.kind}"
          + (f" {tuning.params}, recall@{tuning.k} {tuning.recall:.3f}" if tuning.params else "") + ")", file=sys.stderr)
    return manifest
