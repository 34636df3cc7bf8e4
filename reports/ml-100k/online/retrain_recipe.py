"""Retrain recipes on cycle 1 of the online experiment, judged like the gate on the same held-out events.

    .venv/bin/python reports/ml-100k/online/retrain_recipe.py WORK NAME="FLAGS" ...

WORK is a finished `ratingctr experiment online --work WORK` directory (its initial runs, its
event log, cycle 1's cutoff in loop/loop.json and cycle 1's retriever); each NAME retrains the
initial ranker on the events up to that cutoff with FLAGS and scores the events of chunk 1 after
the cutoff (what cycle 1's gate scored) with the initial bundle and the candidate.
"""
import json, subprocess, sys, time
from pathlib import Path
import numpy as np
from ratingctr.cli import main
from ratingctr.online.holdout import score_events
from ratingctr.training.data.event_log import read_event_log, stream_id_key
from ratingctr.training.metrics import auc, logloss
W = Path(sys.argv.pop(1))
cut = json.loads((W / "loop/loop.json").read_text())["history"][0]["train_through"]
chunk_end = 50_000 + json.loads((W / "progress.json").read_text())["chunks"][0]["rows"]  # replay rows of chunk 1
log = read_event_log(W / "events")
rows = log["event_id"].str.slice(7).astype(int)
key, c = stream_id_key(log["stream_id"]), stream_id_key([cut])[0]
after = (key[:, 0] > c[0]) | ((key[:, 0] == c[0]) & (key[:, 1] > c[1]))
hold = log[after & (rows < chunk_end).to_numpy()]
print("holdout", len(hold))
serving = score_events(W / "bundles/main-initial", hold)
print("serving", auc(serving.labels, serving.p_click), logloss(serving.labels, serving.p_click))
for name, extra in [(a.split("=")[0], a.split("=")[1].split()) for a in sys.argv[1:]]:
    out = W / "recipes" / name
    if not (out / "ranker/metrics.json").is_file():
        t = time.time()
        assert main(["retrain", "--from", str(W / "runs/initial-ranker"), "--events", str(W / "events"), "--out", str(out / "ranker"),
                     "--max-stream-id", cut, "--no-progress", *extra]) == 0
        print(name, "trained", time.time() - t)
    if not (out / "bundle/manifest.json").is_file():
        assert main(["export", "--ranker", str(out / "ranker"), "--retriever", str(W / "loop/cycle-1/retriever"), "--out", str(out / "bundle")]) == 0
    s = score_events(out / "bundle", hold)
    m = json.loads((out / "ranker/metrics.json").read_text())
    print(f"RESULT {name}: AUC {auc(s.labels, s.p_click):.4f} logloss {logloss(s.labels, s.p_click):.4f} best_epoch {m.get('best_epoch')} {extra}", flush=True)
