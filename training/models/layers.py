"""Layers shared by several architectures, written once (FuxiCTR's ``layers/`` idea).

A layer used by one model only lives in that model's file.
"""
from __future__ import annotations

import torch
from torch import nn


class Dropout(nn.Module):
    """Inverted dropout whose mask comes from random bytes, not ``bernoulli_``.

    Why: on CPU ``nn.Dropout``'s Bernoulli sampling cost a third of a DCNV2 epoch in our
    profile; eight mask bytes per 64-bit random draw are ~10× cheaper.  The keep
    probability is quantised to 1/256 (0.2 → 51/256 dropped) and the scale uses the
    quantised value, so the expectation stays exact.  Identity in eval mode, so the
    exported ONNX graph has no trace of it.
    """

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.cut = int(round(p * 256))
        self.p = self.cut / 256.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.cut == 0:
            return x
        n = x.numel()
        bits = torch.randint(-(2 ** 63), 2 ** 63 - 1, ((n + 7) // 8,), dtype=torch.int64, device=x.device)
        keep = bits.view(torch.uint8)[:n].view(x.shape) >= self.cut
        return x * keep.to(x.dtype) * (1.0 / (1.0 - self.p))

    def extra_repr(self) -> str:
        return f"p={self.p:.4f}"


def activation(name: str) -> nn.Module:
    return {"relu": nn.ReLU(), "tanh": nn.Tanh(), "sigmoid": nn.Sigmoid(), "none": nn.Identity()}[name]


class MLP(nn.Sequential):
    """Linear → [BatchNorm] → activation → Dropout blocks, optionally ending in ``output_dim``.

    Args:
        input_dim: width of the input.
        hidden_units: widths of the hidden layers (may be empty).
        output_dim: width of a final plain Linear, or None for no output layer.
        dropout: dropout after every hidden activation.
        batch_norm: BatchNorm1d before every hidden activation.

    Example:
        >>> MLP(16, [32, 32], output_dim=5)(torch.zeros(4, 16)).shape
        torch.Size([4, 5])
    """

    def __init__(self, input_dim: int, hidden_units: list[int], output_dim: int | None = None,
                 dropout: float = 0.0, batch_norm: bool = False, act: str = "relu") -> None:
        blocks: list[nn.Module] = []
        width = input_dim
        for units in hidden_units:
            blocks.append(nn.Linear(width, units))
            if batch_norm:
                blocks.append(nn.BatchNorm1d(units))
            blocks.append(activation(act))
            if dropout > 0:
                blocks.append(Dropout(dropout))
            width = units
        if output_dim is not None:
            blocks.append(nn.Linear(width, output_dim))
            width = output_dim
        super().__init__(*blocks)
        self.output_width = width


class FirstOrderLinear(nn.Module):
    """The wide / first-order branch: Σ_c w_c · table[id_c] + bias, ``out_dim`` wide.

    Takes global ids (field offsets already added) and per-column weights, so a
    mean-pooled multi-valued field contributes the mean of its rows, like its embedding.
    """

    def __init__(self, total_vocab: int, out_dim: int) -> None:
        super().__init__()
        self.table = nn.Embedding(total_vocab, out_dim)
        nn.init.zeros_(self.table.weight)
        self.bias = nn.Parameter(torch.zeros(out_dim))

    def forward(self, ids: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        rows = self.table(ids)  # [B, C, out]
        if weights is not None:
            rows = rows * weights.unsqueeze(-1)
        return rows.sum(dim=1) + self.bias


class CrossNetV2(nn.Module):
    """DCN-V2 full-rank cross layers: x_{l+1} = x_0 ⊙ (W_l x_l + b_l) + x_l."""

    def __init__(self, input_dim: int, num_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(input_dim, input_dim) for _ in range(num_layers))

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for layer in self.layers:
            x = x0 * layer(x) + x
        return x

    def weights(self) -> list[torch.Tensor]:
        return [layer.weight for layer in self.layers]


class GatedCrossNet(nn.Module):
    """GDCN's gated cross layers: x_{l+1} = x_0 ⊙ (W_l x_l + b_l) ⊙ σ(W_g x_l) + x_l.

    The gate lets each layer keep only the crossed features that matter (Wang et al., 2023).
    """

    def __init__(self, input_dim: int, num_layers: int) -> None:
        super().__init__()
        self.cross = nn.ModuleList(nn.Linear(input_dim, input_dim) for _ in range(num_layers))
        self.gates = nn.ModuleList(nn.Linear(input_dim, input_dim, bias=False) for _ in range(num_layers))

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for cross, gate in zip(self.cross, self.gates):
            x = x0 * cross(x) * torch.sigmoid(gate(x)) + x
        return x


class MultiHeadSelfAttention(nn.Module):
    """AutoInt's interacting layer: multi-head self-attention over fields with a residual.

    Args:
        input_dim: width of each field vector.
        attention_size: width per head.
        heads: number of heads; the output width is ``attention_size * heads``.
        dropout: dropout on the attention weights.
        residual: add a projected copy of the input (AutoInt uses it).
    """

    def __init__(self, input_dim: int, attention_size: int, heads: int, dropout: float = 0.0,
                 residual: bool = True) -> None:
        super().__init__()
        self.heads, self.size = heads, attention_size
        width = attention_size * heads
        self.query = nn.Linear(input_dim, width, bias=False)
        self.key = nn.Linear(input_dim, width, bias=False)
        self.value = nn.Linear(input_dim, width, bias=False)
        self.residual = nn.Linear(input_dim, width, bias=False) if residual else None
        self.dropout = Dropout(dropout)
        self.output_dim = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, f, _ = x.shape
        q = self.query(x).view(b, f, self.heads, self.size).transpose(1, 2)
        k = self.key(x).view(b, f, self.heads, self.size).transpose(1, 2)
        v = self.value(x).view(b, f, self.heads, self.size).transpose(1, 2)
        scores = torch.softmax(q @ k.transpose(-2, -1) / self.size ** 0.5, dim=-1)
        out = (self.dropout(scores) @ v).transpose(1, 2).reshape(b, f, self.heads * self.size)
        if self.residual is not None:
            out = out + self.residual(x)
        return torch.relu(out)


class BiInteraction(nn.Module):
    """NFM's bi-interaction pooling: ½((Σ_i e_i)² − Σ_i e_i²) = Σ_{i<j} e_i ⊙ e_j in O(F·d)."""

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return 0.5 * (emb.sum(dim=1) ** 2 - (emb ** 2).sum(dim=1))


class CIN(nn.Module):
    """xDeepFM's compressed interaction network.

    Each layer forms all field-wise Hadamard products of the previous layer with the
    input fields and compresses them with a 1×1 convolution; with ``split_half`` half of
    every hidden layer feeds the next layer and half goes to the output (as the paper
    and RecBole do).  Output: sum-pooled feature maps → Linear(out_dim).
    """

    def __init__(self, num_fields: int, layer_sizes: list[int], out_dim: int, split_half: bool = True) -> None:
        super().__init__()
        self.convs = nn.ModuleList()
        self.split_half = split_half
        prev, pooled = num_fields, 0
        for i, size in enumerate(layer_sizes):
            self.convs.append(nn.Conv1d(prev * num_fields, size, kernel_size=1))
            last = i == len(layer_sizes) - 1
            if split_half and not last:
                if size % 2:
                    raise ValueError(f"CIN layer sizes must be even with split_half, got {size}")
                prev, pooled = size // 2, pooled + size // 2
            else:
                prev, pooled = size, pooled + size
        self.output = nn.Linear(pooled, out_dim)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        b, f, d = emb.shape
        hidden, pooled = emb, []
        for i, conv in enumerate(self.convs):
            z = torch.einsum("bhd,bmd->bhmd", hidden, emb).reshape(b, hidden.shape[1] * f, d)
            out = torch.relu(conv(z))
            if self.split_half and i != len(self.convs) - 1:
                hidden, direct = torch.split(out, out.shape[1] // 2, dim=1)
            else:
                hidden, direct = out, out
            pooled.append(direct.sum(dim=2))
        return self.output(torch.cat(pooled, dim=1))
