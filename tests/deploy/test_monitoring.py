"""deploy/monitoring: alert rules and a Grafana dashboard on the metrics the gateway really exports.

PromQL is parsed with `promql-parser` (dev dependency, 0.12.0: Python bindings of the Rust
`promql-parser` crate, which follows Prometheus's grammar and type checks, e.g. `rate` of an
instant vector or an unknown function is an error). Metric names come from the parsed selectors
and are compared with the `/metrics` output of a real in-process gateway (the session `gateway`
fixture) after RPCs that give the labelled series samples.
"""

from __future__ import annotations

import asyncio
import json
import re
import urllib.request
import uuid
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import consul
import grpc
import hvac
import promql_parser
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from latchkey.v1 import config_pb2, secrets_pb2
from latchkey_server.config import load_settings
from latchkey_server.devstack.consul import ConsulAgent
from latchkey_server.devstack.gateway_config import GatewayConfig, write_gateway_config
from latchkey_server.devstack.seed import DEMO_ROLE, AppRoleCredentials
from tests.fixtures.gateway import GatewayHandle, Stubs

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "deploy" / "monitoring"
ALERTS = MONITORING / "prometheus" / "alerts.yml"
PROMETHEUS = MONITORING / "prometheus" / "prometheus.yml"
DASHBOARD = MONITORING / "grafana" / "latchkey-dashboard.json"
PROVISIONING = MONITORING / "grafana" / "provisioning"
COMPOSE = ROOT / "docker-compose.yml"

METRICS_PORT = 9464
# Grafana's built-in variables and the dashboard's own, replaced by sample values before parsing.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "1h",
    "$instance": ".+",
}
# Labels Prometheus attaches at scrape time (prometheus.yml), not the gateway.
TARGET_LABELS = {"job", "instance"}
DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")
RULE_KEYS = {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}
MATCH_OPS = {
    str(promql_parser.MatchOp.Equal): "=",
    str(promql_parser.MatchOp.NotEqual): "!=",
    str(promql_parser.MatchOp.Re): "=~",
    str(promql_parser.MatchOp.NotRe): "!~",
}
REQUIRED_PANELS = {
    "Gateways up",
    "RPC rate",
    "Error ratio",
    "Latency p50 / p99",
    "Active streams",
    "Active leases",
    "Lease renewals",
    "Rotation failures",
    "Upstream freshness",
}


# ------------------------------------------------------------------ PromQL helpers


def parse_promql(expr: str) -> promql_parser.Expr:
    """Parse one expression; Grafana variables are replaced first, and none may be left."""
    for name in sorted(GRAFANA_VARIABLES, key=len, reverse=True):
        expr = expr.replace(name, GRAFANA_VARIABLES[name])
    assert "$" not in expr, f"unknown Grafana variable in {expr!r}"
    try:
        return promql_parser.parse(expr)
    except ValueError as exc:
        raise AssertionError(f"invalid PromQL {expr!r}: {exc}") from exc


def canonical(expr: str) -> str:
    return str(parse_promql(expr))


def selectors(expr: str) -> list[tuple[str, dict[str, tuple[str, str]]]]:
    """(metric name, {label: (match op, value)}) for every vector selector in the expression."""
    found: list[tuple[str, dict[str, tuple[str, str]]]] = []

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            assert node.name, f"selector without a metric name in {expr!r}"
            matchers = {m.name: (MATCH_OPS[str(m.op)], m.value) for m in node.matchers.matchers}
            found.append((node.name, matchers))

    promql_parser.walk(parse_promql(expr), visit)
    # Cross-check with a plain scan, so no metric name hides where the walk does not look.
    assert set(re.findall(r"\blatchkey_[a-z_]+", expr)) <= {name for name, _ in found}, expr
    return found


def alert_rules() -> list[dict[str, Any]]:
    data = yaml.safe_load(ALERTS.read_text())
    return [rule for group in data["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])


def dashboard_queries(board: dict[str, Any]) -> list[str]:
    queries = [t["expr"] for p in panels(board) for t in p.get("targets", [])]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"]
            inner = re.fullmatch(r"label_values\((.+),\s*[a-zA-Z_]\w*\)", query)
            assert inner, f"variable {variable['name']}: unexpected query {query!r}"
            queries.append(inner.group(1))
    return queries


def all_queries() -> list[str]:
    return [rule["expr"] for rule in alert_rules()] + dashboard_queries(dashboard())


def compose_services() -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = yaml.safe_load(COMPOSE.read_text())["services"]
    return services


def bind_mounts(service: dict[str, Any]) -> dict[str, Path]:
    """container path -> host path, for the `./...` bind mounts."""
    mounts: dict[str, Path] = {}
    for spec in service.get("volumes", []):
        source, target, *_ = spec.split(":")
        if source.startswith("./"):
            mounts[target] = ROOT / source
    return mounts


# ------------------------------------------------------------------ alert rules


def test_alert_rules_are_a_valid_prometheus_rule_file() -> None:
    data = yaml.safe_load(ALERTS.read_text())
    assert set(data) == {"groups"}
    group_names = [group["name"] for group in data["groups"]]
    assert len(group_names) == len(set(group_names)), "duplicate group names"
    names: list[str] = []
    for group in data["groups"]:
        assert set(group) <= {"name", "interval", "limit", "rules"}, group["name"]
        assert group["rules"], f"group {group['name']} has no rules"
        for rule in group["rules"]:
            assert set(rule) <= RULE_KEYS, rule
            name = rule["alert"]
            assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name), name
            names.append(name)
            assert DURATION.match(rule["for"]), f"{name}: for {rule['for']!r}"
            assert rule["labels"]["severity"] in {"critical", "warning"}, name
            assert rule["annotations"]["summary"].strip(), name
            assert rule["annotations"]["description"].strip(), name
            parsed = parse_promql(rule["expr"])
            assert not isinstance(
                parsed,
                promql_parser.MatrixSelector | promql_parser.StringLiteral,
            ), f"{name}: an alert needs an instant vector"
    assert len(names) == len(set(names)), "duplicate alert names"


def _alert(name: str) -> dict[str, Any]:
    found = [rule for rule in alert_rules() if rule["alert"] == name]
    assert len(found) == 1, name
    return found[0]


def _minutes(duration: str) -> float:
    units = {"ms": 1 / 60000, "s": 1 / 60, "m": 1, "h": 60, "d": 1440, "w": 10080, "y": 525600}
    return sum(int(n) * units[u] for n, u in re.findall(r"(\d+)(ms|s|m|h|d|w|y)", duration))


@pytest.mark.parametrize(
    ("alert", "expected", "min_for"),
    [
        ("LatchkeyGatewayDown", 'up{job="latchkey"} == 0', 1),
        ("LatchkeyUpstreamStale", "latchkey_upstream_last_contact_age_seconds > 300", 0),
        ("LatchkeyUpstreamUnreachable", "latchkey_upstream_up == 0", 2),
        (
            "LatchkeyRotationFailures",
            'increase(latchkey_lease_rotations_total{outcome="error"}[10m]) > 0',
            0,
        ),
        ("LatchkeyLeaseNearMaxTTLWithoutSuccessor", "latchkey_lease_seconds_to_max_ttl < 60", 2),
        ("LatchkeyAuditFailures", "increase(latchkey_audit_failures_total[5m]) > 0", 0),
    ],
)
def test_required_alert(alert: str, expected: str, min_for: float) -> None:
    rule = _alert(alert)
    assert canonical(rule["expr"]) == canonical(expected)
    assert _minutes(rule["for"]) >= min_for


def test_error_ratio_alert_is_server_errors_over_all_rpcs() -> None:
    rule = _alert("LatchkeyErrorRatioHigh")
    parsed = parse_promql(rule["expr"])
    assert isinstance(parsed, promql_parser.BinaryExpr)
    assert str(parsed.op) == ">"
    assert isinstance(parsed.lhs, promql_parser.BinaryExpr)
    assert str(parsed.lhs.op) == "/"
    numerator, denominator = (selectors(str(side)) for side in (parsed.lhs.lhs, parsed.lhs.rhs))
    assert numerator == [
        ("latchkey_rpc_requests_total", {"code": ("=~", "INTERNAL|UNAVAILABLE|UNKNOWN")})
    ]
    assert denominator == [("latchkey_rpc_requests_total", {})]
    assert 0 < parsed.rhs.val < 1


def test_server_error_codes_are_grpc_status_names() -> None:
    """The gateway labels `code` with gRPC status names (OK, INTERNAL, ...): match those."""
    for expr in all_queries():
        for name, matchers in selectors(expr):
            if "code" in matchers:
                op, value = matchers["code"]
                codes = value.split("|") if op in ("=~", "!~") else [value]
                assert set(codes) <= {code.name for code in grpc.StatusCode}, (name, value)


# ------------------------------------------------------------------ Prometheus and compose


def test_prometheus_scrapes_latchkey_and_loads_the_rules() -> None:
    config = yaml.safe_load(PROMETHEUS.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    targets = [t for group in jobs["latchkey"]["static_configs"] for t in group["targets"]]
    assert targets == [f"latchkey:{METRICS_PORT}", f"latchkey-b:{METRICS_PORT}"]  # both replicas
    assert jobs["latchkey"].get("metrics_path", "/metrics") == "/metrics"
    # Every `up` selector names this job.
    for expr in all_queries():
        for name, matchers in selectors(expr):
            if name == "up":
                assert matchers["job"] == ("=", "latchkey"), expr
    prometheus = compose_services()["prometheus"]
    mounts = bind_mounts(prometheus)
    assert (
        f"--config.file={next(t for t in mounts if t.endswith('prometheus.yml'))}"
        in (prometheus["command"])
    )
    for rule_file in config["rule_files"]:
        assert mounts[rule_file] == ALERTS


def test_compose_gateway_serves_metrics_on_the_network(tmp_path: Path) -> None:
    """The bootstrap-written config listens on loopback; the compose environment overrides it."""
    latchkey = compose_services()["latchkey"]
    assert str(METRICS_PORT) in [str(port) for port in latchkey["expose"]]
    config_file = tmp_path / "gateway.yaml"
    write_gateway_config(
        config_file,
        GatewayConfig(
            listen="0.0.0.0:7400",
            vault_addr="http://vault:8200",
            approle=AppRoleCredentials(role_id="role", secret_id="secret"),
            consul_addr="consul:8500",
            tokens_file=tmp_path / "tokens.yaml",
        ),
    )
    with pytest.MonkeyPatch.context() as env:
        for key, value in latchkey["environment"].items():
            env.setenv(key, str(value))
        settings = load_settings(config_file)
    assert settings.metrics.listen == f"0.0.0.0:{METRICS_PORT}"


def test_monitoring_services_are_optional_health_checked_and_mount_real_files() -> None:
    services = compose_services()
    assert services["prometheus"]["image"].startswith("prom/prometheus:")
    assert services["grafana"]["image"].startswith("grafana/grafana:")
    for name, service in services.items():
        if name in ("prometheus", "grafana"):
            assert service["profiles"] == ["monitoring"], name
            assert service["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL"), name
            assert not service["healthcheck"].get("disable"), name
            mounts = bind_mounts(service)
            assert mounts, name
            for target, source in mounts.items():
                assert source.exists(), f"{name}: {source} (mounted at {target}) is missing"
            for spec in service.get("ports", []):
                assert str(spec).startswith("127.0.0.1:"), f"{name} is published beyond loopback"
        else:
            assert "profiles" not in service, f"{name} must start without a profile"
    assert services["grafana"]["depends_on"]["prometheus"] == {"condition": "service_healthy"}


def test_grafana_provisioning_points_at_prometheus_and_the_dashboard() -> None:
    grafana = compose_services()["grafana"]
    mounts = bind_mounts(grafana)
    assert mounts["/etc/grafana/provisioning"] == PROVISIONING
    datasources = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())
    (source,) = datasources["datasources"]
    assert source["type"] == "prometheus"
    prometheus_port = int(compose_services()["prometheus"]["ports"][0].rsplit(":", 1)[1])
    assert source["url"] == f"http://prometheus:{prometheus_port}"
    providers = yaml.safe_load((PROVISIONING / "dashboards" / "latchkey.yml").read_text())
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    dashboard_target = next(t for t, s in mounts.items() if s == DASHBOARD)
    assert Path(dashboard_target).parent == Path(provider["options"]["path"])


# ------------------------------------------------------------------ dashboard


def test_dashboard_is_a_grafana_model_on_a_prometheus_datasource_variable() -> None:
    board = dashboard()
    assert board["schemaVersion"] >= 36
    assert board["uid"]
    assert board["title"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    expected = {"type": "prometheus", "uid": "${datasource}"}
    for variable in variables.values():
        if variable["type"] == "query":
            assert variable["datasource"] == expected, variable["name"]
    ids = [p["id"] for p in panels(board)]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    occupied: set[tuple[int, int]] = set()
    for panel in panels(board):
        grid = panel["gridPos"]
        assert grid["x"] >= 0, panel["title"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {
            (grid["x"] + dx, grid["y"] + dy) for dx in range(grid["w"]) for dy in range(grid["h"])
        }
        assert not cells & occupied, f"{panel['title']} overlaps another panel"
        occupied |= cells
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == expected, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == expected, panel["title"]
            parse_promql(target["expr"])


def test_dashboard_has_the_required_panels() -> None:
    board = dashboard()
    titles = {p["title"] for p in panels(board)}
    assert titles >= REQUIRED_PANELS, REQUIRED_PANELS - titles
    by_title = {p["title"]: p for p in panels(board)}

    def metrics(title: str) -> set[str]:
        return {name for t in by_title[title]["targets"] for name, _ in selectors(t["expr"])}

    assert metrics("RPC rate") == {"latchkey_rpc_requests_total"}
    assert metrics("Error ratio") == {"latchkey_rpc_requests_total"}
    assert metrics("Latency p50 / p99") == {"latchkey_rpc_duration_seconds_bucket"}
    latency = {t["expr"] for t in by_title["Latency p50 / p99"]["targets"]}
    assert any("histogram_quantile(0.5," in e for e in latency)
    assert any("histogram_quantile(0.99," in e for e in latency)
    assert metrics("Active streams") == {"latchkey_active_streams"}
    assert metrics("Active leases") == {"latchkey_active_leases"}
    assert metrics("Lease renewals") == {"latchkey_lease_renewals_total"}
    failures = [
        matchers
        for t in by_title["Rotation failures"]["targets"]
        for name, matchers in selectors(t["expr"])
        if name == "latchkey_lease_rotations_total"
    ]
    assert {"outcome": ("=", "error")}.items() <= failures[0].items()
    assert metrics("Upstream freshness") == {"latchkey_upstream_last_contact_age_seconds"}
    assert metrics("Gateways up") == {"up"}


# ------------------------------------------------------------------ against a real gateway


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        body: bytes = response.read()
    return body.decode()


def _exported(text: str) -> tuple[dict[str, set[str]], set[str]]:
    """({series name: label names seen}, series names with no sample in this scrape)."""
    labels: dict[str, set[str]] = defaultdict(set)
    declared: set[str] = set()
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"], "gauge": [""]}
    for family in text_string_to_metric_families(text):
        # The TYPE line declares the series even when a labelled metric has no child yet.
        declared |= {family.name + suffix for suffix in suffixes.get(family.type, [""])}
        for sample in family.samples:
            labels[sample.name] |= set(sample.labels)
    return labels, declared - set(labels)


async def test_every_metric_used_is_exported_by_a_real_gateway(
    gateway: GatewayHandle, stubs: Stubs, consul_agent: ConsulAgent
) -> None:
    # Give the labelled series samples: a KV secret, a held database lease, an open config watch.
    vault = hvac.Client(url=gateway.vault_addr, token=gateway.vault_root_token)
    vault.secrets.kv.v2.create_or_update_secret(
        path="monitoring/app", secret={"k": "v"}, mount_point="secret"
    )
    await stubs.secrets.GetSecret(
        secrets_pb2.GetSecretRequest(path="monitoring/app"), metadata=gateway.metadata()
    )
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await stubs.secrets.GetSecret(
            secrets_pb2.GetSecretRequest(path="monitoring/none"), metadata=gateway.metadata()
        )
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    prefix = f"monitoring/{uuid.uuid4().hex[:8]}/"
    consul.Consul(host="127.0.0.1", port=consul_agent.http_port).kv.put(prefix + "a", "1")
    watch = stubs.config.Watch(
        config_pb2.WatchConfigRequest(prefix=prefix), metadata=gateway.metadata()
    )
    cred = (
        await stubs.secrets.GetDatabaseCredentials(
            secrets_pb2.GetDatabaseCredentialsRequest(role=DEMO_ROLE), metadata=gateway.metadata()
        )
    ).credential
    try:
        first = await watch.read()
        assert first.WhichOneof("event") == "snapshot"
        while_held = await asyncio.to_thread(_scrape, gateway.gateway.metrics_port)
    finally:
        watch.cancel()
        await stubs.secrets.RevokeLease(
            secrets_pb2.RevokeLeaseRequest(lease_id=cred.lease_id), metadata=gateway.metadata()
        )
    after = await asyncio.to_thread(_scrape, gateway.gateway.metrics_port)

    labels, declared_only = _exported(while_held)
    later, _ = _exported(after)
    for name, seen in later.items():
        labels[name] |= seen
    declared_only -= set(labels)
    # What the RPCs above must have produced (so the label checks below are not vacuous).
    assert {"latchkey_rpc_requests_total", "latchkey_rpc_duration_seconds_bucket"} <= set(labels)
    assert {"latchkey_secret_cache_requests_total", "latchkey_upstream_requests_total"} <= set(
        labels
    )
    assert "latchkey_lease_seconds_to_max_ttl" in labels
    config_streams = re.search(
        r'^latchkey_active_streams\{kind="config"\} (\S+)$', while_held, re.M
    )
    assert config_streams
    assert float(config_streams.group(1)) >= 1
    assert re.search(r'^latchkey_rpc_requests_total\{code="OK",method="GetSecret"\}', after, re.M)

    used: dict[str, set[str]] = defaultdict(set)
    for expr in all_queries():
        for name, matchers in selectors(expr):
            used[name] |= set(matchers) - TARGET_LABELS
    assert "up" in used  # Prometheus's own series for the scrape job (checked above)
    used.pop("up")
    assert len(used) >= 10
    unknown = sorted(set(used) - set(labels) - declared_only)
    assert unknown == [], f"not exported by the gateway: {unknown}"
    for name, label_names in used.items():
        if name in labels:  # labelled counters without a child yet have no label names to check
            assert label_names <= labels[name], (name, label_names - labels[name])
