"""The candidate retriever: LightGCN trained with BPR on training positives (every rated item by default).

Its propagated user and item vectors are what the gateway's FAISS index searches, so
the retriever is judged the way it is used: full ranking over all items, items the user
already interacted with masked, Recall@20 / NDCG@20, against the most-popular list on
the same split (a retriever that cannot beat popularity is not worth serving).
Only the model and its BPR epoch are its own: the early stopping (``early_stopping``),
the NDCG/Recall formula (``metrics``) and the negative sampler (``sampling``) are the
ranker's.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ratingctr.training.config import DataConfig
from ratingctr.training.data.encode import TEST, TRAIN, VALID, EncodedData, load_dataset
from ratingctr.training.distributed import DistContext
from ratingctr.training.distributed_fit import Resumed
from ratingctr.training.distributed_state import TRAIN_STATE
from ratingctr.training.early_stopping import train_until_stale
from ratingctr.training.full_ranking import UserItems, full_ranking_metrics, sample_users
from ratingctr.training.graph import layer_weights, normalized_adjacency, propagate
from ratingctr.training.graph_order import degree_order, node_permutation
from ratingctr.training.metrics import ranked_hits_at_k
from ratingctr.training.retriever_parallel import RetrieverParallel
from ratingctr.training.sampling import interaction_keys, sample_negatives
from ratingctr.training.trainer import seed_everything, select_device

RETRIEVER_FORMAT = 1
POSITIVES = ("clicks", "ratings")


@dataclass(frozen=True)
class RetrieverConfig:
    embedding_dim: int = 64
    layers: int = 3
    lr: float = 1e-3
    reg_weight: float = 1e-4
    batch_size: int = 2048
    epochs: int = 300
    patience: int = 10
    #: No stop before this many BPR steps (and ``min_epochs`` epochs), however flat validation
    #: is: Recall@20 reaches the most-popular level within ~50 steps and stays there for
    #: ~300 more on ML-100k before the embeddings separate users; a patience counted in
    #: epochs ends that plateau sooner the fewer steps an epoch has, i.e. the smaller the data
    #: (reports/ml-100k/retriever).
    min_steps: int = 1000
    min_epochs: int = 0
    #: ... and the patience is at least this many BPR steps of no gain: validation Recall@20
    #: has a second plateau (all-ratings positives on ML-100k: 0.286–0.290 from epoch 15 to
    #: 28, then a climb to 0.397 by epoch 220) that a 10-epoch patience of 37 steps each
    #: mistakes for convergence; counted in steps it means the same at every size, and on
    #: data with ≥ 100 steps per epoch the epoch patience governs.
    patience_steps: int = 1000
    #: An epoch has at least this many BPR steps: the batch shrinks (not below 64) on small
    #: data, so the epoch-counted patience, minimum and cap mean the same amount of learning
    #: at every size (full ML-100k: 27 steps of 2,048; a 20% subsample: 4 steps before).
    min_batches_per_epoch: int = 25
    #: ... and at most this many: every BPR step propagates over the whole graph (O(edges)), so
    #: with a fixed batch an epoch costs O(edges² / batch), quadratic in the data (bench scale:
    #: 11 s at 1M ratings, 243 s at 5M).  Above ~2M training clicks the batch grows instead, so an
    #: epoch stays O(edges).  ML-100k (27 steps) and ML-1M (~280) are far below the cap.
    max_batches_per_epoch: int = 1000
    #: Validation and test Recall@k on a seeded sample of this many users with positives (None:
    #: all).  Full ranking costs users × items per evaluation, which grows with the square of
    #: the data; ML-100k and ML-1M have fewer users than this, so their numbers are unchanged.
    eval_users: int | None = 10_000
    #: Which training rows are the graph's edges and BPR's positives: ``"clicks"`` (rating ≥
    #: threshold) or ``"ratings"`` (every rated item).  Evaluation always counts clicks.
    #: ``ratings`` makes the retriever estimate what a user will rate at all, the factor the
    #: pointwise ranker (trained on rated rows: P(click | rated)) cannot know, so the served
    #: score log P(rated) + log p̂ targets P(click) (``serving.ranker``, reports/ml-100k/pipeline).
    positives: str = "ratings"
    k: int = 20
    seed: int = 2020
    device: str = "auto"
    progress: bool = True


class LightGCN(nn.Module):
    """Ego embeddings for every user and item node, propagated over the positive graph."""

    def __init__(self, n_users: int, n_items: int, dim: int, adjacency: torch.Tensor, weights: list[float],
                 node_rows: np.ndarray | None = None) -> None:
        """``node_rows[old node] = row of that node in adjacency`` when the adjacency was built on
        relabelled ids (``graph_order``); the embedding table keeps the original layout."""
        super().__init__()
        self.n_user_nodes = n_users + 1
        self.embedding = nn.Embedding(n_users + 1 + n_items + 1, dim)
        nn.init.normal_(self.embedding.weight, std=0.1)
        self.register_buffer("adjacency", adjacency, persistent=False)
        self.weights = weights
        if node_rows is None:
            self.node_rows = self.row_nodes = None
        else:
            rows = torch.from_numpy(np.asarray(node_rows, np.int64))
            nodes = torch.empty_like(rows)
            nodes[rows] = torch.arange(rows.numel())
            self.register_buffer("node_rows", rows, persistent=False)  # old node -> adjacency row
            self.register_buffer("row_nodes", nodes, persistent=False)  # adjacency row -> old node

    def vectors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(user vectors ``[n_users+1, d]``, item vectors ``[n_items+1, d]``); row 0 = unknown."""
        ego = self.embedding.weight
        if self.row_nodes is None:
            out = propagate(self.adjacency, ego, self.weights)
        else:
            out = propagate(self.adjacency, ego.index_select(0, self.row_nodes), self.weights)
            out = out.index_select(0, self.node_rows)
        return out[:self.n_user_nodes], out[self.n_user_nodes:]

    def bpr_loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, reg_weight: float) -> torch.Tensor:
        user_vec, item_vec = self.vectors()
        u, p, n = user_vec[users], item_vec[pos], item_vec[neg]
        ranking = -F.logsigmoid((u * p).sum(1) - (u * n).sum(1)).mean()
        ego = self.embedding.weight
        reg = (ego[users].pow(2).sum() + ego[self.n_user_nodes + pos].pow(2).sum()
               + ego[self.n_user_nodes + neg].pow(2).sum()) / (2 * users.shape[0])
        return ranking + reg_weight * reg


def topk_metrics(scores: torch.Tensor, seen: np.ndarray, relevant: np.ndarray, k: int) -> dict[str, float]:
    """Recall@k / NDCG@k over all items with ``seen`` items masked, averaged over users with positives.

    The plain dense reference of ``full_ranking.full_ranking_metrics`` (which training uses:
    bounded memory), kept for its test."""
    scores = scores.clone()
    scores[:, 0] = -torch.inf  # the unknown-item row is never a candidate
    scores[torch.from_numpy(seen).to(scores.device)] = -torch.inf
    top = torch.topk(scores, k, dim=1).indices.cpu().numpy()
    user_row, rank = np.nonzero(np.take_along_axis(relevant, top, axis=1))
    n_relevant = relevant.sum(1)
    metrics = ranked_hits_at_k(user_row, rank, n_relevant, k)
    return {f"recall@{k}": metrics[f"recall@{k}"], f"ndcg@{k}": metrics[f"ndcg@{k}"],
            "users": int((n_relevant > 0).sum())}


def train_retriever(data_config: DataConfig, config: RetrieverConfig, out_dir: Path,
                    data: EncodedData | None = None, init: Callable[[LightGCN], None] | None = None,
                    sampled: np.ndarray | None = None, extra_metrics: dict | None = None,
                    distributed: DistContext | None = None) -> dict:
    """Train, evaluate and write the retriever run (``metrics.json`` last).

    Warm-start retraining (``training.retrain``) passes ``init`` (called on the freshly
    initialised model: copies the trained rows in), ``sampled`` (a row mask: only these
    training positives are BPR samples, the replay share; the graph and the negatives'
    exclusions still use every training positive) and ``extra_metrics`` (its lineage).

    ``distributed``: this process is one rank of a torchrun job (``retriever_parallel``): every
    rank trains on its shard of each global batch, rank 0 alone validates, evaluates and
    writes (the other ranks return ``{}``), and ``out_dir/train_state.pt`` is the resume point.
    """
    out_dir = Path(out_dir)
    started = time.perf_counter()
    main = distributed is None or distributed.is_main
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
    if distributed is not None and (init is not None or sampled is not None):
        raise ValueError("a warm-started retrain runs in one process")
    seed_everything(config.seed)
    data = data if data is not None else load_dataset(data_config)
    device = distributed.device if distributed is not None else select_device(config.device)
    if config.positives not in POSITIVES:
        raise ValueError(f"retriever positives must be one of {POSITIVES}, got {config.positives!r}")
    clicks = data.rating >= data.threshold
    edges = clicks if config.positives == "clicks" else np.ones_like(clicks)
    graph_pos = np.flatnonzero((data.split == TRAIN) & edges)
    train_pos = graph_pos if sampled is None else np.flatnonzero((data.split == TRAIN) & edges & sampled)
    users, items = data.user[train_pos], data.item[train_pos]
    graph_user, graph_item = data.user[graph_pos], data.item[graph_pos]
    relabel = degree_order(graph_user, graph_item, data.n_users, data.n_items, config.embedding_dim)
    if relabel is not None:
        graph_user, graph_item = relabel[0][graph_user], relabel[1][graph_item]
    adjacency = normalized_adjacency(graph_user, graph_item, data.n_users, data.n_items).to(device)
    model = LightGCN(data.n_users, data.n_items, config.embedding_dim, adjacency,
                     layer_weights(config.layers), None if relabel is None else node_permutation(*relabel))
    if init is not None:
        init(model)
    model = model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    def user_items(rows: np.ndarray) -> UserItems:
        return UserItems.from_pairs(data.user[rows], data.item[rows], data.n_users)

    train_seen = user_items(data.rows(TRAIN))
    valid_rel = user_items(np.flatnonzero((data.split == VALID) & clicks))
    test_seen = user_items(np.concatenate([data.rows(TRAIN), data.rows(VALID)]))
    test_rel = user_items(np.flatnonzero((data.split == TEST) & clicks))
    valid_users = sample_users(valid_rel, data.n_users, config.eval_users, config.seed)
    test_users = sample_users(test_rel, data.n_users, config.eval_users, config.seed)

    def evaluate(user_vec: torch.Tensor, item_vec: torch.Tensor, users_: np.ndarray, seen: UserItems,
                 relevant: UserItems) -> dict:
        return full_ranking_metrics(lambda u: user_vec[torch.from_numpy(u).to(user_vec.device)] @ item_vec.T,
                                    users_, seen, relevant, data.n_items, config.k)
    positive_keys = interaction_keys(data.user[graph_pos], data.item[graph_pos], data.n_items)
    rng = np.random.default_rng(config.seed)
    batch_size = config.batch_size
    if config.min_batches_per_epoch:
        batch_size = min(batch_size, max(64, -(-train_pos.size // config.min_batches_per_epoch)))
    if config.max_batches_per_epoch:
        batch_size = max(batch_size, -(-train_pos.size // config.max_batches_per_epoch))
    data_settings = {**asdict(data_config), "split": list(data_config.split)}  # split_mode included
    parallel, resumed = None, Resumed()
    if distributed is not None:
        run_config = {"retriever": {k: v for k, v in asdict(config).items() if k not in ("progress", "device")},
                      "data": data_settings}
        parallel = RetrieverParallel(distributed, out_dir / TRAIN_STATE, run_config)
        resumed = parallel.attach(model, optimizer, rng, config.reg_weight)
    epoch_seconds: list[float] = list(resumed.epoch_seconds)
    valid_seconds: list[float] = []
    setup_seconds = time.perf_counter() - started
    bar = tqdm(range(resumed.first_epoch, config.epochs), desc="retriever", unit="epoch",
               disable=not (config.progress and main), file=sys.stderr)

    def run_epoch(epoch: int) -> tuple[float, dict]:
        model.train()
        start = time.perf_counter()
        order = rng.permutation(train_pos.size)
        neg_all = sample_negatives(users[order], positive_keys, data.n_items, 1, rng)[:, 0]
        u_all = torch.from_numpy(users[order]).to(device)
        p_all = torch.from_numpy(items[order]).to(device)
        n_all = torch.from_numpy(neg_all).to(device)
        total = 0.0
        for lo in range(0, train_pos.size, batch_size):
            sl = slice(lo, lo + batch_size)
            if parallel is None:
                loss = model.bpr_loss(u_all[sl], p_all[sl], n_all[sl], config.reg_weight)
                summed = float(loss.detach()) * (min(lo + batch_size, train_pos.size) - lo)
            else:
                loss, summed = parallel.loss(u_all[sl], p_all[sl], n_all[sl])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += summed
        if parallel is not None:
            total = parallel.sum(total)
        seconds = time.perf_counter() - start
        epoch_seconds.append(seconds)
        model.eval()
        valid: dict = {}
        if main:
            valid_start = time.perf_counter()
            with torch.no_grad():
                user_vec, item_vec = model.vectors()
                valid = evaluate(user_vec, item_vec, valid_users, train_seen, valid_rel)
            valid_seconds.append(time.perf_counter() - valid_start)
            bar.set_postfix(loss=f"{total / train_pos.size:.4f}", valid_recall=f"{valid[f'recall@{config.k}']:.4f}")
        score = valid.get(f"recall@{config.k}", float("nan"))
        if parallel is not None:
            score = parallel.share_score(score)
        return score, {"epoch": epoch, "loss": total / train_pos.size, "seconds": seconds, **valid}

    steps_per_epoch = max(1, -(-train_pos.size // batch_size))
    min_epochs = max(config.min_epochs, -(-config.min_steps // steps_per_epoch))
    patience = max(config.patience, -(-config.patience_steps // steps_per_epoch))
    stopped = train_until_stale(model, bar, patience, run_epoch, start=resumed.stopped,
                                start_best_state=resumed.best_state, min_epochs=min_epochs,
                                after_epoch=(lambda e, st, best: parallel.save(e, st, best, model)) if parallel else None)
    bar.close()
    if not main:
        return {}
    model.eval()
    final_start = time.perf_counter()
    with torch.no_grad():
        user_vec, item_vec = model.vectors()
        test = evaluate(user_vec, item_vec, test_users, test_seen, test_rel)
        valid = evaluate(user_vec, item_vec, valid_users, train_seen, valid_rel)
    train_clicks = np.flatnonzero((data.split == TRAIN) & clicks)  # the baseline stays click popularity
    popularity = torch.from_numpy(np.bincount(data.item[train_clicks], minlength=data.n_items + 1).astype(np.float32))
    popular = full_ranking_metrics(lambda u: popularity.expand(len(u), -1).clone(), test_users, test_seen, test_rel,
                                   data.n_items, config.k)
    final_seconds = time.perf_counter() - final_start
    np.save(out_dir / "user_vectors.npy", user_vec.cpu().numpy().astype(np.float32))
    np.save(out_dir / "item_vectors.npy", item_vec.cpu().numpy().astype(np.float32))
    torch.save({"format": RETRIEVER_FORMAT, "config": asdict(config), "data": data_settings,
                "vocab": {"user_id": data.vocab["user_id"], "item_id": data.vocab["item_id"]},
                "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}, out_dir / "model.pt")
    from ratingctr.training.run import write_json

    metrics = {"test": test, "valid": valid, "popular": popular,
               "relative_gain_recall@20": test[f"recall@{config.k}"] / popular[f"recall@{config.k}"] - 1.0,
               "best_epoch": stopped.best_epoch, "epoch_seconds": epoch_seconds, "history": stopped.history,
               "dataset": data.stats, "config": asdict(config), "data": data_settings,
               "graph_edges": int(positive_keys.size), "batch_size": batch_size, "min_epochs": min_epochs,
               # where the time went (bench scale splits the stage by them): read + encode + graph
               # build, each epoch's validation, and the final test + validation + popularity pass
               "steps_per_epoch": steps_per_epoch, "setup_seconds": setup_seconds, "valid_seconds": valid_seconds,
               "final_eval_seconds": final_seconds,
               "patience_epochs": patience,
               "device": str(device), **(extra_metrics or {})}
    if parallel is not None:
        metrics["distributed"] = {"world_size": distributed.world_size, "backend": distributed.backend,
                                  "resumed_from_epoch": parallel.resumed_from_epoch}
    write_json(out_dir / "metrics.json", metrics)
    if parallel is not None:
        parallel.finish()
    return metrics
