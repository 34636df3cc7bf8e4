"""The resume point of a distributed run: it round-trips through ``weights_only`` loading, refuses a
file from another run or a foreign file in one line, and the early-stopping loop resumed from
it makes the decisions the uninterrupted loop makes."""
from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from ratingctr.errors import UserError
from ratingctr.training.distributed_state import TrainState, load_train_state, save_train_state
from ratingctr.training.early_stopping import Stopped, train_until_stale

CONFIG = {"train": {"seed": 2020, "epochs": 5}, "model": {"name": "DCNV2"}}


def _state(model: torch.nn.Module) -> TrainState:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(torch.ones(3, 4)).sum().backward()
    optimizer.step()
    generator = torch.Generator().manual_seed(11)
    torch.randperm(10, generator=generator)
    return TrainState(epoch=3, world_size=2, model=model.state_dict(), optimizer=optimizer.state_dict(),
                      generator=generator.get_state(), rng=torch.stack([torch.get_rng_state()] * 2),
                      stopped=Stopped(best_epoch=2, best_score=0.71, stale=1,
                                      history=[{"epoch": e, "valid_auc": 0.7 + e / 100, "seconds": 0.5,
                                                "embedding_weight_norm": None} for e in range(4)]),
                      best_state={k: v + 1 for k, v in model.state_dict().items()})


def test_the_state_round_trips_through_weights_only_loading(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    saved = _state(model)
    path = tmp_path / "train_state.pt"
    save_train_state(path, saved, CONFIG)
    loaded = load_train_state(path, CONFIG)
    assert (loaded.epoch, loaded.world_size) == (3, 2)
    assert loaded.stopped == saved.stopped
    for name, value in model.state_dict().items():
        assert torch.equal(loaded.model[name], value) and torch.equal(loaded.best_state[name], value + 1)
    assert torch.equal(loaded.rng, saved.rng)
    restored = torch.Generator()
    restored.set_state(loaded.generator)
    original = torch.Generator()
    original.set_state(saved.generator)
    assert torch.equal(torch.randperm(50, generator=restored), torch.randperm(50, generator=original))
    fresh = torch.optim.AdamW(torch.nn.Linear(4, 2).parameters(), lr=1e-2)
    fresh.load_state_dict(loaded.optimizer)
    assert int(fresh.state_dict()["state"][0]["step"]) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["train_state.pt"]  # the temporary file was renamed


def test_no_state_is_none_and_a_foreign_or_other_run_state_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "train_state.pt"
    assert load_train_state(path, CONFIG) is None
    save_train_state(path, _state(torch.nn.Linear(4, 2)), CONFIG)
    with pytest.raises(UserError, match="another configuration"):
        load_train_state(path, {**CONFIG, "train": {"seed": 1, "epochs": 5}})
    path.write_bytes(pickle.dumps({"format": 1, "payload": Path("/etc")}))  # a class: needs real unpickling
    with pytest.raises(UserError, match="not a readable training state"):
        load_train_state(path, CONFIG)
    path.write_bytes(b"\x00" * 10)
    with pytest.raises(UserError, match="not a readable training state"):
        load_train_state(path, CONFIG)


def _scored_loop(scores: list[float], patience: int, start: Stopped | None = None, first: int = 0,
                 best_state: dict | None = None, saves: list | None = None):
    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(-1.0)

    def run_epoch(epoch: int) -> tuple[float, dict]:
        with torch.no_grad():
            model.weight.fill_(float(epoch))
        return scores[epoch], {"epoch": epoch}

    def after(epoch: int, stopped: Stopped, best: dict) -> None:
        if saves is not None:
            saves.append((epoch, Stopped(stopped.best_epoch, stopped.best_score, list(stopped.history), stopped.stale),
                          {k: v.clone() for k, v in best.items()}))

    stopped = train_until_stale(model, range(first, len(scores)), patience, run_epoch, start=start,
                                start_best_state=best_state, after_epoch=after)
    return stopped, float(model.weight.detach())


@pytest.mark.parametrize("cut", [0, 1, 2, 3])
def test_a_loop_resumed_after_any_epoch_decides_as_the_uninterrupted_loop(cut: int) -> None:
    scores = [0.5, 0.7, 0.6, 0.65, 0.9, 0.8, 0.6]
    saves: list = []
    whole, whole_weight = _scored_loop(scores, patience=3, saves=saves)
    assert [e for e, _, _ in saves] == list(range(len(whole.history)))  # a save after every epoch run
    epoch, stopped, best = saves[cut]
    resumed, weight = _scored_loop(scores, patience=3, start=stopped, first=epoch + 1, best_state=best)
    assert (resumed.best_epoch, resumed.best_score, resumed.stale, weight) == \
        (whole.best_epoch, whole.best_score, whole.stale, whole_weight) == (4, 0.9, 2, 4.0)
    assert resumed.history == whole.history


def test_a_loop_saved_after_its_stopping_epoch_runs_no_further_epoch() -> None:
    ran_after: list[int] = []
    scores = [0.9, 0.1, 0.1, 0.5]
    saves: list = []
    _scored_loop(scores, patience=2, saves=saves)
    epoch, stopped, best = saves[-1]
    assert (epoch, stopped.stale) == (2, 2)
    model = torch.nn.Linear(1, 1, bias=False)
    resumed = train_until_stale(model, range(epoch + 1, 4), 2, lambda e: ran_after.append(e) or (1.0, {}),
                                start=stopped, start_best_state=best)
    assert ran_after == [] and resumed.best_epoch == 0 and float(model.weight) == 0.0
