"""Locust traffic for the ratingctr gateway (or a TorchServe serving the same ranker).

    locust -f loadtest/locustfile.py --headless -u 32 -r 32 -t 60s --host http://127.0.0.1:8000 \\
        --bundle bundles/dcnv2-rating --model rating [--events-share 0.05] [--unknown-share 0.05] \\
        [--k-values 5,10,20,50] [--target gateway|torchserve] [--samples-dir DIR]

The traffic model and the response checks live in ``loadtest/traffic.py``: users drawn by
their training activity plus ~5% unknown users, ``k`` varied, a share of ``/v1/events``
writes, and every response checked (status, ``k`` items, no seen item, well-formed
probabilities); a wrong answer is a Locust failure with the reason as its message.

The options are the fields of ``TrafficConfig`` (``loadtest/config.py``), each with an
environment variable (``RATINGCTR_LOADTEST_BUNDLE``, ``..._MODEL``, ``..._TARGET``, ...),
which is how the compose ``locust`` profile configures workers.  In
distributed mode the master hands its options to the workers; each worker reads the
bundle itself, so the bundle must be readable where the workers run.

``--samples-dir`` makes each Locust process write the exact response times it measured
(Locust's own CSV rounds them to whole milliseconds) to ``samples-<pid>.json`` there; the
A/B harness (``ratingctr loadtest``) computes its percentiles from those.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import orjson
from locust import FastHttpUser, events, task

from ratingctr.loadtest.config import TrafficConfig, add_locust_options
from ratingctr.loadtest.traffic import EventLedger, Traffic

RECOMMEND, EVENTS, PREDICT = "/v1/recommend", "/v1/events", "/predictions"
JSON_HEADERS = {"Content-Type": "application/json"}

_traffic: dict[TrafficConfig, Traffic] = {}
_ledger = EventLedger()
_last_recommended: dict[str, list[str]] = {}
_samples: dict[str, list[float]] = {}
_failed: dict[str, int] = {}


@events.init_command_line_parser.add_listener
def _add_options(parser) -> None:
    add_locust_options(parser.add_argument_group("ratingctr traffic"))


def _traffic_for(options) -> Traffic:
    """One Traffic per process and configuration (workers get the master's options at spawn)."""
    config = TrafficConfig.from_options(options)
    if config not in _traffic:
        _traffic[config] = Traffic(config)
    return _traffic[config]


@events.request.add_listener
def _record(request_type, name, response_time, response_length, exception=None, **kwargs) -> None:
    _samples.setdefault(name, []).append(float(response_time))
    if exception is not None:
        _failed[name] = _failed.get(name, 0) + 1


@events.test_stop.add_listener
def _let_csv_catch_up(environment, **kwargs) -> None:
    """Locust rewrites its CSV stats once a second and not at exit, so a run's last second of
    requests would be missing from ``--csv``.  Users are stopped when this fires; waiting one
    writer interval lets the CSV reach the final totals."""
    options = environment.parsed_options
    if options is not None and getattr(options, "csv_prefix", None):
        import gevent
        from locust.stats import CSV_STATS_INTERVAL_SEC

        gevent.sleep(CSV_STATS_INTERVAL_SEC + 0.2)


@events.quitting.add_listener
def _write_samples(environment, **kwargs) -> None:
    options = environment.parsed_options
    if options is None or not options.samples_dir or not _samples:
        return
    out = Path(options.samples_dir)
    out.mkdir(parents=True, exist_ok=True)
    payload = {"pid": os.getpid(), "response_times_ms": _samples, "failures": _failed}
    (out / f"samples-{os.getpid()}.json").write_text(json.dumps(payload))


class RatingCtrUser(FastHttpUser):
    """One simulated client: recommendations, with a share of rating events (or TorchServe scoring calls)."""

    def wait_time(self) -> float:
        think = self.config.think_ms
        return float(self.rng.exponential(think / 1000.0)) if think > 0 else 0.0

    def on_start(self) -> None:
        self.rng = np.random.default_rng()
        self.traffic = _traffic_for(self.environment.parsed_options)
        self.config = self.traffic.config

    @task
    def step(self) -> None:
        if self.config.target == "torchserve":
            self.predict()
        elif self.rng.random() < self.config.events_share:
            self.post_event()
        else:
            self.recommend()

    def recommend(self) -> None:
        user_id, index = self.traffic.sample_user(self.rng)
        k = self.traffic.sample_k(self.rng)
        payload = {"user_id": user_id, "k": k, "exclude_seen": True}
        if self.config.model:
            payload["model"] = self.config.model
        sent = time.monotonic()
        with self.client.post(RECOMMEND, json=payload, name=RECOMMEND, catch_response=True) as response:
            body = _json(response)
            problem = self.traffic.check_recommend(response.status_code, body, user_id, index, k,
                                                   _ledger.seen_before(user_id, sent), self.config.model)
            if problem:
                response.failure(problem)
            else:
                response.success()
                if index:
                    _last_recommended[user_id] = [it["item_id"] for it in body["items"]]

    def post_event(self) -> None:
        user_id, index = self.traffic.sample_user(self.rng, allow_unknown=False)
        item_id = self.traffic.event_item(self.rng, index, _last_recommended.pop(user_id, None))
        event = {"user_id": user_id, "item_id": item_id, "rating": int(self.rng.integers(1, 6)), "ts": time.time()}
        with self.client.post(EVENTS, json={"events": [event]}, name=EVENTS, catch_response=True) as response:
            problem = self.traffic.check_event(response.status_code, _json(response))
            if problem:
                response.failure(problem)
            else:
                _ledger.record(user_id, item_id)
                response.success()

    def predict(self) -> None:
        _, index = self.traffic.sample_user(self.rng)
        body, rows = self.traffic.prediction_body(index)
        path = f"{PREDICT}/{self.config.model or 'ranker'}"
        with self.client.post(path, data=body, headers=JSON_HEADERS, name=PREDICT, catch_response=True) as response:
            problem = self.traffic.check_prediction(response.status_code, _json(response), rows)
            if problem:
                response.failure(problem)
            else:
                response.success()


def _json(response):
    """The parsed body (orjson: the generator's CPU is the gateway's CPU here), else its text."""
    try:
        return orjson.loads(response.content or b"")
    except orjson.JSONDecodeError:  # a non-JSON body is reported by the check as the raw text
        return response.text
