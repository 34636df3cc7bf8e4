"""``ratingctr bench gateway`` and its closed-loop load generator: latencies a server is known to
cost come out as measured, and the reports are the recorded rounds."""
from __future__ import annotations

import json
import re
import shutil
import statistics
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

import pytest
from helpers import run_cli

from ratingctr.loadtest.http_load import encode_post, run_load
from ratingctr.serving.process import running_gateway

DELAY_S = 0.02


class _InFlight:
    """How many requests the server is sleeping on at once, and the most it ever was."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.peak = 0

    def enter(self) -> None:
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)

    def leave(self) -> None:
        with self.lock:
            self.now -= 1


IN_FLIGHT = _InFlight()


class _DelayedHandler(BaseHTTPRequestHandler):
    """Answers every POST after exactly ``DELAY_S`` of sleep (a server whose cost is known)."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes; Nagle would hold the body back

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        self.rfile.read(int(self.headers["Content-Length"]))
        IN_FLIGHT.enter()
        time.sleep(DELAY_S)
        IN_FLIGHT.leave()
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def delayed_server() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _DelayedHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_a_known_server_delay_is_the_floor_of_every_latency(delayed_server: int) -> None:
    request = encode_post("127.0.0.1", "/", b"{}")
    one = run_load("127.0.0.1", delayed_server, [request], concurrency=1, seconds=1.0)
    summary = one.summary()
    assert summary["failed"] == 0 and summary["requests"] == one.statuses[200] > 10
    assert min(one.latencies_ms) >= DELAY_S * 1000  # no response can come back before the server slept
    assert summary["p50_ms"] >= DELAY_S * 1000
    # A closed loop sends the next request only after the previous answer: at most 1/DELAY per client,
    # and one client never has two requests at the server at once.
    assert summary["req_per_s"] <= 1 / DELAY_S
    assert IN_FLIGHT.peak == 1
    four = run_load("127.0.0.1", delayed_server, [request], concurrency=4, seconds=1.0).summary()
    # Four clients keep four requests open together (the server sleeps on them in parallel), never
    # more; how much throughput that buys depends on the machine's load, so it is bounded, not pinned.
    assert IN_FLIGHT.peak == 4
    assert four["failed"] == 0 and four["requests"] > 10
    assert four["req_per_s"] <= 4 / DELAY_S


@pytest.mark.integration
def test_load_generator_counts_statuses_and_latencies(tiny_bundles) -> None:
    with running_gateway({"rating": tiny_bundles["rating"]}) as gw:
        port = int(gw.url.rsplit(":", 1)[1])
        good = encode_post("127.0.0.1", "/v1/recommend", b'{"user_id": "u1", "k": 5}')
        bad = encode_post("127.0.0.1", "/v1/recommend", b'{"user_id": "u1", "k": 0}')
        result = run_load("127.0.0.1", port, [good, bad], concurrency=2, seconds=1.0)
    summary = result.summary()
    assert summary["requests"] == result.statuses[200] + result.statuses[422] > 10
    assert abs(result.statuses[200] - result.statuses[422]) <= 2  # round-robin over the two requests
    assert summary["errors"] == 0 and summary["non_2xx"] == result.statuses[422] == summary["failed"]
    assert 0 < summary["p50_ms"] <= summary["p95_ms"] <= summary["p99_ms"] <= summary["max_ms"]


ROUND_LINE = re.compile(r"^round (\d)/2 clients=\s*(\d+) (gateway|torchserve)\s+p50 ([\d.]+) ms "
                        r"p99 ([\d.]+) ms (\d+) req/s$", re.M)


@pytest.mark.integration
@pytest.mark.java
@pytest.mark.skipif(shutil.which("java") is None, reason="TorchServe needs java (JDK 17) on PATH")
def test_bench_gateway_reports_the_interleaved_rounds_it_ran(tiny_bundles, tmp_path) -> None:
    out = tmp_path / "gateway"
    proc = run_cli("bench", "gateway", "--bundle", str(tiny_bundles["rating"]),
                   "--reload-bundle", str(tiny_bundles["binary"]), "--clients", "1,4", "--seconds", "0.6",
                   "--rounds", "2", "--warmup", "0.3", "--reloads", "4", "--reload-interval", "0.2",
                   "--candidates", "50", "--out", str(out), timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.with_suffix(".json").read_text())
    # What ran, in order: each round visits every concurrency, gateway then TorchServe at each.
    printed = ROUND_LINE.findall(proc.stdout)
    assert [(int(r), int(c), name) for r, c, name, *_ in printed] == [
        (r, c, name) for r in (1, 2) for c in (1, 4) for name in ("gateway", "torchserve")]
    for target in ("gateway", "torchserve"):
        for clients in ("1", "4"):
            row = results[target][clients]
            rounds = [float(p50) for _, c, name, p50, *_ in printed if name == target and c == clients]
            assert [r["p50_ms"] for r in row["rounds"]] == pytest.approx(rounds, abs=5e-4)
            assert row["p50_ms"] == pytest.approx(statistics.median(rounds), abs=5e-4)
            assert row["failed"] == 0 and row["requests"] == sum(r["requests"] for r in row["rounds"]) > 0
            assert row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"]
    reload = results["reload"]
    assert reload["during"]["failed"] == 0 and reload["during"]["requests"] > 0
    assert 0 < reload["reload_seconds_median"] < 60
    markdown = out.with_suffix(".md").read_text()
    for clients in ("1", "4"):
        g, t = results["gateway"][clients], results["torchserve"][clients]
        assert (f"| {clients} | {g['p50_ms']:.3f} | {g['p95_ms']:.3f} | {g['p99_ms']:.3f} | {g['req_per_s']:.0f} | "
                f"{t['p50_ms']:.3f} | {t['p95_ms']:.3f} | {t['p99_ms']:.3f} | {t['req_per_s']:.0f} |") in markdown
    assert f"during reloads p99 {reload['during']['p99_ms']:.3f} ms" in markdown and "failed requests 0" in markdown
    for name, verdict in results["verdicts"].items():
        assert f"| {name} ≤ {verdict['target']} |" in markdown
    assert markdown in proc.stdout  # the report printed is the report written
