"""The bundle on disk: complete, verified, and refused when damaged."""
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ratingctr.bundle import FORMAT_VERSION, BundleError, load_bundle, sha256_file
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
    assert m["format_version"] == FORMAT_VERSION and m["model"]["arch"] == "DCNV2" and m["model"]["head"] == "rating"
    assert m["outputs"] == ["p_click", "rating_probs", "expected_rating"]
    assert m["parity"]["max_abs_diff_p_click"] <= m["parity"]["bound"] == 1e-5 and m["parity"]["rows"] > 100
    assert set(m["files"]) == set(names) - {"manifest.json"}
    assert all(sha256_file(path / n) == meta["sha256"] for n, meta in m["files"].items())
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
    assert load_bundle(tiny_bundles["binary"]).manifest["outputs"] == ["p_click"]


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
    cli = [sys.executable, "-c", "import sys; from ratingctr.cli import main; sys.exit(main())", "export"]
    proc = subprocess.run([*cli, "--ranker", str(tmp_path / "nope"), "--retriever", str(tiny_retriever),
                           "--out", str(tmp_path / "b")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "checkpoint not found" in proc.stderr
    proc = subprocess.run([*cli, "--ranker", str(tmp_path / "nope"), "--retriever", str(tiny_retriever),
                           "--out", str(tmp_path / "b"), "--index", "lsh"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--index must be one of flat, ivf, hnsw" in proc.stderr


def test_export_refuses_to_write_when_parity_fails(tiny_bundles: dict, tiny_retriever: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from ratingctr.errors import UserError
    from ratingctr.export import build

    ranker = Path(load_bundle(tiny_bundles["rating"]).manifest["source"]["ranker"])
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
    ranker = Path(load_bundle(tiny_bundles["rating"]).manifest["source"]["ranker"])
    with pytest.raises(UserError, match="trained on other users/items than the ranker"):
        export_bundle(ranker, other, tmp_path / "b")
