"""Warm-start retraining end to end: grown runs, lineage, export of the grown bundle, bad inputs."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import train_tiny_ranker
from helpers import bundle_history

from ratingctr.errors import UserError
from ratingctr.training.data.encode import TRAIN
from ratingctr.training.data.event_log import COLUMNS, read_event_log, write_partition
from ratingctr.training.retrain import RetrainConfig, prepare, retrain_ranker, retrain_retriever

N_EVENTS, FIRST_MS = 120, 1_700_000_000_000
NEW_USERS, NEW_ITEMS = ("nu0", "nu1", "nu2", "nu3"), ("ni0", "ni1", "ni2")


def stream_id(k: int) -> str:
    return f"{FIRST_MS + k}-0"


def write_events(directory: Path, tiny, start: int, count: int, seed: int) -> pd.DataFrame:
    """``count`` events (stream ids ``start..``): a third by new users, a fifth on new items, side fields on both."""
    rng = np.random.default_rng(seed)
    users = np.array(tiny.vocab["user_id"][1:], dtype=object)[rng.integers(0, tiny.n_users, count)]
    items = np.array(tiny.vocab["item_id"][1:], dtype=object)[rng.integers(0, tiny.n_items, count)]
    new_user, new_item = rng.random(count) < 0.34, rng.random(count) < 0.2
    users[new_user] = np.array(NEW_USERS, dtype=object)[rng.integers(0, len(NEW_USERS), new_user.sum())]
    items[new_item] = np.array(NEW_ITEMS, dtype=object)[rng.integers(0, len(NEW_ITEMS), new_item.sum())]
    user_fields = json.dumps({"age": tiny.vocab["age"][1], "gender": tiny.vocab["gender"][1], "occupation": "new"})
    item_fields = json.dumps({"release_year": tiny.vocab["release_year"][2], "genre": tiny.vocab["genre"][1:3]})
    ts = np.arange(start, start + count, dtype=np.float64) + 1e9
    frame = pd.DataFrame({
        "stream_id": [stream_id(k) for k in range(start, start + count)], "event_id": None,
        "user_id": users.astype(str), "item_id": items.astype(str),
        "rating": rng.integers(1, 6, count).astype(np.float64), "ts": ts, "received": ts,
        "user_fields": np.where(new_user, user_fields, None), "item_fields": np.where(new_item, item_fields, None),
    })[list(COLUMNS)]
    write_partition(directory, frame.iloc[:count // 2])
    write_partition(directory, frame.iloc[count // 2:])
    return frame


@pytest.fixture(scope="module")
def events(tiny, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    directory = tmp_path_factory.mktemp("events") / "log"
    return directory, write_events(directory, tiny, 0, N_EVENTS, seed=1)


@pytest.fixture(scope="module")
def base_rankers(tiny_atomic: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("retrain-base")
    return {encoder: train_tiny_ranker(tiny_atomic, root / encoder, encoder=encoder) for encoder in ("table", "lightgcn")}


QUICK = RetrainConfig(epochs=1, progress=False, device="cpu")


@pytest.mark.parametrize("encoder", ["table", "lightgcn"])
def test_a_grown_ranker_and_retriever_export_a_bundle_with_the_new_items(
        tiny, base_rankers, tiny_retriever: Path, events, tmp_path: Path, encoder: str) -> None:
    from ratingctr.bundle import load_bundle
    from ratingctr.export.build import PARITY_BOUND, export_bundle
    from ratingctr.export.onnx_export import prepare_for_export, torch_outputs
    from ratingctr.training.data.stored import load_run_data
    from ratingctr.training.run import load_checkpoint, restore_model

    events_dir, frame = events
    ranker = retrain_ranker(base_rankers[encoder], events_dir, tmp_path / "ranker", QUICK)
    retriever = retrain_retriever(tiny_retriever, events_dir, tmp_path / "retriever", QUICK)
    lineage = ranker["lineage"]
    held = N_EVENTS // 10
    assert lineage == {**lineage, "events_used": N_EVENTS, "events_trained": N_EVENTS - held, "events_held_out": held,
                       "last_stream_id": stream_id(N_EVENTS - held - 1), "first_stream_id": stream_id(0),
                       "new_users": len(NEW_USERS), "new_items": len(NEW_ITEMS), "new_interactions": N_EVENTS,
                       "replayed_rows": int((tiny.split == TRAIN).sum()), "from": str(base_rankers[encoder])}
    assert retriever["lineage"] == {**lineage, "from": str(tiny_retriever)}  # same events, same growth
    assert ranker["events_valid"]["rows"] == held and 0.0 <= ranker["test"]["auc"] <= 1.0
    data, _ = load_run_data(tmp_path / "ranker", None)  # the run carries its grown data
    assert data.n_items == tiny.n_items + len(NEW_ITEMS)

    manifest = export_bundle(tmp_path / "ranker", tmp_path / "retriever", tmp_path / "bundle")
    assert manifest.parity.max_abs_diff["p_click"] <= PARITY_BOUND
    bundle = load_bundle(tmp_path / "bundle")
    item_vectors = np.load(tmp_path / "retriever" / "item_vectors.npy")
    assert manifest.retriever.ntotal == tiny.n_items + len(NEW_ITEMS) == item_vectors.shape[0] - 1
    import faiss

    index = faiss.read_index(str(tmp_path / "bundle" / "items.faiss"))
    for item in NEW_ITEMS:  # in the vocabulary, and its retriever vector is in the index under its id
        row = bundle.vocab["item_id"].index(item)
        assert row > tiny.n_items
        assert np.array_equal(index.reconstruct(row - 1), item_vectors[row])
        assert np.array_equal(bundle["item_fields.npy"][row], data.item_rows[row])
    first = frame[frame["user_id"] == NEW_USERS[0]]
    assert bundle_history(tmp_path / "bundle", NEW_USERS[0]) == set(first["item_id"])
    # the bundle's ONNX scores pairs of new users and new items like the checkpoint does
    users = np.array([data.vocab["user_id"].index(u) for u in NEW_USERS])
    items = np.array([data.vocab["item_id"].index(i) for i in NEW_ITEMS])
    pairs = data.features(np.repeat(users, items.size), np.tile(items, users.size))
    payload, config = load_checkpoint(tmp_path / "ranker")
    ours = torch_outputs(prepare_for_export(restore_model(payload, config, data)), pairs)["p_click"]
    import onnxruntime as ort

    theirs = ort.InferenceSession(str(tmp_path / "bundle" / "ranker.onnx")).run(["p_click"], {"fields": pairs})[0]
    assert np.isfinite(ours).all() and np.max(np.abs(ours - theirs)) <= PARITY_BOUND


def test_retrain_continues_from_a_retrained_run(tiny, base_rankers, events, tmp_path: Path) -> None:
    events_dir, _ = events
    half = N_EVENTS // 2
    first = retrain_ranker(base_rankers["table"], events_dir, tmp_path / "run2",
                           RetrainConfig(epochs=1, progress=False, device="cpu", max_stream_id=stream_id(half - 1)))
    assert first["lineage"]["events_used"] == half and first["lineage"]["last_stream_id"] == stream_id(half - 7)
    more = write_events(tmp_path / "log", tiny, N_EVENTS, 30, seed=2)
    for path in events_dir.glob("events-*.parquet"):
        (tmp_path / "log" / path.name).write_bytes(path.read_bytes())
    second = retrain_ranker(tmp_path / "run2", tmp_path / "log", tmp_path / "run3",
                            RetrainConfig(epochs=1, progress=False, device="cpu", window=40, replay_share=0.5))
    lineage = second["lineage"]
    # the newest 40 events the base has not trained on (its 6 held-out events are not in its data any more)
    assert lineage["events_used"] == 40 and lineage["first_stream_id"] == stream_id(N_EVENTS + 30 - 40)
    assert lineage["new_users"] == 0 and lineage["new_items"] == 0  # the same new ids, grown once in run2
    base_train = first["dataset"]["train"]
    assert lineage["base_rows"] == first["dataset"]["interactions"] - 6 and lineage["replayed_rows"] == round(
        0.5 * base_train)
    assert lineage["last_stream_id"] == stream_id(N_EVENTS + 30 - 4 - 1) == more["stream_id"].iat[-5]
    from ratingctr.training.run import load_checkpoint

    assert load_checkpoint(tmp_path / "run3")[0]["vocab"] == load_checkpoint(tmp_path / "run2")[0]["vocab"]


def test_replay_share_and_shuffled_labels(tiny, events) -> None:
    events_dir, _ = events
    base_ids = np.full(tiny.rating.shape[0], "", dtype=str)
    plain = prepare(tiny, base_ids, _data_config(), Path("base"), events_dir, RetrainConfig(replay_share=0.25))
    base_train = int((tiny.split == TRAIN).sum())
    n = tiny.rating.shape[0]
    fit_train = np.flatnonzero(plain.fit_data.split == TRAIN)
    assert plain.lineage["replayed_rows"] == round(0.25 * base_train) == int((fit_train < n).sum())
    assert int((fit_train >= n).sum()) == N_EVENTS - N_EVENTS // 10
    assert np.array_equal(plain.fit_data.rating, plain.grown.data.rating)
    spoiled = prepare(tiny, base_ids, _data_config(), Path("base"), events_dir,
                      RetrainConfig(replay_share=0.25, debug_shuffle_labels=True))
    rows = np.flatnonzero(spoiled.fit_data.split == TRAIN)
    shuffled, truth = spoiled.fit_data.rating[rows], spoiled.grown.data.rating[rows]
    assert sorted(shuffled.tolist()) == sorted(truth.tolist()) and (shuffled != truth).mean() > 0.5
    other = spoiled.fit_data.split != TRAIN
    assert np.array_equal(spoiled.fit_data.rating[other], spoiled.grown.data.rating[other])
    assert spoiled.lineage["debug_shuffle_labels"] is True


def test_excluded_events_are_neither_trained_nor_kept_and_come_back_next_time(tiny, base_rankers, events,
                                                                           tmp_path: Path) -> None:
    from ratingctr.training.data.stored import trained_stream_ids

    events_dir, frame = events
    excluded = frozenset(frame["stream_id"].iloc[::7])  # 18 of 120, spread over the log
    base_ids = np.full(tiny.rating.shape[0], "", dtype=str)
    prepared = prepare(tiny, base_ids, _data_config(), Path("base"), events_dir,
                       RetrainConfig(exclude_stream_ids=excluded))
    kept = set(prepared.grown.stream_id[prepared.grown.stream_id != ""].tolist())
    assert not kept & excluded and len(kept) == N_EVENTS - len(excluded)
    assert prepared.lineage["events_excluded"] == len(excluded) and prepared.lineage["events_used"] == len(kept)
    config = RetrainConfig(epochs=1, progress=False, device="cpu", exclude_stream_ids=excluded)
    first = retrain_ranker(base_rankers["table"], events_dir, tmp_path / "first", config)
    assert first["lineage"]["events_excluded"] == len(excluded)
    trained = set(trained_stream_ids(tmp_path / "first").tolist())
    assert trained and not trained & excluded
    # the next retrain from it, without the exclusion, learns from the excluded events (they are new to it)
    second = retrain_ranker(tmp_path / "first", events_dir, tmp_path / "second", QUICK)
    # (with the first run's early-stopping events, which no gradient saw either)
    assert second["lineage"]["events_used"] == len(excluded) + first["lineage"]["events_held_out"]
    grown = np.load(tmp_path / "second" / "data" / "stream_id.npy")
    assert excluded <= set(grown.tolist())
    assert trained_stream_ids(base_rankers["table"]).size == 0  # trained on its dataset only


def _data_config():
    from ratingctr.training.config import DataConfig

    return DataConfig(dataset="atomic", k_core=3)


def test_bad_inputs_are_user_errors(base_rankers, events, tmp_path: Path) -> None:
    events_dir, _ = events
    run = base_rankers["table"]
    (tmp_path / "empty").mkdir()
    cases = [
        (run, tmp_path / "missing", tmp_path / "a", QUICK, "events directory not found"),
        (run, tmp_path / "empty", tmp_path / "b", QUICK, "holds no events"),
        (tmp_path / "no-run", events_dir, tmp_path / "c", QUICK, "checkpoint not found"),
        (run, events_dir, run, QUICK, "--out must differ from --from"),
        (run, events_dir, tmp_path / "d", RetrainConfig(max_stream_id="latest"), "--max-stream-id must be"),
        (run, events_dir, tmp_path / "e", RetrainConfig(max_stream_id="5-0"), "no new events"),
        (run, events_dir, tmp_path / "f", RetrainConfig(replay_share=1.5), "--replay-share must be in"),
    ]
    for from_run, events_path, out, config, message in cases:
        with pytest.raises(UserError, match=message):
            retrain_ranker(from_run, events_path, out, config)
    with pytest.raises(UserError, match="retriever checkpoint not found"):
        retrain_retriever(tmp_path / "no-run", events_dir, tmp_path / "g", QUICK)
    assert not (tmp_path / "b").exists() and not (tmp_path / "e").exists()  # nothing written on a refusal
    # every event excluded: nothing new to learn from
    everything = frozenset(read_event_log(events_dir)["stream_id"])
    with pytest.raises(UserError, match="no new events to retrain on"):
        retrain_ranker(run, events_dir, tmp_path / "h", RetrainConfig(exclude_stream_ids=everything))
    # a malformed --exclude-events file is one error line before any training
    from ratingctr.cli import main

    bad = tmp_path / "ids.txt"
    bad.write_text("1700000000000-0\n../../etc/passwd\n")
    assert main(["retrain", "--from", str(run), "--events", str(events_dir), "--out", str(tmp_path / "i"),
                 "--exclude-events", str(bad)]) == 2
    assert not (tmp_path / "h").exists() and not (tmp_path / "i").exists()


def test_export_refuses_a_retriever_grown_from_other_events(base_rankers, tiny_retriever: Path, events,
                                                            tmp_path: Path) -> None:
    from ratingctr.export.build import export_bundle

    events_dir, _ = events
    retrain_ranker(base_rankers["table"], events_dir, tmp_path / "ranker", QUICK)
    retrain_retriever(tiny_retriever, events_dir, tmp_path / "retriever",
                      RetrainConfig(epochs=1, progress=False, device="cpu", window=5))
    with pytest.raises(UserError, match="other users/items"):
        export_bundle(tmp_path / "ranker", tmp_path / "retriever", tmp_path / "bundle")


def test_retrain_verbs_end_to_end(base_rankers, tiny_retriever: Path, events, tmp_path: Path, capsys,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The verbs through ``ratingctr.cli.main`` in this process (no allocator tuning of the test process)."""
    from ratingctr.cli import main
    from ratingctr.training import allocator

    monkeypatch.setattr(allocator, "retain_freed_memory", lambda: False)
    events_dir, _ = events
    common = ["--events", str(events_dir), "--epochs", "2", "--no-progress", "--device", "cpu", "--window", "100",
              "--replay-share", "0.5"]
    assert main(["retrain", "--from", str(base_rankers["table"]), "--out", str(tmp_path / "r2"), *common,
                 "--debug-shuffle-labels"]) == 0
    assert f"100 events (90 trained, 10 held out), +{len(NEW_USERS)} users" in capsys.readouterr().out
    assert main(["retrain-retriever", "--from", str(tiny_retriever), "--out", str(tmp_path / "t2"), *common]) == 0
    assert "retriever: test recall@20" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "r2" / "metrics.json").read_text())
    assert metrics["lineage"]["window"] == 100 and metrics["lineage"]["debug_shuffle_labels"] is True
    assert metrics["lineage"]["replay_share"] == 0.5 and metrics["config"]["train"]["epochs"] == 2
    assert 1 <= len(metrics["history"]) <= 2
    retriever_metrics = json.loads((tmp_path / "t2" / "metrics.json").read_text())
    assert retriever_metrics["lineage"] == {**metrics["lineage"], "from": str(tiny_retriever),
                                            "debug_shuffle_labels": False}
    assert main(["export", "--ranker", str(tmp_path / "r2"), "--retriever", str(tmp_path / "t2"),
                 "--out", str(tmp_path / "bundle")]) == 0
    assert (tmp_path / "bundle" / "manifest.json").is_file()
    capsys.readouterr()
    assert main(["retrain", "--from", str(tmp_path / "nope"), "--out", str(tmp_path / "x"), *common]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"error: checkpoint not found: {tmp_path / 'nope'}"]
    assert main(["retrain-retriever", "--from", str(tiny_retriever), "--out", str(tmp_path / "y"),
                 "--events", str(tmp_path / "none")]) == 2
    assert capsys.readouterr().err.strip() == f"error: events directory not found: {tmp_path / 'none'}"


def test_evaluate_rescores_a_retrained_run_on_its_grown_data(base_rankers, events, tmp_path: Path) -> None:
    from ratingctr.training.run import evaluate_run

    events_dir, _ = events
    metrics = retrain_ranker(base_rankers["lightgcn"], events_dir, tmp_path / "run", QUICK)
    again = evaluate_run(tmp_path / "run", device_name="cpu", ranking=False)
    assert again["test"]["auc"] == pytest.approx(metrics["test"]["auc"], abs=1e-6)
    assert again["valid"]["rows"] == metrics["valid"]["rows"]
