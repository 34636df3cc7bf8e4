"""Typed run configuration, built once at the CLI edge and passed down as plain values.

Model hyper-parameters start from ``training/configs/models/<Model>.yaml`` (the
reference values) and are overridden by ``--key=value`` flags, the way RecBole users
already work; nothing below reads a global dict.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from importlib import resources
from typing import Any, Literal

import yaml

from ratingctr.errors import UserError

DropMiddle = Literal["none", "train", "eval", "both"]
Aggregate = Literal["logit_sum", "prob_sum"]


@dataclass(frozen=True)
class DataConfig:
    """Which ratings, how they become labels, and how they are split.

    ``threshold``: a rating ``>= threshold`` is a click (4 = "above 3", both papers).
    ``drop_middle``: drop ratings equal to ``threshold - 1`` from training, evaluation, both.
    """

    dataset: str = "ml-100k"
    data_dir: str | None = None
    levels: int = 5
    threshold: int = 4
    k_core: int = 10
    drop_middle: DropMiddle = "none"
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 2020


@dataclass(frozen=True)
class HeadConfig:
    """``binary``: click label only.  ``rating``: the 1..levels star distribution."""

    kind: Literal["binary", "rating"] = "rating"
    ratio: float = 0.5
    aggregate: Aggregate = "logit_sum"


@dataclass(frozen=True)
class ModelConfig:
    name: str = "DCNV2"
    embedding_dim: int = 16
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EncoderConfig:
    """``table``: one row per id.  ``lightgcn``: user/item rows propagated over the
    training graph (TS when ``init_from`` is None, FT when it names a trained table run)."""

    kind: Literal["table", "lightgcn"] = "table"
    gcn_layers: int = 2
    layer_weights: tuple[float, ...] | None = None
    init_from: str | None = None


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 30
    batch_size: int = 4096
    lr: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 3
    seed: int = 2020
    device: str = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    eval_batch_size: int = 65536
    num_negatives: int = 100
    ranking_positives: Literal["all", "clicks"] = "all"
    progress: bool = True


@dataclass(frozen=True)
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["data"]["split"] = list(self.data.split)
        if self.encoder.layer_weights is not None:
            out["encoder"]["layer_weights"] = list(self.encoder.layer_weights)
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "RunConfig":
        data = dict(raw["data"])
        data["split"] = tuple(data["split"])
        encoder = dict(raw.get("encoder") or {})
        if encoder.get("layer_weights") is not None:
            encoder["layer_weights"] = tuple(encoder["layer_weights"])
        return cls(data=DataConfig(**data), model=ModelConfig(**raw["model"]),
                   head=HeadConfig(**raw["head"]), train=TrainConfig(**raw["train"]),
                   encoder=EncoderConfig(**encoder))


def model_defaults(name: str) -> dict[str, Any]:
    """The YAML defaults of one architecture: ``{"lr": ..., "params": {...}}``."""
    from ratingctr.training.models.registry import ARCHITECTURES

    if name not in ARCHITECTURES:
        raise UserError(f"unknown model '{name}'; choose one of: {', '.join(ARCHITECTURES)}")
    text = resources.files("ratingctr.training.configs").joinpath("models", f"{name}.yaml").read_text()
    loaded = yaml.safe_load(text) or {}
    return {"lr": float(loaded.get("lr", 1e-3)), "embedding_dim": int(loaded.get("embedding_dim", 16)),
            "params": dict(loaded.get("params") or {})}


def parse_override(value: str) -> Any:
    """``--key=value`` values are YAML scalars/lists: ``2``, ``1e-3``, ``[256,256]``, ``true``."""
    try:
        return yaml.safe_load(value)
    except yaml.YAMLError as exc:
        raise UserError(f"cannot parse override value {value!r}: {exc}") from exc


def apply_overrides(config: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    """Route each ``--key=value`` to the train config, the model or the model's params."""
    train_keys = {f.name for f in fields(TrainConfig)}
    train_updates = {k: v for k, v in overrides.items() if k in train_keys}
    model = config.model
    params = dict(model.params)
    for key, value in overrides.items():
        if key in train_keys:
            continue
        if key == "embedding_dim":
            model = replace(model, embedding_dim=int(value))
        else:
            params[key] = value
    return replace(config, model=replace(model, params=params), train=replace(config.train, **train_updates))
