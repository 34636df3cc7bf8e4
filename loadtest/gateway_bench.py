"""``ratingctr bench gateway``: /v1/recommend latency and throughput against bare TorchServe.

The gateway runs as a real ``ratingctr serve`` process (own embedded Redis) and TorchServe
serves the same bundle's ``ranker.mar``.  Both are driven by the same closed-loop client
(loadtest/http_load.py) in interleaved rounds (gateway, TorchServe, gateway, …) at each
concurrency, so machine drift hits both alike; every figure is the median over rounds.
TorchServe gets the exact candidate matrices the gateway scores for the same users (its
FAISS top-200 after removing seen items), so the comparison is "our whole request path"
against "their model call alone".  A last phase measures p99 while the bundle is reloaded
20 times under load, against a steady phase of the same length just before it.
"""
from __future__ import annotations

import json
import statistics
import threading
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from ratingctr.errors import UserError
from ratingctr.loadtest.config import GatewayBenchConfig
from ratingctr.loadtest.http_load import encode_post, run_load
from ratingctr.tables import md_table

ADMIN_TOKEN = "bench-gateway-token"


def _recommend_bodies(user_ids: list[str], k: int) -> list[bytes]:
    return [json.dumps({"user_id": u, "k": k}).encode() for u in user_ids]


def _torchserve_bodies(bundle_path: Path, users: np.ndarray, candidates: int) -> list[bytes]:
    from ratingctr.serving.ranker import load_ranker

    ranker = load_ranker(bundle_path, candidates, warmup_calls=0)
    bodies = []
    for u in users.tolist():
        items = ranker.retrieve(u, ranker.history(u), candidates)
        bodies.append(json.dumps({"fields": ranker.features(ranker.user_fields[u], items).tolist()}).encode())
    return bodies


def _median_summary(rounds: list[dict]) -> dict:
    keys = ("p50_ms", "p95_ms", "p99_ms", "req_per_s")
    out = {key: statistics.median(r[key] for r in rounds) for key in keys}
    out["p50_ms_min"] = min(r["p50_ms"] for r in rounds)
    out["p50_ms_max"] = max(r["p50_ms"] for r in rounds)
    out["requests"] = sum(r["requests"] for r in rounds)
    out["failed"] = sum(r["failed"] for r in rounds)
    return out


def _reload(url: str, name: str, path: Path) -> None:
    request = urllib.request.Request(f"{url}/v1/admin/reload", method="POST",
                                     data=json.dumps({"name": name, "path": str(path)}).encode(),
                                     headers={"Content-Type": "application/json",
                                              "Authorization": f"Bearer {ADMIN_TOKEN}"})
    with urllib.request.urlopen(request, timeout=120) as response:
        if response.status != 200:
            raise UserError(f"reload failed with HTTP {response.status}")


def run_bench_gateway(config: GatewayBenchConfig) -> int:
    from ratingctr.bundle import BundleError, load_bundle
    from ratingctr.serving.process import running_gateway

    bundle_path = Path(config.bundle)
    reload_path = Path(config.reload_bundle) if config.reload_bundle else bundle_path
    try:
        bundle = load_bundle(bundle_path)
        load_bundle(reload_path)
    except BundleError as exc:
        raise UserError(str(exc)) from exc
    clients = list(config.clients)
    rng = np.random.default_rng(0)
    users = rng.integers(1, len(bundle.vocab["user_id"]), size=config.distinct_users)
    user_ids = [bundle.vocab["user_id"][u] for u in users.tolist()]
    gateway_requests = [encode_post("127.0.0.1", "/v1/recommend", b) for b in _recommend_bodies(user_ids, config.k)]
    results: dict = {"config": {"bundle": str(bundle_path), "version": bundle.version, "k": config.k,
                                "candidates": config.candidates, "clients": clients, "seconds": config.seconds,
                                "rounds": config.rounds, "workers": config.workers, "reloads": config.reloads},
                     "gateway": {}, "torchserve": {}}
    env = {"RATINGCTR_CANDIDATES": str(config.candidates), "RATINGCTR_ADMIN_TOKEN": ADMIN_TOKEN}
    with ExitStack() as stack:
        gw = stack.enter_context(running_gateway({"main": bundle_path}, workers=config.workers, env=env))
        host, port = "127.0.0.1", int(gw.url.rsplit(":", 1)[1])
        targets = {"gateway": (port, gateway_requests)}
        if config.torchserve:
            from ratingctr.export.torchserve_process import local_torchserve

            ts_requests = [encode_post("127.0.0.1", "/predictions/ranker", b)
                           for b in _torchserve_bodies(bundle_path, users, config.candidates)]
            ts_url = stack.enter_context(local_torchserve(bundle_path, bundle.manifest.num_columns))
            targets["torchserve"] = (int(ts_url.rsplit(":", 1)[1]), ts_requests)
        for name, (target_port, requests) in targets.items():  # warm-up both
            run_load(host, target_port, requests, max(clients), config.warmup)
        per_round: dict = {name: {c: [] for c in clients} for name in targets}
        for r in range(config.rounds):
            for c in clients:
                for name, (target_port, requests) in targets.items():
                    summary = run_load(host, target_port, requests, c, config.seconds).summary()
                    per_round[name][c].append(summary)
                    print(f"round {r + 1}/{config.rounds} clients={c:>3} {name:<10} p50 {summary['p50_ms']:.3f} ms "
                          f"p99 {summary['p99_ms']:.3f} ms {summary['req_per_s']:.0f} req/s", flush=True)
        for name in targets:
            results[name] = {str(c): {**_median_summary(per_round[name][c]), "rounds": per_round[name][c]}
                             for c in clients}
        if config.reloads:
            results["reload"] = _reload_phase(host, port, gw.url, gateway_requests, config, bundle_path, reload_path)
    _verdicts(results, clients)
    _write(results, config.out)
    return 0


def _reload_phase(host: str, port: int, url: str, requests: list[bytes], config: GatewayBenchConfig,
                  bundle_path: Path, reload_path: Path) -> dict:
    """Steady phase, then the same load while ``reloads`` reloads alternate two bundles."""
    clients = config.reload_clients
    duration = config.reloads * config.reload_interval + 1.0
    steady = run_load(host, port, requests, clients, duration).summary()
    box: dict = {}
    thread = threading.Thread(target=lambda: box.update(r=run_load(host, port, requests, clients, duration)))
    thread.start()
    time.sleep(0.5)
    seconds = []
    for i in range(config.reloads):
        start = time.perf_counter()
        _reload(url, "main", reload_path if i % 2 == 0 else bundle_path)
        seconds.append(time.perf_counter() - start)
        time.sleep(max(0.0, config.reload_interval - seconds[-1]))
    thread.join()
    during = box["r"].summary()
    print(f"reloads: steady p99 {steady['p99_ms']:.3f} ms, "
          f"during {config.reloads} reloads p99 {during['p99_ms']:.3f} ms, "
          f"failed {during['failed']}", flush=True)
    return {"clients": clients, "steady": steady, "during": during, "reload_seconds_median": statistics.median(seconds),
            "p99_ratio": during["p99_ms"] / steady["p99_ms"]}


def _verdicts(results: dict, clients: list[int]) -> None:
    verdicts = {}
    if "1" in results["gateway"]:
        verdicts["p50_at_1_client_ms"] = {"value": results["gateway"]["1"]["p50_ms"], "target": 2.0,
                                          "met": results["gateway"]["1"]["p50_ms"] <= 2.0}
    if results.get("torchserve") and "1" in results["torchserve"]:
        ratio = results["gateway"]["1"]["p50_ms"] / results["torchserve"]["1"]["p50_ms"]
        verdicts["gateway_over_torchserve_p50"] = {"value": ratio, "target": 0.5, "met": ratio <= 0.5}
    if "reload" in results:
        verdicts["reload_p99_ratio"] = {"value": results["reload"]["p99_ratio"], "target": 2.0,
                                        "met": results["reload"]["p99_ratio"] <= 2.0}
        verdicts["failed_requests_during_reloads"] = {
            "value": results["reload"]["during"]["failed"], "target": 0,
            "met": results["reload"]["during"]["failed"] == 0}
    results["verdicts"] = verdicts


def render_markdown(results: dict) -> str:
    cfg = results["config"]
    lines = [f"# bench gateway: /v1/recommend (k={cfg['k']}, {cfg['candidates']} candidates) vs bare TorchServe",
             "", f"Bundle `{cfg['bundle']}` (version {cfg['version']}), gateway workers: {cfg['workers']}, "
             f"{cfg['rounds']} interleaved rounds of {cfg['seconds']} s per concurrency; medians over rounds.", ""]
    rows = []
    for c in cfg["clients"]:
        g = results["gateway"][str(c)]
        t = results.get("torchserve", {}).get(str(c))
        ts = [f"{t['p50_ms']:.3f}", f"{t['p95_ms']:.3f}", f"{t['p99_ms']:.3f}", f"{t['req_per_s']:.0f}",
              f"{g['p50_ms'] / t['p50_ms']:.3f}"] if t else ["–"] * 5
        rows.append([c, f"{g['p50_ms']:.3f}", f"{g['p95_ms']:.3f}", f"{g['p99_ms']:.3f}", f"{g['req_per_s']:.0f}", *ts])
    lines.append(md_table(["clients", "gateway p50 ms", "p95 ms", "p99 ms", "req/s", "TorchServe p50 ms", "p95 ms",
                           "p99 ms", "req/s", "gateway/TorchServe p50"], rows))
    if "reload" in results:
        r = results["reload"]
        lines += ["", f"Reloads ({cfg['reloads']}, alternating two bundles, {r['clients']} clients): steady p99 "
                  f"{r['steady']['p99_ms']:.3f} ms, during reloads p99 {r['during']['p99_ms']:.3f} ms "
                  f"(ratio {r['p99_ratio']:.2f}), failed requests {r['during']['failed']}, "
                  f"median reload {r['reload_seconds_median'] * 1000:.0f} ms."]
    verdicts = [[f"{name} ≤ {v['target']}", f"{v['value']:.3f}" if isinstance(v["value"], float) else str(v["value"]),
                 "yes" if v["met"] else "no"] for name, v in results.get("verdicts", {}).items()]
    lines += ["", md_table(["target", "measured", "met"], verdicts)]
    return "\n".join(lines) + "\n"


def _write(results: dict, out: Path | None) -> None:
    text = render_markdown(results)
    print(text)
    if out:
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
        path.with_suffix(".md").write_text(text)
