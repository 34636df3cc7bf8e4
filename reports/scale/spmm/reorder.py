"""Retriever step with ids in arrival order against the degree order (``training/graph_order.py``).

The same graph as ``bench.py``: a synthetic draw's interactions, the 80% share train-retriever
propagates over.  Two LightGCN models with equal weights: ``arrival`` builds Â on the ids as
factorized, ``degree`` on the relabelled ids (forced, whatever the size).  Alternating rounds
(the order flips each round; round 0 warms up and is dropped), median of the rest, of one BPR
step (3 layers, forward + backward + Adam, batch = positives / 1,000) and of one ``Â @ X`` at
the width ``blocked_spmm`` measures for that adjacency.  The two models' vectors are checked
equal first.

    .venv/bin/python reports/scale/spmm/reorder.py /tmp/s5m /tmp/s25m > reports/scale/spmm/reorder.json
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from ratingctr.report_files import short_commit
from ratingctr.training.graph import layer_weights, normalized_adjacency
from ratingctr.training.graph_order import degree_order, node_permutation
from ratingctr.training.models.kernels import spmm
from ratingctr.training.retriever import LightGCN, RetrieverConfig

from bench import graph, timed  # this folder's bench.py: the same graph, the same clock

ROUNDS = 4


def main() -> None:
    config = RetrieverConfig()
    out = {"commit": short_commit(), "threads": torch.get_num_threads(), "rounds": ROUNDS, "points": []}
    for folder in map(Path, sys.argv[1:]):
        users, items = graph(folder)
        n_users, n_items = int(users.max()), int(items.max())
        train = np.random.default_rng(0).random(users.size) < 0.8
        gu, gi = users[train], items[train]
        new_user, new_item = degree_order(gu, gi, n_users, n_items, config.embedding_dim, force=True)
        adjacency = {"arrival": normalized_adjacency(gu, gi, n_users, n_items),
                     "degree": normalized_adjacency(new_user[gu], new_item[gi], n_users, n_items)}
        weights = layer_weights(config.layers)
        models = {"arrival": LightGCN(n_users, n_items, config.embedding_dim, adjacency["arrival"], weights),
                  "degree": LightGCN(n_users, n_items, config.embedding_dim, adjacency["degree"], weights,
                                     node_permutation(new_user, new_item))}
        models["degree"].load_state_dict(models["arrival"].state_dict())
        with torch.no_grad():
            for a, b in zip(models["arrival"].vectors(), models["degree"].vectors()):
                assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)
        optimizers = {arm: torch.optim.Adam(m.parameters(), lr=config.lr) for arm, m in models.items()}
        batch = max(config.batch_size, -(-int(train.sum()) // config.max_batches_per_epoch))
        rng = np.random.default_rng(1)
        x = torch.randn(adjacency["arrival"].shape[0], config.embedding_dim)

        def step(arm: str) -> None:
            pick = rng.integers(0, gu.size, batch)
            u, p = torch.from_numpy(gu[pick]), torch.from_numpy(gi[pick])
            n = torch.from_numpy(rng.integers(1, n_items + 1, batch))
            loss = models[arm].bpr_loss(u, p, n, config.reg_weight)
            optimizers[arm].zero_grad(set_to_none=True)
            loss.backward()
            optimizers[arm].step()

        times = {what: {arm: [] for arm in models} for what in ("spmm", "step")}
        for round_ in range(ROUNDS + 1):
            for arm in ("arrival", "degree") if round_ % 2 else ("degree", "arrival"):
                product = timed(lambda: spmm.blocked_spmm(adjacency[arm], x))
                one_step = timed(lambda: step(arm))
                if round_:
                    times["spmm"][arm].append(product)
                    times["step"][arm].append(one_step)
        point = {"data": str(folder), "ratings": int(users.size), "nodes": int(adjacency["arrival"].shape[0]),
                 "nnz": int(adjacency["arrival"]._nnz()), "batch": batch,
                 "block_width": {arm: spmm.chosen_width(adjacency[arm], x) for arm in models}}
        for what, arms in times.items():
            for arm, values in arms.items():
                point[f"{what}_{arm}_s"] = values
                point[f"{what}_{arm}_median_s"] = float(np.median(values))
        point["step_speedup"] = point["step_arrival_median_s"] / point["step_degree_median_s"]
        out["points"].append(point)
        print(f"{folder}: step {point['step_arrival_median_s']:.2f} -> {point['step_degree_median_s']:.2f} s, "
              f"spmm {point['spmm_arrival_median_s']:.3f} -> {point['spmm_degree_median_s']:.3f} s",
              file=sys.stderr, flush=True)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
