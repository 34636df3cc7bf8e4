"""Load a bundle for serving: verify it, open its ONNX session and FAISS index.

Everything a request needs is built here once (at start-up or reload), so the request
path only does array work.  Torch-free by construction (a test asserts it).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ratingctr.bundle import Bundle, BundleError, load_bundle
from ratingctr.serving.runtime import faiss_index, ort_session


@dataclass
class ServingBundle:
    bundle: Bundle
    session: Any
    index: Any
    output_names: list[str]
    user_index: dict[str, int]
    item_index: dict[str, int]

    @property
    def name(self) -> str:
        return self.bundle.name

    def score(self, fields: np.ndarray) -> dict[str, np.ndarray]:
        """One ONNX Runtime call over a ``[N, C]`` int64 matrix."""
        return dict(zip(self.output_names, self.session.run(None, {"fields": fields})))


def open_bundle(path: Path, threads: int = 1, device: str | None = None) -> ServingBundle:
    bundle = load_bundle(Path(path))
    try:
        session = ort_session(bundle.ranker_path, threads, device)
    except Exception as exc:  # onnxruntime raises its own types for a corrupt model
        raise BundleError(f"{path}: ranker.onnx cannot be loaded by ONNX Runtime: {exc}") from exc
    try:
        index = faiss_index(bundle.index_path, device)
    except Exception as exc:
        raise BundleError(f"{path}: items.faiss cannot be read by FAISS: {exc}") from exc
    inputs = session.get_inputs()
    if [i.name for i in inputs] != ["fields"] or inputs[0].shape[1] != bundle.manifest["num_columns"]:
        raise BundleError(f"{path}: ranker.onnx input does not match the manifest's field schema")
    if index.ntotal != len(bundle.vocab["item_id"]) - 1:
        raise BundleError(f"{path}: items.faiss holds {index.ntotal} items, the vocabulary has "
                          f"{len(bundle.vocab['item_id']) - 1}")
    return ServingBundle(bundle, session, index, [o.name for o in session.get_outputs()],
                         {u: i for i, u in enumerate(bundle.vocab["user_id"]) if i},
                         {it: i for i, it in enumerate(bundle.vocab["item_id"]) if i})
