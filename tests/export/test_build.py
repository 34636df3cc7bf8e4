"""``export_bundle``: the manifest it writes, and what it hands TorchServe."""
import json
import zipfile
from pathlib import Path

import numpy as np

from ratingctr.bundle import BundleManifest, load_bundle, read_manifest


def test_the_archive_carries_the_typed_model_description(tiny_bundles: dict) -> None:
    """ranker.mar's metadata is the manifest's own description, and its ONNX file is the bundle's."""
    path = tiny_bundles["rating"]
    manifest = read_manifest(path)
    with zipfile.ZipFile(path / "ranker.mar") as archive:
        meta = json.loads(archive.read("ranker_meta.json"))
        onnx = archive.read("ranker.onnx")
    assert meta == {"name": "dcnv2-rating", "model": manifest.model.to_dict(),
                    "outputs": ["p_click", "rating_probs", "expected_rating"], "num_columns": 9}
    assert meta["model"]["head"] == "rating" and meta["model"]["levels"] == 5
    assert onnx == (path / "ranker.onnx").read_bytes()


def test_export_returns_the_manifest_it_wrote(tiny_bundles: dict, tiny_retriever: Path, tmp_path: Path) -> None:
    from ratingctr.export.build import export_bundle

    source = read_manifest(tiny_bundles["binary"]).source
    returned = export_bundle(Path(source.ranker), tiny_retriever, tmp_path / "again", name="served-name")
    assert isinstance(returned, BundleManifest) and returned == read_manifest(tmp_path / "again")
    assert returned.name == "served-name" and returned.model.head == "binary" and returned.outputs == ("p_click",)
    assert returned.retriever.ntotal == len(load_bundle(tmp_path / "again").vocab["item_id"]) - 1
    assert returned.retriever.dim == np.load(Path(source.retriever) / "item_vectors.npy").shape[1]
    assert returned.parity.max_abs_diff_p_click <= returned.parity.bound
    # the same checkpoint and retriever give the same files, so the same content version
    assert returned.version == read_manifest(tiny_bundles["binary"]).version
