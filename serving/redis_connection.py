"""Redis clients from a URL: a plain server (``redis://``, ``rediss://``, ``unix://``) or a
Redis Cluster (``redis+cluster://`` / ``rediss+cluster://``).

A cluster URL names one or more start-up nodes, comma-separated, with one set of credentials:
``redis+cluster://[user:]password@host1:port1,host2:port2/0``; any reachable node is enough,
the client learns the rest of the topology from it.  Nothing else in the code base needs to know
which of the two it talks to, except the key layout (``serving.redis_keys``) and the few places
that must address every master (persistence settings, ping).

The request path must fail fast when a master is down (the gateway serves degraded instead),
so cluster clients get no retries: redis-py's default retries a refused node several times with
back-off, on the event loop.
"""
from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode as AsyncClusterNode
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster

CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")


class BadRedisUrl(ValueError):
    """A Redis URL this module cannot use."""


def is_cluster_url(url: str) -> bool:
    return url.split("://", 1)[0].lower() in CLUSTER_SCHEMES


@dataclass(frozen=True)
class ClusterUrl:
    nodes: tuple[tuple[str, int], ...]
    username: str | None
    password: str | None
    ssl: bool

    @classmethod
    def parse(cls, url: str) -> "ClusterUrl":
        if not is_cluster_url(url):
            raise BadRedisUrl(f"not a cluster URL (expected {' or '.join(s + '://' for s in CLUSTER_SCHEMES)})")
        scheme, rest = url.split("://", 1)
        netloc = rest.split("/", 1)[0]
        credentials, _, hosts = netloc.rpartition("@")
        username, password = None, None
        if credentials:
            user, sep, secret = credentials.partition(":")
            username, password = (unquote(user) or None, unquote(secret)) if sep else (None, unquote(user))
        nodes = []
        for host in hosts.split(","):
            parsed = urlsplit(f"//{host.strip()}")
            try:
                port = parsed.port or 6379
            except ValueError:
                raise BadRedisUrl(f"bad port in cluster node {host!r}") from None
            if not parsed.hostname:
                raise BadRedisUrl(f"cluster node {host!r} has no host")
            nodes.append((parsed.hostname, port))
        return cls(tuple(nodes), username, password, scheme.lower().startswith("rediss"))


def sync_client(url: str, socket_timeout: float, connect_timeout: float, **options) -> redis.Redis | RedisCluster:
    """A blocking client; for a cluster, one that does not retry a down master."""
    if not is_cluster_url(url):
        return redis.Redis.from_url(url, socket_timeout=socket_timeout, socket_connect_timeout=connect_timeout,
                                    retry_on_timeout=False, health_check_interval=0, **options)
    spec = ClusterUrl.parse(url)
    return RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in spec.nodes], username=spec.username,
                        password=spec.password, ssl=spec.ssl, socket_timeout=socket_timeout,
                        socket_connect_timeout=connect_timeout, retry=redis.retry.Retry(NoBackoff(), 0),
                        require_full_coverage=False, **options)


def async_client(url: str, socket_timeout: float, connect_timeout: float,
                 **options) -> aioredis.Redis | AsyncRedisCluster:
    """An asyncio client; connects lazily (a cluster that is down at start-up is not an error here)."""
    if not is_cluster_url(url):
        return aioredis.Redis.from_url(url, socket_timeout=socket_timeout, socket_connect_timeout=connect_timeout,
                                       retry_on_timeout=False, health_check_interval=0, **options)
    spec = ClusterUrl.parse(url)
    return AsyncRedisCluster(startup_nodes=[AsyncClusterNode(h, p) for h, p in spec.nodes], username=spec.username,
                             password=spec.password, ssl=spec.ssl, socket_timeout=socket_timeout,
                             socket_connect_timeout=connect_timeout,
                             retry=redis.asyncio.retry.Retry(NoBackoff(), 0), require_full_coverage=False,
                             **options)
