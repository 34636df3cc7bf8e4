"""``ratingctr promote``: export a candidate, judge it against what serves, and only then swap.

The steps, and why in this order:

1. everything cheap is checked first (runs exist, the admin token, the serving bundle, the
   held-out events and that they hold both classes), so a mistake costs no export;
2. the candidate is exported into ``<bundle root>/.candidate-…`` (the function ``ratingctr
   export`` calls): the gate scores the *bundle*, the exact thing that would serve;
3. both bundles score the held-out events (``online/holdout.py``) and ``online/gate.py``
   decides;
4. refused: the staging bundle is deleted, the root is as before.  Promoted: it is renamed
   to ``<root>/<model>-<version>`` (the content hash, so the same model is never two
   directories) and every ``--gateway`` is told ``POST /v1/admin/reload`` with
   ``"reason": "promotion"`` (counted in ``ratingctr_promotions_total``), then its
   ``/readyz`` must show the new version;
5. every decision is one JSON line appended (fsynced) to the promotion log.

Exit statuses: 0 promoted (or passed, with ``--dry-run``), 3 refused by the gate, 4 the gate
passed but a gateway did not end up serving the new version (the bundle stays in the root:
a gateway that did load it must be able to load it again), 2 a usage error.
"""
from __future__ import annotations

import json
import os
import shutil
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from ratingctr.errors import UserError
from ratingctr.online.gate import GateDecision, GateRule, decide
from ratingctr.online.holdout import run_last_stream_id, score_events, select_holdout, select_holdout_ids

PROMOTED, REFUSED, RELOAD_FAILED = 0, 3, 4
READY_WAIT_S = 30.0
HTTP_TIMEOUT_S = 120.0  # a reload loads, verifies and warms up a bundle before it answers


@dataclass(frozen=True)
class PromoteConfig:
    """``ratingctr promote``'s flags, typed once."""

    candidate: Path
    retriever: Path
    serving: str  # a bundle directory or a gateway URL (its /readyz names the bundle)
    holdout: Path
    bundle_root: Path
    model: str = "main"
    gateways: tuple[str, ...] = ()
    admin_token: str | None = None
    log: Path | None = None  # default: <bundle_root>/promotions.jsonl
    rule: GateRule = field(default_factory=GateRule)
    holdout_after: str | None = None
    holdout_newest: int | None = None
    holdout_ids: frozenset[str] | None = None  # the loop's per-user holdout; replaces the cutoff rule
    dry_run: bool = False
    sign_key: bytes | None = None

    @property
    def log_path(self) -> Path:
        return self.log if self.log is not None else self.bundle_root / "promotions.jsonl"


@dataclass(frozen=True)
class ServingBundle:
    given: str
    path: Path
    version: str


# ---- HTTP -------------------------------------------------------------------------------------
def _is_url(text: str) -> bool:
    return text.startswith(("http://", "https://"))


def _http(method: str, url: str, body: dict | None = None, token: str | None = None) -> tuple[int, dict]:
    """``(status, JSON body)``; an unreachable gateway is a UserError naming it."""
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"{}")
        except json.JSONDecodeError:
            return exc.code, {}
    except (urllib.error.URLError, OSError, json.JSONDecodeError) as exc:
        raise UserError(f"gateway {url} did not answer: {exc}") from exc


def gateway_model(url: str, model: str) -> dict:
    """The ``/readyz`` entry of ``model`` on a gateway: ``{"version", "path", ...}``."""
    _, ready = _http("GET", url.rstrip("/") + "/readyz")
    entry = (ready.get("models") or {}).get(model)
    if not isinstance(entry, dict) or "path" not in entry:
        raise UserError(f"gateway {url} serves no model {model!r} (it serves: {', '.join(ready.get('models') or {})})")
    return entry


def resolve_serving(serving: str, model: str) -> ServingBundle:
    """A bundle directory as given, or the one a gateway's ``/readyz`` says serves ``model``."""
    from ratingctr.bundle import BundleError, read_manifest

    path = Path(gateway_model(serving, model)["path"]) if _is_url(serving) else Path(serving)
    try:
        manifest = read_manifest(path)
    except BundleError as exc:
        raise UserError(f"serving bundle: {exc}") from exc
    return ServingBundle(given=serving, path=path, version=manifest.version)


def reload_gateway(url: str, model: str, path: Path, version: str, token: str | None) -> dict:
    """Reload one gateway and wait until its ``/readyz`` shows ``version``; the outcome as a dict."""
    status, body = _http("POST", url.rstrip("/") + "/v1/admin/reload",
                         {"name": model, "path": str(path), "reason": "promotion"}, token)
    if status != 200:
        return {"url": url, "ok": False, "status": status, "error": body.get("error", f"HTTP {status}")}
    deadline = time.monotonic() + READY_WAIT_S
    while True:  # with several workers the others follow through Redis: wait for the one asked
        served = gateway_model(url, model).get("version")
        if served == version:
            return {"url": url, "ok": True, "status": status, "version": served,
                    "previous_version": body.get("previous_version"), "seconds": body.get("seconds")}
        if time.monotonic() > deadline:
            return {"url": url, "ok": False, "status": status,
                    "error": f"/readyz still shows version {served} {READY_WAIT_S:.0f} s after the reload"}
        time.sleep(0.2)


def _reload_or_error(url: str, config: PromoteConfig, path: Path, version: str) -> dict:
    """One gateway's outcome; an unreachable one is a failed reload in the log, not a lost record."""
    try:
        return reload_gateway(url, config.model, path, version, config.admin_token)
    except UserError as exc:
        return {"url": url, "ok": False, "status": None, "error": str(exc)}


# ---- the promotion log ------------------------------------------------------------------------
def append_log(path: Path, record: dict) -> None:
    """One JSON line, appended and fsynced: the log is the audit trail, so it must survive a crash."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record, sort_keys=True, allow_nan=False) + "\n"
    with open(path, "a") as fh:
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + f".{int(epoch % 1 * 1000):03d}Z"


# ---- the steps --------------------------------------------------------------------------------
def _check_inputs(config: PromoteConfig) -> None:
    for name, run in (("--candidate", config.candidate), ("--retriever", config.retriever)):
        if not (Path(run) / "model.pt").is_file():
            raise UserError(f"{name} {run} is not a finished run (no model.pt)")
    if config.gateways and not config.dry_run and not config.admin_token:
        raise UserError("reloading a gateway needs its admin token: --admin-token-file F or RATINGCTR_ADMIN_TOKEN")
    if not config.model or "/" in config.model or config.model.startswith("."):
        raise UserError(f"--model {config.model!r} is not a usable bundle name")


def _serving_trained_through(serving_path: Path) -> str | None:
    """The serving bundle's own training cutoff, when its run directory is here to read."""
    from ratingctr.bundle import read_manifest

    run = Path(read_manifest(serving_path).source.ranker)
    return run_last_stream_id(run)[1] if run.is_dir() else None


def _trained_ids(candidate: Path, serving_path: Path) -> dict:
    """Stream ids each compared model trained on, for the ``--holdout-ids`` guard (the serving
    model's when its run directory is here to read)."""
    from ratingctr.bundle import read_manifest
    from ratingctr.training.data.stored import trained_stream_ids

    trained = {"candidate": trained_stream_ids(candidate)}
    run = Path(read_manifest(serving_path).source.ranker)
    if run.is_dir():
        trained["serving"] = trained_stream_ids(run)
    return trained


def _export_candidate(config: PromoteConfig, name: str) -> Path:
    from ratingctr.export.build import export_bundle

    config.bundle_root.mkdir(parents=True, exist_ok=True)
    staging = config.bundle_root / f".candidate-{config.model}-{os.getpid()}-{time.time_ns()}"
    export_bundle(config.candidate, config.retriever, staging, name=name, sign_key=config.sign_key)
    return staging


def _finalise(staging: Path, root: Path, model: str, version: str) -> Path:
    """The staging bundle under its final name; an existing directory of that version is kept
    (the version is the hash of its files: the same bundle)."""
    final = root / f"{model}-{version}"
    if final.exists():
        shutil.rmtree(staging)
    else:
        os.rename(staging, final)
    return final


def promote(config: PromoteConfig) -> tuple[int, dict]:
    """Run the gate and act on it; returns the exit status and the log record (already appended)."""
    from ratingctr.bundle import read_manifest

    started = time.time()
    _check_inputs(config)
    serving = resolve_serving(config.serving, config.model)
    serving_manifest = read_manifest(serving.path)
    _, candidate_through = run_last_stream_id(config.candidate)
    if config.holdout_ids is not None:
        holdout = select_holdout_ids(config.holdout, config.holdout_ids, _trained_ids(config.candidate, serving.path))
    else:
        holdout = select_holdout(config.holdout, [candidate_through, _serving_trained_through(serving.path)],
                                 config.holdout_after, config.holdout_newest)
    threshold = float(serving_manifest.model.threshold)
    clicks = holdout.events["rating"].to_numpy() >= threshold
    if clicks.all() or not clicks.any():
        raise UserError(f"the {holdout.rows} held-out events are all {'clicks' if clicks.all() else 'non-clicks'} "
                        f"(rating >= {threshold:g}): AUC is undefined, nothing to judge on")

    staging = _export_candidate(config, serving_manifest.name)
    try:
        candidate_manifest = read_manifest(staging)
        if float(candidate_manifest.model.threshold) != threshold:
            raise UserError(f"the candidate counts a click at rating >= {candidate_manifest.model.threshold:g}, "
                            f"the serving model at >= {threshold:g}: their scores answer different questions")
        decision: GateDecision = decide(score_events(serving.path, holdout.events),
                                        score_events(staging, holdout.events), config.rule)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise

    record = {
        "model": config.model, "dry_run": config.dry_run, "started_at": _iso(started),
        "candidate": {"run": str(config.candidate), "retriever": str(config.retriever),
                      "version": candidate_manifest.version, "path": None, "trained_through": candidate_through},
        "serving": {"given": serving.given, "path": str(serving.path), "version": serving.version},
        "holdout": {"dir": str(config.holdout), "threshold": threshold, **holdout.describe()},
        "gate": decision.to_dict(), "reasons": list(decision.reasons), "gateways": [],
    }
    if not decision.promote or config.dry_run:
        shutil.rmtree(staging, ignore_errors=True)
        record["decision"] = "refused" if not decision.promote else "passed_dry_run"
        status = REFUSED if not decision.promote else PROMOTED
    else:
        final = _finalise(staging, config.bundle_root, config.model, candidate_manifest.version)
        record["candidate"]["path"] = str(final)
        record["gateways"] = [_reload_or_error(url, config, final, candidate_manifest.version)
                              for url in config.gateways]
        failed = [g for g in record["gateways"] if not g["ok"]]
        record["decision"] = "reload_failed" if failed else "promoted"
        record["reasons"] += [f"gateway {g['url']}: {g['error']}" for g in failed]
        status = RELOAD_FAILED if failed else PROMOTED
    finished = time.time()
    record.update(finished_at=_iso(finished), seconds=round(finished - started, 3))
    append_log(config.log_path, record)
    return status, record


def summary(record: dict) -> str:
    """The decision in a few lines, for the terminal (the log has everything)."""
    gate = record["gate"]
    c, s, d = gate["candidate"], gate["serving"], gate["paired"]

    def f(value: float | None, digits: int = 4) -> str:
        return "–" if value is None else f"{value:.{digits}f}"

    head = (f"{record['decision']}: candidate {record['candidate']['version']} vs serving "
            f"{record['serving']['version']} on {record['holdout']['rows']} held-out events "
            + (f"of {record['holdout']['users']} users (named by --holdout-ids)"
               if record['holdout']['after_source'] == "--holdout-ids" else f"(after {record['holdout']['after']})"))
    auc_line = (f"  AUC      {f(c['auc'])} vs {f(s['auc'])}  Δ {f(d['auc_delta'])} "
                f"[{f(d['auc_ci95'][0])}, {f(d['auc_ci95'][1])}]")
    loss_line = (f"  logloss  {f(c['logloss'])} vs {f(s['logloss'])}  Δ {f(d['logloss_delta'])} "
                 f"[{f(d['logloss_ci95'][0])}, {f(d['logloss_ci95'][1])}]")
    gap_line = f"  calibration gap (mean p̂ − click rate) {f(c['calibration_gap'])} vs {f(s['calibration_gap'])}"
    lines = [head, auc_line, loss_line, gap_line]
    for name, pair in gate["slices"].items():
        lines.append(f"  {name:<9} {pair['serving']['rows']} rows: AUC {f(pair['candidate']['auc'])} vs "
                     f"{f(pair['serving']['auc'])}, logloss {f(pair['candidate']['logloss'])} vs "
                     f"{f(pair['serving']['logloss'])}")
    lines += [f"  refused: {reason}" for reason in record["reasons"]]
    if record["candidate"]["path"]:
        lines.append(f"  bundle {record['candidate']['path']}")
    return "\n".join(lines)
