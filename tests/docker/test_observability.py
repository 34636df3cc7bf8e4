"""The fleet operators can see: the Grafana dashboard's PromQL against what a real gateway exports.

A real gateway (two uvicorn workers, as the Kubernetes ConfigMap runs it) is driven through every
path that moves a metric, its /metrics is scraped, and every query of
docker/grafana/dashboards/ratingctr.json must name only series and labels that scrape holds.
The aggregation rules that make numbers right across workers and replicas are checked on the
parsed queries: rates and increases are summed before anything else, quantiles come from
buckets summed by ``le`` (never an average of per-replica quantiles), and only the per-replica
panel groups by instance.  The compose services and the Prometheus configs are checked too."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
DASHBOARD = DOCKER / "grafana" / "dashboards" / "ratingctr.json"
ADMIN_TOKEN = "observability-test-admin-token"
# Labels Prometheus itself attaches to every scraped series (compose: job, instance; Kubernetes: + pod, namespace).
TARGET_LABELS = frozenset({"job", "instance", "pod", "namespace"})
# Series Prometheus makes, not the gateway.
PROMETHEUS_SERIES = frozenset({"up"})
# Exported, but only once Redis hands back a corrupt field row (tests/serving/test_gateway_state.py
# makes one and reads this counter from /metrics); here it must be declared in serving/metrics.py.
NEEDS_A_FAULT = frozenset({"ratingctr_bad_rows_total"})
FUNCTIONS = frozenset({"rate", "increase", "histogram_quantile", "sum", "label_values"})
GROUPING = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})

TOKEN = re.compile(r'\s*(?:(?P<string>"(?:[^"\\]|\\.)*")|(?P<range>\[[^\]]+\])|(?P<number>\d+(?:\.\d+)?)'
                   r'|(?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)|(?P<op>=~|!~|!=|==|[-+*/(){},=]))')


@dataclass
class Query:
    """What a PromQL expression reads: selectors (metric → matcher labels), grouping labels, functions."""

    expr: str
    selectors: list[tuple[str, set[str]]] = field(default_factory=list)
    grouping: set[str] = field(default_factory=set)
    functions: list[str] = field(default_factory=list)


def parse_promql(expr: str) -> Query:
    """Tokenise the PromQL subset the dashboard uses; anything outside it fails the test."""
    tokens, pos = [], 0
    expr_stripped = expr.rstrip()
    while pos < len(expr_stripped):
        match = TOKEN.match(expr_stripped, pos)
        assert match and match.end() > pos, f"cannot read {expr_stripped[pos:pos + 30]!r} in {expr!r}"
        tokens.append((match.lastgroup, match.group(match.lastgroup)))
        pos = match.end()
    query, i = Query(expr), 0
    while i < len(tokens):
        kind, text = tokens[i]
        following = tokens[i + 1] if i + 1 < len(tokens) else (None, None)
        if kind != "ident":
            assert (kind, text) != ("op", "{"), f"a selector without a metric name in {expr!r}"
            i += 1
            continue
        if text in GROUPING:
            i += 1
            if following == ("op", "("):
                end = tokens.index(("op", ")"), i)
                query.grouping |= {t for k, t in tokens[i + 1:end] if k == "ident"}
                i = end + 1
            continue
        if following == ("op", "(") or following[1] in ("by", "without"):  # sum (…) or sum by (…) (…)
            assert text in FUNCTIONS, f"function {text} is outside the checked subset ({expr!r})"
            query.functions.append(text)
            i += 1
            continue
        labels: set[str] = set()
        i += 1
        if following == ("op", "{"):
            end = tokens.index(("op", "}"), i)
            body = tokens[i + 1:end]
            labels = {t for j, (k, t) in enumerate(body) if k == "ident" and j + 1 < len(body)
                      and body[j + 1][0] == "op" and body[j + 1][1] in ("=", "!=", "=~", "!~")}
            i = end + 1
        query.selectors.append((text, labels))
    return query


def dashboard_queries() -> dict[str, list[str]]:
    """Panel title → its target expressions, plus the template variables' queries."""
    board = json.loads(DASHBOARD.read_text())
    queries = {p["title"]: [t["expr"] for t in p["targets"]] for p in board["panels"]}
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            queries[f"variable {variable['name']}"] = [variable["query"]["query"]]
    return queries


def substitute_grafana(expr: str) -> str:
    """Grafana's variables as it would send them: $__rate_interval a duration, $model a regex."""
    return expr.replace("$__rate_interval", "1m").replace("$model", ".*")


def label_values_query(expr: str) -> Query:
    match = re.fullmatch(r"label_values\((\w+), (\w+)\)", expr)
    assert match, expr
    return Query(expr, [(match.group(1), set())], {match.group(2)}, ["label_values"])


# ---- a real scrape ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def scrape(tiny_bundles: dict, redis_server) -> dict[str, dict]:
    """Sample name → {"labels": label names, "type": family type}, from a two-worker gateway's /metrics
    after traffic through every path that moves a metric."""
    from prometheus_client.parser import text_string_to_metric_families

    from ratingctr.serving.process import running_gateway

    bundles = {"rating": tiny_bundles["rating"], "binary": tiny_bundles["binary"]}
    with running_gateway(bundles, redis_url=redis_server.url, workers=2,
                         env={"RATINGCTR_ADMIN_TOKEN": ADMIN_TOKEN, "RATINGCTR_REDIS_PREFIX": "observability"}) as gw:
        recommends = 0
        for user in ("u1", "u2", "a-stranger"):  # known users, and a cold start (fallback)
            for model in ("rating", "binary"):
                r = httpx.post(f"{gw.url}/v1/recommend", json={"user_id": user, "k": 3, "model": model},
                               headers={"Connection": "close"}, timeout=30)  # a new connection: any worker
                assert r.status_code == 200, r.text
                recommends += model == "rating"
        r = httpx.post(f"{gw.url}/v1/score", json={"user_id": "u1", "item_ids": ["i1", "i2"]}, timeout=30)
        assert r.status_code == 200, r.text
        assert httpx.post(f"{gw.url}/v1/events", json={"events": [{"user_id": "u1", "item_id": "i3", "rating": 4}]},
                          timeout=30).status_code == 202
        assert httpx.post(f"{gw.url}/v1/recommend", json={"user_id": "u1", "k": 0}, timeout=30).status_code == 422
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        r = httpx.post(f"{gw.url}/v1/admin/reload", json={"name": "rating", "path": str(tiny_bundles["rating"]),
                                                          "reason": "promotion"}, headers=admin, timeout=60)
        assert r.status_code == 200, r.text
        texts = [httpx.get(f"{gw.url}/metrics", headers={"Connection": "close"}, timeout=30).text for _ in range(4)]
    series: dict[str, dict] = {}
    for family in text_string_to_metric_families(texts[0]):
        for sample in family.samples:
            entry = series.setdefault(sample.name, {"labels": set(), "type": family.type, "values": {}})
            entry["labels"] |= set(sample.labels)
            entry["values"][tuple(sorted(sample.labels.items()))] = sample.value
    # the two workers' counts are summed in whichever worker answers the scrape
    counts = {re.search(r'ratingctr_request_seconds_count\{endpoint="recommend",model="rating"\} (\S+)', t).group(1)
              for t in texts}
    assert counts == {f"{recommends:.1f}"}, counts
    return series


def test_every_dashboard_query_names_series_and_labels_the_gateway_exports(scrape: dict) -> None:
    from ratingctr.serving import metrics

    declared = {m._name: set(m._labelnames) for m in vars(metrics).values()
                if hasattr(m, "_labelnames") and hasattr(m, "_name")}
    checked = 0
    for title, exprs in dashboard_queries().items():
        for expr in exprs:
            query = (label_values_query(expr) if expr.startswith("label_values")
                     else parse_promql(substitute_grafana(expr)))
            assert query.selectors, f"{title}: {expr} reads no metric"
            available: set[str] = set(TARGET_LABELS)
            for name, labels in query.selectors:
                if name in PROMETHEUS_SERIES:
                    assert labels <= TARGET_LABELS, f"{title}: {name} carries only target labels"
                    continue
                if name in NEEDS_A_FAULT:
                    family = name.removesuffix("_total")
                    assert family in declared, f"{title}: {name} is not declared in serving/metrics.py"
                    have = declared[family]
                else:
                    assert name in scrape, f"{title}: {name} is not in the gateway's /metrics ({sorted(scrape)})"
                    have = scrape[name]["labels"]
                assert labels <= have | TARGET_LABELS, f"{title}: {name} has no label {labels - have}"
                available |= have
                checked += 1
            assert query.grouping <= available, f"{title}: groups by {query.grouping - available}, which no series has"
    assert checked >= 15  # every panel's series, not a vacuous pass


def test_dashboard_aggregates_over_workers_and_replicas_correctly(scrape: dict) -> None:
    for title, exprs in dashboard_queries().items():
        for expr in exprs:
            if expr.startswith("label_values"):
                continue
            # every rate/increase reads a counter or a histogram's cumulative series, over a range
            for name in re.findall(r"(?:rate|increase)\((\w+)(?:\{[^}]*\})?\[", expr):
                assert name in NEEDS_A_FAULT or scrape[name]["type"] in ("counter", "histogram"), f"{title}: {name}"
                assert name.endswith(("_total", "_count", "_bucket", "_sum")), f"{title}: rate of {name}"
            calls = len(re.findall(r"\b(?:rate|increase)\(", expr))
            summed = len(re.findall(r"\bsum(?: by \([^)]*\))? ?\((?:rate|increase)\(", expr))
            assert calls == summed, f"{title}: a rate not summed over workers and replicas: {expr}"
            quantiles = re.findall(r"histogram_quantile\(", expr)
            over_buckets = re.findall(r"histogram_quantile\(0\.\d+, sum by \(([^)]*)\) \(rate\((\w+)_bucket\{", expr)
            assert len(quantiles) == len(over_buckets), f"{title}: a quantile not over summed buckets: {expr}"
            for group, name in over_buckets:
                labels = {g.strip() for g in group.split(",")}
                assert "le" in labels and not labels & {"instance", "pod"}, f"{title}: {group}"
                assert scrape[f"{name}_bucket"]["type"] == "histogram"
            grouped = parse_promql(substitute_grafana(expr)).grouping
            per_replica = "per replica" in title
            assert bool(grouped & {"instance", "pod"}) == per_replica, f"{title}: replica grouping {grouped}"
            assert "avg" not in expr and "quantile_over_time" not in expr


def test_the_promql_reader_has_teeth(scrape: dict) -> None:
    q = parse_promql('sum by (endpoint, status) (rate(ratingctr_errors_total{endpoint=~"a|b"}[1m])) / on (model) '
                     'group_left sum by (model) (rate(ratingctr_request_seconds_count[1m]))')
    assert q.selectors == [("ratingctr_errors_total", {"endpoint"}), ("ratingctr_request_seconds_count", set())]
    assert q.grouping == {"endpoint", "status", "model"} and q.functions == ["sum", "rate", "sum", "rate"]
    assert "ratingctr_requests_total" not in scrape  # a plausible name the gateway does not export
    with pytest.raises(AssertionError, match="outside the checked subset"):
        parse_promql("avg_over_time(ratingctr_events_total[5m])")


def test_dashboard_is_provisioned_from_the_repository() -> None:
    board = json.loads(DASHBOARD.read_text())
    assert board["uid"] and board["title"]
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    variable = next(v for v in board["templating"]["list"] if v["type"] == "datasource")
    for panel in board["panels"]:
        assert panel["targets"], panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${%s}" % variable["name"]}
    provisioned = DOCKER / "grafana" / "provisioning" / "datasources" / "prometheus.yaml"
    datasources = yaml.safe_load(provisioned.read_text())["datasources"]
    assert [d["uid"] for d in datasources] == [variable["current"]["value"]]
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    grafana, prometheus = compose["services"]["grafana"], compose["services"]["prometheus"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in grafana["volumes"]}
    (provider,) = yaml.safe_load((DOCKER / "grafana/provisioning/dashboards/ratingctr.yaml").read_text())["providers"]
    assert (DOCKER / mounts[provider["options"]["path"]]).resolve() == DASHBOARD.parent
    assert (DOCKER / mounts["/etc/grafana/provisioning"]).resolve() == DOCKER / "grafana" / "provisioning"
    assert grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"] == \
        provider["options"]["path"] + "/" + DASHBOARD.name
    assert datasources[0]["url"] == "http://prometheus:9090" and "--web.listen-address=:9090" in prometheus["command"]
    prom_mounts = {v.split(":")[1]: v.split(":")[0] for v in prometheus["volumes"]}
    config = yaml.safe_load((DOCKER / prom_mounts["/etc/prometheus/prometheus.yml"]).read_text())
    (job,) = config["scrape_configs"]
    (sd,) = job["dns_sd_configs"]
    port = compose["services"]["gateway"]["environment"]["RATINGCTR_PORT"]
    assert sd["names"] == ["gateway"] and str(sd["port"]) == port  # every gateway replica, on the port it serves
    assert job.get("metrics_path", "/metrics") == "/metrics"
    assert any('up{job="%s"}' % job["job_name"] in e for exprs in dashboard_queries().values() for e in exprs)


# ---- a real Prometheus, where one is installed ------------------------------------------
def _prometheus() -> str | None:
    import shutil

    return shutil.which("prometheus")


@pytest.mark.skipif(_prometheus() is None, reason="no prometheus binary on PATH: the queries are checked "
                                                  "against a real /metrics above, not evaluated")
def test_a_real_prometheus_evaluates_every_query_over_two_replicas(tiny_bundles: dict, redis_server,
                                                                   tmp_path: Path) -> None:
    """Two gateway replicas (two workers each) on one Redis, scraped by a real Prometheus every
    second: every dashboard query evaluates, sums lose the replica label, and the fleet's
    request count is exactly what was sent to both replicas together."""
    import subprocess
    import time

    from ratingctr.processes import free_port, stop_process
    from ratingctr.serving.process import running_gateway

    bundles = {"rating": tiny_bundles["rating"]}
    env = {"RATINGCTR_REDIS_PREFIX": "prometheus"}
    with running_gateway(bundles, redis_url=redis_server.url, workers=2, env=env) as a, \
            running_gateway(bundles, redis_url=redis_server.url, workers=2, env=env) as b:
        config = {"global": {"scrape_interval": "1s"},
                  "scrape_configs": [{"job_name": "ratingctr-gateway", "static_configs": [
                      {"targets": [a.url.removeprefix("http://"), b.url.removeprefix("http://")]}]}]}
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        with open(tmp_path / "prometheus.log", "wb") as log:
            prometheus = subprocess.Popen([_prometheus(), f"--config.file={tmp_path / 'prometheus.yml'}",
                                           f"--storage.tsdb.path={tmp_path / 'data'}",
                                           f"--web.listen-address=127.0.0.1:{port}"],
                                          stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        api = f"http://127.0.0.1:{port}/api/v1/query"

        def query(expr: str) -> list[dict]:
            body = httpx.get(api, params={"query": expr}, timeout=10).json()
            assert body["status"] == "success", (expr, body)
            return body["data"]["result"]

        try:
            sent, started = 0, time.monotonic()
            while time.monotonic() - started < 8:  # several scrapes while both replicas serve
                for gw in (a, b):
                    r = httpx.post(f"{gw.url}/v1/recommend", json={"user_id": "u1", "k": 3},
                                   headers={"Connection": "close"}, timeout=30)
                    assert r.status_code == 200
                    sent += 1
                time.sleep(0.1)
            deadline = time.monotonic() + 30
            total = 'sum(ratingctr_request_seconds_count{endpoint="recommend"})'
            while not query(total) or float(query(total)[0]["value"][1]) != sent:
                assert time.monotonic() < deadline, \
                    (query(total), sent, (tmp_path / "prometheus.log").read_text()[-2000:])
                time.sleep(0.5)
            assert float(query('sum(up{job="ratingctr-gateway"})')[0]["value"][1]) == 2
            for title, exprs in dashboard_queries().items():
                for expr in exprs:
                    if expr.startswith("label_values"):
                        continue
                    result = query(expr.replace("$__rate_interval", "5s").replace("$model", ".*"))
                    quiet = NEEDS_A_FAULT | {"fallback", "errors", "reloads", "promotions"}  # none happened here
                    if not any(name in expr for name in quiet):
                        assert result, f"{title}: {expr} is empty"
                    grouped = parse_promql(substitute_grafana(expr)).grouping - {"le"}
                    for series in result:
                        assert set(series["metric"]) <= grouped, f"{title}: {series['metric']} escaped the sum"
            per_replica = query('sum by (instance) (rate(ratingctr_request_seconds_count[5s]))')
            assert len(per_replica) == 2
        finally:
            stop_process(prometheus)


@pytest.mark.skipif(_prometheus() is None, reason="no promtool on PATH")
@pytest.mark.parametrize("name", ["prometheus.yml", "kubernetes.yml"])
def test_promtool_accepts_the_scrape_configs(name: str) -> None:
    import shutil
    import subprocess

    promtool = shutil.which("promtool") or pytest.skip("no promtool beside prometheus")
    proc = subprocess.run([promtool, "check", "config", str(DOCKER / "prometheus" / name)],
                          capture_output=True, text=True, timeout=60)
    if "kubernetes_sd_configs not found" in proc.stdout + proc.stderr:
        pytest.skip("this Prometheus build has no Kubernetes service discovery (Debian's omits it)")
    assert proc.returncode == 0, proc.stdout + proc.stderr
