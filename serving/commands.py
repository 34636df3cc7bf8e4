"""``ratingctr serve``: the gateway under uvicorn, with an embedded Redis unless one is given."""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from ratingctr.errors import UserError


def cmd_serve(args: argparse.Namespace, extra: list[str]) -> int:
    from pydantic import ValidationError

    from ratingctr.bundle import BundleError, read_manifest
    from ratingctr.serving.header_deadline import HEADER_TIMEOUT_ENV, HeaderDeadlineProtocol
    from ratingctr.serving.settings import GatewaySettings, parse_bundle_specs

    overrides = {k: v for k, v in {"host": args.host, "port": args.port, "workers": args.workers,
                                   "redis_url": args.redis_url}.items() if v is not None}
    try:
        if args.bundle:
            specs = parse_bundle_specs(args.bundle)
            overrides["bundles"] = ",".join(f"{n}={p}" for n, p in specs.items())
        settings = GatewaySettings(**overrides)
        bundles = settings.bundle_map()
    except ValidationError as exc:
        first = exc.errors()[0]
        raise UserError(f"invalid setting {'.'.join(map(str, first['loc']))}: {first['msg']}") from exc
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    for name, path in bundles.items():  # fail fast, before any worker starts
        try:
            read_manifest(path)
        except BundleError as exc:
            raise UserError(f"bundle {name!r}: {exc}") from exc
    embedded = lock = None
    if not settings.redis_url:
        from ratingctr.serving.embedded_redis import EmbeddedRedis
        from ratingctr.serving.redis_dir_lock import RedisDirBusy, RedisDirLock

        try:  # one embedded Redis per data directory; every worker below uses this one
            lock = RedisDirLock(settings.redis_dir).acquire()
        except RedisDirBusy as exc:
            raise UserError(str(exc)) from exc
        embedded = EmbeddedRedis(settings.redis_dir).start()
        settings = settings.model_copy(update={"redis_url": embedded.url})
        print(f"embedded Redis on 127.0.0.1:{embedded.port}, password-protected (data in {settings.redis_dir})",
              file=sys.stderr)
    # Workers (and a single in-process server) read their settings from the environment.
    env = {"RATINGCTR_BUNDLES": settings.bundles, "RATINGCTR_REDIS_URL": settings.redis_url,
           "RATINGCTR_HOST": settings.host, "RATINGCTR_PORT": str(settings.port),
           "RATINGCTR_WORKERS": str(settings.workers)}
    os.environ.update(env)
    os.environ.pop("REDIS_URL", None)  # RATINGCTR_REDIS_URL now holds the one to use
    if settings.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="ratingctr-metrics-")
    os.environ[HEADER_TIMEOUT_ENV] = repr(settings.header_timeout_s)  # worker processes read it at import
    HeaderDeadlineProtocol.timeout_s = settings.header_timeout_s
    import uvicorn

    try:
        uvicorn.run("ratingctr.serving.app:create_app", factory=True, host=settings.host, port=settings.port,
                    http=HeaderDeadlineProtocol,
                    workers=settings.workers, access_log=args.access_log, log_level=args.log_level,
                    timeout_graceful_shutdown=10, limit_concurrency=settings.limit_concurrency,
                    timeout_keep_alive=settings.keep_alive_s)
    finally:
        if embedded:
            embedded.stop()
        if lock:
            lock.release()
    return 0


def cmd_redis_cluster(args: argparse.Namespace, extra: list[str]) -> int:
    """A local Redis Cluster from the embedded binary, for trying ``redis+cluster://`` on one machine."""
    import signal
    import threading

    from ratingctr.serving.embedded_cluster import EmbeddedCluster

    try:
        cluster = EmbeddedCluster(args.dir, masters=args.masters).start()
    except (RuntimeError, ValueError, OSError) as exc:
        raise UserError(f"could not start the cluster: {exc}") from exc
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    ports = ", ".join(str(node.port) for node in cluster.nodes)
    print(f"Redis Cluster of {len(cluster.nodes)} masters on 127.0.0.1 ports {ports} (data in {args.dir}); "
          f"its URL (with the password) is in {cluster.url_file}:\n"
          f"  REDIS_URL=$(cat {cluster.url_file}) ratingctr serve --bundle …", flush=True)
    try:
        stop.wait()
    finally:
        cluster.stop()
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    serve = subparsers.add_parser("serve", help="run the HTTP gateway (FastAPI + FAISS + Redis + ONNX Runtime)")
    serve.add_argument("--bundle", action="append", default=[],
                       help="[NAME=]PATH of an exported bundle; repeat for several (the first is the default model)")
    serve.add_argument("--host", default=None, help="default 127.0.0.1 (RATINGCTR_HOST)")
    serve.add_argument("--port", type=int, default=None, help="default 8000 (RATINGCTR_PORT)")
    serve.add_argument("--workers", type=int, default=None, help="uvicorn worker processes, default 1")
    serve.add_argument("--redis-url", default=None,
                       help="external Redis (REDIS_URL); default: an embedded redis-server")
    serve.add_argument("--access-log", action="store_true", help="log every request (off: it costs latency)")
    serve.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    serve.set_defaults(handler=cmd_serve)
    cluster = subparsers.add_parser("redis-cluster", help="run a local Redis Cluster (embedded redis-server in "
                                    "cluster mode) to try REDIS_URL=redis+cluster://… on one machine")
    cluster.add_argument("--dir", type=Path, required=True,
                         help="data directory (one sub-directory per master); the same directory restarts the same cluster")
    cluster.add_argument("--masters", type=int, default=3, help="masters, at least 3 (no replicas)")
    cluster.set_defaults(handler=cmd_redis_cluster)
