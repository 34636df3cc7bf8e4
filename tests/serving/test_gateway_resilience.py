"""Failure behaviour against real processes: Redis dying, reloads under load, a SIGKILLed gateway."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter

import httpx
import redis
from helpers import Traffic, bundle_history, reload_reaches_every_worker, run_cli, wait_for

from ratingctr.bundle import load_bundle
from ratingctr.serving.embedded_redis import EmbeddedRedis
from ratingctr.serving.process import running_gateway

TOKEN = "reload-secret"


def test_redis_killed_mid_traffic_degrades_then_recovers_with_zero_5xx(tiny_bundles, tmp_path) -> None:
    server = EmbeddedRedis(tmp_path / "redis").start()
    try:
        with running_gateway({"rating": tiny_bundles["rating"]}, redis_url=server.url,
                             env={"RATINGCTR_REDIS_RETRY_S": "0.3"}) as gw, Traffic(gw.url) as traffic:
            wait_for(lambda: traffic.snapshot()[None] > 20, 30, "no healthy traffic before the kill")
            server.kill()
            before = traffic.snapshot()["degraded"]
            wait_for(lambda: traffic.snapshot()["degraded"] > before + 20, 30, "never served degraded")
            with httpx.Client(base_url=gw.url, timeout=10) as client:
                r = client.post("/v1/events", json={"events": [{"user_id": "u1", "item_id": "i1", "rating": 5}]})
                assert r.status_code == 503 and "nothing was stored" in r.json()["error"]
                assert client.get("/readyz").json()["redis"] == "degraded"
                degraded = client.post("/v1/recommend", json={"user_id": "u2", "k": 50}).json()
                seen = bundle_history(tiny_bundles["rating"], "u2")
                assert degraded["fallback"] == "degraded" and not seen & {i["item_id"] for i in degraded["items"]}
                server = EmbeddedRedis(tmp_path / "redis", port=server.port,  # same port, data and password
                                       password=server.password).start()
                healthy = traffic.snapshot()[None]
                wait_for(lambda: traffic.snapshot()[None] > healthy + 20, 30, "never recovered after Redis returned")
                assert client.post("/v1/events", json={"events": [{"user_id": "u1", "item_id": "i1",
                                                                   "rating": 5}]}).status_code == 202
    finally:
        server.stop()
    assert traffic.failures == [], traffic.failures[:5]
    assert not [code for code in traffic.outcomes if code >= 500]


def test_twenty_reloads_under_concurrent_traffic_fail_no_request(tiny_bundles, redis_server, tmp_path) -> None:
    versions = {head: load_bundle(path).version for head, path in tiny_bundles.items()}
    broken = tmp_path / "broken"
    shutil.copytree(tiny_bundles["rating"], broken)
    (broken / "ranker.onnx").write_bytes(b"not an onnx model")
    with running_gateway({"main": tiny_bundles["rating"]}, redis_url=redis_server.url,
                         env={"RATINGCTR_ADMIN_TOKEN": TOKEN}) as gw, \
            httpx.Client(base_url=gw.url, timeout=60, headers={"Authorization": f"Bearer {TOKEN}"}) as admin:
        with Traffic(gw.url) as traffic:
            wait_for(lambda: sum(traffic.versions.values()) > 20, 30, "no traffic")
            for i in range(20):
                head = "binary" if i % 2 == 0 else "rating"
                r = admin.post("/v1/admin/reload", json={"name": "main", "path": str(tiny_bundles[head])})
                assert r.status_code == 200, r.text
                assert r.json()["version"] == versions[head]
                time.sleep(0.1)
            r = admin.post("/v1/admin/reload", json={"name": "main", "path": str(broken)})
            assert r.status_code == 422 and "keeps serving" in r.json()["error"]
            time.sleep(0.3)
        final = admin.post("/v1/recommend", json={"user_id": "u1", "k": 3}).json()
        assert final["model"]["version"] == versions["rating"]  # the bad bundle changed nothing
        assert admin.post("/v1/admin/reload", json={"name": "main", "path": str(tmp_path / "missing")}).status_code == 422
        metrics = admin.get("/metrics").text
        assert 'ratingctr_reloads_total{result="ok"} 20.0' in metrics
    assert traffic.failures == [], traffic.failures[:5]
    assert set(traffic.versions) == set(versions.values())  # both bundles served during the reloads


def test_a_reload_reaches_every_worker(tiny_bundles, redis_server) -> None:
    versions = {head: load_bundle(path).version for head, path in tiny_bundles.items()}
    assert reload_reaches_every_worker(tiny_bundles, redis_server.url, TOKEN) == Counter({versions["binary"]: 40})


def test_acknowledged_events_survive_a_sigkilled_gateway(tiny_bundles, tmp_path) -> None:
    redis_dir = tmp_path / "embedded-redis"
    acked: list[str] = []
    errors: list[str] = []
    with running_gateway({"rating": tiny_bundles["rating"]}, env={"RATINGCTR_REDIS_DIR": str(redis_dir)}) as gw:
        stop = threading.Event()

        def send(worker: int) -> None:
            with httpx.Client(base_url=gw.url, timeout=5) as client:
                n = 0
                while not stop.is_set():
                    events = [{"user_id": f"u{worker}", "item_id": f"i{(n + j) % 80}", "rating": 1 + (n + j) % 5}
                              for j in range(3)]
                    n += 3
                    try:
                        r = client.post("/v1/events", json={"events": events})
                    except httpx.HTTPError as exc:
                        errors.append(repr(exc))
                        return  # the gateway is gone
                    if r.status_code == 202:
                        acked.extend(r.json()["ids"])

        threads = [threading.Thread(target=send, args=(w,), daemon=True) for w in range(3)]
        for t in threads:
            t.start()
        wait_for(lambda: len(acked) > 150, 60, "events were not acknowledged")
        os.killpg(gw.process.pid, signal.SIGKILL)  # the gateway and its embedded Redis, no shutdown
        gw.process.wait(timeout=10)
        stop.set()
        for t in threads:
            t.join(timeout=10)
    time.sleep(0.5)
    with EmbeddedRedis(redis_dir) as restarted:
        stored = {entry_id.decode() for entry_id, _ in redis.Redis.from_url(restarted.url).xrange("rc:events")}
    assert len(acked) > 150
    missing = [i for i in acked if i not in stored]
    assert missing == [], f"{len(missing)} acknowledged events lost"


def test_serve_refuses_a_missing_bundle_with_one_error_line(tmp_path) -> None:
    proc = run_cli("serve", "--bundle", str(tmp_path / "nope"), timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: bundle 'nope': bundle directory not found: {tmp_path / 'nope'}"]


def test_the_gateway_process_never_imports_torch(tiny_bundles) -> None:
    probe = ("import sys; from serving.app import create_app; from serving.settings import GatewaySettings;"
             f"create_app(GatewaySettings(bundles='r={tiny_bundles['rating']}'));"
             "import serving.commands, serving.process, serving.gateway;"
             "print('torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


def test_a_hung_redis_costs_one_timeout_not_a_hang(tiny_bundles, tmp_path) -> None:
    """SIGSTOP leaves Redis's socket open but silent: requests must still answer, degraded."""
    with EmbeddedRedis(tmp_path / "redis") as server, \
            running_gateway({"rating": tiny_bundles["rating"]}, redis_url=server.url,
                            env={"RATINGCTR_REDIS_TIMEOUT_S": "0.1", "RATINGCTR_REDIS_RETRY_S": "0.5"}) as gw, \
            httpx.Client(base_url=gw.url, timeout=10) as client:
        assert client.post("/v1/recommend", json={"user_id": "u1", "k": 3}).json()["fallback"] is None
        server.process.send_signal(signal.SIGSTOP)
        try:
            slowest, fallbacks = 0.0, Counter()
            for _ in range(30):
                start = time.perf_counter()
                r = client.post("/v1/recommend", json={"user_id": "u1", "k": 3})
                slowest = max(slowest, time.perf_counter() - start)
                assert r.status_code == 200
                fallbacks[r.json()["fallback"]] += 1
                time.sleep(0.05)
            assert fallbacks["degraded"] == 30
            assert slowest < 1.0  # one 0.1 s timeout per 0.5 s retry window, never a hang
        finally:
            server.process.send_signal(signal.SIGCONT)
        wait_for(lambda: client.post("/v1/recommend", json={"user_id": "u1", "k": 3}).json()["fallback"] is None,
                  10, "did not recover after SIGCONT")


def test_a_retried_batch_after_a_write_timeout_adds_no_duplicate(tiny_bundles, tmp_path) -> None:
    """Redis SIGSTOPped past the write timeout: the gateway cannot know whether the write will be
    applied, answers 503, and Redis applies it once it runs again.  The client's retry with the
    same event ids must then store nothing a second time."""
    events = [{"user_id": "retrier", "item_id": f"i{j}", "rating": 4, "event_id": f"retry-batch/{j}"}
              for j in range(5)]
    with EmbeddedRedis(tmp_path / "redis") as server, \
            running_gateway({"rating": tiny_bundles["rating"]}, redis_url=server.url,
                            env={"RATINGCTR_REDIS_WRITE_TIMEOUT_S": "0.5", "RATINGCTR_REDIS_RETRY_S": "0.2"}) as gw, \
            httpx.Client(base_url=gw.url, timeout=10) as client:
        store = redis.Redis.from_url(server.url, decode_responses=True)
        # one write first, so Redis knows the script and the stalled EVALSHA can run when it wakes
        warm = client.post("/v1/events", json={"events": [{"user_id": "warm", "item_id": "i1", "rating": 3}]})
        assert warm.status_code == 202, warm.text
        server.process.send_signal(signal.SIGSTOP)
        try:
            r = client.post("/v1/events", json={"events": events})
            assert r.status_code == 503 and "retry" in r.json()["error"]
        finally:
            server.process.send_signal(signal.SIGCONT)
        # the timed-out write was already in Redis's socket buffer: it lands after all
        wait_for(lambda: store.xlen("rc:events") == 1 + len(events), 10, "the timed-out write never landed")
        r = client.post("/v1/events", json={"events": events})
        assert r.status_code == 202, r.text
        stream = store.xrange("rc:events")[1:]
        assert r.json()["ids"] == [entry_id for entry_id, _ in stream]
        assert [fields["event_id"] for _, fields in stream] == [e["event_id"] for e in events]
        assert store.hget("rc:user:retrier", "events") == str(len(events))
        assert store.zcard("rc:seen:retrier") == len(events)
        wait_for(lambda: client.get("/readyz").json()["redis"] == "ok", 10, "did not recover after SIGCONT")
        store.close()
