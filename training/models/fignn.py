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
import torch.nn.functional as F
from torch import nn

from ratingctr.training.models.base import Body
from ratingctr.training.models.layers import MultiHeadSelfAttention, reset_linear_


class _GRUCell(nn.Module):
    """``nn.GRUCell`` (same parameters, init and gate order r, z, n), written out so it exports to ONNX."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight_ih = nn.Parameter(torch.empty(3 * dim, dim))
        self.weight_hh = nn.Parameter(torch.empty(3 * dim, dim))
        self.bias_ih = nn.Parameter(torch.empty(3 * dim))
        self.bias_hh = nn.Parameter(torch.empty(3 * dim))
        for p in self.parameters():
            nn.init.uniform_(p, -dim ** -0.5, dim ** -0.5)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """``[N, dim]`` rows."""
        return self.forward_fab(x.t().unsqueeze(0), h.t().unsqueeze(0))[0].t()

    def forward_fab(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """Feature-major ``[F, dim, B]`` (FiGNN's internal layout): the gates are ``W @ x``."""
        f = x.shape[0]
        # baddbmm, not ``W @ x + b``: under autocast the sum with an fp32 bias would promote back to fp32
        xr, xz, xn = torch.baddbmm(self.bias_ih[None, :, None], self.weight_ih.expand(f, -1, -1), x).chunk(3, dim=1)
        hr, hz, hn = torch.baddbmm(self.bias_hh[None, :, None], self.weight_hh.expand(f, -1, -1), h).chunk(3, dim=1)
        r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
        n = torch.tanh(xn + r * hn)
        return (1 - z) * n + z * h


class _GraphLayer(nn.Module):
    """One propagation step with per-field in/out matrices (RecBole/FuxiCTR ``GraphLayer``)."""

    def __init__(self, num_fields: int, dim: int) -> None:
        super().__init__()
        self.w_in = nn.Parameter(torch.empty(num_fields, dim, dim))
        self.w_out = nn.Parameter(torch.empty(num_fields, dim, dim))
        nn.init.xavier_normal_(self.w_in)
        nn.init.xavier_normal_(self.w_out)
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, graph: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """``graph`` ``[F_i, F_j, B]``, ``h`` ``[F, A, B]`` → ``[F, A, B]``.

        ``W_in,i Σ_j A_ij W_out,j h_j + b``: the per-field matrices are one ``bmm`` over
        fields (wide along the batch), the neighbour sum a broadcast product along B.
        """
        h_out = torch.bmm(self.w_out, h)  # [F, A, B]
        agg = (graph.unsqueeze(2) * h_out.unsqueeze(0)).sum(1)  # Σ_j A_ij h_out,j
        return torch.baddbmm(self.bias[None, :, None], self.w_in, agg)


class FiGNN(Body):
    """Graph-neural field interactions → ``out_dim`` logits.

    Internally the node states are field-major, ``[F, A, B]``: every per-field product is
    then a GEMM or an element-wise op along the contiguous batch axis, rather than
    B·F tiny matrices (which, with the reshapes around them, dominated a CPU epoch).

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

    def _graph(self, h: torch.Tensor, edge_attention: nn.Linear) -> torch.Tensor:
        """Edge weights for ``h`` ``[B, F, A]`` as ``[B, F_i, F_j]`` (the layout RecBole uses)."""
        return self._graph_fab(h.permute(1, 2, 0), edge_attention).permute(2, 0, 1)

    def _graph_fab(self, h: torch.Tensor, edge_attention: nn.Linear) -> torch.Tensor:
        """wᵀ[h_i ‖ h_j] = w_srcᵀh_i + w_dstᵀh_j: RecBole's concat-then-Linear without the F² pairs.

        ``h`` ``[F, A, B]`` → softmax-normalised ``[F_i, F_j, B]``, no self-loops.
        """
        w_src, w_dst = edge_attention.weight.chunk(2, dim=1)  # [1, A] each
        src, dst = torch.matmul(w_src, h), torch.matmul(w_dst, h)  # [F, 1, B]
        alpha = F.leaky_relu(src + dst.transpose(0, 1), 0.01)  # [F_i, F_j, B]
        return torch.softmax(alpha.masked_fill(self.self_loop.unsqueeze(-1), float("-inf")), dim=1)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        h0 = self.attention.forward_wfb(emb).transpose(0, 1).contiguous()  # [F, A, B]
        h = h0
        if self.edge_attention is not None and self.gru is not None:
            graph = self._graph_fab(h0, self.edge_attention)
            for layer in self.graph_layers:
                h = self.gru.forward_fab(layer(graph, h), h) + h0
        f, a, b = h.shape
        scores = torch.matmul(self.field_score.weight, h)  # [F, out, B]
        weights = self.field_weight.weight @ h.reshape(f * a, b)  # [F, B]; (f, a) order = RecBole's flatten
        return (scores * weights.unsqueeze(1)).sum(0).t()
