"""Prometheus metrics of the gateway.

With several workers, ``ratingctr serve`` sets ``PROMETHEUS_MULTIPROC_DIR`` before any
worker imports prometheus_client, and ``/metrics`` aggregates every worker's files.
"""
from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

_BUCKETS = (0.0005, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

REQUEST_SECONDS = Histogram("ratingctr_request_seconds", "Request latency by endpoint and model",
                            ["endpoint", "model"], buckets=_BUCKETS)
STAGE_SECONDS = Histogram("ratingctr_stage_seconds", "Time per request stage (redis, faiss, onnx)",
                          ["stage", "model"], buckets=_BUCKETS)
FALLBACKS = Counter("ratingctr_fallback_total", "Responses served with a fallback", ["kind", "model"])
ERRORS = Counter("ratingctr_errors_total", "Error responses by endpoint and status", ["endpoint", "status"])
EVENTS = Counter("ratingctr_events_total", "Events accepted into the Redis stream")
RELOADS = Counter("ratingctr_reloads_total", "Bundle reloads by result", ["result"])
PROMOTIONS = Counter("ratingctr_promotions_total", "Reloads made by the promotion gate (`ratingctr promote`) "
                     "that succeeded on this worker", ["model"])
BAD_ROWS = Counter("ratingctr_bad_rows_total", "Field rows from Redis outside the bundle's vocabulary, "
                   "served from the bundle's own row instead", ["model"])


UNMATCHED = "unmatched"


def endpoint_label(scope: dict) -> str:
    """The ``endpoint`` label of a request: the last segment of its route *template*.

    Why never the raw path: any client can send endless distinct paths, and each distinct
    label value is a new series held in memory and written by every ``/metrics``.  Paths no
    route matches all count under one label.
    """
    route = scope.get("route")
    template = getattr(route, "path", None)
    if not isinstance(template, str):
        return UNMATCHED
    return template.rstrip("/").rsplit("/", 1)[-1] or "root"


def render() -> tuple[bytes, str]:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    from prometheus_client import REGISTRY

    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
