"""Signed bundles: ``export --sign-key-file`` writes an HMAC of the manifest; a loader given the
key refuses unsigned, forged and re-signed-with-another-key bundles, one without a key loads
them all (signing never breaks a gateway that does not check)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ratingctr.bundle import (
    MANIFEST,
    SIGNATURE,
    BundleError,
    load_bundle,
    read_key_file,
    read_manifest,
    sign_bundle,
    verify_signature,
)
from ratingctr.export.build import export_bundle
from ratingctr.hashing import sha256_file

KEY = b"0123456789abcdef-test-signing-key"
OTHER_KEY = b"fedcba9876543210-another-key----"


@pytest.fixture(scope="module")
def signed_bundle(tiny_bundles: dict[str, Path], tiny_retriever: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real export with ``sign_key``, from the run the binary tiny bundle was exported from."""
    run = Path(read_manifest(tiny_bundles["binary"]).source.ranker)
    out = tmp_path_factory.mktemp("signed") / "signed-binary"
    export_bundle(run, tiny_retriever, out, sign_key=KEY)
    return out


def _copy(bundle: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(bundle, target)
    return target


def test_export_signs_and_the_key_verifies(signed_bundle: Path, tiny_bundles: dict[str, Path]) -> None:
    signature = json.loads((signed_bundle / SIGNATURE).read_text())
    assert signature["algorithm"] == "hmac-sha256" and len(signature["manifest_hmac"]) == 64
    manifest = read_manifest(signed_bundle)
    assert SIGNATURE not in manifest.files  # beside the manifest, not listed in it
    verify_signature(signed_bundle, KEY)
    assert load_bundle(signed_bundle, key=KEY).version == manifest.version
    # same run, same content: signing changes neither the file list nor the content version
    assert manifest.version == read_manifest(tiny_bundles["binary"]).version


def test_signed_bundle_loads_without_a_key(signed_bundle: Path) -> None:
    assert load_bundle(signed_bundle).manifest.name == "signed-binary"


def test_unsigned_bundle_is_refused_with_a_key_and_accepted_without(tiny_bundles: dict[str, Path]) -> None:
    with pytest.raises(BundleError, match="not signed"):
        load_bundle(tiny_bundles["binary"], key=KEY)
    assert load_bundle(tiny_bundles["binary"]).version


def test_forged_manifest_is_refused(signed_bundle: Path, tmp_path: Path) -> None:
    bundle = _copy(signed_bundle, tmp_path)
    raw = json.loads((bundle / MANIFEST).read_text())
    raw["name"] = "evil"
    (bundle / MANIFEST).write_text(json.dumps(raw, indent=2) + "\n")
    with pytest.raises(BundleError, match="signature does not match"):
        load_bundle(bundle, key=KEY)


def test_forged_file_hash_is_refused(signed_bundle: Path, tmp_path: Path) -> None:
    """Replacing a file and its manifest hash: the file check passes, the signature does not."""
    bundle = _copy(signed_bundle, tmp_path)
    raw = json.loads((bundle / MANIFEST).read_text())
    onnx = bundle / "ranker.onnx"
    onnx.write_bytes(onnx.read_bytes() + b"\0")
    raw["files"]["ranker.onnx"] = {"sha256": sha256_file(onnx), "bytes": onnx.stat().st_size}
    (bundle / MANIFEST).write_text(json.dumps(raw, indent=2) + "\n")
    with pytest.raises(BundleError, match="signature does not match"):
        load_bundle(bundle, key=KEY)


def test_modified_file_fails_its_hash_even_when_the_signature_holds(signed_bundle: Path, tmp_path: Path) -> None:
    bundle = _copy(signed_bundle, tmp_path)
    onnx = bundle / "ranker.onnx"
    data = bytearray(onnx.read_bytes())
    data[-1] ^= 0xFF
    onnx.write_bytes(bytes(data))
    verify_signature(bundle, KEY)  # the manifest is untouched ...
    with pytest.raises(BundleError, match="tampered"):
        load_bundle(bundle, key=KEY)  # ... but it pins the file


def test_wrong_key_and_bad_signature_files_are_refused(signed_bundle: Path, tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="signature does not match"):
        load_bundle(signed_bundle, key=OTHER_KEY)
    bundle = _copy(signed_bundle, tmp_path)
    sign_bundle(bundle, OTHER_KEY)  # re-signed by someone holding another key
    with pytest.raises(BundleError, match="signature does not match"):
        verify_signature(bundle, KEY)
    for text in ("not json", "[]", '{"algorithm": "md5", "manifest_hmac": "00"}', '{"algorithm": "hmac-sha256"}',
                 '{"algorithm": "hmac-sha256", "manifest_hmac": "\u00e9\u00e9"}'):
        (bundle / SIGNATURE).write_text(text)
        with pytest.raises(BundleError):
            load_bundle(bundle, key=KEY)


def test_keys_must_be_long_enough(tmp_path: Path, signed_bundle: Path) -> None:
    short = tmp_path / "short.key"
    short.write_text("tooshort\n")
    with pytest.raises(BundleError, match="at least 16 bytes"):
        read_key_file(short)
    with pytest.raises(BundleError, match="at least 16 bytes"):
        load_bundle(signed_bundle, key=b"short")
    good = tmp_path / "good.key"
    good.write_bytes(KEY + b"\n")
    assert read_key_file(good) == KEY
    with pytest.raises(BundleError, match="cannot read"):
        read_key_file(tmp_path / "absent.key")


@pytest.mark.integration  # a `ratingctr` process
def test_export_cli_refuses_a_bad_key_file_before_exporting(tmp_path: Path) -> None:
    from helpers import run_cli

    short = tmp_path / "short.key"
    short.write_text("short\n")
    for key_file, message in ((short, "at least 16 bytes"), (tmp_path / "absent.key", "cannot read the bundle key")):
        proc = run_cli("export", "--ranker", str(tmp_path / "no-run"), "--retriever", str(tmp_path / "no-run"),
                       "--out", str(tmp_path / "out"), "--sign-key-file", str(key_file), timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert message in proc.stderr and not (tmp_path / "out").exists()


@pytest.mark.integration  # a `ratingctr` process
def test_export_cli_signs_with_the_key_file(tiny_bundles: dict[str, Path], tiny_retriever: Path,
                                            tmp_path: Path) -> None:
    from helpers import run_cli

    key_file = tmp_path / "bundle.key"
    key_file.write_bytes(KEY + b"\n")
    run = read_manifest(tiny_bundles["binary"]).source.ranker
    out = tmp_path / "cli-signed"
    proc = run_cli("export", "--ranker", run, "--retriever", str(tiny_retriever), "--out", str(out),
                   "--sign-key-file", str(key_file))
    assert proc.returncode == 0, proc.stderr
    assert "(signed)" in proc.stdout
    verify_signature(out, KEY)
    with pytest.raises(BundleError, match="signature does not match"):
        verify_signature(out, OTHER_KEY)
