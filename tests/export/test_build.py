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


def test_the_manifest_records_the_index_chosen_and_its_measured_recall(tiny_bundles: dict, tiny_retriever: Path,
                                                                        tmp_path: Path) -> None:
    """auto on 80 items is the exact index; --index ivf is tuned on the run's users and says so."""
    from ratingctr.export.build import export_bundle

    auto = read_manifest(tiny_bundles["rating"]).retriever
    assert auto.index == "flat" and auto.search["chosen_by"] == "auto" and auto.search["recall"] == 1.0
    source = read_manifest(tiny_bundles["rating"]).source
    ivf = export_bundle(Path(source.ranker), tiny_retriever, tmp_path / "ivf", index_kind="ivf").retriever
    assert ivf.index == "ivf" and ivf.search["chosen_by"] == "flag"
    assert ivf.search["k"] == 80 and ivf.search["recall"] >= 0.97 and ivf.search["params"]["nprobe"] >= 1
    assert ivf.search["queries"] == len(load_bundle(tmp_path / "ivf").vocab["user_id"]) - 1  # every user (< 256)
    # the gateway loads it and searches at the tuned depth
    import faiss

    stored = faiss.read_index(str(tmp_path / "ivf" / "items.faiss"))
    assert faiss.extract_index_ivf(stored).nprobe == ivf.search["params"]["nprobe"]


def test_an_hnsw_bundle_is_served_in_inner_product_order(tiny_bundles: dict, tiny_retriever: Path,
                                                          tmp_path: Path) -> None:
    """HNSW indexes the augmented item vectors (dim + 1): the gateway's ranker pads its queries
    and retrieves what exact inner-product search over the bundle's own vectors would."""
    from ratingctr.export.build import export_bundle
    from ratingctr.serving.ranker import load_ranker

    source = read_manifest(tiny_bundles["rating"]).source
    manifest = export_bundle(Path(source.ranker), tiny_retriever, tmp_path / "hnsw", index_kind="hnsw")
    assert manifest.retriever.index == "hnsw" and manifest.retriever.search["recall"] >= 0.97
    ranker = load_ranker(tmp_path / "hnsw", 20, 1, "cpu", 0)
    assert ranker.index.d == manifest.retriever.dim + 1
    bundle = load_bundle(tmp_path / "hnsw")
    users, items = bundle["user_vectors.npy"], bundle["item_vectors.npy"]
    agree = []
    for user in range(1, len(users)):
        exact = np.argsort(-(items[1:] @ users[user]), kind="stable")[:20] + 1
        agree.append(len(set(ranker.retrieve(user, np.zeros(0, np.int64), 20).tolist()) & set(exact.tolist())) / 20)
    assert np.mean(agree) >= 0.95


def test_a_bad_retriever_weight_is_refused_before_any_export(tiny_bundles: dict, tiny_retriever: Path,
                                                              tmp_path: Path, capsys) -> None:
    from ratingctr.cli import main

    source = read_manifest(tiny_bundles["rating"]).source
    for bad in ("-1", "nan", "inf"):
        out = tmp_path / f"w{bad}"
        assert main(["export", "--ranker", source.ranker, "--retriever", str(tiny_retriever), "--out", str(out),
                     f"--retriever-weight={bad}"]) == 2
        assert "--retriever-weight must be a finite number >= 0" in capsys.readouterr().err
        assert not out.exists()
    assert main(["export", "--ranker", source.ranker, "--retriever", str(tiny_retriever), "--out",
                 str(tmp_path / "w0"), "--retriever-weight", "0"]) == 0
    assert read_manifest(tmp_path / "w0").ranking.retriever_weight == 0.0
    for bad in ("-1", "11"):
        out = tmp_path / f"f{bad}"
        assert main(["export", "--ranker", source.ranker, "--retriever", str(tiny_retriever), "--out", str(out),
                     f"--fresh-slots={bad}"]) == 2
        assert "--fresh-slots must be an integer from 0 to 10" in capsys.readouterr().err
        assert not out.exists()
