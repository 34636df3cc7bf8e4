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
* ``manifest.json``: a ``BundleManifest`` (below): format version, model description,
  field schema, metrics, parity, creation time and the sha256 and size of every other file.
* ``signature.json`` (optional, ``ratingctr export --sign-key-file``):
  ``{"algorithm": "hmac-sha256", "manifest_hmac": HEX}``, an HMAC-SHA256 of the exact bytes of
  ``manifest.json`` under a shared secret key.

Signing design: the signature lives *beside* the manifest, over its exact bytes, and is not
listed in it.  The manifest already pins every other file by sha256 and size, so one HMAC
over it authenticates the whole bundle (a forged file fails its hash, a forged hash fails
the HMAC), the manifest's file list and content ``version`` stay exactly what an unsigned
export writes, and no canonical-JSON rule is needed (the bytes verified are the bytes read).
``load_bundle(path, key=...)`` refuses a bundle without a valid signature when a key is
given; without a key signatures are not checked (so signed bundles load anywhere).

The manifest and the field schema are typed here, once: export writes them, serving,
the load tests and training's encoder read the same classes.  ``from_dict`` validates,
so a hand-edited or truncated manifest is refused with a ``BundleError`` naming the entry,
never a ``KeyError`` deep inside a request.

This module is numpy-only on purpose: serving imports it and must never pull in torch.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from ratingctr.hashing import sha256_file, sha256_text

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SIGNATURE = "signature.json"
SIGNATURE_ALGORITHM = "hmac-sha256"
MIN_KEY_BYTES = 16
ARRAY_FILES = ("user_vectors.npy", "item_vectors.npy", "user_fields.npy", "item_fields.npy",
               "history_indptr.npy", "history_items.npy", "popular.npy")
REQUIRED_FILES = ("ranker.onnx", "items.faiss", "vocab.json", *ARRAY_FILES)
INPUT_NAME = "fields"

Side = Literal["user", "item"]
Head = Literal["binary", "rating"]


class BundleError(Exception):
    """A bundle that is missing, incomplete, tampered with or of another format version."""


# ---- validation helpers: every malformed entry becomes a BundleError naming it ----------
def _object(raw: Any, where: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise BundleError(f"{where} must be a JSON object, got {type(raw).__name__}")
    return raw


def _entry(raw: dict[str, Any], key: str, where: str) -> Any:
    if key not in raw:
        raise BundleError(f"{where} lacks the '{key}' entry")
    return raw[key]


def _str(raw: dict[str, Any], key: str, where: str) -> str:
    value = _entry(raw, key, where)
    if not isinstance(value, str) or not value:
        raise BundleError(f"{where}.{key} must be a non-empty string, got {value!r}")
    return value


def _int(raw: dict[str, Any], key: str, where: str, minimum: int = 0) -> int:
    value = _entry(raw, key, where)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise BundleError(f"{where}.{key} must be an integer >= {minimum}, got {value!r}")
    return value


def _number(raw: dict[str, Any], key: str, where: str) -> float | int:
    value = _entry(raw, key, where)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BundleError(f"{where}.{key} must be a number, got {value!r}")
    return value


def _choice(raw: dict[str, Any], key: str, where: str, choices: tuple[str, ...]) -> Any:
    value = _entry(raw, key, where)
    if value not in choices:
        raise BundleError(f"{where}.{key} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _strings(raw: dict[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = _entry(raw, key, where)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BundleError(f"{where}.{key} must be a list of strings, got {value!r}")
    return tuple(value)


def _mapping(raw: dict[str, Any], key: str, where: str, required: bool = True) -> dict[str, Any]:
    if not required and key not in raw:
        return {}
    return _object(_entry(raw, key, where), f"{where}.{key}")


# ---- the field schema ---------------------------------------------------------------
@dataclass(frozen=True)
class FieldSpec:
    """One categorical field.

    Args:
        name: field name, e.g. ``"user_id"`` or ``"genre"``.
        vocab_size: number of rows including the reserved index 0.
        side: whether the value comes from the user table or the item table.
        slots: columns the field occupies (``> 1`` means multi-valued, mean-pooled).
    """

    name: str
    vocab_size: int
    side: Side
    slots: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "vocab_size": self.vocab_size, "side": self.side, "slots": self.slots}

    @classmethod
    def from_dict(cls, raw: Any, where: str = "field") -> "FieldSpec":
        raw = _object(raw, where)
        slots = _int(raw, "slots", where, minimum=1) if "slots" in raw else 1
        return cls(_str(raw, "name", where), _int(raw, "vocab_size", where, minimum=1),
                   _choice(raw, "side", where, get_args(Side)), slots)


@dataclass(frozen=True)
class FieldSchema:
    """Ordered fields: all user-side fields first, then all item-side fields.

    That order lets a batch be built by concatenating a user row with an item row,
    which is exactly what the gateway does by broadcasting.
    """

    fields: tuple[FieldSpec, ...]
    _starts: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        sides = [f.side for f in self.fields]
        if sides != sorted(sides, key=lambda s: 0 if s == "user" else 1):
            raise ValueError("user-side fields must precede item-side fields")
        starts, offset = [], 0
        for spec in self.fields:
            starts.append(offset)
            offset += spec.slots
        object.__setattr__(self, "_starts", tuple(starts))

    @property
    def num_fields(self) -> int:
        return len(self.fields)

    @property
    def num_columns(self) -> int:
        return sum(f.slots for f in self.fields)

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.fields]

    def index(self, name: str) -> int:
        return self.names.index(name)

    def columns(self, name: str) -> slice:
        """Column slice of field ``name`` inside the ``[B, C]`` input matrix."""
        i = self.index(name)
        return slice(self._starts[i], self._starts[i] + self.fields[i].slots)

    def side_slice(self, name: str) -> slice:
        """Column slice of field ``name`` inside its own side's row (user row or item row)."""
        cols = self.columns(name)
        shift = 0 if self.fields[self.index(name)].side == "user" else self.side_columns("user")
        return slice(cols.start - shift, cols.stop - shift)

    def side_fields(self, side: Side) -> tuple[FieldSpec, ...]:
        return tuple(f for f in self.fields if f.side == side)

    def side_columns(self, side: Side) -> int:
        return sum(f.slots for f in self.side_fields(side))

    def to_dict(self) -> list[dict[str, Any]]:
        return [f.to_dict() for f in self.fields]

    @classmethod
    def from_dict(cls, rows: Any, where: str = "fields") -> "FieldSchema":
        if not isinstance(rows, list) or not rows:
            raise BundleError(f"{where} must be a non-empty list of fields, got {rows!r}")
        specs = tuple(FieldSpec.from_dict(r, f"{where}[{i}]") for i, r in enumerate(rows))
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            twice = sorted({n for n in names if names.count(n) > 1})
            raise BundleError(f"{where} names a field twice: {', '.join(twice)}")
        try:
            return cls(specs)
        except ValueError as exc:
            raise BundleError(f"{where}: {exc}") from exc


# ---- the manifest -------------------------------------------------------------------
@dataclass(frozen=True)
class ModelInfo:
    """What the ranker is: enough to label responses and reports, and to know its outputs."""

    arch: str
    head: Head
    aggregate: str
    ratio: float
    levels: int
    threshold: float
    encoder: str
    embedding_dim: int
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def rating_levels(self) -> int | None:
        """Star levels of the rating distribution; None for a binary head (it has none)."""
        return self.levels if self.head == "rating" else None

    def to_dict(self) -> dict[str, Any]:
        return {"arch": self.arch, "head": self.head, "aggregate": self.aggregate, "ratio": self.ratio,
                "levels": self.levels, "threshold": self.threshold, "encoder": self.encoder,
                "embedding_dim": self.embedding_dim, "params": self.params}

    @classmethod
    def from_dict(cls, raw: Any, where: str = "model") -> "ModelInfo":
        raw = _object(raw, where)
        return cls(arch=_str(raw, "arch", where), head=_choice(raw, "head", where, get_args(Head)),
                   aggregate=_str(raw, "aggregate", where), ratio=_number(raw, "ratio", where),
                   levels=_int(raw, "levels", where, minimum=2), threshold=_number(raw, "threshold", where),
                   encoder=_str(raw, "encoder", where), embedding_dim=_int(raw, "embedding_dim", where, minimum=1),
                   params=_mapping(raw, "params", where, required=False))


@dataclass(frozen=True)
class RetrieverInfo:
    """The FAISS index over item vectors; FAISS id = item index - ``id_offset``."""

    dim: int
    index: str
    metric: str
    ntotal: int
    id_offset: int = 1
    # how the index searches and the recall@k export measured against exact search
    # (``export.faiss_index.SearchTuning``); empty in bundles written before it existed
    search: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = {"dim": self.dim, "index": self.index, "metric": self.metric, "ntotal": self.ntotal,
               "id_offset": self.id_offset}
        if self.search:
            out["search"] = dict(self.search)
        return out

    @classmethod
    def from_dict(cls, raw: Any, where: str = "retriever") -> "RetrieverInfo":
        raw = _object(raw, where)
        search = _object(raw["search"], f"{where}.search") if "search" in raw else {}
        return cls(_int(raw, "dim", where, minimum=1), _str(raw, "index", where), _str(raw, "metric", where),
                   _int(raw, "ntotal", where), _int(raw, "id_offset", where), dict(search))


@dataclass(frozen=True)
class RankingInfo:
    """How ``/v1/recommend`` orders a known user's candidates: by
    ``log p̂ + retriever_weight · (user vector · item vector)``.

    Why a blend: the ranker is trained on rated rows, so p̂ is P(click | rated) and knows
    nothing of *whether* a user will rate an item; the retriever (BPR on every rating) scores
    exactly that, as a log-odds up to a per-user constant.  Weight 1 is their product,
    P(rated) · P(click | rated); 0 is p̂ alone (the order of bundles written before this
    field, which read as 0).  Cold-start lists (no user vector) are ordered by p̂ alone.

    ``fresh_from`` / ``fresh_slots``: the fresh-item slot.  A retrained model appends the
    items it first saw to the end of the item vocabulary (``training/data/grow.py``), so the
    items new in this bundle are the indices ``fresh_from`` … last (0: none).  The blend
    ranks them low — a handful of events gives them small retriever vectors — so a new item
    would wait several cycles to be recommended at all; up to ``fresh_slots`` of a known
    user's top-K (at most one in ``FRESH_EVERY``) go to the unseen fresh items with the highest
    p̂ instead, listed last and named in the response's ``fresh_item_ids``.
    """

    retriever_weight: float = 0.0
    fresh_from: int = 0
    fresh_slots: int = 0

    def __post_init__(self) -> None:
        check_retriever_weight(self.retriever_weight)
        if isinstance(self.fresh_from, bool) or not isinstance(self.fresh_from, int) or self.fresh_from < 0:
            raise BundleError(f"ranking.fresh_from must be an integer >= 0, got {self.fresh_from!r}")
        check_fresh_slots(self.fresh_slots)

    def to_dict(self) -> dict[str, Any]:
        return {"retriever_weight": self.retriever_weight, "fresh_from": self.fresh_from,
                "fresh_slots": self.fresh_slots}

    @classmethod
    def from_dict(cls, raw: Any, where: str = "ranking") -> "RankingInfo":
        raw = _object(raw, where)
        weight = check_retriever_weight(float(_number(raw, "retriever_weight", where)), f"{where}.retriever_weight")
        fresh_from = _int(raw, "fresh_from", where) if "fresh_from" in raw else 0  # older manifests: no slot
        fresh_slots = check_fresh_slots(_int(raw, "fresh_slots", where), f"{where}.fresh_slots") \
            if "fresh_slots" in raw else 0
        return cls(weight, fresh_from, fresh_slots)


FRESH_EVERY = 5  # a fresh item takes at most one of every 5 places of a top-K
MAX_FRESH_SLOTS = 10


def check_fresh_slots(slots: int, where: str = "fresh_slots") -> int:
    """The one rule for the fresh-item slot count: an integer in [0, MAX_FRESH_SLOTS]."""
    if isinstance(slots, bool) or not isinstance(slots, int) or not 0 <= slots <= MAX_FRESH_SLOTS:
        raise BundleError(f"{where} must be an integer from 0 to {MAX_FRESH_SLOTS}, got {slots!r}")
    return slots


def check_retriever_weight(weight: float, where: str = "retriever_weight") -> float:
    """The one rule for a served order's retriever weight: finite and >= 0 (NaN is neither)."""
    if not 0.0 <= weight < float("inf"):
        raise BundleError(f"{where} must be a finite number >= 0, got {weight!r}")
    return weight


@dataclass(frozen=True)
class Parity:
    """Export's torch-vs-ONNX Runtime check: the worst |Δ| per output over ``rows`` held-out rows."""

    rows: int
    providers: tuple[str, ...]
    max_abs_diff: dict[str, float]
    bound: float

    @property
    def max_abs_diff_p_click(self) -> float:
        return self.max_abs_diff["p_click"]

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "providers": list(self.providers),
                **{f"max_abs_diff_{name}": diff for name, diff in self.max_abs_diff.items()}, "bound": self.bound}

    @classmethod
    def from_dict(cls, raw: Any, where: str = "parity") -> "Parity":
        raw = _object(raw, where)
        prefix = "max_abs_diff_"
        diffs = {key[len(prefix):]: _number(raw, key, where) for key in raw if key.startswith(prefix)}
        if "p_click" not in diffs:
            raise BundleError(f"{where} lacks the 'max_abs_diff_p_click' entry")
        return cls(_int(raw, "rows", where), _strings(raw, "providers", where), diffs, _number(raw, "bound", where))


def _plain_file_name(name: str, where: str) -> str:
    """A manifest names files inside its own bundle directory, nothing else.

    Why: the names are joined to the bundle path and then sized and hashed, so ``/etc/passwd``
    or ``../x`` would make a reload report facts about files outside the bundle.
    """
    if (not name or name in (".", "..") or "/" in name or "\\" in name or "\x00" in name
            or name != name.strip() or any(ord(c) < 32 for c in name)):
        raise BundleError(f"{where} names {ascii(name[:64])}, which is not a plain file name inside the bundle")
    return name


@dataclass(frozen=True)
class FileEntry:
    """Size and sha256 of one bundle file, checked before anything is loaded."""

    sha256: str
    bytes: int

    def to_dict(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "bytes": self.bytes}

    @classmethod
    def from_dict(cls, raw: Any, where: str) -> "FileEntry":
        raw = _object(raw, where)
        return cls(_str(raw, "sha256", where), _int(raw, "bytes", where))


@dataclass(frozen=True)
class Source:
    """The run directories the bundle was exported from (for re-export and tests)."""

    ranker: str
    retriever: str

    def to_dict(self) -> dict[str, str]:
        return {"ranker": self.ranker, "retriever": self.retriever}

    @classmethod
    def from_dict(cls, raw: Any, where: str = "source") -> "Source":
        raw = _object(raw, where)
        return cls(_str(raw, "ranker", where), _str(raw, "retriever", where))


@dataclass(frozen=True)
class BundleManifest:
    """``manifest.json`` as a value.

    Export builds it without ``version``, ``created_at`` and ``files``; ``write_bundle``
    fills those in once every file is written and hashed.  ``num_columns`` and ``inputs``
    are written for readers outside Python (compose tests, TorchServe's metadata) and
    derived from ``fields`` here, so they cannot disagree with it; ``metrics`` and
    ``dataset`` are reported figures, kept as the JSON objects they are.
    """

    name: str
    model: ModelInfo
    fields: FieldSchema
    outputs: tuple[str, ...]
    retriever: RetrieverInfo
    parity: Parity
    source: Source
    metrics: dict[str, Any] = field(default_factory=dict)
    dataset: dict[str, Any] = field(default_factory=dict)
    ranking: RankingInfo = field(default_factory=RankingInfo)
    version: str = ""
    created_at: str = ""
    files: dict[str, FileEntry] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    @property
    def num_columns(self) -> int:
        """Width of the ranker's ``fields`` input."""
        return self.fields.num_columns

    def to_dict(self) -> dict[str, Any]:
        return {"format_version": self.format_version, "name": self.name, "model": self.model.to_dict(),
                "fields": self.fields.to_dict(), "num_columns": self.num_columns,
                "inputs": [{"name": INPUT_NAME, "dtype": "int64", "shape": ["batch", self.num_columns]}],
                "outputs": list(self.outputs), "retriever": self.retriever.to_dict(),
                "parity": self.parity.to_dict(), "ranking": self.ranking.to_dict(),
                "metrics": self.metrics, "dataset": self.dataset,
                "source": self.source.to_dict(), "version": self.version, "created_at": self.created_at,
                "files": {name: entry.to_dict() for name, entry in self.files.items()}}

    @classmethod
    def from_dict(cls, raw: Any) -> "BundleManifest":
        """Validate and type a parsed ``manifest.json``.

        Keys this build does not read (``user_columns`` of older bundles: it is recomputed
        from ``fields``) are ignored.
        """
        where = "manifest"
        raw = _object(raw, where)
        version = raw.get("format_version")
        if version != FORMAT_VERSION:
            raise BundleError(f"bundle format version {version!r}; this build reads version {FORMAT_VERSION}")
        fields = FieldSchema.from_dict(_entry(raw, "fields", where), f"{where}.fields")
        if "num_columns" in raw and raw["num_columns"] != fields.num_columns:
            raise BundleError(f"{where}.num_columns is {raw['num_columns']!r} but the fields span "
                              f"{fields.num_columns} columns")
        outputs = _strings(raw, "outputs", where)
        if "p_click" not in outputs:
            raise BundleError(f"{where}.outputs must include p_click, got {list(outputs)}")
        files = {_plain_file_name(name, f"{where}.files"): FileEntry.from_dict(entry, f"{where}.files[{name!r}]")
                 for name, entry in _mapping(raw, "files", where).items()}
        return cls(name=_str(raw, "name", where),
                   model=ModelInfo.from_dict(_entry(raw, "model", where), f"{where}.model"),
                   fields=fields, outputs=outputs,
                   retriever=RetrieverInfo.from_dict(_entry(raw, "retriever", where), f"{where}.retriever"),
                   parity=Parity.from_dict(_entry(raw, "parity", where), f"{where}.parity"),
                   source=Source.from_dict(_entry(raw, "source", where), f"{where}.source"),
                   metrics=_mapping(raw, "metrics", where, required=False),
                   dataset=_mapping(raw, "dataset", where, required=False),
                   ranking=(RankingInfo.from_dict(raw["ranking"], f"{where}.ranking") if "ranking" in raw
                            else RankingInfo()),
                   version=_str(raw, "version", where), created_at=_str(raw, "created_at", where), files=files)


# ---- a bundle in memory -------------------------------------------------------------
@dataclass
class Bundle:
    """A verified bundle in memory (arrays loaded; ONNX and FAISS files left as paths)."""

    path: Path
    manifest: BundleManifest
    vocab: dict[str, list[str]]
    arrays: dict[str, np.ndarray] = field(repr=False)

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def ranker_path(self) -> Path:
        return self.path / "ranker.onnx"

    @property
    def index_path(self) -> Path:
        return self.path / "items.faiss"

    @property
    def levels(self) -> int | None:
        return self.manifest.model.rating_levels

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]


# ---- writing ------------------------------------------------------------------------
def _write_array(directory: Path, name: str, array: np.ndarray) -> None:
    np.save(directory / name, np.ascontiguousarray(array), allow_pickle=False)


def write_bundle(out_dir: Path, manifest: BundleManifest, vocab: dict[str, list[str]], arrays: dict[str, np.ndarray],
                 ranker_onnx: Path, items_faiss: Path, extra_files: dict[str, Path] | None = None,
                 sign_key: bytes | None = None) -> BundleManifest:
    """Write every file into a staging directory, hash it, then move it into place atomically.

    Returns ``manifest`` completed with the creation time, file hashes and a content
    version (hash of the hashes), so a reload can tell bundles apart.  With ``sign_key``
    the staged manifest is signed (``signature.json``) before the move, so a signed bundle
    is never visible unsigned.
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
        files = {p.name: FileEntry(sha256_file(p), p.stat().st_size)
                 for p in sorted(staging.iterdir()) if p.is_file()}
        complete = replace(manifest, format_version=FORMAT_VERSION, files=files,
                           version=sha256_text("".join(f.sha256 for f in files.values()))[:12],
                           created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        (staging / MANIFEST).write_text(json.dumps(complete.to_dict(), indent=2, default=float) + "\n")
        if sign_key is not None:
            sign_bundle(staging, sign_key)
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
    return complete


# ---- reading ------------------------------------------------------------------------
def read_manifest(path: Path) -> BundleManifest:
    """The validated manifest of the bundle at ``path`` (no file is hashed)."""
    path = Path(path)
    if not path.is_dir():
        raise BundleError(f"bundle directory not found: {path}")
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise BundleError(f"{path} is not a bundle: {MANIFEST} is missing")
    try:
        raw = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{manifest_path} is not valid JSON: {exc}") from exc
    try:
        return BundleManifest.from_dict(raw)
    except BundleError as exc:
        raise BundleError(f"{manifest_path}: {exc}") from exc


def verify_files(path: Path, manifest: BundleManifest) -> None:
    """Every listed file exists with the recorded size and sha256; every required file is listed."""
    unlisted = [name for name in REQUIRED_FILES if name not in manifest.files]
    if unlisted:
        raise BundleError(f"{path}: manifest does not list {', '.join(unlisted)}")
    for name, entry in manifest.files.items():
        file = path / name
        if not file.is_file():
            raise BundleError(f"{path}: {name} is missing")
        size = file.stat().st_size
        if size != entry.bytes:
            raise BundleError(f"{path}: {name} has {size} bytes, manifest says {entry.bytes} (truncated or replaced)")
        digest = sha256_file(file)
        if digest != entry.sha256:
            raise BundleError(f"{path}: {name} sha256 {digest[:16]}… does not match the manifest (tampered)")


def load_bundle(path: Path, verify: bool = True, key: bytes | None = None) -> Bundle:
    """Read and verify a bundle; arrays are loaded with ``allow_pickle=False``.

    With ``key`` the manifest's signature is checked first, before the manifest is even
    parsed, so an unsigned or forged bundle is refused without reading attacker-chosen data.
    """
    path = Path(path)
    if key is not None:
        verify_signature(path, key)
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
    if not isinstance(vocab, dict) or not all(isinstance(vocab.get(key), list) for key in ("user_id", "item_id")):
        raise BundleError(f"{path}: vocab.json lacks the user_id and item_id lists")
    bundle = Bundle(path=path, manifest=manifest, vocab=vocab, arrays=arrays)
    _check_shapes(bundle)
    return bundle


# ---- signing ------------------------------------------------------------------------
def check_key(key: bytes, where: str = "bundle key") -> bytes:
    """A usable HMAC key: at least ``MIN_KEY_BYTES`` bytes (a short key is an operator mistake)."""
    if not isinstance(key, bytes) or len(key) < MIN_KEY_BYTES:
        raise BundleError(f"{where} must be at least {MIN_KEY_BYTES} bytes (e.g. `openssl rand -hex 32`)")
    return key


def read_key_file(path: Path) -> bytes:
    """The key in ``path``, surrounding whitespace (a trailing newline) removed."""
    try:
        key = Path(path).read_bytes().strip()
    except OSError as exc:
        raise BundleError(f"cannot read the bundle key file {path}: {exc}") from exc
    return check_key(key, f"the key in {path}")


def manifest_hmac(manifest_bytes: bytes, key: bytes) -> str:
    """HMAC-SHA256 (hex) of the exact bytes of ``manifest.json``."""
    return hmac.new(check_key(key), manifest_bytes, hashlib.sha256).hexdigest()


def sign_bundle(path: Path, key: bytes) -> None:
    """Write ``signature.json`` for the bundle at ``path`` (its manifest as it is on disk)."""
    path = Path(path)
    digest = manifest_hmac((path / MANIFEST).read_bytes(), key)
    (path / SIGNATURE).write_text(json.dumps({"algorithm": SIGNATURE_ALGORITHM, "manifest_hmac": digest}) + "\n")


def verify_signature(path: Path, key: bytes) -> None:
    """Raise ``BundleError`` unless ``signature.json`` is a valid HMAC of ``manifest.json`` under ``key``.

    Why constant-time: ``hmac.compare_digest`` keeps the comparison from leaking how many
    leading characters of a forged signature were right.
    """
    path = Path(path)
    signature, manifest = path / SIGNATURE, path / MANIFEST
    if not signature.is_file():
        raise BundleError(f"{path} is not signed ({SIGNATURE} is missing) and a bundle key is set")
    if not manifest.is_file():
        raise BundleError(f"{path} is not a bundle: {MANIFEST} is missing")
    try:
        raw = json.loads(signature.read_bytes()[:4096])
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: {SIGNATURE} is not valid JSON") from exc
    if not isinstance(raw, dict) or raw.get("algorithm") != SIGNATURE_ALGORITHM \
            or not isinstance(raw.get("manifest_hmac"), str):
        raise BundleError(f"{path}: {SIGNATURE} must be {{\"algorithm\": \"{SIGNATURE_ALGORITHM}\", "
                          "\"manifest_hmac\": HEX}")
    expected = manifest_hmac(manifest.read_bytes(), key)
    if not hmac.compare_digest(expected.encode(), raw["manifest_hmac"].encode("ascii", "replace")):
        raise BundleError(f"{path}: the signature does not match the manifest under the configured key "
                          "(forged, modified after signing, or signed with another key)")


def _check_shapes(bundle: Bundle) -> None:
    fields = bundle.manifest.fields
    n_users, n_items = len(bundle.vocab["user_id"]) - 1, len(bundle.vocab["item_id"]) - 1
    expected = {"user_fields.npy": (n_users + 1, fields.side_columns("user")),
                "item_fields.npy": (n_items + 1, fields.side_columns("item")),
                "history_indptr.npy": (n_users + 2,)}
    for name, shape in expected.items():
        if bundle[name].shape != shape:
            raise BundleError(f"{bundle.path}: {name} has shape {bundle[name].shape}, expected {shape}")
    if bundle["item_vectors.npy"].shape[0] != n_items + 1 or bundle["user_vectors.npy"].shape[0] != n_users + 1:
        raise BundleError(f"{bundle.path}: retriever vectors do not match the vocabulary")
