"""Stopping a server process group: nothing it started may outlive it."""
from __future__ import annotations

import os
import signal
import subprocess
import time

from ratingctr.processes import stop_process


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as fh:  # a zombie is dead for our purposes
        return fh.read().split(")")[-1].split()[0] != "Z"


def _child_pid(leader: subprocess.Popen) -> int:
    return int(leader.stdout.readline())


def test_a_child_left_behind_by_an_exited_launcher_is_stopped() -> None:
    """The launcher forks a long-running server into its group and exits (as TorchServe's does)."""
    launcher = subprocess.Popen(["sh", "-c", "sleep 300 & echo $!; exit 0"], stdout=subprocess.PIPE, text=True,
                                start_new_session=True)
    child = _child_pid(launcher)
    launcher.wait(timeout=10)
    assert _alive(child)
    stop_process(launcher, timeout=5)
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)


def test_a_group_that_ignores_sigterm_is_killed_after_the_timeout() -> None:
    proc = subprocess.Popen(["sh", "-c", "trap '' TERM; sleep 300 & echo $!; wait"], stdout=subprocess.PIPE,
                            text=True, start_new_session=True)
    child = _child_pid(proc)
    started = time.monotonic()
    stop_process(proc, timeout=1)
    assert proc.returncode == -signal.SIGKILL and time.monotonic() - started < 8
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)


def test_stopping_a_finished_process_is_a_no_op() -> None:
    proc = subprocess.Popen(["true"], start_new_session=True)
    proc.wait(timeout=10)
    stop_process(proc)
    assert proc.returncode == 0
