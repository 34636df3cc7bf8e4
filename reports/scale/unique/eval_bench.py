"""A trained model's whole evaluation (``full_eval``: pointwise valid + test, uni100 on a
2,000-user sample) with the distinct keys found by ``np.unique`` (before) and by
``sorted_unique`` (after), in one process on the same model and data, rounds A B B A.

    .venv/bin/ratingctr train --dataset atomic --data-dir /tmp/s25m --k-core 5 --model DCNV2 --head binary \\
        --epochs 1 --eval-users 2000 --no-progress --out /tmp/s25/run
    .venv/bin/python reports/scale/unique/eval_bench.py /tmp/s25/run > reports/scale/unique/eval.json
"""
from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from ratingctr.report_files import short_commit
from ratingctr.training import evaluation, metrics as metrics_module, sampling
from ratingctr.training.data.stored import load_run_data
from ratingctr.training.run import load_checkpoint, restore_model
from ratingctr.training.trainer import seed_everything, select_device
from ratingctr.unique import sorted_unique

MODULES = (evaluation, sampling, metrics_module)


def use(unique) -> None:
    for module in MODULES:
        module.sorted_unique = unique


def main() -> None:
    run = Path(sys.argv[1])
    payload, config = load_checkpoint(run)
    data, _ = load_run_data(run, config.data)
    model = restore_model(payload, config, data).to(select_device("cpu"))
    device = select_device("cpu")
    times: dict[str, list[float]] = {"np.unique": [], "sorted_unique": []}
    results = {}
    for name in ("np.unique", "sorted_unique", "sorted_unique", "np.unique"):
        use(np.unique if name == "np.unique" else sorted_unique)
        seed_everything(config.train.seed)
        start = time.perf_counter()
        out = evaluation.full_eval(model, data, config.train.num_negatives, config.train.ranking_positives == "clicks",
                                   seed=config.data.seed, batch_size=config.train.eval_rows, device=device,
                                   eval_users=config.train.eval_users)
        times[name].append(time.perf_counter() - start)
        results[name] = {"test_auc": out["test"]["auc"], "test_ndcg@10": out["test"]["ndcg@10"],
                         "scored_rows": out["scored_rows"]}
        print(f"{name}: {times[name][-1]:.1f} s", file=sys.stderr)
    use(sorted_unique)
    assert results["np.unique"] == results["sorted_unique"], results
    median = {name: statistics.median(t) for name, t in times.items()}
    rows = results["sorted_unique"]["scored_rows"]
    json.dump({"commit": short_commit(), "run": str(run), "ratings": int(data.user.size), "scored_rows": rows,
               "metrics": results["sorted_unique"], "seconds": times, "median_seconds": median,
               "rows_per_s": {name: rows / s for name, s in median.items()}}, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
