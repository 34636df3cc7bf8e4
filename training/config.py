"""Typed run configuration, built once at the CLI edge and passed down as plain values.

Model hyper-parameters start from ``training/configs/models/<Model>.yaml`` (the
reference values) and are overridden by plain ``{key: value}`` overrides
(``build_run_config``): the CLI's flags and ``--key=value`` pairs, an experiment's
grid, a benchmark's settings, the way RecBole users already work; nothing below reads
a global dict or an ``argparse.Namespace``.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from importlib import resources
from types import UnionType
from typing import Any, Literal, get_args, get_origin, get_type_hints

import yaml

from ratingctr.errors import UserError

DropMiddle = Literal["none", "train", "eval", "both"]
SplitMode = Literal["random", "temporal"]
Aggregate = Literal["logit_sum", "prob_sum"]
FirstOrder = Literal["wide", "broadcast"]


@dataclass(frozen=True)
class DataConfig:
    """Which ratings, how they become labels, and how they are split.

    ``threshold``: a rating ``>= threshold`` is a click (4 = "above 3", both papers).
    ``drop_middle``: drop ratings equal to ``threshold - 1`` from training, evaluation, both.
    ``split_mode``: ``random`` (seeded, the papers' protocol) or ``temporal`` (global time
    order: the oldest ``split[0]`` of the interactions train, the next ``split[1]`` validate,
    the newest test; what an online deployment faces).  ``split`` holds the fractions for
    both.  A config written before the mode existed reads as ``random``, which it was.
    """

    dataset: str = "ml-100k"
    data_dir: str | None = None
    levels: int = 5
    threshold: int = 4
    k_core: int = 10
    drop_middle: DropMiddle = "none"
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 2020
    split_mode: SplitMode = "random"


@dataclass(frozen=True)
class HeadConfig:
    """``binary``: click label only.  ``rating``: the 1..levels star distribution."""

    kind: Literal["binary", "rating"] = "rating"
    ratio: float = 0.5
    aggregate: Aggregate = "logit_sum"


@dataclass(frozen=True)
class ModelConfig:
    """The architecture, its embedding width and hyper-parameters.

    ``first_order`` matters only for the architectures with a first-order term (WideDeep,
    NFM, AutoInt, xDeepFM: ``first_order_applies``): ``wide`` gives that term (and
    xDeepFM's CIN output) one logit per rating level; ``broadcast`` reproduces the
    authors' released code, where it is one scalar added to all N rating logits (see
    ``training/models/heads.py`` for what that does to the losses).  A config written
    before the option reads as ``wide``, which it was.
    """

    name: str = "DCNV2"
    embedding_dim: int = 16
    params: dict[str, Any] = field(default_factory=dict)
    first_order: FirstOrder = "wide"


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
    #: rows per evaluation forward pass; None: the training batch.  Why not a large constant:
    #: on CPU a forward over 4,096 rows ran 1.2–1.3× faster per row than over 18k–57k rows
    #: (DCNV2, WideDeep on ML-100k: the activations of a big batch leave the cache), and
    #: evaluation at the training batch can never push fewer rows per second than training,
    #: whose step is that forward plus a backward.  ``eval_batch.ACTIVATION_BUDGET_BYTES``
    #: still caps it for models with huge activations (xDeepFM).
    eval_batch_size: int | None = None
    num_negatives: int = 100
    ranking_positives: Literal["all", "clicks"] = "all"
    # uni100 on a seeded sample of this many users (None: every user); at 25M ratings the full
    # protocol scores ~250M rows per split (training.evaluation.sample_users)
    eval_users: int | None = None
    #: uni100 on the validation split too (``metrics.json``'s ``valid`` ranking metrics).  The
    #: experiments turn it off: they select on validation AUC alone and report test ranking
    #: metrics, and the validation protocol was half of every run's scoring.
    ranking_on_valid: bool = True
    progress: bool = True

    @property
    def eval_rows(self) -> int:
        """The evaluation batch: ``eval_batch_size``, else the training batch."""
        return self.eval_batch_size or self.batch_size


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
    def from_dict(cls, raw: dict[str, Any]) -> RunConfig:
        data = dict(raw["data"])
        data["split"] = tuple(data["split"])
        encoder = dict(raw.get("encoder") or {})
        if encoder.get("layer_weights") is not None:
            encoder["layer_weights"] = tuple(encoder["layer_weights"])
        return cls(data=DataConfig(**data), model=ModelConfig(**raw["model"]),
                   head=HeadConfig(**raw["head"]), train=TrainConfig(**raw["train"]),
                   encoder=EncoderConfig(**encoder))


def first_order_applies(name: str) -> bool:
    """Whether architecture ``name`` has a first-order term the ``first_order`` variant changes."""
    from ratingctr.training.models.registry import hyper_parameters

    return "first_order" in hyper_parameters(name)


def check_fractions(value: Any) -> tuple[float, float, float]:
    """Split fractions as three non-negative floats summing to 1 (train, valid, test), else a ``UserError``."""
    try:
        fractions = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        fractions = ()
    if len(fractions) != 3 or any(not f >= 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise UserError(f"split fractions must be three non-negative numbers summing to 1 "
                        f"(train,valid,test), got {value}")
    return fractions  # type: ignore[return-value]


def parse_fractions(text: str) -> tuple[float, float, float]:
    """``--split-fractions 0.8,0.1,0.1`` → ``(0.8, 0.1, 0.1)``."""
    try:
        parts = [float(p) for p in str(text).split(",")]
    except ValueError:
        raise UserError(f"--split-fractions takes three numbers like 0.8,0.1,0.1, got {text!r}") from None
    return check_fractions(parts)


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


# Override keys that name a section's selector rather than one of its fields.
_SELECTORS = {"model": ("model", "name"), "head": ("head", "kind"), "encoder": ("encoder", "kind")}
# Every other key of a section is its field name; ``seed`` belongs to data and train alike
# (one seed fixes the split, the initialisation and the batch order).
_SECTIONS: dict[str, type] = {"data": DataConfig, "head": HeadConfig, "train": TrainConfig,
                              "encoder": EncoderConfig, "model": ModelConfig}
_UNROUTED = {"name", "kind", "params"}  # reached through a selector, or not an override at all


def run_keys() -> dict[str, tuple[str, ...]]:
    """Every override key that is not a model hyper-parameter → the config sections it sets."""
    keys: dict[str, tuple[str, ...]] = {key: (section,) for key, (section, _) in _SELECTORS.items()}
    for section, cls in _SECTIONS.items():
        for f in fields(cls):
            if f.name not in _UNROUTED:
                keys[f.name] = keys.get(f.name, ()) + (section,)
    return keys


def _field_name(section: str, key: str) -> str:
    selector = _SELECTORS.get(key)
    return selector[1] if selector is not None and selector[0] == section else key


def _check_value(section: str, name: str, key: str, value: Any) -> Any:
    """One override against its field's annotation: Literal choices named, numbers coerced, lists as tuples."""
    hint = get_type_hints(_SECTIONS[section])[name]
    choices = get_args(hint) if get_origin(hint) is Literal else ()
    if choices:
        if value not in choices:
            raise UserError(f"unknown {key} {value!r}; choose one of: {', '.join(map(str, choices))}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise UserError(f"{key} must be true or false, got {value!r}")
        return value
    if hint is int or hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (hint is int and value != int(value)):
            raise UserError(f"{key} must be {'an integer' if hint is int else 'a number'}, got {value!r}")
        return hint(value)
    if value is not None and get_origin(hint) is UnionType and set(get_args(hint)) == {int, type(None)}:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
            raise UserError(f"{key} must be an integer, got {value!r}")
        return int(value)
    if value is not None and get_origin(hint) in (tuple, UnionType) and isinstance(value, (list, tuple)):
        return tuple(float(v) for v in value) if key == "layer_weights" else tuple(value)
    return value


def build_run_config(overrides: Mapping[str, Any]) -> RunConfig:
    """The run configuration for plain ``{key: value}`` overrides on top of the model's YAML.

    The one way every caller (CLI, experiments, benches) turns settings into a
    ``RunConfig``, so defaults and validation cannot drift between them. Keys are a
    section field (``epochs``, ``k_core``, ``ratio``, ``gcn_layers``, ...), a selector
    (``model``, ``head``, ``encoder``) or, failing those, a hyper-parameter of the model
    (``mlp_hidden_size``, ...). ``lr``/``embedding_dim`` default to the YAML's values; a
    ``None`` value means "not given". Bad input raises ``UserError`` naming what is valid,
    before any data is fetched.

    Example:
        >>> build_run_config({"model": "DCNV2", "head": "binary", "epochs": 3}).train.epochs
        3
    """
    given = {key: value for key, value in overrides.items() if value is not None}
    name = given.get("model", ModelConfig.name)
    defaults = model_defaults(name)  # unknown model: UserError listing the architectures
    routes = run_keys()
    updates: dict[str, dict[str, Any]] = {section: {} for section in _SECTIONS}
    params = dict(defaults["params"])
    for key, value in given.items():
        if key not in routes:
            params[key] = value
            continue
        for section in routes[key]:
            field_name = _field_name(section, key)
            updates[section][field_name] = _check_value(section, field_name, key, value)
    updates["train"].setdefault("lr", defaults["lr"])
    updates["model"].setdefault("embedding_dim", defaults["embedding_dim"])
    config = RunConfig(data=DataConfig(**updates["data"]), head=HeadConfig(**updates["head"]),
                       train=TrainConfig(**updates["train"]), encoder=EncoderConfig(**updates["encoder"]),
                       model=ModelConfig(**updates["model"], params=params))
    if config.train.eval_users is not None and config.train.eval_users < 2:
        raise UserError(f"--eval-users must be at least 2 (a confidence interval needs two users), "
                        f"got {config.train.eval_users}")
    if config.encoder.gcn_layers < 0:
        raise UserError(f"--gcn-layers must be >= 0, got {config.encoder.gcn_layers}")
    from ratingctr.training.models.registry import check_params

    try:
        check_params(config.model.name, config.model.params)
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    if config.data.split != DataConfig.split:
        config = replace(config, data=replace(config.data, split=check_fractions(config.data.split)))
    if not 0.0 <= config.head.ratio <= 1.0:
        raise UserError(f"--ratio must be in [0, 1], got {config.head.ratio}")
    if "first_order" in config.model.params:
        raise UserError("first_order is a model setting, not a hyper-parameter: give it as --first-order")
    if config.model.first_order != "wide" and not first_order_applies(config.model.name):
        from ratingctr.training.models.registry import ARCHITECTURES

        names = ", ".join(n for n in ARCHITECTURES if first_order_applies(n))
        raise UserError(f"--first-order {config.model.first_order} applies to the architectures with a "
                        f"first-order term ({names}), not {config.model.name}")
    return config
