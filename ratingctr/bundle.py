"""The bundle format: a directory the gateway can load without torch.

Files (all written here, read here; nothing is pickled):

* ``ranker.onnx``: input ``fields: int64[B, C]``; outputs ``p_click: float32[B]`` and, for
  rating heads, ``rating_probs: float32[B, N]`` and ``expected_rating: float32[B]``.
* ``items.faiss``: inner-product index over the retriever's item vectors (FAISS format).
* ``user_vectors.npy`` / ``item_vectors.npy``: retriever vectors, row = id index, row 0 unknown.
* ``user_fields.npy`` / ``item_fields.npy``: each user's / item's feature columns.
* ``history_indptr.npy`` / ``history_items.npy``: each user's known items (CSR), the
  seen sets the gateway bulk-loads into Redis.
* ``popular.npy``: item indices by training popularity (the cold-start list).
* ``vocab.json``: ``{"user_id": [raw ids in index order], "item_id": [...], ...}``.
* ``manifest.json``: format version, model description, field schema, metrics, parity,
  creation time and the sha256 and size of every other file.

This module is numpy-only on purpose: serving imports it and must never pull in torch.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ratingctr.hashing import sha256_file, sha256_text

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
ARRAY_FILES = ("user_vectors.npy", "item_vectors.npy", "user_fields.npy", "item_fields.npy",
               "history_indptr.npy", "history_items.npy", "popular.npy")
REQUIRED_FILES = ("ranker.onnx", "items.faiss", "vocab.json", *ARRAY_FILES)


class BundleError(Exception):
    """A bundle that is missing, incomplete, tampered with or of another format version."""


@dataclass
class Bundle:
    """A verified bundle in memory (arrays loaded; ONNX and FAISS files left as paths)."""

    path: Path
    manifest: dict[str, Any]
    vocab: dict[str, list[str]]
    arrays: dict[str, np.ndarray] = field(repr=False)

    @property
    def name(self) -> str:
        return self.manifest["name"]

    @property
    def version(self) -> str:
        return self.manifest["version"]

    @property
    def ranker_path(self) -> Path:
        return self.path / "ranker.onnx"

    @property
    def index_path(self) -> Path:
        return self.path / "items.faiss"

    @property
    def levels(self) -> int | None:
        return self.manifest["model"].get("levels") if self.manifest["model"]["head"] == "rating" else None

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]


def _write_array(directory: Path, name: str, array: np.ndarray) -> None:
    np.save(directory / name, np.ascontiguousarray(array), allow_pickle=False)


def write_bundle(out_dir: Path, manifest: dict[str, Any], vocab: dict[str, list[str]], arrays: dict[str, np.ndarray],
                 ranker_onnx: Path, items_faiss: Path, extra_files: dict[str, Path] | None = None) -> Path:
    """Write every file into a staging directory, hash it, then move it into place atomically.

    ``manifest`` is completed here with the format version, creation time, file hashes
    and a content version (hash of the hashes), so a reload can tell bundles apart.
    """
    missing = [name for name in ARRAY_FILES if name not in arrays]
    if missing:
        raise BundleError(f"cannot write bundle: arrays missing: {', '.join(missing)}")
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    staging.chmod(0o755)  # mkdtemp's 0700 would hide the bundle from a gateway running as another user
    try:
        for name in ARRAY_FILES:
            _write_array(staging, name, arrays[name])
        (staging / "vocab.json").write_text(json.dumps(vocab))
        shutil.copyfile(ranker_onnx, staging / "ranker.onnx")
        shutil.copyfile(items_faiss, staging / "items.faiss")
        for name, src in (extra_files or {}).items():
            shutil.copyfile(src, staging / name)
        files = {p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size}
                 for p in sorted(staging.iterdir()) if p.is_file()}
        version = sha256_text("".join(f["sha256"] for f in files.values()))[:12]
        full = {"format_version": FORMAT_VERSION, **manifest, "version": version,
                "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "files": files}
        (staging / MANIFEST).write_text(json.dumps(full, indent=2, default=float) + "\n")
        if out_dir.exists():
            backup = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
            out_dir.rename(backup)
            staging.rename(out_dir)
            shutil.rmtree(backup)
        else:
            staging.rename(out_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return out_dir


def read_manifest(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_dir():
        raise BundleError(f"bundle directory not found: {path}")
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise BundleError(f"{path} is not a bundle: {MANIFEST} is missing")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{manifest_path} is not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict):
        raise BundleError(f"{manifest_path} does not hold a JSON object")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(f"{path} has bundle format version {version!r}; this build reads version {FORMAT_VERSION}")
    for key in ("name", "version", "model", "fields", "files"):
        if key not in manifest:
            raise BundleError(f"{manifest_path} lacks the '{key}' entry")
    return manifest


def verify_files(path: Path, manifest: dict[str, Any]) -> None:
    """Every listed file exists with the recorded size and sha256; every required file is listed."""
    files = manifest["files"]
    unlisted = [name for name in REQUIRED_FILES if name not in files]
    if unlisted:
        raise BundleError(f"{path}: manifest does not list {', '.join(unlisted)}")
    for name, meta in files.items():
        file = path / name
        if not file.is_file():
            raise BundleError(f"{path}: {name} is missing")
        size = file.stat().st_size
        if size != meta["bytes"]:
            raise BundleError(f"{path}: {name} has {size} bytes, manifest says {meta['bytes']} (truncated or replaced)")
        digest = sha256_file(file)
        if digest != meta["sha256"]:
            raise BundleError(f"{path}: {name} sha256 {digest[:16]}… does not match the manifest (tampered)")


def load_bundle(path: Path, verify: bool = True) -> Bundle:
    """Read and verify a bundle; arrays are loaded with ``allow_pickle=False``."""
    path = Path(path)
    manifest = read_manifest(path)
    if verify:
        verify_files(path, manifest)
    arrays = {}
    for name in ARRAY_FILES:
        try:
            arrays[name] = np.load(path / name, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise BundleError(f"{path}: {name} is not a plain numpy array file: {exc}") from exc
    try:
        vocab = json.loads((path / "vocab.json").read_text())
    except (json.JSONDecodeError, OSError) as exc:
        raise BundleError(f"{path}: vocab.json is unreadable: {exc}") from exc
    bundle = Bundle(path=path, manifest=manifest, vocab=vocab, arrays=arrays)
    _check_shapes(bundle)
    return bundle


def _check_shapes(bundle: Bundle) -> None:
    m = bundle.manifest
    n_users, n_items = len(bundle.vocab["user_id"]) - 1, len(bundle.vocab["item_id"]) - 1
    user_cols = sum(f["slots"] for f in m["fields"] if f["side"] == "user")
    item_cols = sum(f["slots"] for f in m["fields"] if f["side"] == "item")
    expected = {"user_fields.npy": (n_users + 1, user_cols), "item_fields.npy": (n_items + 1, item_cols),
                "history_indptr.npy": (n_users + 2,)}
    for name, shape in expected.items():
        if bundle[name].shape != shape:
            raise BundleError(f"{bundle.path}: {name} has shape {bundle[name].shape}, expected {shape}")
    if bundle["item_vectors.npy"].shape[0] != n_items + 1 or bundle["user_vectors.npy"].shape[0] != n_users + 1:
        raise BundleError(f"{bundle.path}: retriever vectors do not match the vocabulary")
