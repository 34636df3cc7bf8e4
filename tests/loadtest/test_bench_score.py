"""`ratingctr bench score` end to end (own module: one TorchServe at a time per machine)."""
import json
import shutil

import pytest

pytestmark = pytest.mark.skipif(shutil.which("java") is None, reason="TorchServe needs java (JDK 17) on PATH")


def test_bench_score_runs_both_heads_and_torchserve(tiny_bundles: dict, tmp_path) -> None:
    import subprocess
    import sys

    out = tmp_path / "score.json"
    proc = subprocess.run([sys.executable, "-c", "import sys; from ratingctr.cli import main; sys.exit(main())",
                           "bench", "score", "--binary", str(tiny_bundles["binary"]), "--rating",
                           str(tiny_bundles["rating"]), "--candidates", "10,50", "--calls", "30", "--rounds", "2",
                           "--torchserve", "--out", str(out)], capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(out.read_text())["rows"]
    assert [r["candidates"] for r in rows] == [10, 50]
    for r in rows:
        assert r["binary_calls"] == r["rating_calls"] == 60
        assert r["rating_over_binary_p50"] == r["rating_ms_p50"] / r["binary_ms_p50"]
        assert r["torchserve_ms_p50"] > 0
    assert "| 50 |" in proc.stdout and "TorchServe/ORT" in proc.stdout
