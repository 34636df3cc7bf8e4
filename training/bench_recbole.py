"""Time RecBole 1.2.1 on the same architecture, data and batch size (baseline for ``bench train``).

Runs under the python of a separate environment that has ``recbole==1.2.1`` (RecBole pins
old libraries, so it does not share ours); it imports nothing from this project and
prints one JSON line like ``training.bench_worker``.  Hyper-parameters are the
ARCHITECTURE.md reference values, the same our YAML defaults carry, with the same
embedding size (16), so only the implementation differs.
"""
from __future__ import annotations

import argparse
import json
import logging
import resource
import statistics
import tempfile
import time

REFERENCE = {
    "DCNV2": {"cross_layer_num": 2, "mlp_hidden_size": [256, 256, 256], "dropout_prob": 0.2, "structure": "parallel",
              "reg_weight": 2, "mixed": False},
    "AutoInt": {"n_layers": 3, "attention_size": 8, "num_heads": 2, "dropout_probs": [0.2, 0.2, 0.2],
                "mlp_hidden_size": [256, 256, 256]},
    "EulerNet": {"order_list": [8], "drop_ex": 0.3, "drop_im": 0.5, "apply_norm": False, "reg_weight": 5e-4},
    "WideDeep": {"mlp_hidden_size": [128, 128, 128], "dropout_prob": 0.2},
    "FiGNN": {"n_layers": 2, "num_heads": 2, "attention_size": 8, "attn_dropout_prob": 0.2, "hidden_dropout_prob": 0.3},
    "NFM": {"mlp_hidden_size": [512, 512, 512], "dropout_prob": 0.5},
    "xDeepFM": {"mlp_hidden_size": [512, 512, 512], "cin_layer_size": [200, 200, 200], "dropout_prob": 0.1},
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True, choices=sorted(REFERENCE))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--data-dir", required=True, help="folder holding ml-100k/ml-100k.{inter,user,item}")
    args = parser.parse_args()

    import torch
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, get_trainer, init_seed

    if args.threads:
        torch.set_num_threads(args.threads)
    logging.disable(logging.CRITICAL)
    with tempfile.TemporaryDirectory() as tmp:
        config = Config(model=args.model, dataset="ml-100k", config_dict={
            "data_path": args.data_dir, "checkpoint_dir": tmp, "use_gpu": False, "device": "cpu",
            "show_progress": False, "state": "CRITICAL", "seed": 2020, "reproducibility": True,
            "load_col": {"inter": ["user_id", "item_id", "rating"],
                         "user": ["user_id", "age", "gender", "occupation"],
                         "item": ["item_id", "release_year", "class"]},
            "threshold": {"rating": 4}, "user_inter_num_interval": "[10,inf)", "item_inter_num_interval": "[10,inf)",
            "eval_args": {"split": {"RS": [0.8, 0.1, 0.1]}, "order": "RO", "group_by": None, "mode": "labeled"},
            "train_neg_sample_args": None, "metrics": ["AUC", "LogLoss"], "valid_metric": "AUC",
            "train_batch_size": args.batch_size, "eval_batch_size": 65536, "epochs": args.epochs + 1,
            "learning_rate": 1e-3, "embedding_size": 16, **REFERENCE[args.model],
        })
        init_seed(config["seed"], config["reproducibility"])
        dataset = create_dataset(config)
        train_data, _, _ = data_preparation(config, dataset)
        model = get_model(config["model"])(config, train_data.dataset).to(config["device"])
        trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        seconds = []
        for epoch in range(args.epochs + 1):  # epoch 0 is warm-up, as in our worker
            start = time.perf_counter()
            trainer._train_epoch(train_data, epoch, show_progress=False)
            if epoch > 0:
                seconds.append(time.perf_counter() - start)
    print(json.dumps({"model": args.model, "head": "recbole", "epoch_seconds": seconds,
                      "median_epoch_seconds": statistics.median(seconds),
                      "rows": len(train_data.dataset), "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
                      "rss_after_data_mb": rss_before, "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
