"""The serving object: loads bundles without torch, scores exactly like the checkpoint, refuses mismatches."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

PROBE = """
import json, sys
import numpy as np
from ratingctr.serving.ranker import load_ranker
b = load_ranker(sys.argv[1])
x = b.bundle["item_fields.npy"][1:6]
u = np.repeat(b.bundle["user_fields.npy"][1:2], 5, axis=0)
out = b.predict(np.concatenate([u, x], axis=1))
print(json.dumps({"torch": "torch" in sys.modules, "p": out["p_click"].tolist(),
                  "outputs": b.output_names, "ntotal": b.index.ntotal}))
"""


def test_ranker_is_torch_free_and_matches_torch(tiny_bundles: dict) -> None:
    path = tiny_bundles["rating"]
    proc = subprocess.run([sys.executable, "-c", PROBE, str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["torch"] is False
    assert result["outputs"] == ["p_click", "rating_probs", "expected_rating"]
    # the same five candidates through the checkpoint in torch
    import torch

    from ratingctr.bundle import load_bundle
    from ratingctr.training.run import load_checkpoint, restore_model

    manifest = load_bundle(path).manifest
    payload, config = load_checkpoint(Path(manifest.source.ranker))
    model = restore_model(payload, config).eval()
    bundle = load_bundle(path)
    x = np.concatenate([np.repeat(bundle["user_fields.npy"][1:2], 5, axis=0), bundle["item_fields.npy"][1:6]], axis=1)
    with torch.no_grad():
        expected = model.predict(torch.from_numpy(x)).p_click.numpy()
    assert np.max(np.abs(np.array(result["p"]) - expected)) <= 1e-5
    assert result["ntotal"] == len(bundle.vocab["item_id"]) - 1


def test_runtime_falls_back_to_cpu_with_a_log_line(tiny_bundles: dict, caplog, monkeypatch) -> None:
    import logging

    import onnxruntime as ort
    import pytest

    from ratingctr.serving.runtime import faiss_index, ort_session

    path = tiny_bundles["rating"]
    with caplog.at_level(logging.INFO, logger="ratingctr.runtime"):
        session = ort_session(path / "ranker.onnx", device="auto")
        index = faiss_index(path / "items.faiss", device="auto")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert session.get_providers() == ["CPUExecutionProvider"]
        assert any("using CPU" in r.message for r in caplog.records)
    assert index.ntotal > 0
    assert ort_session(path / "ranker.onnx", device="cpu").get_providers() == ["CPUExecutionProvider"]
    monkeypatch.setenv("RATINGCTR_DEVICE", "tpu")
    with pytest.raises(ValueError, match="RATINGCTR_DEVICE must be auto, cpu or cuda"):
        ort_session(path / "ranker.onnx")


def test_the_ranker_refuses_an_index_of_another_catalogue(tiny_bundles: dict) -> None:
    import faiss
    import pytest

    from ratingctr.bundle import BundleError, load_bundle
    from ratingctr.serving.ranker import Ranker
    from ratingctr.serving.runtime import ort_session

    bundle = load_bundle(tiny_bundles["rating"])
    short = faiss.IndexFlatIP(bundle["item_vectors.npy"].shape[1])
    short.add(np.ascontiguousarray(bundle["item_vectors.npy"][1:-1], dtype=np.float32))
    n_items = len(bundle.vocab["item_id"]) - 1
    with pytest.raises(BundleError, match=f"items.faiss holds {n_items - 1} items, the vocabulary has {n_items}"):
        Ranker(bundle, ort_session(bundle.ranker_path, device="cpu"), short)


def test_lookups_retrieval_and_cold_start_rows(tiny_bundles: dict) -> None:
    import pytest

    from ratingctr.serving.ranker import UnknownFieldError, load_ranker

    ranker = load_ranker(tiny_bundles["rating"], warmup_calls=0)
    vocab = ranker.bundle.vocab
    assert ranker.name == "dcnv2-rating" and ranker.levels == 5 and ranker.manifest.model.head == "rating"
    # request strings and Redis bytes map to the same indices; unknown ids to 0
    expected = [vocab["item_id"].index("i3"), vocab["item_id"].index("i5"), 0]
    assert ranker.item_indices(["i3", "i5", "nope"]).tolist() == expected
    assert ranker.item_indices([b"i3", b"i5", b"nope"]).tolist() == expected
    # retrieval: the exact inner-product order of the flat index, minus the user's history
    user = ranker.user_index["u2"]
    seen = ranker.history(user)
    got = ranker.retrieve(user, seen, 10)
    scores = ranker.bundle["item_vectors.npy"][1:] @ ranker.bundle["user_vectors.npy"][user]
    order = np.argsort(-scores, kind="stable") + 1
    assert got.tolist() == [i for i in order.tolist() if i not in set(seen.tolist())][:10]
    # cold start: supplied fields through the vocabulary, unknown values 0, unknown fields refused
    row = ranker.cold_start_row({"gender": "F", "age": 25, "occupation": "no-such-job"})
    assert row.tolist() == [0, vocab["age"].index("25"), vocab["gender"].index("F"), 0]
    with pytest.raises(UnknownFieldError, match="unknown field\\(s\\) shoe_size; this model's user fields are: "
                                                "age, gender, occupation"):
        ranker.cold_start_row({"shoe_size": 9})


def test_served_order_blends_log_p_click_with_the_retriever_score(tiny_bundles: dict) -> None:
    """A known user's top-K is by log p̂ + w · (user vector · item vector), w from the manifest;
    an unknown user's (no vector) and a w = 0 order are by p̂ alone."""
    from ratingctr.serving.ranker import load_ranker

    ranker = load_ranker(tiny_bundles["rating"], warmup_calls=0)
    assert ranker.retriever_weight == 1.0
    user_vectors, item_vectors = ranker.bundle["user_vectors.npy"], ranker.bundle["item_vectors.npy"]
    moved = 0
    for user in range(1, len(ranker.user_ids)):
        items = ranker.retrieve(user, ranker.history(user), 30)
        row = ranker.user_fields[user]
        p = ranker.predict(ranker.features(row, items))["p_click"].astype(np.float64)
        blended = np.log(p) + item_vectors[items].astype(np.float64) @ user_vectors[user].astype(np.float64)
        got = ranker.rank(row, items, 10, {}, user)
        np.testing.assert_array_equal(got.items, items[np.argsort(-blended, kind="stable")[:10]])
        np.testing.assert_allclose(got.p_click, p[np.argsort(-blended, kind="stable")[:10]], rtol=1e-6)
        by_p = items[np.argsort(-p, kind="stable")[:10]]
        np.testing.assert_array_equal(ranker.rank(row, items, 10, {}).items, by_p)  # user 0: unknown
        np.testing.assert_array_equal(items[np.argsort(-ranker.order_scores(user, items, p.astype(np.float32), 0.0),
                                                       kind="stable")[:10]], by_p)
        moved += int(not np.array_equal(got.items, by_p))
    assert moved > 0  # the blend changes some users' lists on this data


def test_a_manifest_without_ranking_serves_p_click_order_and_a_bad_weight_is_refused(tiny_bundles: dict,
                                                                                       tmp_path: Path) -> None:
    import shutil

    import pytest

    from ratingctr.bundle import BundleError, BundleManifest, read_manifest

    raw = json.loads((tiny_bundles["rating"] / "manifest.json").read_text())
    older = dict(raw)
    del older["ranking"]
    assert BundleManifest.from_dict(older).ranking.retriever_weight == 0.0
    for bad in (-1.0, float("nan"), float("inf"), "1", True):
        with pytest.raises(BundleError, match="retriever_weight"):
            BundleManifest.from_dict({**raw, "ranking": {"retriever_weight": bad}})
    copy = tmp_path / "older"
    shutil.copytree(tiny_bundles["rating"], copy)
    (copy / "manifest.json").write_text(json.dumps(older))
    assert read_manifest(copy).ranking.retriever_weight == 0.0


def test_the_gateway_setting_and_the_ranker_share_one_candidate_default() -> None:
    """RATINGCTR_CANDIDATES' default is the measured one (serving.ranker.DEFAULT_CANDIDATES)."""
    from ratingctr.serving.ranker import DEFAULT_CANDIDATES
    from ratingctr.serving.settings import GatewaySettings

    assert GatewaySettings.model_fields["candidates"].default == DEFAULT_CANDIDATES == 50
    from ratingctr.online.evaluate_bundle import EvaluateConfig

    assert EvaluateConfig(bundles=()).candidates == DEFAULT_CANDIDATES  # evaluate-bundle judges what is served
    from ratingctr.loadtest.config import GatewayBenchConfig, TrafficShape

    # the load tests' TorchServe rows and bench gateway's candidates are what the gateway scores
    assert TrafficShape().candidates == GatewayBenchConfig.__dataclass_fields__["candidates"].default \
        == DEFAULT_CANDIDATES


# ---- the fresh-item slot (bundle.RankingInfo) --------------------------------------------------
def _with_ranking(path: Path, **ranking):
    """The tiny bundle's Ranker with another ``ranking`` block (the manifest is a typed object)."""
    from dataclasses import replace

    from ratingctr.bundle import RankingInfo, load_bundle
    from ratingctr.serving.ranker import Ranker
    from ratingctr.serving.runtime import faiss_index, ort_session

    bundle = load_bundle(path)
    bundle = replace(bundle, manifest=replace(bundle.manifest, ranking=RankingInfo(**ranking)))
    return Ranker(bundle, ort_session(bundle.ranker_path), faiss_index(bundle.index_path))


def test_the_fresh_slot_takes_the_last_place_with_the_best_unseen_fresh_item(tiny_bundles: dict) -> None:
    plain = _with_ranking(tiny_bundles["rating"], retriever_weight=1.0)
    n = plain.n_items
    fresh_from = n - 5  # the last 6 items play the ones a retrain added
    slot = _with_ranking(tiny_bundles["rating"], retriever_weight=1.0, fresh_from=fresh_from, fresh_slots=2)
    assert slot.fresh_items.tolist() == list(range(fresh_from, n + 1))
    user = 3
    row, seen = slot.user_fields[user], slot.history(user)
    items = slot.retrieve(user, seen, 20)
    base = plain.rank(row, items, 10, {}, user, seen)
    got = slot.rank(row, items, 10, {}, user, seen)
    slots = min(2, 10 // 5)
    assert got.fresh == slots and len(got.items) == 10
    # the blended order keeps its first 10 - slots places exactly
    assert got.items[:10 - slots].tolist() == base.items[:10 - slots].tolist()
    # the slot places: the unseen fresh items not already listed, best p̂ first
    pool = [i for i in range(fresh_from, n + 1) if i not in set(seen.tolist()) | set(got.items[:8].tolist())]
    p_pool = plain.score(row, np.array(pool, dtype=np.int64))["p_click"]
    best = [pool[i] for i in np.argsort(-p_pool, kind="stable")[:slots]]
    assert got.items[10 - slots:].tolist() == best
    np.testing.assert_allclose(got.p_click[10 - slots:], np.sort(p_pool)[::-1][:slots], rtol=1e-6)
    # no slot below k = 5, for a cold-start user, or when every fresh item was seen
    assert slot.rank(row, items, 4, {}, user, seen).items.tolist() == plain.rank(row, items, 4, {}, user, seen).items.tolist()
    popular = slot.popular_items(np.zeros(0, np.int64), 20)
    cold = slot.rank(slot.cold_start_row(None), popular, 10, {}, 0)
    assert cold.fresh == 0
    all_seen = np.union1d(seen, slot.fresh_items)
    items = slot.retrieve(user, all_seen, 20)
    assert slot.rank(row, items, 10, {}, user, all_seen).fresh == 0


def test_a_fresh_range_past_the_catalogue_is_refused(tiny_bundles: dict) -> None:
    import pytest

    from ratingctr.bundle import BundleError, RankingInfo

    n = _with_ranking(tiny_bundles["rating"]).n_items
    with pytest.raises(BundleError, match="fresh_from .* is past the last item index"):
        _with_ranking(tiny_bundles["rating"], fresh_from=n + 1, fresh_slots=1)
    for bad in ({"fresh_slots": -1}, {"fresh_slots": 11}, {"fresh_from": -2}, {"fresh_slots": True}):
        with pytest.raises(BundleError):
            RankingInfo(**bad)
    assert RankingInfo.from_dict({"retriever_weight": 1}) == RankingInfo(1.0, 0, 0)  # older manifests
    for bad in ({"fresh_from": "3"}, {"fresh_slots": 2.0}, {"fresh_slots": 99}, {"fresh_from": -1}):
        with pytest.raises(BundleError, match="ranking.fresh_"):
            RankingInfo.from_dict({"retriever_weight": 1, **bad})
    info = RankingInfo(1.0, 7, 2)
    assert RankingInfo.from_dict(info.to_dict()) == info


def test_export_finds_the_items_a_retrained_run_added() -> None:
    from ratingctr.export.build import fresh_from

    assert fresh_from({"lineage": {"new_items": 3}}, 11) == 8  # vocabulary 0..10: items 8, 9, 10 are new
    assert fresh_from({"lineage": {"new_items": 0}}, 11) == 0
    assert fresh_from({}, 11) == 0  # a run of `ratingctr train`
