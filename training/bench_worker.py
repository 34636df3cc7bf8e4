"""One benchmark process: train one architecture/head on ML-100k and report timings as JSON.

A fresh process per measurement so peak RSS (``ru_maxrss``) belongs to that run alone.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import time

import torch

from ratingctr.training.allocator import retain_freed_memory
from ratingctr.training.config import build_run_config
from ratingctr.training.data.encode import TRAIN, load_dataset
from ratingctr.training.models.build import build_model
from ratingctr.training.trainer import (
    TrainTensors,
    autocast_dtype,
    make_optimizer,
    precision_name,
    seed_everything,
    train_step,
)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--head", required=True)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--precision", default="auto")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    retain_freed_memory()  # as the training CLI verbs do at entry, so the bench times what users run
    seed_everything(2020)
    config = build_run_config({"model": args.model, "head": args.head, "data_dir": args.data_dir,
                               "batch_size": args.batch_size, "precision": args.precision, "device": "cpu"})
    data = load_dataset(config.data)
    model = build_model(data.schema, config)
    train = TrainTensors.from_rows(data, data.rows(TRAIN), torch.device("cpu"))
    optimizer = make_optimizer(model, config.train.lr, config.train.weight_decay)
    amp = autocast_dtype(config.train.precision, torch.device("cpu"))
    rss_before = _rss_mb()
    n, bs = train.x.shape[0], config.train.batch_size
    seconds = []
    for epoch in range(args.epochs + 1):  # epoch 0 is warm-up (allocator, lazy init)
        model.train()
        start = time.perf_counter()
        order = torch.randperm(n)
        for lo in range(0, n, bs):  # the trainer's own step, so the bench times what users run
            train_step(model, optimizer, train, order[lo:lo + bs], amp)
        if epoch > 0:
            seconds.append(time.perf_counter() - start)
    print(json.dumps({"model": args.model, "head": args.head, "epoch_seconds": seconds,
                      "median_epoch_seconds": statistics.median(seconds), "rows": n,
                      "peak_rss_mb": _rss_mb(), "rss_after_data_mb": rss_before,
                      "threads": torch.get_num_threads(),
                      "precision": precision_name(amp)}))


if __name__ == "__main__":
    main()
