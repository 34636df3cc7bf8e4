import json
import subprocess
import sys
from pathlib import Path


def test_bench_train_prints_a_table_and_json(ml100k_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-c", "import sys; from ratingctr.cli import main; sys.exit(main())",
                           "bench", "train", "--models", "WideDeep", "--runs", "1", "--epochs", "1",
                           "--data-dir", str(ml100k_root), "--out", str(out)],
                          capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    assert "| WideDeep |" in proc.stdout and "rating/binary" in proc.stdout
    row = json.loads(out.read_text())["table"][0]
    assert row["binary_s_per_epoch"] > 0 and row["rating_s_per_epoch"] > 0
    assert row["rating_over_binary"] == row["rating_s_per_epoch"] / row["binary_s_per_epoch"]
    assert row["binary_peak_rss_mb"] > 100  # torch + data really were loaded
