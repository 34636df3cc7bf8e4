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
    ({"split_mode": "chronological"}, "unknown split_mode 'chronological'; choose one of: random, temporal"),
    ({"split": [0.8, 0.1, 0.2]}, "split fractions must be three non-negative numbers summing to 1"),
    ({"split": [0.9, 0.1]}, "split fractions must be three non-negative numbers summing to 1"),
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


def test_split_mode_and_fractions_round_trip_and_old_configs_read_as_random() -> None:
    config = build_run_config({"split_mode": "temporal", "split": [0.7, 0.2, 0.1]})
    assert (config.data.split_mode, config.data.split) == ("temporal", (0.7, 0.2, 0.1))
    assert config.to_dict()["data"]["split_mode"] == "temporal" and RunConfig.from_dict(config.to_dict()) == config
    old = build_run_config({}).to_dict()  # a checkpoint written before the mode existed
    del old["data"]["split_mode"]
    assert RunConfig.from_dict(old).data.split_mode == "random" and RunConfig.from_dict(old) == build_run_config({})


def test_run_key_changes_with_the_split_and_random_keeps_its_old_key() -> None:
    base = build_run_config({"model": "DCNV2", "epochs": 3})
    # the configuration half of the key stays what it was when split_mode (commit cd6d492) and
    # first_order were added, as long as their defaults are used; it last changed when the
    # evaluation batch became the training batch by default and ranking_on_valid was added
    # (c9034f85c6c9 before).  The full key also covers the code (test_experiments checks that part)
    assert run_key(base, fingerprint="") == "f78e074fca9c"
    temporal = build_run_config({"model": "DCNV2", "epochs": 3, "split_mode": "temporal"})
    shorter = build_run_config({"model": "DCNV2", "epochs": 3, "split": [0.7, 0.2, 0.1]})
    assert len({run_key(base), run_key(temporal), run_key(shorter)}) == 3


def test_every_training_verb_takes_the_split_flags() -> None:
    from ratingctr.training.commands import data_config
    from ratingctr.training.experiments.commands import _command_line, _config_factory

    flags = ["--split", "temporal", "--split-fractions", "0.7,0.2,0.1"]
    parser = build_parser()
    args, extra = parser.parse_known_args(["train", *flags, "--out", "x"])
    assert build_run_config(run_overrides(args, extra)).data == build_run_config(
        {"split_mode": "temporal", "split": [0.7, 0.2, 0.1]}).data
    retriever = data_config(parser.parse_args(["train-retriever", *flags, "--out", "x"]))
    assert (retriever.split_mode, retriever.split) == ("temporal", (0.7, 0.2, 0.1))
    for verb in ("supervision", "connectivity"):
        args, extra = parser.parse_known_args(["experiment", verb, *flags, "--out", "x"])
        config = _config_factory(args, extra)("DCNV2", 3, k_core=5)
        assert (config.data.split_mode, config.data.split, config.data.seed) == ("temporal", (0.7, 0.2, 0.1), 3)
        # the report's command line re-parses to the same settings
        words = _command_line(args, extra).split()[1:]
        again, _ = parser.parse_known_args(words)
        assert (again.split_mode, again.split_fractions) == ("temporal", "0.7,0.2,0.1")
    default, _ = parser.parse_known_args(["train", "--out", "x"])
    assert build_run_config(run_overrides(default, [])).data.split_mode == "random"
    with pytest.raises(UserError, match="--split-fractions takes three numbers like 0.8,0.1,0.1, got '0.8,a,0.1'"):
        run_overrides(parser.parse_args(["train", "--split-fractions", "0.8,a,0.1", "--out", "x"]), [])
