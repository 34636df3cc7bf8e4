"""sha256 of files and text: bundle integrity, the pinned dataset wheel and run-cache keys."""
from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks so a large ONNX or wheel never sits in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_text(text: str) -> str:
    """Hex sha256 of UTF-8 text (a canonical JSON config, a list of file digests)."""
    return hashlib.sha256(text.encode()).hexdigest()
