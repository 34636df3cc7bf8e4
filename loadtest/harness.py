"""``ratingctr loadtest``: A/B latency of two bundles under the same Locust traffic.

One gateway process serves both bundles (so the model is the only difference between A
and B); Locust runs headless against A, then B, then A again … for ``rounds`` rounds of
``duration`` seconds each, after an unrecorded warm-up of each.  Every Locust run is a
fresh process that stops by itself (``-t``).  Per run we keep Locust's CSV stats
(requests, failures, req/s, its percentiles) and the exact response times the locustfile
recorded; the report's percentiles are exact order statistics of the primary request
(``/v1/recommend``; ``/predictions`` with ``--target torchserve``), computed the way
Locust computes them, so they agree with Locust's CSV after its whole-millisecond rounding.
Against a gateway, ``/metrics`` is scraped before and after every run: the gateway's own
mean handling time and ONNX Runtime stage time for the model (Prometheus sum/count) separate
the model's cost from HTTP, JSON and queueing on the machine.

``--target torchserve`` serves each bundle's ``ranker.mar`` from a local TorchServe and
drives the same traffic shape at it (user → its retrieved candidate rows).
``--host URL`` skips starting anything and loads an already running gateway that serves
both models under the given names (e.g. a remote fleet; see the README's scale-out notes).
"""
from __future__ import annotations

import ast
import csv
import importlib.metadata
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

from ratingctr.errors import UserError
from ratingctr.loadtest.config import LoadTestConfig, Variant
from ratingctr.processes import free_port

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
PERCENTILES = {"p50": 0.50, "p95": 0.95, "p99": 0.99}
CSV_PERCENTILES = {"p50": "50%", "p95": "95%", "p99": "99%"}
PRIMARY = {"gateway": "/v1/recommend", "torchserve": "/predictions"}
# Server-side ratios from the gateway's Prometheus histograms (sum/count: exact means).
SERVER_RATIOS = ("server_mean", "server_onnx")


def exact_percentile(values: np.ndarray, q: float) -> float:
    """Locust's order statistic (the value at ascending index ``int(n*q)``), without its rounding."""
    if values.size == 0:
        return float("nan")
    return float(np.sort(values)[min(values.size - 1, int(values.size * q))])


def locust_rounded(ms: float) -> int:
    """How Locust buckets one response time before computing its percentiles."""
    if ms < 100:
        return round(ms)
    if ms < 1000:
        return int(round(ms, -1))
    if ms < 10000:
        return int(round(ms, -2))
    return int(round(ms, -3))


def _read_stats(prefix: Path) -> dict[str, dict[str, str]]:
    path = Path(f"{prefix}_stats.csv")
    if not path.is_file():
        raise UserError(f"Locust wrote no stats ({path} missing); see {prefix}.log")
    with open(path, newline="") as fh:
        return {row["Name"]: row for row in csv.DictReader(fh)}


def _read_failures(prefix: Path) -> list[dict]:
    path = Path(f"{prefix}_failures.csv")
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return [{"name": r["Name"], "error": _unwrap(r["Error"]), "occurrences": int(r["Occurrences"])}
                for r in csv.DictReader(fh)]


def _unwrap(error: str) -> str:
    """Locust stores ``response.failure(msg)`` as ``CatchResponseError('msg')``: keep the message."""
    match = re.fullmatch(r"CatchResponseError\((.*)\)", error, flags=re.S)
    if match:
        try:
            return str(ast.literal_eval(match.group(1)))
        except (ValueError, SyntaxError):
            return match.group(1)
    return error


def _read_samples(directory: Path) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    times: dict[str, list[float]] = {}
    failed: dict[str, int] = {}
    for file in sorted(directory.glob("samples-*.json")):
        payload = json.loads(file.read_text())
        for name, values in payload["response_times_ms"].items():
            times.setdefault(name, []).extend(values)
        for name, n in payload["failures"].items():
            failed[name] = failed.get(name, 0) + n
    return {name: np.asarray(v, dtype=np.float64) for name, v in times.items()}, failed


def scrape_server_times(host: str) -> dict[tuple[str, ...], float] | None:
    """The gateway's Prometheus latency sums and counts: {(metric, label values...): value}.

    ``None`` when there is no ratingctr gateway ``/metrics`` at ``host`` (e.g. TorchServe).
    Behind a load balancer this sees one replica only.
    """
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(f"{host}/metrics", timeout=10) as response:
            text = response.read().decode()
    except OSError:
        return None
    values: dict[tuple[str, ...], float] = {}
    gateway = False
    for family in text_string_to_metric_families(text):
        if family.name not in ("ratingctr_request_seconds", "ratingctr_stage_seconds"):
            continue
        gateway = True  # a fresh gateway lists the families before it has any sample
        for sample in family.samples:
            if sample.name.endswith(("_sum", "_count")):
                key = (sample.name, sample.labels.get("endpoint") or sample.labels.get("stage", ""),
                       sample.labels.get("model", ""))
                values[key] = values.get(key, 0.0) + sample.value
    return values if gateway else None


def server_delta(before: dict | None, after: dict | None, model: str) -> dict | None:
    """Server-side figures of one run for ``model``: recommend count, mean request and stage times (ms)."""
    if before is None or after is None:
        return None

    def delta(name: str, label: str) -> float:
        key = (name, label, model)
        return after.get(key, 0.0) - before.get(key, 0.0)

    count = delta("ratingctr_request_seconds_count", "recommend")
    if count <= 0:
        return None
    stages = sorted({k[1] for k in after if k[0] == "ratingctr_stage_seconds_count" and k[2] == model})
    return {"requests": int(round(count)),
            "mean_ms": 1000.0 * delta("ratingctr_request_seconds_sum", "recommend") / count,
            "stages_ms": {stage: 1000.0 * delta("ratingctr_stage_seconds_sum", stage)
                          / max(1.0, delta("ratingctr_stage_seconds_count", stage)) for stage in stages}}


def run_locust(config: LoadTestConfig, variant: Variant, host: str, model: str, seconds: float,
               run_dir: Path) -> dict:
    """One headless Locust process for ``seconds``; returns the run's figures."""
    run_dir.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(run_dir / "samples", ignore_errors=True)  # never merge a previous run's samples
    prefix = run_dir / "locust"
    cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--only-summary",
           "-u", str(config.users), "-r", str(config.spawn_rate), "-t", f"{max(1, round(seconds))}s",
           "--host", host, "--csv", str(prefix), "--exit-code-on-error", "0", "--loglevel", "WARNING",
           *config.traffic(variant, model).locust_args(), "--samples-dir", str(run_dir / "samples")]
    if config.locust_processes > 1:  # forked workers; keep the master's socket on loopback
        port = str(free_port())
        cmd += ["--processes", str(config.locust_processes), "--master-bind-host", "127.0.0.1",
                "--master-bind-port", port, "--master-host", "127.0.0.1", "--master-port", port]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(LOCUSTFILE.parent.parent),
                                                                     os.environ.get("PYTHONPATH")]))}
    before = scrape_server_times(host) if config.target == "gateway" else None
    started = time.time()
    with open(f"{prefix}.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                start_new_session=True)
        try:
            proc.wait(timeout=seconds + 120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise UserError(f"Locust did not stop within {seconds + 120:.0f} s; see {prefix}.log")
    elapsed = time.time() - started
    server = server_delta(before, scrape_server_times(host), model) if before is not None else None
    if proc.returncode != 0:
        raise UserError(f"Locust exited with status {proc.returncode}: "
                        + Path(f"{prefix}.log").read_text()[-1500:])
    stats = _read_stats(prefix)
    processes = len(list((run_dir / "samples").glob("samples-*.json")))
    samples, failed = _read_samples(run_dir / "samples")
    primary = PRIMARY[config.target]
    total = stats.get("Aggregated")
    if total is None or primary not in stats:
        raise UserError(f"Locust made no {primary} request against {host}; see {prefix}.log")
    times = samples.get(primary, np.empty(0))
    row = stats[primary]
    result = {
        "variant": variant.label, "model": variant.name, "host": host,
        "requests": int(total["Request Count"]), "failures": int(total["Failure Count"]),
        "rps": float(total["Requests/s"]),
        "primary": primary, "primary_requests": int(times.size),
        **{key: exact_percentile(times, q) for key, q in PERCENTILES.items()},
        "mean": float(times.mean()) if times.size else float("nan"),
        "csv": {"requests": int(row["Request Count"]), "failures": int(row["Failure Count"]),
                "rps": float(row["Requests/s"]),
                **{key: float(row[col]) for key, col in CSV_PERCENTILES.items()}},
        "by_name": {name: {"requests": int(r["Request Count"]), "failures": int(r["Failure Count"])}
                    for name, r in stats.items() if name != "Aggregated"},
        "server": server,
        "sample_failures": int(sum(failed.values())),
        "locust_processes": processes,
        "failure_messages": _read_failures(prefix),
        "wall_s": elapsed,
    }
    # Keep the primary request's samples (the report's percentiles and CDF), drop the raw per-process files.
    np.save(run_dir / "primary_ms.npy", times)
    shutil.rmtree(run_dir / "samples", ignore_errors=True)
    return result


def _server_figure(r: dict, key: str) -> float | None:
    server = r.get("server")
    if not server:
        return None
    return server["mean_ms"] if key == "server_mean" else server["stages_ms"].get(key.removeprefix("server_"))


def _ratio(rounds: list[dict], key: str) -> dict | None:
    by_round: dict[int, dict[str, float]] = {}
    for r in rounds:
        value = _server_figure(r, key) if key.startswith("server_") else r[key]
        if value is not None:
            by_round.setdefault(r["round"], {})[r["variant"]] = value
    values = [v["B"] / v["A"] for _, v in sorted(by_round.items()) if "A" in v and "B" in v and v["A"] > 0]
    if not values:
        return None
    return {"median": float(np.median(values)), "min": float(min(values)), "max": float(max(values)),
            "rounds": values}


@contextmanager
def _targets(config: LoadTestConfig) -> Iterator[dict[str, tuple[str, str]]]:
    """{label: (host URL, model name to request)} for the run, with whatever must be started."""
    variants = (config.a, config.b)
    if config.host:
        yield {v.label: (config.host.rstrip("/"), v.name) for v in variants}
        return
    if config.target == "torchserve":
        from ratingctr.bundle import read_manifest
        from ratingctr.export.torchserve_process import local_torchserve

        with ExitStack() as stack:
            urls = {v.label: (stack.enter_context(local_torchserve(v.path, read_manifest(v.path).num_columns)),
                              "ranker") for v in variants}
            yield urls
        return
    try:
        from ratingctr.serving.process import running_gateway
    except ImportError as exc:  # the gateway is part of this package; this only guards a broken install
        raise UserError(f"the gateway is not available: {exc}") from exc
    bundles = {v.name: v.path for v in variants}
    with running_gateway(bundles, redis_url=config.redis_url, workers=config.gateway_workers) as gateway:
        yield {v.label: (gateway.url, v.name) for v in variants}


def _describe(variant: Variant) -> dict:
    from ratingctr.bundle import read_manifest

    manifest = read_manifest(variant.path)
    model = manifest.model
    return {"name": variant.name, "path": str(variant.path), "bundle_name": manifest.name,
            "version": manifest.version, "arch": model.arch, "head": model.head,
            "levels": model.rating_levels}


def validate(config: LoadTestConfig) -> None:
    if config.a.name == config.b.name:
        raise UserError(f"--a and --b need different model names (both are {config.a.name!r})")
    for v in (config.a, config.b):
        if not (v.path / "manifest.json").is_file():
            raise UserError(f"--{v.label.lower()}: {v.path} is not a bundle directory (no manifest.json)")
        if config.target == "torchserve" and not config.host and not (v.path / "ranker.mar").is_file():
            raise UserError(f"--target torchserve: {v.path} has no ranker.mar (export it with --torchserve)")
    if config.users < 1 or config.spawn_rate <= 0 or config.duration < 1 or config.rounds < 1 or config.warmup < 0:
        raise UserError("--users, --spawn-rate, --rounds must be positive, --duration at least 1 s, --warmup >= 0")
    if config.gateway_workers < 1 or config.locust_processes < 1 or config.think_ms < 0:
        raise UserError("--gateway-workers and --locust-processes must be at least 1, --think-ms >= 0")
    if config.host and not config.host.startswith(("http://", "https://")):
        raise UserError(f"--host must be an http(s) URL, got {config.host!r}")
    if config.target not in PRIMARY:
        raise UserError(f"--target must be one of {', '.join(PRIMARY)}")


def _git_commit() -> str | None:
    """The code measured (HEAD of the checkout the harness runs from), or None outside git."""
    import subprocess

    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10,
                              cwd=Path(__file__).resolve().parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def run_loadtest(config: LoadTestConfig) -> dict:
    """Warm up, run the interleaved rounds, write report.md/json and latency.png; return the report."""
    from ratingctr.loadtest.report import write_report

    validate(config)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = out / "runs"
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    rounds: list[dict] = []
    warmup: list[dict] = []
    samples: dict[str, list[np.ndarray]] = {"A": [], "B": []}
    with _targets(config) as targets:
        if config.warmup > 0:
            for v in (config.a, config.b):
                host, model = targets[v.label]
                warmup.append(run_locust(config, v, host, model, config.warmup, runs / f"warmup-{v.label}"))
        for r in range(1, config.rounds + 1):
            for v in (config.a, config.b):
                host, model = targets[v.label]
                result = run_locust(config, v, host, model, config.duration, runs / f"round{r}-{v.label}")
                result["round"] = r
                rounds.append(result)
                samples[v.label].append(np.load(runs / f"round{r}-{v.label}" / "primary_ms.npy"))
                print(f"round {r} {v.label} ({v.name}): {result['requests']} requests, {result['failures']} failed, "
                      f"{result['rps']:.1f} req/s, p50 {result['p50']:.2f} ms, p99 {result['p99']:.2f} ms",
                      flush=True)
    report = {
        "target": config.target,
        "variants": {"A": _describe(config.a), "B": _describe(config.b)},
        "settings": config.settings(),
        "command": list(config.command),
        "environment": {"python": platform.python_version(), "platform": platform.platform(),
                        "cpus": os.cpu_count(), "locust": importlib.metadata.version("locust"),
                        "commit": _git_commit(), "started_at": started, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
        "latency": "exact response times of the primary request, Locust's order statistic (index int(n*q)), ms",
        "rounds": rounds,
        "ratio": {key: ratio for key in (*PERCENTILES, "mean", "rps", *SERVER_RATIOS)
                  if (ratio := _ratio(rounds, key)) is not None},
        "failures": int(sum(r["failures"] for r in rounds)),
        "requests": int(sum(r["requests"] for r in rounds)),
        "warmup": [{k: w[k] for k in ("variant", "model", "requests", "failures", "rps", "p50", "p99")} for w in warmup],
    }
    write_report(report, {label: np.concatenate(v) if v else np.empty(0) for label, v in samples.items()}, out)
    return report
