"""serving/metrics.py with several uvicorn workers: one scrape, whichever worker answers it, holds the
sum of every worker's counts, and a worker that dies does not take its counts with it (the
dashboards' rates would otherwise see a reset on every scrape that lands on another worker)."""
from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import httpx

from ratingctr.serving.metrics import UNMATCHED, endpoint_label
from ratingctr.serving.process import running_gateway

COUNT = re.compile(r'^ratingctr_request_seconds_count\{endpoint="recommend",model="rating"\} (\S+)$', re.M)


def _recommend_count(url: str) -> float:
    text = httpx.get(f"{url}/metrics", headers={"Connection": "close"}, timeout=30).text  # any worker may answer
    match = COUNT.search(text)
    return float(match.group(1)) if match else 0.0


def _worker_pids(metrics_dir: Path) -> set[int]:
    """Workers that have observed a request: each writes its own histogram_<pid>.db."""
    return {int(p.stem.split("_")[1]) for p in metrics_dir.glob("histogram_*.db")}


def _recommend(url: str) -> None:
    r = httpx.post(f"{url}/v1/recommend", json={"user_id": "u1", "k": 3}, headers={"Connection": "close"}, timeout=30)
    assert r.status_code == 200, r.text


def test_every_scrape_sums_all_workers_and_survives_a_worker_dying(tiny_bundles, redis_server, tmp_path: Path) -> None:
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    with running_gateway({"rating": tiny_bundles["rating"]}, redis_url=redis_server.url, workers=2,
                         env={"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), "RATINGCTR_REDIS_PREFIX": "metrics"}) as gw:
        sent, deadline = 0, time.monotonic() + 60
        while len(_worker_pids(metrics_dir)) < 2:  # fresh connections until both workers served some
            assert time.monotonic() < deadline, "the second worker never took a connection"
            _recommend(gw.url)
            sent += 1
        assert [_recommend_count(gw.url) for _ in range(8)] == [float(sent)] * 8

        victim = min(_worker_pids(metrics_dir))
        os.kill(victim, signal.SIGKILL)  # a worker of the gateway this test started
        deadline = time.monotonic() + 60
        while True:
            try:
                _recommend(gw.url)
                sent += 1
                break
            except (httpx.HTTPError, AssertionError):
                assert time.monotonic() < deadline, gw.log()[-2000:]
                time.sleep(0.2)
        for _ in range(4):
            _recommend(gw.url)
            sent += 1
        # the dead worker's file still counts: the total never goes backwards
        assert [_recommend_count(gw.url) for _ in range(6)] == [float(sent)] * 6


def test_endpoint_labels_come_from_route_templates_not_raw_paths() -> None:
    class Route:
        path = "/v1/recommend"

    assert endpoint_label({"route": Route()}) == "recommend"
    assert endpoint_label({"path": "/v1/anything/" + "x" * 100}) == UNMATCHED
