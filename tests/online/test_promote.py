"""``ratingctr promote``: the gate rule with real numbers, held-out scoring through real bundles,
and the whole promotion against a real gateway: a better candidate is exported, reloaded and
counted; a candidate trained on shuffled labels is refused and nothing changes."""
from __future__ import annotations

import json
import shutil
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ratingctr.errors import UserError
from ratingctr.online.gate import GateRule, Scores, decide, judge, paired_difference, weighted_auc
from ratingctr.online.holdout import score_events, select_holdout, select_holdout_ids
from ratingctr.training.data.event_log import COLUMNS, write_partition
from ratingctr.training.metrics import auc

TOKEN = "promote-admin-token"
NEW_USER_FIELDS = {"age": "30", "gender": "F", "occupation": "a"}


# ---- fixtures: runs, bundles and an event log of events no run trained on ----------------------
def _train(data_dir: Path, out: Path, epochs: int) -> Path:
    from conftest import SMALL_DCNV2

    from ratingctr.training.config import DataConfig, EncoderConfig, HeadConfig, ModelConfig, RunConfig, TrainConfig
    from ratingctr.training.run import train_run

    config = RunConfig(data=DataConfig(dataset="atomic", data_dir=str(data_dir), k_core=3),
                       model=ModelConfig("DCNV2", 8, SMALL_DCNV2), head=HeadConfig("rating", 0.5),
                       encoder=EncoderConfig(kind="table"),
                       train=TrainConfig(epochs=epochs, batch_size=256, lr=3e-3, progress=False, precision="fp32"))
    train_run(config, out)
    return out


def _shuffled_copy(tiny_atomic: Path, out: Path) -> Path:
    """The tiny dataset with its ratings permuted: the same users, items and pairs (so the same
    vocabularies and retriever), labels that carry no signal."""
    shutil.copytree(tiny_atomic, out)
    inter = out / "tiny.inter"
    frame = pd.read_csv(inter, sep="\t", dtype=str)
    frame["rating:float"] = np.random.default_rng(0).permutation(frame["rating:float"].to_numpy())
    frame.to_csv(inter, sep="\t", index=False)
    return out


def _events(frame: pd.DataFrame, first_ms: int = 1_000_000) -> pd.DataFrame:
    """Rows (user_id, item_id, rating, optional user_fields) as event-log rows with stream ids in order."""
    n = len(frame)
    sent = frame["user_fields"] if "user_fields" in frame else pd.Series([None] * n)
    ts = 1.7e9 + np.arange(n, dtype=np.float64)
    return pd.DataFrame({
        "stream_id": [f"{first_ms + k}-0" for k in range(n)], "event_id": [f"e-{first_ms + k}" for k in range(n)],
        "user_id": frame["user_id"].astype(str).to_numpy(), "item_id": frame["item_id"].astype(str).to_numpy(),
        "rating": frame["rating"].to_numpy(dtype=np.float64), "ts": ts, "received": ts + 0.25,
        "user_fields": sent.astype(object).where(sent.notna(), None).to_numpy(),
        "item_fields": [None] * n})[list(COLUMNS)]


@pytest.fixture(scope="module")
def held_out(tiny) -> pd.DataFrame:
    """The tiny data's test split (no run trains on it) plus 40 events of 8 users new to every bundle
    (half of them with user_fields) and 20 events of an item new to every bundle."""
    from ratingctr.training.data.encode import TEST

    rows = tiny.rows(TEST)
    known = pd.DataFrame({"user_id": np.asarray(tiny.vocab["user_id"], dtype=object)[tiny.user[rows]],
                          "item_id": np.asarray(tiny.vocab["item_id"], dtype=object)[tiny.item[rows]],
                          "rating": tiny.rating[rows]})
    rng = np.random.default_rng(5)
    new_users = pd.DataFrame({"user_id": [f"newcomer-{k % 8}" for k in range(40)],
                              "item_id": rng.choice(tiny.vocab["item_id"][1:], 40),
                              "rating": rng.integers(1, 6, 40),
                              "user_fields": [json.dumps(NEW_USER_FIELDS) if k % 8 < 4 else None for k in range(40)]})
    new_item = pd.DataFrame({"user_id": rng.choice(tiny.vocab["user_id"][1:], 20), "item_id": ["brand-new"] * 20,
                             "rating": rng.integers(1, 6, 20)})
    return _events(pd.concat([known, new_users, new_item], ignore_index=True))


@pytest.fixture(scope="module")
def runs(tiny_atomic: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """serving: 4 epochs (test AUC about 0.62); better: 8 epochs of the same model (about 0.69);
    spoiled: 8 epochs on shuffled labels."""
    root = tmp_path_factory.mktemp("promote-runs")
    shuffled = _shuffled_copy(tiny_atomic, root / "shuffled" / "tiny")  # the folder names the dataset
    return {"serving": _train(tiny_atomic, root / "serving", 4), "better": _train(tiny_atomic, root / "better", 8),
            "spoiled": _train(shuffled, root / "spoiled", 8)}


@pytest.fixture(scope="module")
def serving_bundle(runs: dict[str, Path], tiny_retriever: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ratingctr.export.build import export_bundle

    out = tmp_path_factory.mktemp("promote-serving") / "main-v0"
    export_bundle(runs["serving"], tiny_retriever, out, name="main")
    return out


# ---- the rule and its statistics: real numbers ------------------------------------------------
def _scores(auc_: float, logloss_: float) -> Scores:
    return Scores(rows=1000, auc=auc_, logloss=logloss_, mean_p=0.5, click_rate=0.5)


def test_the_rule_allows_the_configured_margins_and_no_more() -> None:
    rule, serving = GateRule(max_auc_drop=0.002, max_logloss_rise=0.005), _scores(0.7500, 0.6000)
    assert judge(_scores(0.7490, 0.6040), serving, rule) == (True, ())  # 0.001 below, 0.004 above: noise
    assert judge(_scores(0.7600, 0.5000), serving, rule) == (True, ())  # better on both
    ok, reasons = judge(_scores(0.7470, 0.6000), serving, rule)  # 0.003 below
    assert not ok and reasons == ("AUC 0.7470 is more than 0.002 below the serving model's 0.7500 (drop 0.0030)",)
    ok, reasons = judge(_scores(0.7600, 0.6060), serving, rule)  # better AUC does not excuse a 0.006 logloss rise
    assert not ok and reasons == ("logloss 0.6060 is more than 0.005 above the serving model's 0.6000 (rise 0.0060)",)
    ok, reasons = judge(_scores(0.5, 0.7), serving, rule)
    assert not ok and len(reasons) == 2
    assert judge(_scores(0.5, 0.7), serving, GateRule(max_auc_drop=0.3, max_logloss_rise=0.1))[0]
    assert not judge(Scores(10, None, 0.6, 0.5, 1.0), serving, rule)[0]  # one class: never promoted


def test_weighted_auc_is_the_auc_of_the_rows_repeated() -> None:
    rng = np.random.default_rng(1)
    labels = (rng.random(500) < 0.4).astype(np.float64)
    p = np.round(rng.random(500) * 0.5 + 0.3 * labels, 2)  # rounded: many ties
    assert weighted_auc(labels, p, np.ones(500)) == pytest.approx(auc(labels, p), abs=1e-12)
    weight = rng.integers(0, 4, 500)
    repeated = np.repeat(np.arange(500), weight)
    assert weighted_auc(labels, p, weight.astype(float)) == pytest.approx(auc(labels[repeated], p[repeated]), abs=1e-12)


def test_paired_difference_resamples_users_and_sees_a_real_improvement() -> None:
    rng = np.random.default_rng(2)
    users = np.repeat([f"u{k}" for k in range(200)], 10)
    labels = (rng.random(2000) < 0.5).astype(np.float64)
    noise = rng.normal(size=2000)
    weak = 1 / (1 + np.exp(-(0.5 * (labels - 0.5) + noise)))
    strong = 1 / (1 + np.exp(-(2.0 * (labels - 0.5) + noise)))
    same = paired_difference(users, labels, weak, weak)
    assert same.auc_delta == 0 and same.auc_ci95 == (0.0, 0.0) and same.logloss_ci95 == (0.0, 0.0)
    better = paired_difference(users, labels, weak, strong)
    assert better.users == 200 and better.resamples == 200
    assert better.auc_delta == pytest.approx(auc(labels, strong) - auc(labels, weak))
    assert 0 < better.auc_ci95[0] < better.auc_delta < better.auc_ci95[1]
    assert better.logloss_ci95[1] < 0  # strong's logloss is lower in every resample's interval
    assert paired_difference(users, labels, weak, strong) == better  # fixed seed: the same interval


# ---- the held-out events --------------------------------------------------------------------
def test_holdout_is_after_every_compared_models_cutoff(tmp_path: Path, held_out: pd.DataFrame) -> None:
    log = tmp_path / "events"
    write_partition(log, held_out.iloc[:100])
    write_partition(log, held_out.iloc[100:])
    ids = held_out["stream_id"].tolist()
    everything = select_holdout(log, [None, None])
    assert everything.rows == len(held_out) and everything.after_source == "none"
    cut = select_holdout(log, [ids[49], ids[9]])  # the later of the two cutoffs wins
    assert cut.after == ids[49] and cut.events["stream_id"].tolist() == ids[50:]
    newest = select_holdout(log, [ids[49]], explicit_after=ids[59], newest=7)
    assert newest.after_source == "--holdout-after" and newest.events["stream_id"].tolist() == ids[-7:]
    with pytest.raises(UserError, match="before .* the newest event a compared model trained on"):
        select_holdout(log, [ids[49]], explicit_after=ids[10])
    with pytest.raises(UserError, match="no held-out events"):
        select_holdout(log, [ids[-1]])
    with pytest.raises(UserError, match="not a Redis stream id"):
        select_holdout(log, [None], explicit_after="yesterday")


def test_a_named_holdout_is_exactly_those_events_and_never_one_a_model_learned_from(
        tmp_path: Path, held_out: pd.DataFrame, capsys: pytest.CaptureFixture[str]) -> None:
    from ratingctr.cli import main

    log = tmp_path / "events"
    write_partition(log, held_out)
    ids = held_out["stream_id"].to_numpy()
    named = frozenset(ids[::3])
    holdout = select_holdout_ids(log, named, {"candidate": ids[1::3], "serving": np.zeros(0, dtype=str)})
    assert set(holdout.events["stream_id"]) == named and holdout.after_source == "--holdout-ids"
    assert holdout.rows == len(named) and holdout.events["stream_id"].tolist() == [i for i in ids if i in named]
    with pytest.raises(UserError, match="the candidate model was trained on 1 of the"):
        select_holdout_ids(log, named, {"candidate": ids[:1]})
    with pytest.raises(UserError, match="1 of the .* held-out stream ids are not in the event log"):
        select_holdout_ids(log, named | {"1-0"}, {})
    with pytest.raises(UserError, match="names no events"):
        select_holdout_ids(log, frozenset(), {})
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("\n".join(sorted(named)))
    assert main(["promote", "--candidate", str(tmp_path), "--retriever", str(tmp_path), "--serving", str(tmp_path),
                 "--holdout", str(log), "--bundle-root", str(tmp_path / "root"), "--holdout-ids", str(ids_file),
                 "--holdout-after", ids[0]]) == 2
    assert "--holdout-ids names the held-out events itself" in capsys.readouterr().err


def test_scoring_matches_the_gateways_ranker_row_for_row(serving_bundle: Path, held_out: pd.DataFrame) -> None:
    from ratingctr.serving.ranker import load_ranker

    scored = score_events(serving_bundle, held_out)
    ranker = load_ranker(serving_bundle, warmup_calls=0)
    assert scored.version == ranker.version and scored.threshold == ranker.manifest.model.threshold
    assert np.array_equal(scored.labels, (held_out["rating"].to_numpy() >= scored.threshold).astype(float))
    newcomer, brand_new = held_out["user_id"].str.startswith("newcomer"), held_out["item_id"] == "brand-new"
    assert np.array_equal(~scored.user_known, newcomer.to_numpy())
    assert np.array_equal(~scored.item_known, brand_new.to_numpy())
    assert scored.cold_start_users == 4  # newcomer-0..3 sent user_fields, 4..7 did not
    for k in [0, 1, int(np.flatnonzero(newcomer)[0]), int(np.flatnonzero(newcomer)[-1]),
              int(np.flatnonzero(brand_new)[0])]:
        user, item = held_out["user_id"].iat[k], held_out["item_id"].iat[k]
        if user in ranker.user_index:
            row = ranker.user_fields[ranker.user_index[user]]
        else:  # as /v1/recommend builds it: from the fields the user's events carried, else unknown
            sent = held_out.loc[held_out["user_id"] == user, "user_fields"].dropna()
            row = ranker.cold_start_row(json.loads(sent.iat[-1]) if len(sent) else None)
        expected = ranker.score(row, ranker.item_indices([item]))["p_click"][0]
        assert scored.p_click[k] == pytest.approx(float(expected), abs=1e-6)
    assert not np.array_equal(ranker.cold_start_row(NEW_USER_FIELDS), ranker.user_fields[0])


def test_decide_reports_slices_and_identical_models_pass(serving_bundle: Path, held_out: pd.DataFrame) -> None:
    scored = score_events(serving_bundle, held_out)
    decision = decide(scored, scored)
    assert decision.promote and decision.paired.auc_delta == 0
    assert decision.slices["new_users"]["serving"].rows == 40 and decision.slices["new_items"]["serving"].rows == 20
    assert decision.serving.calibration_gap == pytest.approx(scored.p_click.mean() - scored.labels.mean())
    json.dumps(decision.to_dict(), allow_nan=False)  # the log line is strict JSON


# ---- the verb against a real gateway ----------------------------------------------------------
def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read().decode()


def _promotions(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.integration
def test_promote_swaps_a_better_candidate_and_refuses_a_spoiled_one(
        runs: dict[str, Path], tiny_retriever: Path, serving_bundle: Path, held_out: pd.DataFrame, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from ratingctr.cli import main
    from ratingctr.serving.process import running_gateway

    root, events = tmp_path / "bundles", tmp_path / "events"
    shutil.copytree(serving_bundle, root / "main-v0")
    write_partition(events, held_out)
    token_file = tmp_path / "admin-token"
    token_file.write_text(TOKEN + "\n")
    monkeypatch.delenv("RATINGCTR_ADMIN_TOKEN", raising=False)
    log = tmp_path / "state" / "promotions.jsonl"
    env = {"RATINGCTR_ADMIN_TOKEN": TOKEN, "RATINGCTR_BUNDLE_ROOT": str(root)}
    with running_gateway({"main": root / "main-v0"}, env=env) as gw:
        v0 = json.loads(_get(gw.url + "/readyz"))["models"]["main"]["version"]

        def promote(candidate: str, *extra: str) -> int:
            return main(["promote", "--candidate", str(runs[candidate]), "--retriever", str(tiny_retriever),
                         "--serving", gw.url, "--holdout", str(events), "--bundle-root", str(root),
                         "--gateway", gw.url, "--admin-token-file", str(token_file), "--log", str(log), *extra])

        # a candidate trained on shuffled labels: refused, root and gateway unchanged
        assert promote("spoiled") == 3
        spoiled = _promotions(log)[-1]
        assert spoiled["decision"] == "refused" and spoiled["serving"]["version"] == v0
        gate = spoiled["gate"]
        paired = gate["paired"]
        assert gate["candidate"]["auc"] < gate["serving"]["auc"] - 0.05
        assert paired["auc_delta"] == pytest.approx(gate["candidate"]["auc"] - gate["serving"]["auc"])
        assert paired["auc_ci95"][0] < paired["auc_delta"] < paired["auc_ci95"][1]
        assert paired["users"] == held_out["user_id"].nunique()
        assert spoiled["reasons"][0].startswith(f"AUC {gate['candidate']['auc']:.4f} is more than 0.002 below")
        assert spoiled["holdout"]["rows"] == len(held_out) and spoiled["candidate"]["path"] is None
        assert sorted(p.name for p in root.iterdir()) == ["main-v0"]
        assert json.loads(_get(gw.url + "/readyz"))["models"]["main"]["version"] == v0
        assert "refused:" in capsys.readouterr().out

        # a dry run of the better one passes and changes nothing
        assert promote("better", "--dry-run") == 0
        assert _promotions(log)[-1]["decision"] == "passed_dry_run"
        assert sorted(p.name for p in root.iterdir()) == ["main-v0"]

        # the better one: exported into the root, reloaded, counted
        assert promote("better") == 0
        promoted = _promotions(log)[-1]
        gate = promoted["gate"]
        assert promoted["decision"] == "promoted" and promoted["reasons"] == []
        assert gate["candidate"]["auc"] > gate["serving"]["auc"]
        assert gate["candidate"]["logloss"] < gate["serving"]["logloss"]
        v1 = promoted["candidate"]["version"]
        assert v1 != v0 and promoted["candidate"]["path"] == str(root / f"main-{v1}")
        assert sorted(p.name for p in root.iterdir()) == sorted(["main-v0", f"main-{v1}"])
        ready = json.loads(_get(gw.url + "/readyz"))["models"]["main"]
        assert ready["version"] == v1 and Path(ready["path"]) == (root / f"main-{v1}").resolve()
        assert promoted["gateways"][0]["ok"] and promoted["gateways"][0]["previous_version"] == v0
        assert 'ratingctr_promotions_total{model="main"} 1.0' in _get(gw.url + "/metrics")

        # the spoiled one again, now against the promoted bundle: refused, v1 keeps serving
        assert promote("spoiled") == 3
        assert _promotions(log)[-1]["serving"]["version"] == v1
        assert json.loads(_get(gw.url + "/readyz"))["models"]["main"]["version"] == v1
        assert len(_promotions(log)) == 4

        # the same bundle again with a second gateway that is down: the existing version directory is
        # reused, the live gateway reloads it, the dead one is logged as a failed reload (exit 4)
        from ratingctr.processes import free_port

        dead = f"http://127.0.0.1:{free_port()}"
        assert promote("better", "--gateway", dead) == 4
        failed = _promotions(log)[-1]
        assert failed["decision"] == "reload_failed" and failed["candidate"]["path"] == str(root / f"main-{v1}")
        assert [g["ok"] for g in failed["gateways"]] == [True, False] and dead in failed["reasons"][-1]
        assert 'ratingctr_promotions_total{model="main"} 2.0' in _get(gw.url + "/metrics")
        assert sorted(p.name for p in root.iterdir()) == sorted(["main-v0", f"main-{v1}"])

        # usage errors: exit 2 before any export
        assert promote("better", "--holdout-after", "not-an-id") == 2
        capsys.readouterr()
        assert promote("better", "--holdout-newest", "1") == 2  # one event: a single class
        assert "AUC is undefined, nothing to judge on" in capsys.readouterr().err
        assert promote("better", "--holdout-after", held_out["stream_id"].iat[-1]) == 2  # nothing after it
        assert "no held-out events" in capsys.readouterr().err
        assert main(["promote", "--candidate", str(runs["better"]), "--retriever", str(tiny_retriever),
                     "--serving", gw.url, "--holdout", str(events), "--bundle-root", str(root),
                     "--gateway", gw.url]) == 2  # no admin token anywhere
        assert len(_promotions(log)) == 5
        assert sorted(p.name for p in root.iterdir()) == sorted(["main-v0", f"main-{v1}"])
