"""One rank of ``test_distributed.py``'s gradient check, started by torchrun (not a test module).

For every case in the JSON plan it builds the model the trainer builds, attaches it to the
job exactly as ``fit`` does (``DataParallelRun``), takes the planned global batches through
``DataParallelRun.step`` and records, for each step, the weights it started from and the
all-reduced gradient of every parameter; rank 0 saves them for the test to compare against
one process's gradient of the same global batch at the same weights.

Usage: python -m torch.distributed.run --nproc-per-node 2 distributed_grad_worker.py PLAN.json OUT.pt
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch


def main(plan_path: str, out_path: str) -> None:
    from ratingctr.training.config import build_run_config
    from ratingctr.training.data.encode import TRAIN, load_dataset
    from ratingctr.training.distributed import process_group
    from ratingctr.training.distributed_fit import DataParallelRun
    from ratingctr.training.run import make_model
    from ratingctr.training.trainer import TrainTensors, make_optimizer, seed_everything

    plan = json.loads(Path(plan_path).read_text())
    results = {}
    with process_group("cpu") as ctx, tempfile.TemporaryDirectory() as scratch:
        data = None
        for case in plan["cases"]:
            config = build_run_config(case["overrides"])
            data = data if data is not None else load_dataset(config.data)
            seed_everything(config.train.seed)
            model = make_model(config, data).to(ctx.device)
            optimizer = make_optimizer(model, config.train.lr, config.train.weight_decay)
            generator = torch.Generator().manual_seed(config.train.seed)
            run = DataParallelRun(ctx, Path(scratch) / "absent.pt", config.to_dict(), config.train.seed)
            run.attach(model, optimizer, generator)
            train = TrainTensors.from_rows(data, data.rows(TRAIN), ctx.device)
            model.train()
            grads, before = [], []
            for idx in case["steps"]:
                before.append({k: v.detach().clone() for k, v in model.state_dict().items()})
                run.step(train, torch.tensor(idx, dtype=torch.long), None)
                grads.append({n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None})
            results[case["name"]] = {"grads": grads, "before": before}
        if ctx.is_main:
            torch.save(results, out_path)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
