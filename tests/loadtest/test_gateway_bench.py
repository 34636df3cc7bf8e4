"""``ratingctr bench gateway`` end to end on a tiny bundle, with a real TorchServe beside it."""
from __future__ import annotations

import json
import subprocess
import sys

from ratingctr.loadtest.http_load import encode_post, run_load
from ratingctr.serving.process import running_gateway


def test_load_generator_counts_statuses_and_latencies(tiny_bundles) -> None:
    with running_gateway({"rating": tiny_bundles["rating"]}) as gw:
        port = int(gw.url.rsplit(":", 1)[1])
        good = encode_post("127.0.0.1", "/v1/recommend", b'{"user_id": "u1", "k": 5}')
        bad = encode_post("127.0.0.1", "/v1/recommend", b'{"user_id": "u1", "k": 0}')
        result = run_load("127.0.0.1", port, [good, bad], concurrency=2, seconds=1.0)
    summary = result.summary()
    assert summary["requests"] == result.statuses[200] + result.statuses[422] > 10
    assert abs(result.statuses[200] - result.statuses[422]) <= 2  # round-robin over the two requests
    assert summary["errors"] == 0 and summary["non_2xx"] == result.statuses[422] == summary["failed"]
    assert 0 < summary["p50_ms"] <= summary["p95_ms"] <= summary["p99_ms"] <= summary["max_ms"]


def test_bench_gateway_writes_consistent_json_and_markdown(tiny_bundles, tmp_path) -> None:
    out = tmp_path / "gateway"
    cmd = [sys.executable, "-m", "ratingctr.cli", "bench", "gateway", "--bundle", str(tiny_bundles["rating"]),
           "--reload-bundle", str(tiny_bundles["binary"]), "--clients", "1,4", "--seconds", "0.6", "--rounds", "2",
           "--warmup", "0.3", "--reloads", "4", "--reload-interval", "0.2", "--candidates", "50", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=400, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.with_suffix(".json").read_text())
    for target in ("gateway", "torchserve"):
        for clients in ("1", "4"):
            row = results[target][clients]
            assert len(row["rounds"]) == 2 and row["failed"] == 0 and row["requests"] > 0
            assert row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"]
            assert row["p50_ms_min"] <= row["p50_ms"] <= row["p50_ms_max"]
    reload = results["reload"]
    assert reload["during"]["failed"] == reload["during"]["errors"] + reload["during"]["non_2xx"] == 0
    assert abs(reload["p99_ratio"] - reload["during"]["p99_ms"] / reload["steady"]["p99_ms"]) < 1e-9
    verdicts = results["verdicts"]
    ratio = results["gateway"]["1"]["p50_ms"] / results["torchserve"]["1"]["p50_ms"]
    assert abs(verdicts["gateway_over_torchserve_p50"]["value"] - ratio) < 1e-9
    markdown = out.with_suffix(".md").read_text()
    assert f"| 1 | {results['gateway']['1']['p50_ms']:.3f} |" in markdown
    assert "failed requests 0" in markdown
