"""Does adding popularity to the retriever's score reach 1.3× most popular at 20% of ML-100k?

score(u, i) = u·v_i + β · std(u·v) · z(log(1 + clicks_i)); β from ``BETAS`` chosen on validation
Recall@20 (train items masked), reported on test (train + validation masked), against most
popular on the same split; the retriever at its defaults (``report.md``'s ``current`` policy),
seeds 1–3.  A popularity term could be served by FAISS as one extra vector dimension, so this
asks whether that is worth building.

    .venv/bin/python reports/ml-100k/retriever/popularity_blend.py 0.2 > reports/ml-100k/retriever/popularity_blend.json
"""
import json
import sys

import numpy as np
import torch
from pathlib import Path
from ratingctr.training.config import DataConfig
from ratingctr.training.retriever import RetrieverConfig, train_retriever
from ratingctr.training.experiments.retriever_sizes import write_subsample
from ratingctr.training.data.encode import TEST, TRAIN, VALID, load_dataset
from ratingctr.training.data.fetch import fetch_ml100k
from ratingctr.training.full_ranking import UserItems, full_ranking_metrics, sample_users
from ratingctr.report_files import short_commit
torch.set_num_threads(1)
frac = float(sys.argv[1]); BETAS = (0, 0.1, 0.25, 0.5, 1, 2, 4, 8)
out = {"commit": short_commit(), "fraction": frac, "betas": BETAS, "runs": []}
for seed in (1, 2, 3):
    csv = write_subsample(fetch_ml100k(None), frac, seed, Path("runs/blend/data"))
    dc = DataConfig(dataset="csv", data_dir=str(csv), seed=seed)
    run = Path(f"runs/blend/run-{frac}-{seed}")
    if not (run / "metrics.json").exists():
        train_retriever(dc, RetrieverConfig(seed=seed, progress=False), run)
    m = json.loads((run / "metrics.json").read_text())
    data = load_dataset(dc)
    U = torch.from_numpy(np.load(run / "user_vectors.npy")); V = torch.from_numpy(np.load(run / "item_vectors.npy"))
    clicks = data.rating >= data.threshold
    train = data.rows(TRAIN)
    pairs = lambda rows: UserItems.from_pairs(data.user[rows], data.item[rows], data.n_users)
    seen, vseen = pairs(np.concatenate([train, data.rows(VALID)])), pairs(train)
    rel = pairs(np.flatnonzero((data.split == TEST) & clicks)); vrel = pairs(np.flatnonzero((data.split == VALID) & clicks))
    users = sample_users(rel, data.n_users, None, seed); vusers = sample_users(vrel, data.n_users, None, seed)
    pop = np.bincount(data.item[train[clicks[train]]], minlength=data.n_items + 1).astype(np.float32)
    lp = torch.from_numpy(np.log1p(pop)); lp = (lp - lp.mean()) / lp.std()
    scale = float((U[1:] @ V[1:].T).std())
    def recall(beta, us, sn, rl):
        rows = lambda u: U[torch.from_numpy(u)] @ V.T + beta * scale * lp
        return full_ranking_metrics(rows, us, sn, rl, data.n_items, 20)["recall@20"]
    popular = m["popular"]["recall@20"]
    vals = {b: recall(b, vusers, vseen, vrel) for b in BETAS}
    best = max(vals, key=vals.get)
    test = {b: recall(b, users, seen, rel) for b in BETAS}
    out["runs"].append({"seed": seed, "popular": popular, "retriever": m["test"]["recall@20"], "valid": vals,
                        "chosen_beta": best, "test": test, "ratio_chosen": test[best] / popular,
                        "ratio_best_on_test": max(test.values()) / popular})
    print(frac, seed, f"pop {popular:.4f} base {m['test']['recall@20']:.4f} ({m['test']['recall@20']/popular:.2f}x) "
          f"chosen beta {best} -> {test[best]:.4f} ({test[best]/popular:.2f}x); all test ratios", 
          {b: round(t / popular, 2) for b, t in test.items()}, file=sys.stderr, flush=True)
print(json.dumps(out, indent=1))
