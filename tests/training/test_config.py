"""``build_run_config``: plain overrides on top of the model YAML, routed and validated in one place."""
import pytest

from ratingctr.cli import build_parser
from ratingctr.errors import UserError
from ratingctr.training.commands import run_overrides
from ratingctr.training.config import RunConfig, build_run_config, model_defaults
from ratingctr.training.experiments.runner import run_key


def test_yaml_defaults_then_overrides_routed_to_their_section() -> None:
    config = build_run_config({"model": "DCNV2", "head": "binary", "ratio": 0.3, "epochs": 3, "k_core": 5,
                               "seed": 7, "encoder": "lightgcn", "gcn_layers": 3, "layer_weights": [1, 0, 0, 0],
                               "mlp_hidden_size": [32, 32], "embedding_dim": 8})
    yaml = model_defaults("DCNV2")
    assert config.model.name == "DCNV2" and config.model.embedding_dim == 8
    assert config.model.params == {**yaml["params"], "mlp_hidden_size": [32, 32]}
    assert config.train.lr == yaml["lr"] and config.train.epochs == 3
    assert (config.head.kind, config.head.ratio) == ("binary", 0.3)
    assert config.data.k_core == 5 and config.data.seed == config.train.seed == 7  # one seed: split, init, order
    assert (config.encoder.kind, config.encoder.gcn_layers, config.encoder.layer_weights) == ("lightgcn", 3, (1.0, 0, 0, 0))
    assert RunConfig.from_dict(config.to_dict()) == config


def test_none_means_not_given_and_numbers_are_coerced() -> None:
    assert build_run_config({"model": "WideDeep", "lr": None}).train.lr == model_defaults("WideDeep")["lr"]
    config = build_run_config({"weight_decay": 0, "lr": 1})
    assert isinstance(config.train.weight_decay, float) and config.train.lr == 1.0
    assert run_key(config) == run_key(build_run_config({"weight_decay": 0.0, "lr": 1.0}))


@pytest.mark.parametrize("overrides, message", [
    ({"model": "Nope"}, "unknown model 'Nope'; choose one of: WideDeep"),
    ({"head": "ordinal"}, "unknown head 'ordinal'; choose one of: binary, rating"),
    ({"encoder": "gat"}, "unknown encoder 'gat'; choose one of: table, lightgcn"),
    ({"precision": "fp8"}, "unknown precision 'fp8'; choose one of: auto, fp32, bf16"),
    ({"drop_middle": "all"}, "choose one of: none, train, eval, both"),
    ({"ratio": 2}, "--ratio must be in [0, 1]"),
    ({"gcn_layers": -1}, "--gcn-layers must be >= 0"),
    ({"epochs": 2.5}, "epochs must be an integer"),
    ({"lr": "fast"}, "lr must be a number"),
    ({"progress": "yes"}, "progress must be true or false"),
    ({"model": "DCNV2", "cross_layers": 3}, "unknown hyper-parameter 'cross_layers' for DCNV2; known: cross_layer_num"),
])
def test_bad_overrides_name_the_valid_choices(overrides: dict, message: str) -> None:
    with pytest.raises(UserError) as err:
        build_run_config(overrides)
    assert message in str(err.value)


def test_cli_flags_become_the_same_config() -> None:
    args, extra = build_parser().parse_known_args(
        ["train", "--model", "AutoInt", "--head", "binary", "--k-core", "3", "--epochs", "4", "--seed", "9",
         "--layer-weights", "0.5", "0.25", "0.25", "--encoder", "lightgcn", "--no-progress", "--out", "x",
         "--n_layers=1", "--weight_decay=0.01"])
    config = build_run_config(run_overrides(args, extra))
    assert config == build_run_config({"model": "AutoInt", "head": "binary", "k_core": 3, "epochs": 4, "seed": 9,
                                       "layer_weights": [0.5, 0.25, 0.25], "encoder": "lightgcn",
                                       "progress": False, "n_layers": 1, "weight_decay": 0.01})
    assert config.train.lr == model_defaults("AutoInt")["lr"] and config.model.params["n_layers"] == 1
