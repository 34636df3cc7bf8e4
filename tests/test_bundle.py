"""The bundle on disk: complete, verified, and refused when damaged."""
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import run_cli

from ratingctr.bundle import (
    FORMAT_VERSION,
    BundleError,
    BundleManifest,
    FieldSchema,
    FieldSpec,
    load_bundle,
    read_manifest,
    sha256_file,
)
from ratingctr.training.config import DataConfig
from ratingctr.training.data.encode import load_dataset


def _copy(bundle: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(bundle, target)
    return target


def test_bundle_contents_and_manifest(tiny_bundles: dict, tiny_atomic: Path) -> None:
    path = tiny_bundles["rating"]
    names = sorted(p.name for p in path.iterdir())
    assert names == sorted(["config.properties", "history_indptr.npy", "history_items.npy", "item_fields.npy",
                            "item_vectors.npy", "items.faiss", "manifest.json", "popular.npy", "ranker.mar",
                            "ranker.onnx", "user_fields.npy", "user_vectors.npy", "vocab.json"])
    bundle = load_bundle(path)
    m = bundle.manifest
    assert m.format_version == FORMAT_VERSION and m.model.arch == "DCNV2" and m.model.head == "rating"
    assert m.outputs == ("p_click", "rating_probs", "expected_rating")
    assert m.parity.max_abs_diff_p_click <= m.parity.bound == 1e-5 and m.parity.rows > 100
    assert set(m.parity.max_abs_diff) == set(m.outputs)
    assert set(m.files) == set(names) - {"manifest.json"}
    assert all(sha256_file(path / n) == entry.sha256 and (path / n).stat().st_size == entry.bytes
               for n, entry in m.files.items())
    data = load_dataset(DataConfig(dataset="atomic", data_dir=str(tiny_atomic), k_core=3))
    assert np.array_equal(bundle["item_fields.npy"], data.item_rows)
    assert np.array_equal(bundle["user_fields.npy"], data.user_rows)
    assert bundle.vocab["user_id"] == data.vocab["user_id"]
    # seen sets: every known interaction of user 1, nothing else
    indptr, items = bundle["history_indptr.npy"], bundle["history_items.npy"]
    assert sorted(items[indptr[1]:indptr[2]]) == sorted(set(data.item[data.user == 1]))
    popular = bundle["popular.npy"]
    assert sorted(popular) == list(range(1, data.n_items + 1))
    clicks = np.bincount(data.item[(data.split == 0) & (data.rating >= 4)], minlength=data.n_items + 1)
    assert clicks[popular[0]] == clicks[1:].max()
    binary = load_bundle(tiny_bundles["binary"])
    assert binary.manifest.outputs == ("p_click",) and binary.levels is None and bundle.levels == 5


def test_manifest_on_disk_is_exactly_the_typed_manifest(tiny_bundles: dict, tiny_atomic: Path) -> None:
    """The typed manifest writes the JSON it reads; num_columns/inputs follow the field schema."""
    raw = json.loads((tiny_bundles["rating"] / "manifest.json").read_text())
    manifest = read_manifest(tiny_bundles["rating"])
    assert manifest.to_dict() == raw and BundleManifest.from_dict(raw) == manifest
    assert list(raw) == ["format_version", "name", "model", "fields", "num_columns", "inputs", "outputs",
                         "retriever", "parity", "ranking", "metrics", "dataset", "source", "version", "created_at",
                         "files"]
    # export's default: P(rated) x P(click | rated); a run of `train` added no item, so no fresh slot
    assert raw["ranking"] == {"retriever_weight": 1.0, "fresh_from": 0, "fresh_slots": 0}
    assert "user_columns" not in raw  # recomputed from the field schema by every reader
    assert raw["num_columns"] == 9 and raw["inputs"] == [{"name": "fields", "dtype": "int64", "shape": ["batch", 9]}]
    assert manifest.fields.side_columns("user") == 4 and manifest.fields.side_columns("item") == 5
    assert manifest.retriever.ntotal == len(load_bundle(tiny_bundles["rating"]).vocab["item_id"]) - 1
    data = load_dataset(DataConfig(dataset="atomic", data_dir=str(tiny_atomic), k_core=3))
    assert manifest.fields == data.schema and manifest.fields.to_dict() == data.schema.to_dict()


def test_training_and_the_bundle_share_one_field_schema() -> None:
    from ratingctr.training.data import schema

    assert schema.FieldSchema is FieldSchema and schema.FieldSpec is FieldSpec
    rows = [{"name": "user_id", "vocab_size": 5, "side": "user"},
            {"name": "genre", "vocab_size": 4, "side": "item", "slots": 3}]
    parsed = FieldSchema.from_dict(rows)
    assert parsed.num_columns == 4 and parsed.columns("genre") == slice(1, 4)
    assert parsed.side_slice("genre") == slice(0, 3) and parsed.side_columns("user") == 1
    assert parsed.to_dict() == [{**rows[0], "slots": 1}, rows[1]]


def test_a_manifest_of_an_older_export_with_user_columns_still_loads(tiny_bundles: dict, tmp_path: Path) -> None:
    path = _copy(tiny_bundles["binary"], tmp_path)
    raw = json.loads((path / "manifest.json").read_text())
    (path / "manifest.json").write_text(json.dumps({**raw, "user_columns": 4}))
    assert load_bundle(path).manifest == read_manifest(tiny_bundles["binary"])


def _without(raw: dict, *keys: str) -> None:
    target = raw
    for key in keys[:-1]:
        target = target[key]
    del target[keys[-1]]


def _set(raw: dict, value, *keys) -> None:
    target = raw
    for key in keys[:-1]:
        target = target[key]
    target[keys[-1]] = value


@pytest.mark.parametrize("edit, message", [
    (lambda m: _without(m, "model", "head"), "manifest.model lacks the 'head' entry"),
    (lambda m: _set(m, "ternary", "model", "head"), "manifest.model.head must be one of binary, rating, got 'ternary'"),
    (lambda m: _without(m, "fields"), "manifest lacks the 'fields' entry"),
    (lambda m: _set(m, 0, "fields", 1, "slots"), "manifest.fields[1].slots must be an integer >= 1, got 0"),
    (lambda m: _set(m, "big", "fields", 0, "vocab_size"), "manifest.fields[0].vocab_size must be an integer"),
    (lambda m: m["fields"].reverse(), "user-side fields must precede item-side fields"),
    (lambda m: _set(m, 12, "num_columns"), "manifest.num_columns is 12 but the fields span 9 columns"),
    (lambda m: _set(m, ["rating_probs"], "outputs"), "manifest.outputs must include p_click"),
    (lambda m: _set(m, "many", "files", "popular.npy", "bytes"),
     "manifest.files['popular.npy'].bytes must be an integer"),
    (lambda m: _without(m, "parity", "max_abs_diff_p_click"), "manifest.parity lacks the 'max_abs_diff_p_click' entry"),
    (lambda m: _set(m, [1, 2], "retriever"), "manifest.retriever must be a JSON object, got list"),
    (lambda m: _without(m, "version"), "manifest lacks the 'version' entry"),
    (lambda m: _set(m, True, "model", "levels"), "manifest.model.levels must be an integer >= 2, got True"),
])
def test_a_malformed_manifest_is_a_bundle_error_naming_the_entry(tiny_bundles: dict, tmp_path: Path, edit,
                                                                message: str) -> None:
    raw = json.loads((tiny_bundles["rating"] / "manifest.json").read_text())
    edit(raw)
    (tmp_path / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(BundleError, match=re.escape(message)) as info:
        read_manifest(tmp_path)
    assert str(info.value).startswith(f"{tmp_path / 'manifest.json'}: ")


def test_a_manifest_that_is_not_an_object_is_refused(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text("[1, 2, 3]")
    with pytest.raises(BundleError, match="manifest must be a JSON object, got list"):
        read_manifest(tmp_path)


@pytest.mark.parametrize("damage, message", [
    ("flip", "does not match the manifest (tampered)"),
    ("truncate", "truncated or replaced"),
    ("remove", "is missing"),
    ("version", "bundle format version 99"),
    ("manifest", "not valid JSON"),
])
def test_damaged_bundles_are_refused_clearly(tiny_bundles: dict, tmp_path: Path, damage: str, message: str) -> None:
    path = _copy(tiny_bundles["rating"], tmp_path)
    if damage == "flip":
        raw = bytearray((path / "item_fields.npy").read_bytes())
        raw[-1] ^= 0xFF
        (path / "item_fields.npy").write_bytes(bytes(raw))
    elif damage == "truncate":
        raw = (path / "ranker.onnx").read_bytes()
        (path / "ranker.onnx").write_bytes(raw[: len(raw) // 2])
    elif damage == "remove":
        (path / "items.faiss").unlink()
    elif damage == "version":
        manifest = json.loads((path / "manifest.json").read_text())
        manifest["format_version"] = 99
        (path / "manifest.json").write_text(json.dumps(manifest))
    else:
        (path / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match=re.escape(message)):
        load_bundle(path)


def test_pickled_arrays_are_never_loaded(tiny_bundles: dict, tmp_path: Path) -> None:
    path = _copy(tiny_bundles["rating"], tmp_path)
    np.save(path / "popular.npy", np.array([{"evil": 1}], dtype=object), allow_pickle=True)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["files"]["popular.npy"] = {"sha256": sha256_file(path / "popular.npy"),
                                        "bytes": (path / "popular.npy").stat().st_size}
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="not a plain numpy array"):
        load_bundle(path)


def test_export_cli_errors(tiny_bundles: dict, tiny_retriever: Path, tmp_path: Path) -> None:
    proc = run_cli("export", "--ranker", str(tmp_path / "nope"), "--retriever", str(tiny_retriever),
                   "--out", str(tmp_path / "b"), timeout=120)
    assert proc.returncode == 2 and "checkpoint not found" in proc.stderr
    proc = run_cli("export", "--ranker", str(tmp_path / "nope"), "--retriever", str(tiny_retriever),
                   "--out", str(tmp_path / "b"), "--index", "lsh", timeout=120)
    assert proc.returncode == 2 and "--index must be one of auto, flat, ivf, hnsw" in proc.stderr


def test_export_refuses_to_write_when_parity_fails(tiny_bundles: dict, tiny_retriever: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from ratingctr.errors import UserError
    from ratingctr.export import build

    ranker = Path(load_bundle(tiny_bundles["rating"]).manifest.source.ranker)
    real = build.parity

    def drifting(model, onnx_path, rows, providers=None):  # the ONNX graph disagrees with torch
        report = real(model, onnx_path, rows, providers)
        report["max_abs_diff_p_click"] = 3e-4
        return report

    monkeypatch.setattr(build, "parity", drifting)
    with pytest.raises(UserError, match=r"ONNX parity failed: max \|Δp̂\| = 0.0003 > 1e-05 .* bundle not written"):
        build.export_bundle(ranker, tiny_retriever, tmp_path / "refused")
    assert not (tmp_path / "refused").exists()


def test_export_refuses_a_retriever_of_other_users(tiny_bundles: dict, tiny_atomic: Path, tmp_path: Path) -> None:
    from ratingctr.errors import UserError
    from ratingctr.export.build import export_bundle
    from ratingctr.training.retriever import RetrieverConfig, train_retriever

    other = tmp_path / "ret-k20"  # 20-core keeps fewer items, so its vocabulary differs
    train_retriever(DataConfig(dataset="atomic", data_dir=str(tiny_atomic), k_core=20),
                    RetrieverConfig(embedding_dim=4, layers=1, epochs=1, progress=False), other)
    ranker = Path(load_bundle(tiny_bundles["rating"]).manifest.source.ranker)
    with pytest.raises(UserError, match="trained on other users/items than the ranker"):
        export_bundle(ranker, other, tmp_path / "b")
