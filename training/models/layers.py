"""Layers shared by several architectures, written once (FuxiCTR's ``layers/`` idea).

A layer used by one model only lives in that model's file.  Everything here is
ONNX-traceable: no data-dependent Python branches, no in-place writes into views, and
dropout is a module that is the identity in eval mode.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ratingctr.training.models.kernels import KernelSwitch
from ratingctr.training.models.kernels.attention import fast_field_attention, reference_field_attention
from ratingctr.training.models.kernels.cin import fast_cin, reference_cin
from ratingctr.training.models.kernels.dropout import fast_dropout_mask, reference_dropout_mask
from ratingctr.training.models.kernels.lookup import lookup


class Dropout(KernelSwitch, nn.Module):
    """Inverted dropout whose mask comes from random bytes (``kernels/dropout.py``), not ``bernoulli_``.

    The keep probability is quantised to 1/256 (0.2 → 51/256 dropped) and the scale uses
    the quantised value, so the expectation stays exact.  Identity in eval mode, so the
    exported ONNX graph has no trace of it.  The mask ``{0, 1/(1−p)}`` is built in the
    input's dtype and applied with one multiply forward and one backward (autograd saves
    only the mask, which needs no grad).
    """

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.cut = int(round(p * 256))
        self.p = self.cut / 256.0

    def mask(self, shape: torch.Size | tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor | None:
        """The scaled keep mask ``{0, 1/(1−p)}`` for one draw; None when dropout is off."""
        if not self.training or self.cut == 0:
            return None
        draw = fast_dropout_mask if self.training_kernels() else reference_dropout_mask
        return draw(tuple(shape), self.cut, dtype, device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = self.mask(x.shape, x.dtype, x.device)
        return x if mask is None else x * mask

    def extra_repr(self) -> str:
        return f"p={self.p:.4f}"


_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "none": nn.Identity,
}


def get_activation(name: str) -> nn.Module:
    """A fresh activation module by name: relu, tanh, sigmoid or none."""
    if name.lower() not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of: {', '.join(_ACTIVATIONS)}")
    return _ACTIVATIONS[name.lower()]()


def reset_linear_(module: nn.Module) -> None:
    """Xavier-normal weights and zero biases for ``Linear`` / ``Conv1d``.

    Both references initialise this way (RecBole's ``xavier_normal_initialization``,
    FuxiCTR's ``BaseModel.reset_parameters``); use it as ``body.apply(reset_linear_)``.
    Raw ``nn.Parameter`` tensors (cross biases, GRU weights, attention in-projection)
    keep the initialisation their layer gives them.
    """
    if isinstance(module, (nn.Linear, nn.Conv1d)):
        nn.init.xavier_normal_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class MLP(nn.Sequential):
    """Hidden blocks Linear → [BatchNorm] → activation with dropout, then an optional output Linear.

    Args:
        input_dim: width of the input.
        hidden_units: widths of the hidden layers (may be empty).
        output_dim: width of a final plain Linear, or None for no output layer.
        dropout: dropout rate of every hidden block.
        batch_norm: BatchNorm1d between each hidden Linear and its activation.
        activation: relu, tanh, sigmoid or none.
        dropout_first: put each block's dropout *before* its Linear, as RecBole's
            ``MLPLayers`` does (the paper-1 models were run with it); the default puts it
            after the activation, as FuxiCTR's ``MLP_Block`` does.

    Example:
        >>> MLP(16, [32, 32], output_dim=5, dropout=0.1)(torch.zeros(4, 16)).shape
        torch.Size([4, 5])
    """

    def __init__(self, input_dim: int, hidden_units: Sequence[int], output_dim: int | None = None,
                 dropout: float = 0.0, batch_norm: bool = False, activation: str = "relu",
                 dropout_first: bool = False) -> None:
        blocks: list[nn.Module] = []
        width = input_dim
        for units in hidden_units:
            if dropout_first and dropout > 0:
                blocks.append(Dropout(dropout))
            blocks.append(nn.Linear(width, units))
            if batch_norm:
                blocks.append(nn.BatchNorm1d(units))
            blocks.append(get_activation(activation))
            if not dropout_first and dropout > 0:
                blocks.append(Dropout(dropout))
            width = units
        if output_dim is not None:
            blocks.append(nn.Linear(width, output_dim))
            width = output_dim
        super().__init__(*blocks)
        self.output_width = width


class FirstOrderLinear(nn.Module):
    """The wide / first-order branch: Σ_c w_c · table[id_c] + bias, ``out_dim`` wide.

    Takes global ids (field offsets already added) and optional per-column weights, so a
    mean-pooled multi-valued field contributes the mean of its rows, like its embedding.
    Rows start at zero, so the branch starts neutral.

    Args:
        total_vocab: rows of the table (all fields' vocabularies, concatenated).
        out_dim: logits per row.

    Example:
        >>> FirstOrderLinear(10, 5)(torch.tensor([[1, 7]]), torch.tensor([[1.0, 0.5]])).shape
        torch.Size([1, 5])
    """

    def __init__(self, total_vocab: int, out_dim: int) -> None:
        super().__init__()
        self.table = nn.Embedding(total_vocab, out_dim)
        nn.init.zeros_(self.table.weight)
        self.bias = nn.Parameter(torch.zeros(out_dim))

    def forward(self, ids: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        rows = lookup(self.table.weight, ids)  # [B, C, out]
        if weights is not None:
            rows = rows * weights.unsqueeze(-1).to(rows.dtype)
        return rows.sum(dim=1) + self.bias


class CrossNetV2(nn.Module):
    """DCN-V2 full-rank cross layers: x_{l+1} = x_0 ⊙ (W_l x_l + b_l) + x_l (Wang et al., 2021, eq. 1).

    Args:
        input_dim: width of x_0 (F·d).
        num_layers: number of cross layers.

    Example:
        >>> CrossNetV2(8, 2)(torch.ones(3, 8)).shape
        torch.Size([3, 8])
    """

    def __init__(self, input_dim: int, num_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(input_dim, input_dim) for _ in range(num_layers))

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for layer in self.layers:
            x = x0 * layer(x) + x
        return x

    def weights(self) -> list[torch.Tensor]:
        """The W_l matrices (RecBole's DCNV2 puts exactly these under its L2 term)."""
        return [layer.weight for layer in self.layers]


class GatedCrossNet(nn.Module):
    """GDCN's gated cross layers: x_{l+1} = x_0 ⊙ (W_l x_l + b_l) ⊙ σ(W_g x_l) + x_l.

    The information gate lets each layer keep only the crossed features that matter
    (Wang et al., CIKM 2023).  As FuxiCTR's ``GateCorssLayer``: bias-free W and W_g, and
    a separate bias b drawn from U(0, 1).

    Args:
        input_dim: width of x_0 (F·d).
        num_layers: number of gated cross layers.
    """

    def __init__(self, input_dim: int, num_layers: int) -> None:
        super().__init__()
        self.cross = nn.ModuleList(nn.Linear(input_dim, input_dim, bias=False) for _ in range(num_layers))
        self.gates = nn.ModuleList(nn.Linear(input_dim, input_dim, bias=False) for _ in range(num_layers))
        self.biases = nn.ParameterList(nn.Parameter(torch.rand(input_dim)) for _ in range(num_layers))

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for cross, gate, bias in zip(self.cross, self.gates, self.biases):
            x = x0 * (cross(x) + bias) * torch.sigmoid(gate(x)) + x
        return x


class _SelfAttention(KernelSwitch, nn.Module):
    """One ``nn.MultiheadAttention`` over fields (same parameters, same maths), written out.

    Spelled out rather than calling ``nn.MultiheadAttention`` so the ONNX graph is plain
    MatMul/Softmax whatever fast path that module would pick in eval mode.  Works in the
    width-major layout ``[W, F, B]`` (see ``MultiHeadSelfAttention``); the maths is
    ``kernels/attention.py``'s, which trains on CPU through a hand-written backward.
    """

    def __init__(self, width: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, width // heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        nn.init.xavier_uniform_(self.in_proj_weight)  # nn.MultiheadAttention's own init
        self.out_proj = nn.Linear(width, width)
        self.dropout = Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[W, F, B]`` → ``[W, F, B]``; dropout on the attention weights."""
        _, f, b = x.shape
        fast = self.training_kernels() and x.device.type == "cpu"
        mask = self.dropout.mask((self.heads, f, f, b), torch.float32 if fast else x.dtype, x.device)
        attention = fast_field_attention if fast else reference_field_attention
        return attention(x, self.in_proj_weight, self.in_proj_bias, self.out_proj.weight, self.out_proj.bias,
                         mask, self.heads, self.head_dim)


class MultiHeadSelfAttention(nn.Module):
    """AutoInt's interacting layers, as RecBole 1.2 builds them (its FiGNN reuses the block).

        h   = Dropout_in(W_a e)                    project each field to heads·attention_size
        h   = MHA_L(… MHA_1(h))                    ``nn.MultiheadAttention`` layers, stacked
        out = ReLU(h + W_res e)                    residual from the raw field embeddings

    Song et al. (2019) put a residual + ReLU in every layer; RecBole's ``AutoInt`` (whose
    runs the reference numbers come from) adds it once after the stack, so we do too.

    Internally everything runs width-major, ``[W, F, B]`` (one transpose in, one view
    out), so each Linear is a single ``addmm`` over all B·F field vectors and the
    attention's F×F products vectorise along the batch.  ``forward`` returns the usual
    ``[B, F, W]`` (a non-contiguous view); ``forward_wfb`` returns the internal layout.

    Args:
        input_dim: d, width of each field embedding.
        attention_size: width of each head.  RecBole's ``attention_size`` is the total
            width, i.e. ``heads * attention_size`` here.
        heads: number of heads.
        dropout: dropout on the attention weights.
        num_layers: stacked attention layers.
        residual: add ``W_res e`` before the ReLU (RecBole's ``has_residual``).
        input_dropout: dropout on the projected embeddings (FiGNN's hidden dropout).

    Example:
        >>> MultiHeadSelfAttention(16, 4, 2)(torch.zeros(3, 7, 16)).shape
        torch.Size([3, 7, 8])
    """

    def __init__(self, input_dim: int, attention_size: int, heads: int, dropout: float = 0.0,
                 num_layers: int = 1, residual: bool = True, input_dropout: float = 0.0) -> None:
        super().__init__()
        width = attention_size * heads
        self.project = nn.Linear(input_dim, width)
        self.input_dropout = Dropout(input_dropout)
        self.layers = nn.ModuleList(_SelfAttention(width, heads, dropout) for _ in range(num_layers))
        self.residual = nn.Linear(input_dim, width) if residual else None
        self.output_dim = width

    def forward_wfb(self, emb: torch.Tensor) -> torch.Tensor:
        """``[B, F, d]`` field embeddings → ``[W, F, B]`` node states."""
        b, f, d = emb.shape
        e = emb.permute(2, 1, 0).reshape(d, f * b)  # the one transpose copy
        h = self.input_dropout(torch.addmm(self.project.bias.unsqueeze(1), self.project.weight, e))
        h = h.view(-1, f, b)
        for layer in self.layers:
            h = layer(h)
        if self.residual is not None:
            h = h + torch.addmm(self.residual.bias.unsqueeze(1), self.residual.weight, e).view(-1, f, b)
        return torch.relu(h)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return self.forward_wfb(emb).permute(2, 1, 0)


class BiInteraction(nn.Module):
    """NFM's bi-interaction pooling: ½((Σ_i e_i)² − Σ_i e_i²) = Σ_{i<j} e_i ⊙ e_j in O(F·d).

    Example:
        >>> BiInteraction()(torch.ones(2, 3, 4))[0]
        tensor([3., 3., 3., 3.])
    """

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return 0.5 * (emb.sum(dim=1) ** 2 - (emb ** 2).sum(dim=1))


class CIN(KernelSwitch, nn.Module):
    """xDeepFM's compressed interaction network (Lian et al., 2018), ``out_dim`` logits.

    Layer k forms every Hadamard product of its input maps with the F input fields and
    compresses them with a 1×1 convolution + ReLU.  With ``split_half`` (the paper's
    and RecBole's default, ``direct=False``) half of every hidden layer but the last
    feeds the next layer and the other half goes to the output.  The output maps are
    sum-pooled over d and a Linear turns them into ``out_dim`` logits.

    Args:
        num_fields: F.
        layer_sizes: feature maps per layer (even, except the last, with ``split_half``).
        out_dim: logits.
        split_half: see above.

    Example:
        >>> CIN(7, [8, 8], out_dim=5)(torch.zeros(3, 7, 16)).shape
        torch.Size([3, 5])
    """

    def __init__(self, num_fields: int, layer_sizes: Sequence[int], out_dim: int, split_half: bool = True) -> None:
        super().__init__()
        self.num_fields = num_fields
        self.split_half = split_half
        self.convs = nn.ModuleList()
        self.hidden_sizes: list[int] = []
        prev, pooled = num_fields, 0
        for i, size in enumerate(layer_sizes):
            self.convs.append(nn.Conv1d(prev * num_fields, size, kernel_size=1))
            if split_half and i < len(layer_sizes) - 1:
                if size % 2:
                    raise ValueError(f"CIN layer sizes must be even with split_half (direct=False), got {size}")
                prev = size // 2
                pooled += size // 2
            else:
                prev = size
                pooled += size
            self.hidden_sizes.append(prev)
        self.fc = nn.Linear(pooled, out_dim)

    def transient_floats_per_row(self, input_shape: torch.Size) -> int:
        """Floats per row alive inside ``forward`` and never returned (``training.eval_batch``): the
        widest layer's field × map products, twice (the broadcast product and its contiguous copy)."""
        _, fields, dim = input_shape
        inputs = [fields, *self.hidden_sizes[:-1]]
        return 2 * max(h * fields * dim for h in inputs) + sum(conv.out_channels for conv in self.convs) * dim

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        """The layers' 1×1 convolutions (RecBole's parameters) run channels-last by default (``kernels/cin.py``)."""
        cin = fast_cin if self.forward_kernels() else reference_cin
        pooled = cin(emb, [conv.weight for conv in self.convs], [conv.bias for conv in self.convs],
                     self.hidden_sizes, self.split_half)
        return self.fc(pooled)
