"""Where reloads may load bundles from: inside ``RATINGCTR_BUNDLE_ROOT``, real paths only.

Why resolve first: ``root/../etc`` and a symlink inside the root that points out of it both
name a directory outside; only the resolved path says where the files really are.  The
check covers admin reloads and reload notices read from Redis alike (whoever can write to
Redis must not make every worker open an arbitrary path).
"""
from __future__ import annotations

from pathlib import Path

from ratingctr.serving.safe_text import excerpt


class OutsideBundleRoot(Exception):
    """The path resolves outside the configured bundle root."""


def inside_bundle_root(path: str | Path, root: Path | None) -> Path:
    """The real path of ``path``; OutsideBundleRoot if a root is set and it lies outside."""
    try:
        real = Path(path).resolve()
    except (OSError, ValueError, RuntimeError) as exc:  # NUL bytes, symlink loops
        raise OutsideBundleRoot(f"bundle path {excerpt(str(path), 64)} cannot be resolved: {exc}") from exc
    if root is None:
        return real
    real_root = Path(root).resolve()
    if real != real_root and not real.is_relative_to(real_root):
        raise OutsideBundleRoot(f"bundle path {excerpt(str(path), 64)} is outside RATINGCTR_BUNDLE_ROOT; "
                                "reloads may only load bundles from inside it")
    return real
