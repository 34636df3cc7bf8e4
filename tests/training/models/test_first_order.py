"""``--first-order broadcast`` (the authors' released code) against ``wide`` (the default).

Broadcast: the first-order term of WideDeep, NFM, AutoInt and xDeepFM's CIN output are one
scalar added to all five rating logits.  Softmax is shift-invariant, so the rating
cross-entropy cannot see it, and under ``logit_sum`` it enters the click logit with
weight (N − t + 1) − (t − 1) = −1 for N = 5, t = 4.
"""
from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from ratingctr.errors import UserError
from ratingctr.training.config import HeadConfig, ModelConfig, RunConfig, build_run_config
from ratingctr.training.models.build import build_model
from ratingctr.training.models.heads import RatingHead

F_ROW = [1.0, 2.0, 0.5, -1.0, 3.0]
SMALL = {"WideDeep": {"mlp_hidden_size": [16]}, "NFM": {"mlp_hidden_size": [16]},
         "xDeepFM": {"mlp_hidden_size": [16], "cin_layer_size": [8, 8]},
         "AutoInt": {"mlp_hidden_size": [16], "n_layers": 2}}


def test_a_broadcast_scalar_cancels_in_the_rating_loss_and_enters_the_click_logit_negated() -> None:
    head = RatingHead(levels=5, threshold=4, ratio=1.0, aggregate="logit_sum")
    s = 0.7
    shifted = torch.tensor([[v + s for v in F_ROW]])
    ce = math.log(sum(math.exp(v) for v in F_ROW)) - F_ROW[2]  # true rating 3, hand-computed
    assert head.loss(shifted, torch.tensor([3]), torch.tensor([0.0]), torch.tensor(0.0)).item() == \
        pytest.approx(ce, abs=1e-6)
    click_logit = (F_ROW[3] + F_ROW[4]) - (F_ROW[0] + F_ROW[1] + F_ROW[2]) - s  # −1.5 − s
    assert head.click_logit(shifted).item() == pytest.approx(click_logit, abs=1e-6)
    prob_sum = RatingHead(aggregate="prob_sum")
    assert prob_sum.predict(shifted).p_click.item() == \
        pytest.approx(prob_sum.predict(torch.tensor([F_ROW])).p_click.item(), abs=1e-7)


def _model(tiny, name: str, variant: str, aggregate: str = "logit_sum"):
    torch.manual_seed(0)
    config = RunConfig(model=ModelConfig(name, 8, SMALL[name], first_order=variant),
                       head=HeadConfig("rating", 1.0, aggregate))
    return build_model(tiny.schema, config).eval()


@pytest.mark.parametrize("name", list(SMALL))
def test_broadcast_first_order_is_invisible_to_the_rating_cross_entropy(tiny, name: str) -> None:
    model = _model(tiny, name, "broadcast")
    assert model.linear.table.weight.shape[1] == 1
    scalar_parts = [model.linear.table.weight, model.linear.bias]
    if name == "xDeepFM":
        assert model.body.cin.fc.out_features == 1
        scalar_parts += [model.body.cin.fc.weight, model.body.cin.fc.bias]
    x = torch.as_tensor(tiny.features(tiny.user[:128], tiny.item[:128]))
    rating = torch.as_tensor(tiny.rating[:128])
    click = torch.as_tensor(tiny.click[:128])
    zero = torch.tensor(0.0)
    before_logits = model.logits(x).detach()
    before = model.head.loss(before_logits, rating, click, zero).item()
    with torch.no_grad():
        model.linear.table.weight.normal_(0.0, 0.5)  # a first-order term that is not zero
        model.linear.bias.fill_(0.3)
    after_logits = model.logits(x)
    shift = (after_logits - before_logits).detach()
    assert shift.abs().max() > 0.1
    assert torch.allclose(shift, shift[:, :1].expand_as(shift), atol=1e-6)  # one scalar per row, on all 5
    assert model.head.loss(after_logits, rating, click, zero).item() == pytest.approx(before, abs=1e-5)
    assert torch.allclose(model.head.click_logit(after_logits) - model.head.click_logit(before_logits),
                          -shift[:, 0], atol=1e-5)  # weight −1 in the click logit
    model.head.loss(after_logits, rating, click, zero).backward()  # λr = 1: pure rating CE
    for p in scalar_parts:
        assert p.grad is None or p.grad.abs().max() < 1e-6
    wide = _model(tiny, name, "wide")  # the contrast: five first-order logits do move the rating loss
    ce = wide.head.loss(wide.logits(x), rating, click, zero).item()
    with torch.no_grad():
        wide.linear.table.weight.normal_(0.0, 0.5)
    assert abs(wide.head.loss(wide.logits(x), rating, click, zero).item() - ce) > 1e-3


@pytest.mark.parametrize("name", ["WideDeep", "xDeepFM"])
def test_wide_is_the_default_and_keeps_one_first_order_logit_per_level(tiny, name: str) -> None:
    assert ModelConfig().first_order == "wide"
    default = build_model(tiny.schema, RunConfig(model=ModelConfig(name, 8, SMALL[name]), head=HeadConfig("rating")))
    assert default.linear.table.weight.shape[1] == 5
    if name == "xDeepFM":
        assert default.body.cin.fc.out_features == 5
    # a config written before the option existed reads as wide
    raw = RunConfig(model=ModelConfig(name, 8, SMALL[name])).to_dict()
    del raw["model"]["first_order"]
    assert RunConfig.from_dict(raw).model.first_order == "wide"


def test_first_order_setting_is_validated() -> None:
    assert build_run_config({"model": "NFM", "first_order": "broadcast"}).model.first_order == "broadcast"
    with pytest.raises(UserError, match="applies to the architectures with a first-order term"):
        build_run_config({"model": "DCNV2", "first_order": "broadcast"})
    with pytest.raises(UserError, match="unknown first_order"):
        build_run_config({"model": "NFM", "first_order": "scalar"})
    config = build_run_config({"model": "xDeepFM", "first_order": "broadcast"})
    assert replace(config.model, first_order="wide") != config.model  # part of the model config, so of the run key
