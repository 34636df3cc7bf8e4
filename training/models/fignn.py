"""FiGNN (Li et al., CIKM 2019): fields as nodes of a fully connected graph, GRU state updates.

As RecBole 1.2's ``FiGNN``, whose graph part is adapted from FuxiCTR's ``FiGNN_Layer``:

1. node states h⁰: AutoInt-style self-attention over the field embeddings
   (project → hidden dropout → multi-head attention → + residual → ReLU);
2. attentional edge weights A_ij = softmax_j LeakyReLU(wᵀ[h_i ‖ h_j]), no self-loops;
3. ``n_layers − 1`` propagation steps (RecBole's count): a = W_in,i Σ_j A_ij W_out,j h_j + b,
   h ← GRU(a, h) + h⁰ (residual to the initial state);
4. attentional scoring: each field scores ``out_dim`` logits, weighted by a per-field
   weight computed from all node states, summed over fields.

The per-field weights are raw Linear outputs as in RecBole; FuxiCTR passes them through
a sigmoid.
"""
from __future__ import annotations

import torch
from torch import nn

from ratingctr.training.models.base import Body
from ratingctr.training.models.kernels import KernelSwitch
from ratingctr.training.models.kernels.fignn import fast_fignn, gru_cell_fab, reference_fignn
from ratingctr.training.models.layers import MultiHeadSelfAttention, reset_linear_


class _GRUCell(nn.Module):
    """``nn.GRUCell``'s parameters (same shapes, init and gate order r, z, n), used by ``kernels/fignn.py``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight_ih = nn.Parameter(torch.empty(3 * dim, dim))
        self.weight_hh = nn.Parameter(torch.empty(3 * dim, dim))
        self.bias_ih = nn.Parameter(torch.empty(3 * dim))
        self.bias_hh = nn.Parameter(torch.empty(3 * dim))
        for p in self.parameters():
            nn.init.uniform_(p, -dim ** -0.5, dim ** -0.5)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """``[N, dim]`` rows, as ``nn.GRUCell``."""
        return gru_cell_fab(x.t().unsqueeze(0), h.t().unsqueeze(0), self)[0].t()


class _GraphLayer(nn.Module):
    """One propagation step's per-field in/out matrices (RecBole/FuxiCTR ``GraphLayer``):
    a_i = W_in,i Σ_j A_ij W_out,j h_j + b."""

    def __init__(self, num_fields: int, dim: int) -> None:
        super().__init__()
        self.w_in = nn.Parameter(torch.empty(num_fields, dim, dim))
        self.w_out = nn.Parameter(torch.empty(num_fields, dim, dim))
        nn.init.xavier_normal_(self.w_in)
        nn.init.xavier_normal_(self.w_out)
        self.bias = nn.Parameter(torch.zeros(dim))


class FiGNN(KernelSwitch, Body):
    """Graph-neural field interactions → ``out_dim`` logits (the graph part is ``kernels/fignn.py``,
    by default on field-major node states).

    Args:
        n_layers: RecBole's count: ``n_layers − 1`` propagation steps (1 = none).
        num_heads: heads of the self-attention that builds the initial node states.
        attention_size: total width of the node states (RecBole's ``attention_size``).
        attn_dropout_prob: dropout on the attention weights.
        hidden_dropout_prob: dropout on the projected embeddings.
    """

    def __init__(self, num_fields: int, embedding_dim: int, out_dim: int, reg_weight: float = 0.0, *,
                 n_layers: int = 2, num_heads: int = 2, attention_size: int = 8, attn_dropout_prob: float = 0.2,
                 hidden_dropout_prob: float = 0.3) -> None:
        super().__init__(num_fields, embedding_dim, out_dim, reg_weight)
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        if attention_size % num_heads:
            raise ValueError(f"attention_size={attention_size} must be divisible by num_heads={num_heads}")
        if num_fields < 2:
            raise ValueError("FiGNN needs at least two fields: a node has no edges without self-loops")
        self.attention = MultiHeadSelfAttention(embedding_dim, attention_size // num_heads, num_heads,
                                                dropout=attn_dropout_prob, input_dropout=hidden_dropout_prob)
        # With n_layers = 1 there is no propagation, so no edge weights or GRU either.
        steps = n_layers - 1
        self.edge_attention = nn.Linear(2 * attention_size, 1, bias=False) if steps else None
        self.register_buffer("self_loop", torch.eye(num_fields, dtype=torch.bool), persistent=False)
        self.graph_layers = nn.ModuleList(_GraphLayer(num_fields, attention_size) for _ in range(steps))
        self.gru = _GRUCell(attention_size) if steps else None
        self.field_score = nn.Linear(attention_size, out_dim, bias=False)
        self.field_weight = nn.Linear(num_fields * attention_size, num_fields, bias=False)
        self.apply(reset_linear_)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        steps, edge = list(self.graph_layers), self.edge_attention
        edge_weight = edge.weight if edge is not None else None
        if self.forward_kernels():
            h0 = self.attention.forward_wfb(emb).transpose(0, 1).contiguous()  # [F, A, B]
            return fast_fignn(h0, edge_weight, self.self_loop, steps, self.gru, self.field_score.weight,
                              self.field_weight.weight)
        return reference_fignn(self.attention(emb), edge_weight, self.self_loop, steps, self.gru,
                               self.field_score.weight, self.field_weight.weight)
