"""`ratingctr loadtest` end to end: a real gateway subprocess (embedded Redis), real headless
Locust runs of a few seconds, and the report files checked against each other."""
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from helpers import PATIENT_REDIS, run_cli

from ratingctr.loadtest.harness import PERCENTILES, exact_percentile, locust_rounded


def _loadtest(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    """One ``ratingctr loadtest`` run.  Rounds last at least 3 s: Locust's run time starts at spawn,
    and on a busy machine its first request can come 2 s later."""
    proc = run_cli("loadtest", *args, timeout=timeout, env={**os.environ, **PATIENT_REDIS})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def _locust_percentile(times: np.ndarray, q: float) -> float:
    """What Locust's CSV shows: its order statistic over whole-ms (or coarser) buckets."""
    rounded = np.array([locust_rounded(t) for t in times])
    return float(np.sort(rounded)[min(rounded.size - 1, int(rounded.size * q))])


@pytest.fixture(scope="module")
def ab_report(tiny_bundles: dict, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, str]:
    """Two interleaved rounds of 3 s, with two forked Locust processes (their samples must add up)."""
    out = tmp_path_factory.mktemp("loadtest") / "report"
    proc = _loadtest("--a", f"binary={tiny_bundles['binary']}", "--b", f"rating={tiny_bundles['rating']}",
                     "--users", "4", "--spawn-rate", "4", "--duration", "3", "--rounds", "2", "--warmup", "1",
                     "--k-values", "5,10,20", "--events-share", "0.1", "--locust-processes", "2", "--out", str(out))
    return out, json.loads((out / "report.json").read_text()), proc.stdout


def test_rounds_are_interleaved_and_error_free(ab_report) -> None:
    _, report, stdout = ab_report
    assert [(r["round"], r["variant"], r["model"]) for r in report["rounds"]] == \
        [(1, "A", "binary"), (1, "B", "rating"), (2, "A", "binary"), (2, "B", "rating")]
    assert report["failures"] == 0 == sum(r["failures"] for r in report["rounds"])
    assert report["requests"] == sum(r["requests"] for r in report["rounds"]) > 0
    assert [w["variant"] for w in report["warmup"]] == ["A", "B"]
    assert report["variants"]["A"]["head"] == "binary" and report["variants"]["B"]["head"] == "rating"
    assert report["verdict"]["no_failures"] is True
    assert "0 failed requests" in stdout
    events = sum(r["by_name"].get("/v1/events", {}).get("requests", 0) for r in report["rounds"])
    assert events > 0, "the traffic includes /v1/events writes"


def test_round_figures_agree_with_locust_csv_and_samples(ab_report) -> None:
    out, report, _ = ab_report
    for r in report["rounds"]:
        run = out / "runs" / f"round{r['round']}-{r['variant']}"
        assert r["locust_processes"] == 2 and not (run / "samples").exists()  # merged, then dropped
        times = np.load(run / "primary_ms.npy")
        assert times.size == r["primary_requests"] == r["csv"]["requests"] == r["by_name"]["/v1/recommend"]["requests"]
        assert sum(v["requests"] for v in r["by_name"].values()) == r["requests"]
        for key, q in PERCENTILES.items():
            assert r[key] == exact_percentile(times, q)
            assert r["csv"][key] == _locust_percentile(times, q), (r["round"], r["variant"], key)
        assert r["p50"] <= r["p95"] <= r["p99"]
        # The gateway's own histograms saw the same requests (plus those in flight when Locust stopped).
        assert r["csv"]["requests"] <= r["server"]["requests"] <= r["csv"]["requests"] + 4
        assert set(r["server"]["stages_ms"]) >= {"redis", "faiss", "onnx"}
        assert 0 < r["server"]["stages_ms"]["onnx"] < r["server"]["mean_ms"] < r["p99"]
        # Locust's req/s is requests over the span between the first and the last request.
        assert 0.5 * r["requests"] / 3 <= r["rps"] <= 1.6 * r["requests"] / 3


def test_ratios_are_b_over_a_per_round(ab_report) -> None:
    _, report, _ = ab_report
    rounds = {(r["round"], r["variant"]): r for r in report["rounds"]}
    figure = {"server_mean": lambda r: r["server"]["mean_ms"], "server_onnx": lambda r: r["server"]["stages_ms"]["onnx"]}
    for key in ("p50", "p95", "p99", "rps", "server_mean", "server_onnx"):
        get = figure.get(key, lambda r: r[key])
        per_round = [get(rounds[(i, "B")]) / get(rounds[(i, "A")]) for i in (1, 2)]
        ratio = report["ratio"][key]
        assert ratio["rounds"] == pytest.approx(per_round)
        assert ratio["min"] == min(per_round) and ratio["max"] == max(per_round)
        assert ratio["median"] == pytest.approx(float(np.median(per_round)))
    checks = report["verdict"]["ratios"]
    assert checks["p50"]["met"] == (report["ratio"]["p50"]["median"] <= 1.03)
    assert checks["p99"]["met"] == (report["ratio"]["p99"]["median"] <= 1.05)


def test_markdown_and_plot_show_the_same_numbers(ab_report) -> None:
    out, report, _ = ab_report
    md = (out / "report.md").read_text()
    for r in report["rounds"]:
        assert (f"| {r['round']} | {r['variant']} | {r['model']} | {r['requests']} | {r['failures']} | "
                f"{r['rps']:.1f} | {r['p50']:.2f} | {r['p95']:.2f} | {r['p99']:.2f} | "
                f"{r['server']['mean_ms']:.3f} | {r['server']['stages_ms']['onnx']:.3f} |") in md
    p50 = report["ratio"]["p50"]
    assert f"| p50 | {p50['median']:.3f} | {p50['min']:.3f} | {p50['max']:.3f} |" in md
    assert f"B/A = {p50['median']:.3f} at p50 (range {p50['min']:.3f}–{p50['max']:.3f})" in md
    assert f"{report['failures']} failed requests of {report['requests']}" in md
    png = (out / "latency.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_a_wrong_answer_is_a_counted_failure_against_a_running_host(tiny_bundles: dict, tmp_path: Path) -> None:
    """--host loads a gateway someone else runs; asking it for a model it lacks must fail every recommend."""
    from ratingctr.serving.process import running_gateway

    with running_gateway({"binary": tiny_bundles["binary"]}, env=PATIENT_REDIS) as gateway:
        _loadtest("--host", gateway.url, "--a", f"binary={tiny_bundles['binary']}",
                  "--b", f"absent={tiny_bundles['rating']}", "--users", "2", "--spawn-rate", "2", "--duration", "4",
                  "--rounds", "1", "--warmup", "0", "--out", str(tmp_path))
    report = json.loads((tmp_path / "report.json").read_text())
    a, b = report["rounds"]
    assert a["failures"] == 0 and a["host"] == gateway.url and a["server"]["requests"] >= a["csv"]["requests"]
    assert b["server"] is None  # the gateway served no recommendation for the absent model
    assert b["by_name"]["/v1/recommend"]["failures"] == b["by_name"]["/v1/recommend"]["requests"] > 0
    assert report["failures"] == b["failures"] and report["verdict"]["met"] is False
    assert any(m["error"].startswith("status 4") for m in b["failure_messages"])
    assert "Failures:" in (tmp_path / "report.md").read_text()


@pytest.mark.java
@pytest.mark.skipif(shutil.which("java") is None, reason="TorchServe needs java (JDK 17) on PATH")
def test_torchserve_target_drives_the_same_traffic_at_predictions(tiny_bundles: dict, tmp_path: Path) -> None:
    rating = tiny_bundles["rating"]  # the tiny binary bundle has no ranker.mar; two archives of one bundle
    _loadtest("--target", "torchserve", "--a", f"first={rating}", "--b", f"second={rating}", "--users", "2",
              "--spawn-rate", "2", "--duration", "4", "--rounds", "1", "--warmup", "0", "--candidates", "30",
              "--out", str(tmp_path), timeout=400)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["target"] == "torchserve" and report["failures"] == 0
    assert [r["primary"] for r in report["rounds"]] == ["/predictions", "/predictions"]
    assert all(r["primary_requests"] > 0 for r in report["rounds"])
    assert report["rounds"][0]["host"] != report["rounds"][1]["host"]  # one TorchServe per bundle
    assert all(r["server"] is None for r in report["rounds"]) and "server_mean" not in report["ratio"]


def test_bad_arguments_are_one_error_line(tiny_bundles: dict, tmp_path: Path) -> None:
    for args, message in ((["--a", f"x={tiny_bundles['binary']}", "--b", f"x={tiny_bundles['rating']}"], "different"),
                          (["--a", f"x={tmp_path}", "--b", f"y={tiny_bundles['rating']}"], "not a bundle"),
                          (["--a", f"x={tiny_bundles['binary']}", "--b", f"y={tiny_bundles['rating']}",
                            "--k-values", "0,5"], "k values")):
        proc = run_cli("loadtest", *args, "--out", str(tmp_path / "r"), timeout=60)
        assert proc.returncode == 2 and proc.stderr.startswith("error:") and message in proc.stderr, proc.stderr
    assert not (tmp_path / "r").exists()
