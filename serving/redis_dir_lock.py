"""One embedded Redis per data directory: an exclusive lock on ``RATINGCTR_REDIS_DIR``.

Why: ``uvicorn --factory ratingctr.serving.app:create_app --workers N`` (without a Redis URL)
would make every worker start its own embedded Redis, N servers appending to one append-only
file, and N disjoint views of users' state.  So the process that starts the embedded Redis
holds this lock for as long as it runs.  A *sibling* worker (same parent process) that finds
the lock taken shares that server through its ``redis.url``; because the embedded Redis dies
with the worker that started it (the kernel's parent-death signal), a sibling that finds it
gone takes the lock and restarts it on the same port and password, so every worker's client
reconnects (``Gateway._take_over_redis``).  Any other process is refused with a message that
names the entry points that do it right.  The kernel drops the lock when the holder dies,
SIGKILL included, so a crash never leaves a stale lock behind.
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCK_NAME = "gateway.lock"


class RedisDirBusy(RuntimeError):
    """Another live process already runs an embedded Redis on this data directory."""

    def __init__(self, message: str, holder: int | None = None) -> None:
        super().__init__(message)
        self.holder = holder


def is_sibling(pid: int | None) -> bool:
    """Whether ``pid`` is another worker of this process's parent (``uvicorn --workers N``).

    Siblings may share the embedded Redis one of them started (and take it over if that one
    dies); an unrelated process on the same directory is refused instead.
    """
    if pid is None or pid == os.getpid() or os.getppid() == 1:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # the command name (field 2) may hold spaces or parentheses: the ppid is the 2nd field after its last ')'
    return int(stat.rsplit(")", 1)[1].split()[1]) == os.getppid()


class RedisDirLock:
    """``acquire()`` before starting an embedded Redis on ``directory``; ``release()`` after stopping it."""

    def __init__(self, directory: Path) -> None:
        self.path = Path(directory) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> "RedisDirLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise RedisDirBusy(
                f"another process (pid {holder}) already runs an embedded Redis in {self.path.parent}; a second "
                "one there would share its append-only file. With several workers use `ratingctr serve --workers N` "
                "(one embedded Redis for all of them) or set REDIS_URL; for separate gateways give each its own "
                "RATINGCTR_REDIS_DIR", int(holder) if holder.isdigit() else None) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor drops the flock
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None
