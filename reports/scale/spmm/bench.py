"""Retriever propagation cost per stored entry: the old product against the new one.

old: 64-bit CSR indices, one ``Â @ X`` over all 64 columns (the code before this bench);
new: 32-bit indices (``normalized_adjacency``) and column blocks (``blocked_spmm``, its width
measured on first use); ``widths`` times one product at each fixed width as well.
Alternating rounds (the order flips each round; round 0 warms up and is dropped) of one
``Â @ X`` (d = 64) and one retriever BPR step (3 layers, forward + backward + Adam, batch =
positives / 1,000 as ``max_batches_per_epoch`` sets it at these sizes), median of the rest.

    .venv/bin/ratingctr data synth --users 6493 --items 2364 --ratings 1000000 --seed 0 --out /tmp/s1m
    .venv/bin/ratingctr data synth --users 32467 --items 11820 --ratings 5000000 --seed 0 --out /tmp/s5m
    .venv/bin/ratingctr data synth --users 162337 --items 59101 --ratings 25000000 --seed 0 --out /tmp/s25m
    .venv/bin/ratingctr data synth --users 25974 --items 2500000 --ratings 4000000 --seed 0 --out /tmp/c4m
    .venv/bin/python reports/scale/spmm/bench.py /tmp/s1m /tmp/s5m /tmp/s25m /tmp/c4m > reports/scale/spmm/results.json
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ratingctr.report_files import short_commit
from ratingctr.training.graph import layer_weights, normalized_adjacency
from ratingctr.training.models.kernels import spmm
from ratingctr.training.retriever import LightGCN, RetrieverConfig

ROUNDS = 5
OLD = 2**40


def graph(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    inter = pd.read_csv(next(folder.glob("*.inter")), sep="\t", usecols=[0, 1])
    return pd.factorize(inter.iloc[:, 0])[0] + 1, pd.factorize(inter.iloc[:, 1])[0] + 1


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    config = RetrieverConfig()
    out = {"commit": short_commit(), "threads": torch.get_num_threads(), "rounds": ROUNDS,
           "cache_bytes": spmm.CACHE_BYTES, "candidate_widths": list(spmm.CANDIDATE_WIDTHS), "points": []}
    for folder in map(Path, sys.argv[1:]):
        users, items = graph(folder)
        n_users, n_items = int(users.max()), int(items.max())
        train = np.random.default_rng(0).random(users.size) < 0.8  # train-retriever's share of positives
        adjacency = normalized_adjacency(users[train], items[train], n_users, n_items)
        wide = torch.sparse_csr_tensor(adjacency.crow_indices().long(), adjacency.col_indices().long(),
                                       adjacency.values(), adjacency.shape)
        models = {arm: LightGCN(n_users, n_items, config.embedding_dim, adj, layer_weights(config.layers))
                  for arm, adj in (("old", wide), ("new", adjacency))}
        models["new"].load_state_dict(models["old"].state_dict())
        optimizers = {arm: torch.optim.Adam(m.parameters(), lr=config.lr) for arm, m in models.items()}
        batch = max(config.batch_size, -(-int(train.sum()) // config.max_batches_per_epoch))
        rng = np.random.default_rng(1)
        x = torch.randn(adjacency.shape[0], config.embedding_dim)

        def step(arm: str) -> None:
            pick = rng.integers(0, int(train.sum()), batch)
            u = torch.from_numpy(users[train][pick])
            p = torch.from_numpy(items[train][pick])
            n = torch.from_numpy(rng.integers(1, n_items + 1, batch))
            loss = models[arm].bpr_loss(u, p, n, config.reg_weight)
            optimizers[arm].zero_grad(set_to_none=True)
            loss.backward()
            optimizers[arm].step()

        def run(arm: str) -> tuple[float, float]:
            original = spmm.CACHE_BYTES
            spmm.CACHE_BYTES = OLD if arm == "old" else original  # old: one product over all columns
            try:
                product = timed(lambda: spmm.blocked_spmm(wide if arm == "old" else adjacency, x))
                return product, timed(lambda: step(arm))
            finally:
                spmm.CACHE_BYTES = original

        times: dict[str, dict[str, list[float]]] = {"spmm": {"old": [], "new": []}, "step": {"old": [], "new": []}}
        for round_ in range(ROUNDS + 1):
            for arm in ("old", "new") if round_ % 2 else ("new", "old"):
                product, one_step = run(arm)
                if round_:
                    times["spmm"][arm].append(product)
                    times["step"][arm].append(one_step)
        nnz = int(adjacency._nnz())
        point = {"data": str(folder), "ratings": int(users.size), "nodes": int(adjacency.shape[0]), "nnz": nnz,
                 "block_width": spmm.chosen_width(adjacency, x),
                 "widths_ns_per_nnz": {w: float(np.median([timed(lambda w=w: spmm.blocked_spmm(adjacency, x, w))
                                                           for _ in range(3)])) / adjacency._nnz() * 1e9
                                       for w in (64, 32, 16, 8, 4, 1)},
                 "batch": batch, "layers": config.layers}
        for what in times:
            for arm in times[what]:
                point[f"{what}_{arm}_s"] = times[what][arm]
                point[f"{what}_{arm}_median_s"] = float(np.median(times[what][arm]))
        point["spmm_ns_per_nnz"] = {arm: point[f"spmm_{arm}_median_s"] / nnz * 1e9 for arm in ("old", "new")}
        point["step_speedup"] = point["step_old_median_s"] / point["step_new_median_s"]
        out["points"].append(point)
        print(f"{folder}: {point['spmm_ns_per_nnz']} step {point['step_old_median_s']:.2f} -> "
              f"{point['step_new_median_s']:.2f} s", file=sys.stderr, flush=True)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
