"""Loopback ports and process groups: shared by every room that starts a server of its own
(the gateway, embedded Redis, TorchServe, Locust)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time


def free_port() -> int:
    """A port the kernel just handed out on loopback (free now; the caller binds it soon)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to every process of group ``pgid``; False when the group has no process left."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True


def stop_process(process: subprocess.Popen, timeout: float = 20) -> None:
    """Stop ``process`` and every process of its group (it was started with ``start_new_session``).

    The group is signalled even when the leader has already exited: a launcher can leave
    a forked server behind (TorchServe's starts a JVM).  SIGTERM first; SIGKILL for
    whatever is still there after ``timeout`` seconds.
    """
    process.poll()  # reap an exited leader, so it does not count as a live group member
    if not _signal_group(process.pid, signal.SIGTERM):
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        process.poll()
        if not _signal_group(process.pid, 0):
            return
        time.sleep(0.05)
    _signal_group(process.pid, signal.SIGKILL)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
