"""The shared epoch loop: when it stops and which weights it leaves in the model."""
import math

import torch

from ratingctr.training.early_stopping import train_until_stale


def _loop(scores: list[float], patience: int, epochs: int | None = None, min_epochs: int = 0):
    """A one-weight model whose weight is set to the epoch number, scored by ``scores``."""
    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(-1.0)
    ran: list[int] = []

    def run_epoch(epoch: int) -> tuple[float, dict]:
        ran.append(epoch)
        with torch.no_grad():
            model.weight.fill_(float(epoch))
        return scores[epoch], {"epoch": epoch, "score": scores[epoch]}

    stopped = train_until_stale(model, range(epochs if epochs is not None else len(scores)), patience, run_epoch,
                                min_epochs=min_epochs)
    return stopped, ran, float(model.weight.detach())


def test_stops_after_patience_stale_epochs_and_restores_the_best() -> None:
    stopped, ran, weight = _loop([0.5, 0.7, 0.6, 0.7, 0.65, 0.9], patience=3)
    assert ran == [0, 1, 2, 3, 4]  # 0.7 again is not better: epochs 2, 3, 4 are stale
    assert (stopped.best_epoch, stopped.best_score, weight) == (1, 0.7, 1.0)
    assert [r["epoch"] for r in stopped.history] == ran


def test_runs_every_epoch_while_improving() -> None:
    stopped, ran, weight = _loop([0.1, 0.2, 0.3, 0.4], patience=1)
    assert ran == [0, 1, 2, 3] and stopped.best_epoch == 3 and weight == 3.0


def test_nan_scores_never_count_and_the_start_weights_stay() -> None:
    stopped, ran, weight = _loop([math.nan, math.nan, math.nan], patience=2)
    assert ran == [0, 1] and stopped.best_epoch == -1 and weight == -1.0


def test_a_plateau_before_min_epochs_does_not_stop_the_loop() -> None:
    plateau_then_climb = [0.3, 0.31, 0.31, 0.31, 0.31, 0.31, 0.4, 0.5, 0.5, 0.5, 0.5]
    _, ran, _ = _loop(plateau_then_climb, patience=2)
    assert ran == [0, 1, 2, 3]  # the popularity-like plateau ends the run
    _, ran, _ = _loop(plateau_then_climb, patience=2, min_epochs=6)
    assert ran == [0, 1, 2, 3, 4, 5]  # stale for 4 > 2 epochs when the minimum is reached: stop there
    stopped, ran, weight = _loop(plateau_then_climb, patience=2, min_epochs=7)
    assert ran == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]  # past the minimum, patience applies again
    assert (stopped.best_epoch, weight) == (7, 7.0)
