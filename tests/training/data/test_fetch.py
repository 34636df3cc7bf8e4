import os
import zipfile
from pathlib import Path

import pytest
from helpers import run_cli

from ratingctr.errors import UserError
from ratingctr.training.data import fetch


def test_fetch_extracts_only_the_three_atomic_files(ml100k_root: Path) -> None:
    target = ml100k_root / "ml-100k"
    assert sorted(p.name for p in target.iterdir()) == ["ml-100k.inter", "ml-100k.item", "ml-100k.user"]
    lines = (target / "ml-100k.inter").read_text().splitlines()
    assert lines[0] == "user_id:token\titem_id:token\trating:float\ttimestamp:float"
    assert len(lines) == 100_001


def test_cached_copy_is_reused_without_network(ml100k_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_download(dest: Path) -> Path:  # any attempt to download fails the test
        raise AssertionError("download attempted although the cache is complete")

    monkeypatch.setattr(fetch, "_download_wheel", no_download)
    assert fetch.fetch_ml100k(ml100k_root) == ml100k_root / "ml-100k"


def test_tampered_wheel_is_refused(tmp_path: Path) -> None:
    wheel = tmp_path / fetch.RECBOLE_WHEEL
    with zipfile.ZipFile(wheel, "w") as zf:
        for member in fetch.ML100K_MEMBERS:
            zf.writestr(member, "user_id:token\n")
    with pytest.raises(UserError, match="sha256"):
        fetch.extract_ml100k(wheel, tmp_path / "ml-100k")
    assert not (tmp_path / "ml-100k").exists()


def test_offline_without_cache_is_one_clear_error(tmp_path: Path) -> None:
    empty_links = tmp_path / "links"
    empty_links.mkdir()
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(empty_links), "PIP_CONFIG_FILE": os.devnull,
           "RATINGCTR_DATA_DIR": str(tmp_path / "cache")}
    proc = run_cli("train", "--out", str(tmp_path / "run"), "--epochs", "1", env=env, timeout=120)
    assert proc.returncode == 2
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "cannot download recbole==1.2.1" in errors[0] and "offline" in errors[0]
