"""The retriever, item-kNN and EASE against most popular on a synthetic draw, all on the split
`train-retriever` uses for it with its defaults (DataConfig and RetrieverConfig defaults).

    .venv/bin/ratingctr data synth --users 6000 --items 4000 --ratings 400000 --seed 0 --out /tmp/synth
    .venv/bin/python reports/ml-100k/retriever/synthetic_peers.py /tmp/synth > reports/ml-100k/retriever/synthetic_peers.json
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from ratingctr.report_files import short_commit
from ratingctr.training.config import DataConfig
from ratingctr.training.experiments.retriever_sizes import peer_recalls
from ratingctr.training.retriever import RetrieverConfig, train_retriever

start = time.perf_counter()
data = DataConfig(dataset="atomic", data_dir=sys.argv[1])
result = peer_recalls(data)
peers_seconds = time.perf_counter() - start
with tempfile.TemporaryDirectory() as run:
    retriever = train_retriever(data, RetrieverConfig(progress=False), Path(run))
# the retriever reports most popular on its own test users; on the same split it must equal the peers' figure
result.update(item_knn_ratio=result["item_knn"] / result["popular"], ease_ratio=result["ease"] / result["popular"],
              retriever=retriever["test"]["recall@20"], retriever_popular=retriever["popular"]["recall@20"],
              retriever_ratio=retriever["test"]["recall@20"] / retriever["popular"]["recall@20"],
              retriever_best_epoch=retriever["best_epoch"], retriever_epochs=len(retriever["epoch_seconds"]),
              peers_seconds=peers_seconds, seconds=time.perf_counter() - start, data=sys.argv[1],
              commit=short_commit())
print(json.dumps(result, indent=2))
