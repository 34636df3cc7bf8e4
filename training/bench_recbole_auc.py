"""Train RecBole 1.2.1 on *our* split, with our hyper-parameters and stopping rule; print its test AUC.

Run by ``ratingctr bench auc`` (``training/peer_auc.py``) under the python of an environment
with ``recbole==1.2.1``; it imports nothing from this project except the reference
hyper-parameters beside it (``bench_recbole.REFERENCE``, the values our YAML carries).

Why RecBole's pre-split files (``benchmark_filename``): RecBole's own random split draws other
rows than ours, so a comparison across the two splits mixes the split's luck into the
difference.  ``peer_auc.write_benchmark_files`` writes our train/valid/test rows as
``peer.{train,valid,test}.inter``; RecBole's filters are off (our k-core already ran) and the
row counts it loaded are printed, so the caller can refuse a run on other rows.

Stopping rule as ours: validation AUC after every epoch, stop after ``--patience`` epochs
without a higher one, at most ``--epochs``, test on the best epoch's weights.
"""
from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

from bench_recbole import REFERENCE

#: the files' dataset name (``peer_auc.NAME``); not ``ml-100k``, whose name makes RecBole read its
#: bundled copy instead of ``--data-dir``
DATASET = "peer"


def _fields(data_dir: str, side: str) -> list[str]:
    """The feature columns of the side file, as the encoder named them (``genre``, not RecBole's ``class``)."""
    with open(Path(data_dir) / DATASET / f"{DATASET}.{side}", encoding="utf-8") as handle:
        return [column.split(":")[0] for column in handle.readline().rstrip("\n").split("\t")]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True, choices=sorted(REFERENCE))
    parser.add_argument("--data-dir", required=True, help="folder holding peer/peer.{train,valid,test}.inter")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--lr", type=float, required=True)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--patience", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()

    import torch
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, get_trainer, init_seed

    if args.threads:
        torch.set_num_threads(args.threads)
    logging.disable(logging.CRITICAL)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        config = Config(model=args.model, dataset=DATASET, config_dict={
            "data_path": args.data_dir, "checkpoint_dir": tmp, "use_gpu": False, "device": "cpu",
            "show_progress": False, "state": "CRITICAL", "seed": args.seed, "reproducibility": True,
            "load_col": {"inter": ["user_id", "item_id", "rating"], "user": _fields(args.data_dir, "user"),
                         "item": _fields(args.data_dir, "item")},
            "benchmark_filename": ["train", "valid", "test"],
            "user_inter_num_interval": None, "item_inter_num_interval": None, "val_interval": None,
            "threshold": {"rating": 4},
            "eval_args": {"order": "RO", "group_by": None, "mode": "labeled"},
            "train_neg_sample_args": None, "metrics": ["AUC", "LogLoss"], "valid_metric": "AUC",
            "train_batch_size": args.batch_size, "eval_batch_size": 65536, "epochs": args.epochs,
            # RecBole stops once more than ``stopping_step`` evaluations in a row fail to beat the
            # best; ours once ``patience`` have: the same rule at stopping_step = patience − 1
            "stopping_step": args.patience - 1, "eval_step": 1, "weight_decay": 0.0,
            "learning_rate": args.lr, "embedding_size": 16, **REFERENCE[args.model],
        })
        init_seed(config["seed"], config["reproducibility"])
        dataset = create_dataset(config)
        train_data, valid_data, test_data = data_preparation(config, dataset)
        init_seed(config["seed"], config["reproducibility"])
        model = get_model(config["model"])(config, train_data.dataset).to(config["device"])
        trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
        valid_scores: list[float] = []
        best_state: dict = {}
        valid_epoch = trainer._valid_epoch

        def recorded_valid_epoch(*a, **k):
            # the best epoch's weights kept in memory, as RecBole's rule picks them (``>=``), instead
            # of RecBole's checkpoint file: loading that needs an unrestricted unpickle
            score, result = valid_epoch(*a, **k)
            if not valid_scores or float(score) >= max(valid_scores):
                best_state.clear()
                best_state.update({k: v.detach().clone() for k, v in model.state_dict().items()})
            valid_scores.append(float(score))
            return score, result

        trainer._valid_epoch = recorded_valid_epoch
        trainer.fit(train_data, valid_data, saved=False, show_progress=False)
        model.load_state_dict(best_state)
        test = trainer.evaluate(test_data, load_best_model=False, show_progress=False)
    # RecBole keeps the weights of the *last* epoch that tied the best score (``>=``); ours need a
    # strict gain, which differs only on an exact tie of validation AUC
    best = max(range(len(valid_scores)), key=lambda e: (valid_scores[e], e)) if valid_scores else None
    print(json.dumps({
        "model": args.model, "seed": args.seed, "lr": args.lr,
        "test": {"auc": float(test["auc"]), "logloss": float(test["logloss"])},
        "valid_auc": valid_scores, "best_epoch": best, "epochs_trained": len(valid_scores),
        "rows": {"train": len(train_data.dataset), "valid": len(valid_data.dataset), "test": len(test_data.dataset)},
        "seconds": time.perf_counter() - start, "threads": torch.get_num_threads(),
        "recbole_python_torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
