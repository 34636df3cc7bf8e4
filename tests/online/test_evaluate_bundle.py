"""``evaluate-bundle`` on real tiny bundles: the lists are the serving path's, seen items never
appear, test items can, and the sweep and comparisons hold together."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ratingctr.cli import main
from ratingctr.online.evaluate_bundle import EvaluateConfig, _load_data, _load_rankers, evaluate, serve_lists


@pytest.fixture(scope="module")
def served(tiny_bundles: dict):
    config = EvaluateConfig(bundles=(tiny_bundles["binary"], tiny_bundles["rating"]), candidates=20,
                            sweep=(20, 40, 10_000))
    rankers = _load_rankers(config.bundles, config.candidates)
    data = _load_data(rankers[0], config)
    return rankers, data, serve_lists(rankers, data, config)


def test_lists_are_the_serving_path_and_never_hold_seen_items(served) -> None:
    from ratingctr.training.data.encode import TEST, TRAIN, VALID

    rankers, data, result = served
    users = result.relevant.users
    known = np.concatenate([data.rows(TRAIN), data.rows(VALID)])
    seen_keys = set((data.user[known] * (data.n_items + 1) + data.item[known]).tolist())
    for name, lists in result.lists.items():
        keys = users[:, None] * (data.n_items + 1) + lists
        assert not (set(keys[lists > 0].tolist()) & seen_keys), name
    test = data.rows(TEST)
    test_keys = set((data.user[test] * (data.n_items + 1) + data.item[test]).tolist())
    listed = result.lists["retriever order"]
    assert set((users[:, None] * (data.n_items + 1) + listed)[listed > 0].tolist()) & test_keys  # recommendable
    # one user by hand through the Ranker, as a request would run it
    ranker, user = rankers[1], int(users[0])
    seen = np.unique(data.item[known][data.user[known] == user])
    candidates = ranker.retrieve(user, seen, 20)
    top = ranker.rank(ranker.user_fields[user], candidates, min(20, len(candidates)), {}, user).items
    got = result.lists[f"retriever + {ranker.name} (rating head) @20"][0]
    assert got[:len(top)].tolist() == top.tolist()
    assert result.lists["most popular (unseen)"][0].tolist() == \
        [i for i in ranker.popular.tolist() if i not in set(seen.tolist())][:20]


def test_every_unseen_item_is_a_candidate_when_n_covers_the_catalogue(served) -> None:
    _, data, result = served
    everything = result.retrieved[10_000]
    hits = result.relevant.hits(everything).sum(axis=1)
    assert (hits == result.relevant.counts).all()  # retriever recall@N = 1 once N ≥ catalogue
    recall = [float((result.relevant.hits(result.retrieved[n]).sum(1) / result.relevant.counts).mean())
              for n in (20, 40, 10_000)]
    assert recall[0] <= recall[1] <= recall[2] == 1.0


def test_cli_writes_the_report_with_both_heads_compared(tiny_bundles: dict, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    assert main(["evaluate-bundle", str(tiny_bundles["binary"]), str(tiny_bundles["rating"]), "--candidates", "20",
                 "--sweep", "20,40", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["users"] > 20 and results["catalogue"] > 20
    assert "rating head − binary head" in results["comparisons"]
    for name, metrics in results["lists"].items():
        for k, m in metrics.items():
            assert 0.0 <= m["ndcg"]["low"] <= m["ndcg"]["mean"] <= m["ndcg"]["high"] or m["ndcg"]["mean"] == 0, name
            assert 0.0 <= m["recall"]["mean"] <= 1.0 and 0.0 < m["coverage"] <= 1.0
    assert [r["candidates"] for r in results["sweep"]] == [20, 40]
    report = (out / "report.md").read_text()
    assert "## Paired differences in NDCG@10" in report and "retriever order" in report
    assert (out / "metric_vs_k.png").stat().st_size > 1000 and (out / "metric_vs_candidates.png").is_file()


@pytest.mark.integration
def test_latency_is_measured_against_a_real_gateway_per_candidate_count(tiny_bundles: dict) -> None:
    results = evaluate(EvaluateConfig(bundles=(tiny_bundles["rating"],), candidates=20, sweep=(20, 40),
                                      latency_seconds=1.0, max_users=10))
    assert results["users"] == 10
    for row in results["sweep"]:
        latency = row[f"latency {Path(tiny_bundles['rating']).name}"]
        assert latency["requests"] > 10 and 0 < latency["p50_ms"] <= latency["p99_ms"]


def test_too_few_candidates_and_a_missing_bundle_are_one_line_errors(tiny_bundles: dict, tmp_path: Path,
                                                                         capsys) -> None:
    assert main(["evaluate-bundle", str(tiny_bundles["rating"]), "--sweep", "5"]) == 2
    assert "at least 20" in capsys.readouterr().err
    assert main(["evaluate-bundle", str(tmp_path / "absent")]) == 2
    assert capsys.readouterr().err.strip()
    for bad in ("-1", "nan", "inf", "1,x"):  # the weight sweep: finite numbers >= 0, refused before any work
        assert main(["evaluate-bundle", str(tiny_bundles["rating"]), f"--weights={bad}"]) == 2
        assert "--weights takes" in capsys.readouterr().err


def test_a_ranker_run_on_other_data_is_refused(tiny_bundles: dict, tiny_atomic: Path, tmp_path: Path,
                                               capsys) -> None:
    """A run on the same ratings with another split seed has the bundle's vocabularies, but its test
    rows may be the bundle's training rows: refused, not silently scored."""
    other = tmp_path / "seed5"
    assert main(["train", "--model", "DCNV2", "--dataset", "atomic", "--data-dir", str(tiny_atomic), "--k-core", "3",
                 "--seed", "5", "--epochs", "1", "--no-progress", "--embedding_dim=8", "--out", str(other)]) == 0
    capsys.readouterr()
    assert main(["evaluate-bundle", str(tiny_bundles["rating"]), "--ranker-run", str(other)]) == 2
    assert "is not the run bundle" in capsys.readouterr().err
