"""Scoring a model over dataset rows and the RecBole ``uni100`` ranking protocol.

uni100: every test row of a user is a positive (option: clicks only); each positive
brings 100 negatives drawn uniformly from the items that user never touched in
train/valid/test; all of a user's candidates are scored together and NDCG@K/Recall@K
are averaged over users.  Negatives are drawn from a fixed seed so two models on the
same split are ranked against the same candidates.
"""
from __future__ import annotations

import numpy as np
import torch

from ratingctr.training.allocator import release_freed_memory
from ratingctr.training.data.encode import TEST, TRAIN, VALID, EncodedData
from ratingctr.training.eval_batch import MIN_ROWS, eval_batch_rows
from ratingctr.training.metrics import auc, group_auc, logloss, ranking_metrics
from ratingctr.training.models.ctr import CTRModel
from ratingctr.training.sampling import interaction_keys, sample_negatives
from ratingctr.unique import sorted_unique


@torch.no_grad()
def predict_arrays(model: CTRModel, features: np.ndarray, batch_size: int, device: torch.device) -> dict[str, np.ndarray]:
    """p̂ (and the rating distribution when the head has one) for a ``[m, C]`` matrix.

    ``batch_size`` is an upper bound: the batch also keeps the model's activations within
    ``eval_batch.ACTIVATION_BUDGET_BYTES`` (xDeepFM's CIN needs far smaller batches).
    """
    model.eval()
    if features.shape[0] > MIN_ROWS:
        batch_size = eval_batch_rows(model, features.shape[1], device, batch_size)
    x = torch.from_numpy(features)
    p_parts, dist_parts = [], []
    for start in range(0, x.shape[0], batch_size):
        pred = model.predict(x[start:start + batch_size].to(device, non_blocking=True))
        p_parts.append(pred.p_click.float().cpu())
        if pred.rating_probs is not None:
            dist_parts.append(pred.rating_probs.float().cpu())
        del pred
        release_freed_memory()  # a training process keeps freed blocks; scoring must not pile them up
    out = {"p_click": torch.cat(p_parts).numpy() if p_parts else np.zeros(0, np.float32)}
    if dist_parts:
        out["rating_probs"] = torch.cat(dist_parts).numpy()
    return out


def sample_uni100(data: EncodedData, positives: np.ndarray, num_negatives: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Negatives ``[len(positives), num_negatives]`` of items each positive's user never touched.

    Users who touched every item (no valid negative exists) are dropped; the returned
    mask says which positives were kept.
    """
    touched = interaction_keys(data.user, data.item, data.n_items)
    users = data.user[positives]
    touched_per_user = np.bincount(touched // (data.n_items + 1), minlength=data.n_users + 1)
    keep = touched_per_user[users] < data.n_items
    negatives = sample_negatives(users[keep], touched, data.n_items, num_negatives, np.random.default_rng(seed))
    return negatives, keep


def sample_users(data: EncodedData, rows: np.ndarray, eval_users: int | None, seed: int) -> tuple[np.ndarray, int]:
    """The rows of a seeded sample of ``eval_users`` of the users in ``rows`` (all when None or
    when there are no more users than that), and how many users ``rows`` had.

    Why users and not rows: uni100's metrics are means over users, so sampling users keeps
    each sampled user's whole candidate list, and the mean over them is an unbiased estimate
    of the full protocol's with a confidence interval over users (``ranking_metrics(with_ci=True)``).
    The sample depends on the seed and the split only, so two models on one split are judged
    on the same users.
    """
    users = sorted_unique(data.user[rows])
    if eval_users is None or eval_users >= users.size:
        return rows, int(users.size)
    if eval_users < 2:
        raise ValueError("eval_users must be at least 2 (a confidence interval needs two users)")
    chosen = np.random.default_rng([seed, 0x5EED]).choice(users, size=eval_users, replace=False)
    return rows[np.isin(data.user[rows], chosen)], int(users.size)


def ranking_eval(model: CTRModel, data: EncodedData, part: int, num_negatives: int, only_clicks: bool,
                 seed: int, batch_size: int, device: torch.device, eval_users: int | None = None) -> dict[str, float]:
    rows = data.rows(part)
    if only_clicks:
        rows = rows[data.rating[rows] >= data.threshold]
    rows, total_users = sample_users(data, rows, eval_users, seed)
    sampled = eval_users is not None and eval_users < total_users
    negatives, keep = sample_uni100(data, rows, num_negatives, seed)
    rows = rows[keep]
    users = data.user[rows]
    cand_user = np.concatenate([users, np.repeat(users, num_negatives)])
    cand_item = np.concatenate([data.item[rows], negatives.ravel()])
    relevant = np.concatenate([np.ones(rows.size, bool), np.zeros(negatives.size, bool)])
    scores = predict_arrays(model, data.features(cand_user, cand_item), batch_size, device)["p_click"]
    metrics = ranking_metrics(cand_user, scores, relevant, ks=(10, 20), seed=seed, with_ci=sampled)
    metrics["scored_rows"] = int(cand_user.size)
    if sampled:
        metrics.update(ranking_users=int(sorted_unique(users).size), ranking_users_total=total_users)
    return metrics


def pointwise_eval(model: CTRModel, data: EncodedData, rows: np.ndarray, batch_size: int,
                   device: torch.device) -> tuple[dict[str, float], np.ndarray]:
    labels = data.click[rows]
    pred = predict_arrays(model, data.features(data.user[rows], data.item[rows]), batch_size, device)
    metrics = {"auc": auc(labels, pred["p_click"]), "logloss": logloss(labels, pred["p_click"]), "rows": int(rows.size)}
    if "rating_probs" in pred:
        expected = pred["rating_probs"] @ np.arange(1, data.levels + 1, dtype=np.float32)
        metrics["rating_rmse"] = float(np.sqrt(np.mean((expected - data.rating[rows]) ** 2)))
    return metrics, pred["p_click"]


def full_eval(model: CTRModel, data: EncodedData, num_negatives: int = 100, only_clicks: bool = False,
              seed: int = 2020, batch_size: int = 65536, device: torch.device | None = None,
              ranking: bool = True, eval_users: int | None = None, ranking_on_valid: bool = True) -> dict:
    """Everything ``metrics.json`` reports for a trained model (``ranking_on_valid=False``: uni100
    on the test split only, validation keeps its pointwise metrics)."""
    device = device or next(model.parameters()).device
    out: dict = {}
    for name, part in (("valid", VALID), ("test", TEST)):
        rows = data.rows(part)
        metrics, scores = pointwise_eval(model, data, rows, batch_size, device)
        if part == TEST:
            no_middle = ~data.middle[rows]
            metrics["auc_without_middle"] = auc(data.click[rows][no_middle], scores[no_middle])
            train_counts = np.bincount(data.user[data.split == TRAIN], minlength=data.n_users + 1)
            out["groups"] = group_auc(data.user[rows], data.click[rows], scores, train_counts)
        scored = int(rows.size)
        if ranking and (part == TEST or ranking_on_valid):
            ranked = ranking_eval(model, data, part, num_negatives, only_clicks, seed, batch_size, device, eval_users)
            scored += ranked.pop("scored_rows")
            metrics.update(ranked)
        out[name] = metrics
        out["scored_rows"] = out.get("scored_rows", 0) + scored  # rows the model scored: evaluation's rows/s
    return out
