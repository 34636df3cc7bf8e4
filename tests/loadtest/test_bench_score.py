"""``ratingctr bench score``: it must attribute time to the bundle that spent it, and measure like with like."""
from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import pytest
from helpers import run_cli

from ratingctr.loadtest.bench_score import run_bench_score
from ratingctr.loadtest.config import ScoreBenchConfig

DELAY_S = 0.02  # long beside scoring a tiny bundle, and beside a busy machine's late wake-ups


class _Slowed:
    """A real ranker whose every scoring call first sleeps ``DELAY_S`` (a known extra cost)."""

    def __init__(self, ranker) -> None:
        self._ranker = ranker

    def __getattr__(self, name: str):
        return getattr(self._ranker, name)

    def predict(self, fields):
        time.sleep(DELAY_S)
        return self._ranker.predict(fields)


def _bench(config: ScoreBenchConfig) -> list[dict]:
    assert run_bench_score(config) == 0
    return json.loads(Path(config.out).read_text())["rows"]


def test_a_known_delay_in_one_bundle_is_measured_on_that_side(tiny_bundles: dict, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from ratingctr.serving import ranker as ranker_module

    real = ranker_module.load_ranker
    rating = Path(tiny_bundles["rating"])
    monkeypatch.setattr(ranker_module, "load_ranker", lambda path, *a, **k: _Slowed(real(path, *a, **k))
                        if Path(path) == rating else real(path, *a, **k))
    rows = _bench(ScoreBenchConfig(binary=tiny_bundles["binary"], rating=rating, candidates=(10, 50), calls=20,
                                   rounds=2, out=tmp_path / "score.json"))
    assert [r["candidates"] for r in rows] == [10, 50]
    for r in rows:
        assert r["binary_calls"] == r["rating_calls"] == 40  # every call of every round is a sample
        extra_ms = r["rating_ms_p50"] - r["binary_ms_p50"]
        # sleep() never returns early (a late wake-up on a busy machine costs a few ms); counted twice,
        # or on the wrong side, the delay would fall outside these bounds
        assert DELAY_S * 1000 * 0.95 <= extra_ms <= DELAY_S * 1000 * 1.5, r
        assert r["binary_ms_p50"] <= r["binary_ms_p99"] and r["rating_ms_p50"] <= r["rating_ms_p99"]


def test_one_bundle_against_itself_measures_a_ratio_near_one(tiny_bundles: dict, tmp_path: Path) -> None:
    """Interleaved rounds give identical work identical medians, within the noise of a shared machine."""
    same = tiny_bundles["rating"]
    rows = _bench(ScoreBenchConfig(binary=same, rating=same, candidates=(200,), calls=100, rounds=3,
                                   out=tmp_path / "score.json"))
    assert 0.6 < rows[0]["rating_over_binary_p50"] < 1.6, rows[0]


@pytest.mark.integration
@pytest.mark.java
@pytest.mark.skipif(shutil.which("java") is None, reason="TorchServe needs java (JDK 17) on PATH")
def test_bench_score_cli_with_torchserve_prints_what_it_writes(tiny_bundles: dict, tmp_path: Path) -> None:
    out = tmp_path / "score.json"
    proc = run_cli("bench", "score", "--binary", str(tiny_bundles["binary"]), "--rating", str(tiny_bundles["rating"]),
                   "--candidates", "10,50", "--calls", "30", "--rounds", "2", "--torchserve", "--out", str(out),
                   timeout=400)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(out.read_text())["rows"]
    assert [r["candidates"] for r in rows] == [10, 50]
    printed = [line for line in proc.stdout.splitlines() if re.match(r"^\| \d+ \|", line)]
    for r, line in zip(rows, printed, strict=True):
        assert line == (f"| {r['candidates']} | {r['binary_ms_p50']:.3f} | {r['rating_ms_p50']:.3f} | "
                        f"{r['rating_over_binary_p50']:.3f} | {r['binary_ms_p99']:.3f} | {r['rating_ms_p99']:.3f} | "
                        f"{r['torchserve_ms_p50']:.3f} | {r['torchserve_over_ort_p50']:.1f}x |")
        assert r["binary_calls"] == r["rating_calls"] == 60 and r["torchserve_calls"] == 30
        # TorchServe answers the same rows over HTTP with JSON both ways: it cannot beat in-process ORT
        assert r["torchserve_ms_p50"] > r["rating_ms_p50"]
