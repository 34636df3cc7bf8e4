"""EulerNet (Tian et al., SIGIR 2023): feature interactions as linear operations in complex space.

Each field embedding e becomes the complex vector μ·e^{ie} (r = μ cos e, p = μ sin e).
In polar form a product of features with learnable exponents is a *linear* map of
log-moduli and phases (Euler's formula), so the explicit part learns arbitrary-order
interactions; an implicit part (ReLU Linear on r and p) runs alongside.

Follows RecBole 1.2's ``EulerNet`` / ``EulerInteractionLayer`` step by step, including
its initialisation (``im`` ~ N(0, 0.1), output ~ N(0, 0.01), zero Linear biases,
orders from a sharp softmax) and its L2 term over every interaction-layer parameter,
μ and the output layer.  The output Linear emits ``out_dim`` logits; as in RecBole the
same Linear is applied to the real and the imaginary part and the two are summed.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ratingctr.training.models.base import Body
from ratingctr.training.models.kernels import KernelSwitch
from ratingctr.training.models.kernels.euler import fast_euler_net, reference_euler_layer, reference_euler_net
from ratingctr.training.models.layers import Dropout


class EulerInteractionLayer(nn.Module):
    """One complex-space interaction: ``in_fields`` complex vectors → ``out_orders`` ones.

    With (λ, θ) the log-modulus and phase of the input (r, p) ``[B, F, d]``:

        λ' = exp(λᵀ W + b_λ),  θ' = θᵀ W + b_θ        W = ``inter_orders`` [F, O]: learned exponents
        r' = ReLU(W_im r) + λ' cos θ'                  implicit + explicit part, ``[B, O, d]``
        p' = ReLU(W_im p) + λ' sin θ'

    Args:
        embedding_dim: d.
        in_fields: complex vectors in.
        out_orders: complex vectors out (one learned exponent vector each).
        drop_ex: dropout on log-modulus and phase (explicit part).
        drop_im: dropout on r and p before the implicit Linear.
        apply_norm: LayerNorm on the outputs.
    """

    def __init__(self, embedding_dim: int, in_fields: int, out_orders: int, drop_ex: float, drop_im: float,
                 apply_norm: bool) -> None:
        super().__init__()
        self.dim = embedding_dim
        self.inter_orders = nn.Parameter(torch.softmax(torch.randn(in_fields, out_orders) / 0.01, dim=0))
        self.im = nn.Linear(in_fields * embedding_dim, out_orders * embedding_dim)
        nn.init.normal_(self.im.weight, mean=0.0, std=0.1)
        nn.init.zeros_(self.im.bias)
        self.bias_lam = nn.Parameter(torch.randn(1, embedding_dim, out_orders) * 0.01)
        self.bias_theta = nn.Parameter(torch.randn(1, embedding_dim, out_orders) * 0.01)
        self.drop_ex, self.drop_im = Dropout(drop_ex), Dropout(drop_im)
        self.norm_r = nn.LayerNorm(embedding_dim) if apply_norm else None
        self.norm_p = nn.LayerNorm(embedding_dim) if apply_norm else None

    def forward(self, r: torch.Tensor, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(r, p) ``[B, F, d]`` → ``[B, O, d]`` each, RecBole's maths (``EulerNet`` runs its stacked kernel)."""
        return reference_euler_layer(self, r, p)


class EulerNet(KernelSwitch, Body):
    """Stacked Euler interaction layers → ``out_dim`` logits.

    Args:
        order_list: output vectors of each interaction layer.
        drop_ex: explicit-part dropout.
        drop_im: implicit-part dropout.
        apply_norm: LayerNorm after each layer.
    """

    def __init__(self, num_fields: int, embedding_dim: int, out_dim: int, reg_weight: float = 5e-4, *,
                 order_list: Sequence[int] = (8,), drop_ex: float = 0.3, drop_im: float = 0.5,
                 apply_norm: bool = False) -> None:
        super().__init__(num_fields, embedding_dim, out_dim, reg_weight)
        if not order_list:
            raise ValueError("EulerNet needs at least one interaction layer (order_list is empty)")
        shapes = [num_fields, *order_list]
        self.layers = nn.ModuleList(
            EulerInteractionLayer(embedding_dim, n_in, n_out, drop_ex, drop_im, apply_norm)
            for n_in, n_out in zip(shapes[:-1], shapes[1:]))
        self.mu = nn.Parameter(torch.ones(1, num_fields, 1))
        self.predict = nn.Linear(shapes[-1] * embedding_dim, out_dim)  # RecBole's ``self.reg``
        nn.init.normal_(self.predict.weight, mean=0.0, std=0.01)
        nn.init.zeros_(self.predict.bias)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        """r + ip = μ·e^{ie} per field, the interaction layers, then predict(r) + predict(p)."""
        euler_net = fast_euler_net if self.forward_kernels() else reference_euler_net
        return euler_net(emb, self.mu, list(self.layers), self.predict)

    def regularized_parameters(self) -> list[torch.Tensor]:
        """RecBole's ``RegularLoss``: every interaction-layer parameter, μ and the output layer."""
        return [*self.layers.parameters(), self.mu, *self.predict.parameters()]
