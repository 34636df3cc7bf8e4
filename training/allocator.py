"""Keep freed tensor memory in the process instead of handing it back to the kernel.

Why: a training step allocates and frees the same few-MB activations every step.  glibc
serves blocks above its mmap threshold (128 KiB at start) with a fresh ``mmap`` and
returns them with ``munmap`` on free, so every step page-faults its activations in again,
4 KiB at a time; its dynamic threshold only partly adapts, and the heap top is trimmed back
to the kernel whenever 128 KiB lie free there (the measured cost per epoch is in
``reports/bench/kernels.md``).  Raising the mmap threshold to glibc's maximum (32 MiB) and
disabling trimming makes the allocator reuse the same pages, which is what
tcmalloc/jemalloc give PyTorch on CPU without a preload.

The cost is that the process's resident size does not shrink after a peak — fine for a
trainer, not for the gateway.  So the tuning is a decision of a training process's entry
point (the training CLI verbs, via ``training_entry_point``; the bench worker; experiment workers),
never a side effect of a library call.  Only glibc has ``mallopt``; elsewhere this does
nothing.  ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` in the environment win:
a user who tuned glibc is left alone.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
from collections.abc import Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit
TRIM_NEVER = 2**31 - 1

_applied: bool | None = None
_libc: ctypes.CDLL | None = None  # glibc, once the tuning is in force (release_freed_memory uses it)


def retain_freed_memory() -> bool:
    """Tune glibc once per process; True when the settings are in force."""
    global _applied, _libc
    if _applied is not None:
        return _applied
    _applied = False
    if any(k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")):
        return _applied
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return _applied  # not glibc (musl, macOS): nothing to tune
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # order matters: setting the trim threshold first would freeze the mmap threshold at 128 KiB
    _applied = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_NEVER))
    _libc = libc if _applied else None
    return _applied


def release_freed_memory() -> bool:
    """Hand the pages of freed blocks back to the kernel now (glibc ``malloc_trim(0)``).

    Why: with trimming disabled by ``retain_freed_memory``, evaluation's many
    differently-sized batch intermediates (tens of MB, under the 32 MiB mmap threshold,
    spread over torch's per-thread arenas) fragment the heaps and the resident size
    climbs for as long as scoring runs.  Evaluation calls this between batches; a
    training step, which reuses the same blocks, never does.  A no-op when the tuning is
    not in force.
    """
    if _libc is None:
        return False
    return bool(_libc.malloc_trim(0))


def training_entry_point(handler: Callable[P, R]) -> Callable[P, R]:
    """Decorate a training process's entry point: ``retain_freed_memory()`` before it runs."""

    @functools.wraps(handler)
    def entry(*args: P.args, **kwargs: P.kwargs) -> R:
        retain_freed_memory()
        return handler(*args, **kwargs)

    return entry
