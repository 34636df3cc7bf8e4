"""FiGNN (Li et al., 2019): fields as nodes of a fully connected graph, GRU state updates.

Follows RecBole's variant: a self-attention layer first maps field embeddings to node
states; edge weights come from attention over (src, dst) pairs without self-loops; each
step aggregates neighbours through per-field in/out matrices and updates the state with
a GRU cell (written out with Linear layers so the graph exports to ONNX); an attentional
scoring layer weighs each field's ``out_dim`` scores.
"""
from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn

from training.models.base import Body
from training.models.layers import Dropout, MultiHeadSelfAttention


class _GRUCell(nn.Module):
    """h' = (1 − z) ⊙ n + z ⊙ h, the standard GRU cell, built from Linear layers."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.input_gates = nn.Linear(dim, 3 * dim)
        self.hidden_gates = nn.Linear(dim, 3 * dim)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        xr, xz, xn = self.input_gates(x).chunk(3, dim=-1)
        hr, hz, hn = self.hidden_gates(h).chunk(3, dim=-1)
        r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
        n = torch.tanh(xn + r * hn)
        return (1 - z) * n + z * h


class _GraphLayer(nn.Module):
    def __init__(self, num_fields: int, dim: int) -> None:
        super().__init__()
        self.w_in = nn.Parameter(torch.empty(num_fields, dim, dim))
        self.w_out = nn.Parameter(torch.empty(num_fields, dim, dim))
        nn.init.xavier_normal_(self.w_in)
        nn.init.xavier_normal_(self.w_out)
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, graph: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        h_out = torch.einsum("fij,bfj->bfi", self.w_out, h)
        return torch.einsum("fij,bfj->bfi", self.w_in, graph @ h_out) + self.bias


class FiGNN(Body):
    def __init__(self, num_fields: int, embedding_dim: int, out_dim: int, reg_weight: float = 0.0, *,
                 n_layers: int = 2, num_heads: int = 2, attention_size: int = 8, attn_dropout_prob: float = 0.2,
                 hidden_dropout_prob: float = 0.3) -> None:
        super().__init__(num_fields, embedding_dim, out_dim, reg_weight)
        dim = attention_size * num_heads
        self.attention = MultiHeadSelfAttention(embedding_dim, attention_size, num_heads, attn_dropout_prob)
        self.dropout = Dropout(hidden_dropout_prob)
        src, dst = zip(*itertools.product(range(num_fields), repeat=2))
        self.register_buffer("src", torch.tensor(src), persistent=False)
        self.register_buffer("dst", torch.tensor(dst), persistent=False)
        self.register_buffer("self_loop", torch.eye(num_fields, dtype=torch.bool), persistent=False)
        self.edge_attention = nn.Linear(2 * dim, 1, bias=False)
        self.graph_layers = nn.ModuleList(_GraphLayer(num_fields, dim) for _ in range(n_layers))
        self.gru = _GRUCell(dim)
        self.field_score = nn.Linear(dim, out_dim, bias=False)
        self.field_weight = nn.Linear(num_fields * dim, num_fields, bias=False)

    def _graph(self, h: torch.Tensor) -> torch.Tensor:
        pairs = torch.cat([h[:, self.src], h[:, self.dst]], dim=-1)
        alpha = F.leaky_relu(self.edge_attention(pairs), 0.01).view(-1, self.num_fields, self.num_fields)
        return torch.softmax(alpha.masked_fill(self.self_loop, float("-inf")), dim=-1)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        h0 = self.dropout(self.attention(emb))
        graph = self._graph(h0)
        h = h0
        for layer in self.graph_layers:
            h = self.gru(layer(graph, h), h) + h0
        scores = self.field_score(h)  # [B, F, out]
        weights = torch.sigmoid(self.field_weight(h.flatten(1))).unsqueeze(-1)  # [B, F, 1]
        return (scores * weights).sum(dim=1)
