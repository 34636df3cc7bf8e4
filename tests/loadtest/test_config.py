"""The one load-test configuration: CLI flags, Locust options and environment, and the hand-off between them."""
from __future__ import annotations

from pathlib import Path

import configargparse
import pytest

from ratingctr.cli import build_parser
from ratingctr.errors import UserError
from ratingctr.loadtest.config import (
    GatewayBenchConfig,
    LoadTestConfig,
    ScoreBenchConfig,
    TrafficConfig,
    Variant,
    add_locust_options,
)


def _locust_options(argv: list[str]):
    """The locustfile's options on the parser library Locust builds its command line with.

    (Not Locust's own parser: importing locust monkey-patches this whole test process with gevent.)
    """
    parser = configargparse.ArgumentParser()
    add_locust_options(parser.add_argument_group("ratingctr traffic"))
    return parser.parse_args(argv)


def _loadtest(*argv: str) -> LoadTestConfig:
    return LoadTestConfig.from_args(build_parser().parse_args(["loadtest", *argv]))


def test_loadtest_flags_default_to_the_config_defaults() -> None:
    config = _loadtest("--a", "bin=/b/binary", "--b", "/b/rating")
    assert config.a == Variant("A", "bin", Path("/b/binary")) and config.b == Variant("B", "rating", Path("/b/rating"))
    defaults = LoadTestConfig(a=config.a, b=config.b)
    assert config == defaults
    assert (config.users, config.duration, config.rounds, config.k_values, config.out) == \
        (32, 60.0, 3, (5, 10, 20, 50), Path("reports/loadtest"))


def test_loadtest_flags_reach_every_field() -> None:
    config = _loadtest("--a", "x=/a", "--b", "y=/b", "--users", "7", "--spawn-rate", "2.5", "--duration", "9",
                       "--rounds", "4", "--warmup", "0", "--out", "/tmp/r", "--target", "torchserve",
                       "--host", "http://h:1", "--redis-url", "redis://r", "--gateway-workers", "3",
                       "--locust-processes", "2", "--k-values", "3,4", "--unknown-share", "0.2",
                       "--events-share", "0.3", "--candidates", "40", "--think-ms", "12")
    assert config == LoadTestConfig(a=Variant("A", "x", Path("/a")), b=Variant("B", "y", Path("/b")), users=7,
                                    spawn_rate=2.5, duration=9.0, rounds=4, warmup=0.0, out=Path("/tmp/r"),
                                    target="torchserve", host="http://h:1", redis_url="redis://r", gateway_workers=3,
                                    locust_processes=2, k_values=(3, 4), unknown_share=0.2, events_share=0.3,
                                    candidates=40, think_ms=12.0)
    assert config.settings()["k_values"] == "3,4" and "a" not in config.settings()


@pytest.mark.parametrize("flags, message", [(["--k-values", "0,5"], "k values must lie in 1..1000"),
                                            (["--k-values", "5,x"], "invalid literal"),
                                            (["--unknown-share", "1.0"], "[0, 1)"),
                                            (["--candidates", "0"], "at least 1")])
def test_a_bad_traffic_shape_is_one_user_error(flags: list[str], message: str) -> None:
    with pytest.raises(UserError, match="bad traffic settings") as info:
        _loadtest("--a", "x=/a", "--b", "y=/b", *flags)
    assert message in str(info.value)


def test_the_harness_hand_off_reproduces_the_traffic_in_locust() -> None:
    """What the harness passes to a Locust process parses back, by Locust's own parser, to the same config."""
    config = _loadtest("--a", "x=/a", "--b", "y=/b", "--k-values", "7,9", "--unknown-share", "0.1",
                       "--events-share", "0.2", "--candidates", "33", "--think-ms", "4", "--target", "torchserve")
    traffic = config.traffic(config.b, "served-as")
    assert traffic == TrafficConfig(bundle=Path("/b"), model="served-as", target="torchserve", k_values=(7, 9),
                                    unknown_share=0.1, events_share=0.2, candidates=33, think_ms=4.0)
    options = _locust_options([*traffic.locust_args(), "--samples-dir", "/s"])
    assert TrafficConfig.from_options(options) == traffic and options.samples_dir == "/s"


def test_locust_reads_every_option_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The compose ``locust`` profile configures its master and workers only through these variables."""
    for name, value in {"BUNDLE": "/bundles/x", "MODEL": "rating", "TARGET": "gateway", "UNKNOWN_SHARE": "0.25",
                        "EVENTS_SHARE": "0", "K_VALUES": "1,2", "CANDIDATES": "5", "THINK_MS": "3",
                        "SAMPLES_DIR": "/samples"}.items():
        monkeypatch.setenv(f"RATINGCTR_LOADTEST_{name}", value)
    options = _locust_options([])
    assert TrafficConfig.from_options(options) == TrafficConfig(Path("/bundles/x"), "rating", unknown_share=0.25,
                                                                events_share=0.0, k_values=(1, 2), candidates=5,
                                                                think_ms=3.0)
    assert options.samples_dir == "/samples"


def test_locust_defaults_are_the_config_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    options = _locust_options(["--bundle", "/b"])
    assert TrafficConfig.from_options(options) == TrafficConfig(Path("/b"))
    # a worker may receive the master's k values as a list
    options.k_values = [5, 10]
    assert TrafficConfig.from_options(options).k_values == (5, 10)
    options.bundle = ""
    with pytest.raises(RuntimeError, match="RATINGCTR_LOADTEST_BUNDLE"):
        TrafficConfig.from_options(options)


def test_bench_flags_build_typed_configs() -> None:
    parser = build_parser()
    gateway = GatewayBenchConfig.from_args(parser.parse_args(["bench", "gateway"]))
    assert gateway == GatewayBenchConfig() and gateway.clients == (1, 8, 32) and gateway.torchserve
    gateway = GatewayBenchConfig.from_args(parser.parse_args(
        ["bench", "gateway", "--bundle", "/x", "--reload-bundle", "/y", "--clients", "2,4", "--no-torchserve",
         "--reloads", "0", "--out", "/o"]))
    assert (gateway.bundle, gateway.reload_bundle, gateway.clients, gateway.torchserve, gateway.reloads,
            gateway.out) == (Path("/x"), Path("/y"), (2, 4), False, 0, Path("/o"))
    score = ScoreBenchConfig.from_args(parser.parse_args(["bench", "score", "--binary", "/b", "--rating", "/r"]))
    assert score == ScoreBenchConfig(binary=Path("/b"), rating=Path("/r"))
    assert score.candidates == (100, 500, 2000) and score.out is None and not score.torchserve
