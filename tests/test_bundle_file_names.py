"""Manifest file names are plain names inside the bundle: nothing else is ever sized or hashed."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from ratingctr.bundle import BundleError, load_bundle, read_manifest


@pytest.mark.parametrize("name", ["/etc/passwd", "../manifest.json", "..", ".", "sub/ranker.onnx", "a\\b", "x\x00y",
                                  "", "tab\tname"])
def test_a_manifest_naming_anything_but_a_plain_file_is_refused(tiny_bundles: dict, tmp_path: Path, name: str) -> None:
    raw = json.loads((tiny_bundles["rating"] / "manifest.json").read_text())
    raw["files"][name] = {"sha256": "0" * 64, "bytes": 1}
    (tmp_path / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(BundleError, match="not a plain file name inside the bundle") as info:
        read_manifest(tmp_path)
    assert "passwd" not in str(info.value) or "bytes" not in str(info.value)


def test_ordinary_names_still_load(tiny_bundles: dict) -> None:
    bundle = load_bundle(tiny_bundles["rating"])
    assert "ranker.onnx" in bundle.manifest.files and all("/" not in n for n in bundle.manifest.files)
