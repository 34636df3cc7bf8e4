"""``ratingctr loop --once`` end to end: a real gateway and embedded Redis, events through the
HTTP API, pull → retrain → gate → reload through ``/v1/admin/reload``."""
from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from ratingctr.cli import main
from ratingctr.online.loop import holdout_cutoff
from ratingctr.online.loop_command import parse_every
from ratingctr.errors import UserError

TOKEN = "loop-admin-token"


def _post(url: str, path: str, body: dict, token: str | None = None) -> dict:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    request = urllib.request.Request(url + path, data=json.dumps(body).encode(), headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def _get(url: str, path: str) -> str:
    with urllib.request.urlopen(url + path, timeout=30) as response:
        return response.read().decode()


def test_the_holdout_cutoff_keeps_the_newest_share_for_the_gate() -> None:
    ids = [f"{i}-0" for i in range(1, 21)]
    assert holdout_cutoff(ids, 0.1) == "18-0"  # 2 of 20 held out
    assert holdout_cutoff(ids, 0.0) == "19-0"  # at least one event is always held out
    assert holdout_cutoff(ids[:1], 0.5) == ""  # a single event: nothing left to train on


def test_every_takes_durations_and_refuses_anything_else() -> None:
    assert [parse_every(x) for x in ("90s", "15m", "1h", "1.5d")] == [90, 900, 3600, 129600]
    for bad in ("1 hour", "0h", "-1h", "h", ""):
        with pytest.raises(UserError):
            parse_every(bad)


@pytest.mark.integration
def test_loop_once_promotes_a_retrained_bundle_and_a_cold_item_becomes_recommendable(
        tiny_atomic: Path, tiny_retriever: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from conftest import train_tiny_ranker

    from ratingctr.export.build import export_bundle
    from ratingctr.serving.process import running_gateway

    root, redis_dir, events_dir = tmp_path / "bundles", tmp_path / "redis", tmp_path / "events"
    run = train_tiny_ranker(tiny_atomic, tmp_path / "run")
    export_bundle(run, tiny_retriever, root / "main-v0")
    env = {"RATINGCTR_ADMIN_TOKEN": TOKEN, "RATINGCTR_BUNDLE_ROOT": str(root), "RATINGCTR_REDIS_DIR": str(redis_dir)}
    monkeypatch.setenv("RATINGCTR_ADMIN_TOKEN", TOKEN)  # read by `ratingctr promote`
    rng = np.random.default_rng(3)
    with running_gateway({"main": root / "main-v0"}, env=env) as gw:
        before = json.loads(_get(gw.url, "/readyz"))["models"]["main"]["version"]
        # 40 known users love a brand-new item, and keep rating known ones; one new user arrives
        events = [{"user_id": f"u{u}", "item_id": "fresh-item", "rating": 5, "event_id": f"fresh-{u}",
                   **({"item_fields": {"release_year": "1999", "genre": ["Drama"]}} if u == 0 else {})}
                  for u in range(40)]
        events += [{"user_id": f"u{u}", "item_id": f"i{i}", "rating": int(rng.integers(1, 6)), "event_id": f"e-{k}"}
                   for k, (u, i) in enumerate(zip(rng.integers(0, 60, 300), rng.integers(0, 80, 300)))]
        events += [{"user_id": "newcomer", "item_id": "i3", "rating": 4, "event_id": "n-1",
                    "user_fields": {"age": "30", "gender": "F", "occupation": "a"}}]
        for start in range(0, len(events), 100):
            assert _post(gw.url, "/v1/events", {"events": events[start:start + 100]})["accepted"] > 0
        status = main(["loop", "--gateway", gw.url, "--run", str(run), "--retriever", str(tiny_retriever),
                       "--bundle-root", str(root), "--events", str(events_dir), "--redis-dir", str(redis_dir),
                       "--once", "--epochs", "1", "--retriever-epochs", "2", "--min-new-events", "10",
                       "--max-auc-drop", "1", "--max-logloss-rise", "1"])
        assert status == 0
        state = json.loads((root / "loop" / "loop.json").read_text())
        assert state["cycle"] == 1 and state["history"][-1]["decision"] == "promoted"
        ready = json.loads(_get(gw.url, "/readyz"))["models"]["main"]
        assert ready["version"] != before and Path(ready["path"]).resolve().parent == root.resolve()
        promotions = [json.loads(line) for line in (root / "loop" / "promotions.jsonl").read_text().splitlines()]
        assert promotions[-1]["decision"] == "promoted"
        # the gate judged each user's newest events (the default), which neither run trained on
        from ratingctr.training.data.event_log import newest_per_user, read_event_log
        from ratingctr.training.data.stored import trained_stream_ids

        plan = json.loads((root / "loop" / "cycle-1" / "plan.json").read_text())
        held = set((root / "loop" / "cycle-1" / "holdout-ids.txt").read_text().split())
        log = read_event_log(events_dir)
        assert plan["holdout_by"] == "user" and plan["holdout_events"] == len(held)
        assert held == set(log["stream_id"][newest_per_user(log, 0.1)])
        assert plan["holdout_users"] == log.loc[log["stream_id"].isin(held), "user_id"].nunique() > 20
        assert promotions[-1]["holdout"]["after_source"] == "--holdout-ids"
        assert promotions[-1]["holdout"]["rows"] == len(held)
        for part in ("ranker", "retriever"):
            assert not held & set(trained_stream_ids(root / "loop" / "cycle-1" / part).tolist())
        assert 'ratingctr_promotions_total{model="main"} 1.0' in _get(gw.url, "/metrics")
        # the cold item is in the served catalogue one cycle after its first events
        served = _post(gw.url, "/v1/recommend", {"user_id": "u55", "k": 1000})
        assert "fresh-item" in {item["item_id"] for item in served["items"]}
        # and in a top-10 at once, through the fresh-item slot: the last place, named in the response
        from ratingctr.bundle import read_manifest

        before_items = set(json.loads((root / "main-v0" / "vocab.json").read_text())["item_id"])
        assert read_manifest(Path(ready["path"])).ranking.fresh_slots == 1
        top10 = _post(gw.url, "/v1/recommend", {"user_id": "u55", "k": 10})
        listed = [item["item_id"] for item in top10["items"]]
        assert "fresh-item" in listed  # by the blend (40 five-star ratings) or, else, by the slot
        assert top10["fresh_item_ids"] == ([] if "fresh-item" in listed[:9] else ["fresh-item"])
        assert set(top10["fresh_item_ids"]) <= set(listed[-1:]) and not set(top10["fresh_item_ids"]) & before_items
        assert _post(gw.url, "/v1/recommend", {"user_id": "u55", "k": 4})["fresh_item_ids"] == []
        # fewer new events than the minimum (only the held-out slice is new): the cycle is skipped
        assert main(["loop", "--gateway", gw.url, "--run", str(run), "--retriever", str(tiny_retriever),
                     "--bundle-root", str(root), "--events", str(events_dir), "--redis-dir", str(redis_dir),
                     "--once", "--min-new-events", "1000"]) == 0
        assert json.loads((root / "loop" / "loop.json").read_text())["cycle"] == 1
        assert json.loads(_get(gw.url, "/readyz"))["models"]["main"]["version"] == ready["version"]


def test_bad_loop_and_experiment_flags_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["loop", "--gateway", "http://127.0.0.1:9", "--run", str(tmp_path), "--retriever", str(tmp_path),
            "--bundle-root", str(tmp_path), "--events", str(tmp_path / "events")]
    assert main([*base, "--once"]) == 2
    assert "give --redis-url URL or --redis-dir DIR" in capsys.readouterr().err
    assert main([*base, "--every", "soon", "--redis-dir", str(tmp_path)]) == 2
    assert "--every takes a positive duration" in capsys.readouterr().err
    for flags in (["--chunks", "0"], ["--initial-share", "1.0"]):
        assert main(["experiment", "online", *flags, "--work", str(tmp_path / "w"), "--out", str(tmp_path / "o")]) == 2
        assert "--chunks must be at least 1" in capsys.readouterr().err
    assert main(["experiment", "online", "--holdout-by", "random", "--work", str(tmp_path / "w"),
                 "--out", str(tmp_path / "o")]) == 2
    assert "--holdout-by must be one of user, time, got 'random'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:  # argparse's choices
        main([*base, "--once", "--redis-dir", str(tmp_path), "--holdout-by", "random"])
    assert exited.value.code == 2 and "invalid choice: 'random'" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()  # refused before anything was written
