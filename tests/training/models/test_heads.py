import math

import pytest
import torch

from ratingctr.training.models.heads import BinaryHead, RatingHead

F_ROW = [1.0, 2.0, 0.5, -1.0, 3.0]  # logits for stars 1..5


def _lse(values: list[float]) -> float:
    return math.log(sum(math.exp(v) for v in values))


def test_logit_sum_matches_hand_computation() -> None:
    head = RatingHead(levels=5, threshold=4, ratio=0.5, aggregate="logit_sum")
    logits = torch.tensor([F_ROW])
    click_logit = (F_ROW[3] + F_ROW[4]) - (F_ROW[0] + F_ROW[1] + F_ROW[2])  # = -1.5
    pred = head.predict(logits)
    assert pred.p_click.item() == pytest.approx(1 / (1 + math.exp(-click_logit)), abs=1e-7)
    probs = [math.exp(v - _lse(F_ROW)) for v in F_ROW]
    assert pred.rating_probs[0].tolist() == pytest.approx(probs, abs=1e-7)
    assert pred.expected_rating.item() == pytest.approx(sum((k + 1) * p for k, p in enumerate(probs)), abs=1e-6)
    ce = _lse(F_ROW) - F_ROW[4]  # true rating 5
    bce = math.log1p(math.exp(-click_logit))  # click = 1
    loss = head.loss(logits, torch.tensor([5]), torch.tensor([1.0]), torch.tensor(0.2))
    assert loss.item() == pytest.approx(0.5 * ce + 0.5 * (bce + 0.2), abs=1e-6)


def test_prob_sum_matches_hand_computation() -> None:
    head = RatingHead(levels=5, threshold=4, ratio=0.3, aggregate="prob_sum")
    logits = torch.tensor([F_ROW, F_ROW])
    p = (math.exp(F_ROW[3]) + math.exp(F_ROW[4])) / math.exp(_lse(F_ROW))
    pred = head.predict(logits)
    assert pred.p_click.tolist() == pytest.approx([p, p], abs=1e-7)
    ce_rating2 = _lse(F_ROW) - F_ROW[1]
    bce = (-math.log(p) - math.log(1 - p)) / 2  # rows: click 1, click 0
    ce = (ce_rating2 + ce_rating2) / 2
    loss = head.loss(logits, torch.tensor([2, 2]), torch.tensor([1.0, 0.0]), torch.tensor(0.0))
    assert loss.item() == pytest.approx(0.3 * ce + 0.7 * bce, abs=1e-6)


def test_prob_sum_loss_stays_finite_when_saturated() -> None:
    head = RatingHead(aggregate="prob_sum", ratio=0.0)
    logits = torch.tensor([[200.0, 200.0, 200.0, -200.0, -200.0]], requires_grad=True)
    loss = head.loss(logits, torch.tensor([1]), torch.tensor([1.0]), torch.tensor(0.0))
    loss.backward()
    assert math.isfinite(loss.item()) and loss.item() == pytest.approx(400.0 + math.log(1.5), rel=1e-6)  # -log(2e^-200 / 3e^200)
    assert torch.isfinite(logits.grad).all()


def test_binary_head() -> None:
    head = BinaryHead()
    logits = torch.tensor([[0.3], [-2.0]])
    pred = head.predict(logits)
    assert pred.p_click.tolist() == pytest.approx([1 / (1 + math.exp(-0.3)), 1 / (1 + math.exp(2.0))])
    assert pred.rating_probs is None and pred.expected_rating is None
    loss = head.loss(logits, torch.tensor([4, 1]), torch.tensor([1.0, 0.0]), torch.tensor(0.1))
    assert loss.item() == pytest.approx((math.log1p(math.exp(-0.3)) + math.log1p(math.exp(-2.0))) / 2 + 0.1, abs=1e-6)


def test_ratio_one_is_pure_rating_loss_and_threshold_moves_the_split() -> None:
    logits = torch.tensor([F_ROW])
    head = RatingHead(ratio=1.0)
    loss = head.loss(logits, torch.tensor([3]), torch.tensor([0.0]), torch.tensor(5.0))
    assert loss.item() == pytest.approx(_lse(F_ROW) - F_ROW[2], abs=1e-6)  # reg sits on the binary side
    three = RatingHead(threshold=3).predict(logits).p_click.item()
    click_logit = (F_ROW[2] + F_ROW[3] + F_ROW[4]) - (F_ROW[0] + F_ROW[1])
    assert three == pytest.approx(1 / (1 + math.exp(-click_logit)), abs=1e-7)


@pytest.mark.parametrize("kwargs", [{"threshold": 1}, {"threshold": 6}, {"ratio": 1.5}, {"aggregate": "mean"}])
def test_invalid_head_settings(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        RatingHead(**kwargs)
