"""Heads own the output width, the loss and the prediction; bodies only produce logits.

``RatingHead`` is scaled supervision: the body predicts the 1..N star distribution and
the click probability p̂ is aggregated from it.  Two exact aggregations:

* ``logit_sum`` (the authors' released code): p̂ = σ(Σ_{k≥t} f_k − Σ_{k<t} f_k), and the
  binary loss is the 2-class cross-entropy over those two summed logits.
* ``prob_sum`` (the paper's Eq. 17): p̂ = Σ_{k≥t} softmax(f)_k, binary loss BCE(p̂, y),
  computed in log space so it stays finite when p̂ saturates.

Here ``t`` is the click threshold on the star scale (rating ≥ t is a click; the papers'
"above 3" is t = 4).

A scalar broadcast onto the N logits (``--first-order broadcast``, the authors' released
code for the first-order term of WideDeep, NFM, AutoInt and for xDeepFM's CIN output):
adding s to every f_k

* leaves the rating cross-entropy unchanged (softmax is shift-invariant), so s gets no
  gradient from it;
* adds s · Σ_k sign_k = s · ((N − t + 1) − (t − 1)) to the ``logit_sum`` click logit:
  weight −1 for N = 5, t = 4 (two positive levels, three negative), so that branch
  learns a *negated* first-order score through the binary loss alone;
* leaves ``prob_sum``'s p̂ unchanged as well: under ``prob_sum`` the scalar gets no
  gradient at all (only its L2 term, where the architecture has one).

With the binary head (N = 1) both variants are the same model.  The default ``wide``
variant gives the branch one logit per level instead.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

AGGREGATIONS = ("logit_sum", "prob_sum")


class Prediction(NamedTuple):
    p_click: torch.Tensor  # [B]
    rating_probs: torch.Tensor | None  # [B, N]
    expected_rating: torch.Tensor | None  # [B]


class BinaryHead(nn.Module):
    """One logit, BCE-with-logits: the "Original" supervision."""

    out_dim = 1
    levels = None

    def loss(self, logits: torch.Tensor, rating: torch.Tensor, click: torch.Tensor,
             reg: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits[:, 0], click) + reg

    def predict(self, logits: torch.Tensor) -> Prediction:
        return Prediction(torch.sigmoid(logits[:, 0]), None, None)


class RatingHead(nn.Module):
    """N logits over star levels, trained with λr·CE(rating) + (1−λr)·(binary loss + reg).

    Args:
        levels: N, size of the rating scale (1..N).
        threshold: a rating ``>= threshold`` is a click; must be in 2..N.
        ratio: λr, weight of the rating cross-entropy.
        aggregate: ``"logit_sum"`` (default, reference code) or ``"prob_sum"`` (Eq. 17).

    Example:
        >>> head = RatingHead(levels=5, threshold=4, ratio=0.5)
        >>> pred = head.predict(torch.zeros(2, 5))
        >>> round(float(pred.p_click[0]), 4)  # σ(0 + 0 − 0 − 0 − 0)
        0.5
    """

    def __init__(self, levels: int = 5, threshold: int = 4, ratio: float = 0.5,
                 aggregate: str = "logit_sum") -> None:
        super().__init__()
        if not 2 <= threshold <= levels:
            raise ValueError(f"threshold {threshold} must be in 2..{levels}")
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"ratio must be in [0, 1], got {ratio}")
        if aggregate not in AGGREGATIONS:
            raise ValueError(f"aggregate must be one of {AGGREGATIONS}, got {aggregate!r}")
        self.out_dim = levels
        self.levels, self.threshold, self.ratio, self.aggregate = levels, threshold, ratio, aggregate
        stars = torch.arange(1, levels + 1, dtype=torch.float32)
        self.register_buffer("stars", stars, persistent=False)
        self.register_buffer("sign", torch.where(stars >= threshold, 1.0, -1.0), persistent=False)
        self.register_buffer("positive", stars >= threshold, persistent=False)

    def click_logit(self, logits: torch.Tensor) -> torch.Tensor:
        """``logit_sum``: Σ_{k≥t} f_k − Σ_{k<t} f_k.

        A multiply-and-sum, not ``logits @ sign``: when a body's logits end in a transpose
        (FiGNN), ONNX Runtime 1.32's MatmulTransposeFusion folds Transpose → MatMul(·, 1-D)
        wrongly and shifts p̂ by up to 0.18 (tests/export/test_parity.py caught it).
        """
        return (logits * self.sign).sum(dim=1)

    def binary_loss(self, logits: torch.Tensor, click: torch.Tensor) -> torch.Tensor:
        if self.aggregate == "logit_sum":
            return F.binary_cross_entropy_with_logits(self.click_logit(logits), click)
        log_norm = torch.logsumexp(logits, dim=1)
        neg_inf = torch.finfo(logits.dtype).min
        log_p = torch.logsumexp(logits.masked_fill(~self.positive, neg_inf), dim=1) - log_norm
        log_not_p = torch.logsumexp(logits.masked_fill(self.positive, neg_inf), dim=1) - log_norm
        return -(click * log_p + (1.0 - click) * log_not_p).mean()

    def loss(self, logits: torch.Tensor, rating: torch.Tensor, click: torch.Tensor,
             reg: torch.Tensor) -> torch.Tensor:
        # Classes on dim 1 of a [1, N, B] view: the same mean CE, but the CPU log-softmax then
        # vectorises along the batch instead of over 5 classes.
        rating_loss = F.cross_entropy(logits.t().unsqueeze(0), (rating - 1).unsqueeze(0))
        return self.ratio * rating_loss + (1.0 - self.ratio) * (self.binary_loss(logits, click) + reg)

    def predict(self, logits: torch.Tensor) -> Prediction:
        probs = torch.softmax(logits, dim=1)
        if self.aggregate == "logit_sum":
            p_click = torch.sigmoid(self.click_logit(logits))
        else:
            p_click = (probs * self.positive.to(probs.dtype)).sum(dim=1)
        # multiply-and-sum, not ``probs @ stars``: ONNX Runtime runs that [N, 5]·[5] MatMul
        # several times slower than Mul + ReduceSum
        return Prediction(p_click, probs, (probs * self.stars).sum(dim=1))


def build_head(kind: str, levels: int, threshold: int, ratio: float, aggregate: str) -> nn.Module:
    if kind == "binary":
        return BinaryHead()
    if kind == "rating":
        return RatingHead(levels, threshold, ratio, aggregate)
    raise ValueError(f"unknown head '{kind}'; choose binary or rating")
