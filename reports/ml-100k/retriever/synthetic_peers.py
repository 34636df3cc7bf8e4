"""Item-kNN and EASE against most popular on a synthetic draw, on the split `train-retriever`
uses for it (DataConfig defaults): is the retriever's shortfall there the retriever's or the data's?

    .venv/bin/ratingctr data synth --users 6000 --items 4000 --ratings 400000 --seed 0 --out /tmp/synth
    .venv/bin/python reports/ml-100k/retriever/synthetic_peers.py /tmp/synth > reports/ml-100k/retriever/synthetic_peers.json
"""
from __future__ import annotations

import json
import sys
import time

from ratingctr.report_files import short_commit
from ratingctr.training.config import DataConfig
from ratingctr.training.experiments.retriever_sizes import peer_recalls

start = time.perf_counter()
result = peer_recalls(DataConfig(dataset="atomic", data_dir=sys.argv[1]))
result.update(item_knn_ratio=result["item_knn"] / result["popular"], ease_ratio=result["ease"] / result["popular"],
              seconds=time.perf_counter() - start, data=sys.argv[1],
              commit=short_commit())
print(json.dumps(result, indent=2))
