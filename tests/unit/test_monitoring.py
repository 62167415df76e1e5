"""Observability decisions (infra/render/monitoring.py), offline: settings, vLLM metric names per version, the monitors
and NetworkPolicies, the dashboard, the alert rules (with `promtool test rules` on recorded series), the Azure args,
the gateway's metrics sidecars and the files `plan --manifests` writes."""
from __future__ import annotations

import copy
import json
import pathlib
import re

import jsonschema
import pytest
import yaml

from infra.catalog import load_catalog
from infra.errors import UserError
from infra.plan import build_plan
from infra.render import common, gateway_objects, model_objects, monitoring, nginx
from infra.settings import load_stack_file, settings_from_config
from tests.servers.prometheus import PROMTOOL, missing, promtool
from tests.servers.required import unavailable

DATA = pathlib.Path(__file__).resolve().parents[1] / "data" / "prometheus"
CATALOG = load_catalog()
# metric families that are not vLLM's: Prometheus' own `up`, the gateway's sidecars, kube-state-metrics
OTHER_FAMILIES = {"up", nginx.REQUESTS_METRIC, "nginx_connections_active", "nginx_http_requests_total", "nginx_up",
                  "kube_node_status_condition", "kube_node_labels"}
SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{")
ROLE = lambda guid: monitoring.role_definition_id("SUB", guid)


def settings(stack: str = "obs", secrets: frozenset[str] = frozenset({"apiKeys"}), **values):
    base = {
        "cluster": {"apiServerAuthorizedIpRanges": ["203.0.113.0/24"]},
        "kaito": {"mode": "helm", "version": "0.12.0"},
        "models": [{"name": "tiny", "model": "phi-3-mini-4k-instruct", "replicas": 2},
                   {"name": "solo", "model": "phi-3-mini-4k-instruct"}],
        "access": {"sourceRanges": ["198.51.100.0/24"]},
        "production": True,
    }
    base.update(values)
    s = settings_from_config(stack, base, set(secrets))
    # apiKeys only where the gateway checks them (the plan refuses keys that nothing checks)
    return s if s.gateway_enabled else settings_from_config(stack, base, set(secrets) - {"apiKeys"})


def plan_of(secrets: frozenset[str] = frozenset({"apiKeys"}), **values):
    return build_plan(settings(secrets=secrets, **values))


@pytest.fixture(scope="module")
def plan():
    return plan_of()


def families(expr: str) -> set[str]:
    """Metric families a query selects (kaito-aks writes every selector with braces), histogram suffix removed."""
    return {re.sub(r"_bucket$", "", name) for name in SELECTOR.findall(expr)}


def all_queries(plan, version=None) -> list[str]:
    board = monitoring.dashboard(plan, version)
    return [q for _, _, q in monitoring.dashboard_queries(board)] + [r.expr for r in monitoring.alert_rules(plan, version)]


# ---------------------------------------------------------------------------------------------------------
# Settings

def test_on_by_default_in_production_only():
    assert load_stack_file("prod").__class__.model_validate(load_stack_file("prod").model_dump()).observability_enabled
    assert load_stack_file("prod").observability_enabled and not load_stack_file("dev").observability_enabled
    assert not settings(observability={"enabled": False}).observability_enabled
    assert settings(production=False, observability={"enabled": True}).observability_enabled


def test_grafana_shorthand_and_alert_settings():
    s = settings(observability={"grafana": False, "alerts": {"actionGroupEmails": ["oncall@example.com"],
                                                            "queueDepth": 3, "ttftP95Seconds": 1.5}})
    assert not s.grafana_enabled and s.alerts_enabled
    assert s.observability.alerts.queue_depth == 3 and s.observability.alerts.ttft_p95_seconds == 1.5


@pytest.mark.parametrize("observability,fragment", [
    ({"alerts": {"actionGroupEmails": ["not-an-email"]}}, "kaito-aks:observability.alerts.actionGroupEmails"),
    ({"alerts": {"webhookUrl": "https://hooks.example.com/x?sig=abc"}}, "a webhook URL is a credential"),
    ({"alerts": {"kvCacheUsage": 1.5}}, "kaito-aks:observability.alerts.kvCacheUsage"),
    ({"grafana": {"adminGroupObjectIds": ["me"]}}, "is not an Entra ID object id"),
    ({"grafanna": True}, "did you mean 'grafana'"),
])
def test_setting_mistakes_are_one_line_naming_the_key(observability, fragment):
    with pytest.raises(UserError) as err:
        settings(observability=observability)
    assert any(fragment in line for line in err.value.lines), err.value.lines
    assert "sig=abc" not in str(err.value)        # a webhook URL (a credential) is never quoted back


@pytest.mark.parametrize("url, ok", [
    ("https://hooks.slack.com/services/T0/B0/XXXX", True),
    ("https://prod-01.westus.logic.azure.com:443/workflows/abc/triggers/manual/paths/invoke?api-version=2016-06-01"
     "&sp=%2Ftriggers&sig=SECRET", True),                       # Teams workflows carry their signature in the query
    ("http://hooks.example.com/x", False), ("https://", False), ("https://user:pw@hooks.example.com/x", False),
    ("https://hooks.example.com/x y", False), ("https://h.example/" + "a" * 2100, False), (None, False), (42, False),
    ("https://hooks.example.com:99999/x", False),
])
def test_the_secret_webhook_must_be_an_https_url(url, ok):
    from infra.settings import webhook_url_problem

    problem = webhook_url_problem(url)
    assert (problem is None) is ok
    assert problem is None or not isinstance(url, str) or url not in problem   # never quoted back


# ---------------------------------------------------------------------------------------------------------
# vLLM metric names per version

@pytest.mark.parametrize("version,kv,tpot", [
    ("0.9.0", "vllm:gpu_cache_usage_perc", "vllm:time_per_output_token_seconds"),     # KAITO 0.6
    ("0.10.1.1", "vllm:gpu_cache_usage_perc", "vllm:time_per_output_token_seconds"),  # KAITO 0.7
    ("0.11.0", "vllm:kv_cache_usage_perc", "vllm:inter_token_latency_seconds"),
    ("0.12.0", "vllm:kv_cache_usage_perc", "vllm:inter_token_latency_seconds"),       # KAITO 0.8
    ("0.25.1", "vllm:kv_cache_usage_perc", "vllm:inter_token_latency_seconds"),       # KAITO 0.12
    ("0.32.0", "vllm:kv_cache_usage_perc", "vllm:inter_token_latency_seconds"),       # the tests' CPU build
])
def test_renamed_metrics_follow_the_version(version, kv, tpot):
    assert monitoring.vllm_metric(version, "kv_cache_usage") == kv
    assert monitoring.vllm_metric(version, "time_per_output_token") == tpot
    assert monitoring.vllm_metric(version, "time_to_first_token") == "vllm:time_to_first_token_seconds"


def test_unknown_metric_or_too_old_version_is_refused():
    with pytest.raises(monitoring.UnknownVllmMetricError):
        monitoring.vllm_metric("0.25.1", "gpu_temperature")
    with pytest.raises(monitoring.UnknownVllmMetricError):
        monitoring.vllm_metric("0.8.5", "kv_cache_usage")


def test_every_kaito_release_runs_an_inspected_vllm_version():
    for version in CATALOG.known_versions:
        vllm = CATALOG.release(version).vllm_version
        assert monitoring.exposed_families(vllm) is not None, f"KAITO {version} runs vLLM {vllm}: not in vllm_metrics.yaml"


@pytest.mark.parametrize("kaito", ["0.6.0", "0.7.2", "0.8.1", "0.9.4", "0.10.0", "0.11.0", "0.12.0"])
def test_every_query_names_only_metrics_that_release_s_vllm_exposes(plan, kaito):
    """For each KAITO release, the dashboard and every alert built for its vLLM version select only families that
    version exposes (vllm_metrics.yaml `exposed`, read from that version's own code)."""
    vllm = CATALOG.release(kaito).vllm_version
    exposed = monitoring.exposed_families(vllm) | OTHER_FAMILIES
    for query in all_queries(plan, vllm):
        assert families(query) <= exposed, (kaito, vllm, families(query) - exposed, query)


def test_a_wrong_version_s_names_are_caught(plan):
    """The check above can fail: KAITO 0.12's queries against vLLM 0.9.0's families name two it doesn't have."""
    exposed = monitoring.exposed_families("0.9.0") | OTHER_FAMILIES
    wrong = set().union(*(families(q) for q in all_queries(plan, "0.25.1"))) - exposed
    assert wrong == {"vllm:kv_cache_usage_perc", "vllm:inter_token_latency_seconds"}


def test_metric_names_live_only_in_the_catalog_file():
    source = (pathlib.Path(monitoring.__file__)).read_text()
    assert "vllm:" not in source, "name vLLM metrics through vllm_metric(), from infra/catalog/vllm_metrics.yaml"
    for key in monitoring.vllm_metric_keys():
        for entry in monitoring._metrics_catalog()["metrics"][key]["names"]:
            assert entry["source"], (key, entry)


def test_the_plan_uses_its_kaito_release_s_vllm(plan):
    assert monitoring.vllm_version(plan) == "0.25.1"
    assert "vllm:kv_cache_usage_perc" in json.dumps(monitoring.dashboard(plan))
    old = plan_of(kaito={"mode": "addon", "version": "0.6.0"}, models=[{"name": "solo", "model": "phi-3-mini-4k-instruct"}])
    assert monitoring.vllm_version(old) == "0.9.0"
    text = json.dumps(monitoring.dashboard(old)) + json.dumps(monitoring.prometheus_rules(old))
    assert "vllm:gpu_cache_usage_perc" in text and "vllm:kv_cache_usage_perc" not in text


# ---------------------------------------------------------------------------------------------------------
# What managed Prometheus scrapes, and who may reach it

def crd_schema(kind: str) -> dict:
    from tests.unit.test_model_objects import strict

    crd = yaml.safe_load((DATA / "crds" / f"ama-metrics-{kind.lower()}-crd.yaml").read_text())
    (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return strict(v1["schema"]["openAPIV3Schema"])


def test_monitors_validate_against_the_managed_prometheus_crds(plan):
    objects = monitoring.kubernetes_objects(plan)
    monitors = [o for o in objects if o["apiVersion"] == "azmonitoring.coreos.com/v1"]
    assert sorted(o["kind"] for o in monitors) == ["PodMonitor", "ServiceMonitor", "ServiceMonitor"]
    for monitor in monitors:
        jsonschema.validate(monitor, crd_schema(monitor["kind"]))
    broken = copy.deepcopy(monitors[0])
    broken["spec"]["endpoints"][0]["relabelings"][0]["sourceLabel"] = "typo"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, crd_schema("ServiceMonitor"))


def test_one_service_monitor_per_model_on_its_endpoint_services(plan):
    for name in plan.model_names:
        (monitor,) = [o for o in monitoring.kubernetes_objects(plan)
                      if o["kind"] == "ServiceMonitor" and o["metadata"]["name"] == f"{name}-vllm"]
        selector = monitor["spec"]["selector"]["matchLabels"]
        services = [model_objects.endpoint_service(r, plan) for r in plan.replicas]
        selected = [s for s in services if selector.items() <= s["metadata"]["labels"].items()]
        assert [s["metadata"]["name"] for s in selected] == [model_objects.endpoint_service_name(r)
                                                             for r in plan.replicas_of(name)]
        (endpoint,) = monitor["spec"]["endpoints"]
        for service in selected:        # the named port exists and leads to vLLM's port (where /metrics is)
            (port,) = [p for p in service["spec"]["ports"] if p["name"] == endpoint["port"]]
            assert port["targetPort"] == common.INFERENCE_PORT
        # every relabeling reads a label the Service has (Prometheus' Kubernetes discovery naming)
        for relabel in endpoint["relabelings"]:
            for source in relabel.get("sourceLabels", []):
                assert source in {monitoring.meta_label("service", k) for k in selected[0]["metadata"]["labels"]}, source
        assert {r["targetLabel"] for r in endpoint["relabelings"]} == {"job", "model", "workspace"}


def test_gateway_pod_monitor_scrapes_the_sidecars_named_ports(plan):
    (monitor,) = [o for o in monitoring.kubernetes_objects(plan) if o["kind"] == "PodMonitor"]
    deployment = gateway_objects.deployment(plan)
    pod = deployment["spec"]["template"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    ports = {p["name"]: p["containerPort"] for c in pod["spec"]["containers"] for p in c.get("ports", [])}
    assert [e["port"] for e in monitor["spec"]["podMetricsEndpoints"]] == ["nginx-metrics", "log-metrics"]
    assert ports["nginx-metrics"] == gateway_objects.EXPORTER_PORT and ports["log-metrics"] == gateway_objects.MTAIL_PORT


def test_network_policies_admit_the_managed_scraper_only(plan):
    policies = {o["metadata"]["name"]: o for o in monitoring.kubernetes_objects(plan) if o["kind"] == "NetworkPolicy"}
    models, gw = policies["kaito-aks-metrics-models"], policies["kaito-gateway-metrics"]
    (expr,) = models["spec"]["podSelector"]["matchExpressions"]
    assert expr["key"] == "kaito.sh/workspace" and sorted(expr["values"]) == sorted(r.workspace for r in plan.replicas)
    for policy, ports in ((models, {common.INFERENCE_PORT}), (gw, {gateway_objects.EXPORTER_PORT, gateway_objects.MTAIL_PORT})):
        (rule,) = policy["spec"]["ingress"]
        (peer,) = rule["from"]           # one peer: namespace AND pod labels (two peers would be OR)
        assert peer == {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                        "podSelector": {"matchLabels": {"rsName": "ama-metrics",
                                                        "kubernetes.azure.com/managedby": "aks"}}}
        assert {p["port"] for p in rule["ports"]} == ports and policy["spec"]["policyTypes"] == ["Ingress"]


def test_nothing_when_off_and_no_gateway_objects_without_the_gateway():
    assert monitoring.kubernetes_objects(plan_of(observability={"enabled": False})) == []
    direct = plan_of(gateway={"enabled": False})
    kinds = [o["kind"] for o in monitoring.kubernetes_objects(direct)]
    assert "PodMonitor" not in kinds and kinds.count("NetworkPolicy") == 1
    assert all(not t.startswith("Gateway") for t, _, _ in monitoring.dashboard_queries(monitoring.dashboard(direct)))
    assert "KaitoGateway5xxHigh" not in [r.name for r in monitoring.alert_rules(direct)]


# ---------------------------------------------------------------------------------------------------------
# The gateway's metrics

def test_gateway_metrics_sidecars_and_configuration(plan):
    conf = gateway_objects.nginx_conf_for(plan)
    assert f"listen 127.0.0.1:{nginx.STATUS_PORT};" in conf and "stub_status;" in conf
    assert f"access_log syslog:server=127.0.0.1:{nginx.SYSLOG_PORT},tag=kaito_gateway,nohostname kaito_aks_dgram;" in conf
    # the datagram format is the access log's (no client text: see test_nginx), plus the newline mtail needs
    (plain,) = re.findall(r"log_format kaito_aks escape=json (.*?);\n", conf, re.S)
    (dgram,) = re.findall(r"log_format kaito_aks_dgram escape=json (.*?);\n", conf, re.S)
    assert dgram == plain[:-1] + "\\n'"
    pod = gateway_objects.deployment(plan)["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["nginx", "nginx-exporter", "mtail"]
    exporter, mtail = pod["containers"][1:]
    assert exporter["image"] == gateway_objects.EXPORTER_IMAGE and mtail["image"] == gateway_objects.MTAIL_IMAGE
    assert f"--nginx.scrape-uri=http://127.0.0.1:{nginx.STATUS_PORT}/stub_status" in exporter["args"]
    assert f"udp://127.0.0.1:{nginx.SYSLOG_PORT}" in mtail["args"]
    for c in pod["containers"]:
        assert c["securityContext"]["readOnlyRootFilesystem"] and c["resources"]["limits"]
    assert gateway_objects.config_map(plan)["data"][gateway_objects.MTAIL_PROGRAM_FILE] == nginx.MTAIL_PROGRAM
    (volume,) = [v for v in pod["volumes"] if v["name"] == "mtail"]
    assert volume["configMap"]["items"] == [{"key": "gateway.mtail", "path": "gateway.mtail"}]


def test_gateway_unchanged_without_observability():
    off = plan_of(observability={"enabled": False})
    conf = gateway_objects.nginx_conf_for(off)
    assert "stub_status" not in conf and "syslog" not in conf
    pod = gateway_objects.deployment(off)["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["nginx"] and len(pod["volumes"]) == 3
    assert list(gateway_objects.config_map(off)["data"]) == ["nginx.conf"]
    import hashlib
    assert (gateway_objects.deployment(off)["spec"]["template"]["metadata"]["annotations"]["kaito-aks/conf-sha256"]
            == hashlib.sha256(conf.encode()).hexdigest()[:16])       # the same pod hash as before metrics existed


# ---------------------------------------------------------------------------------------------------------
# Dashboard and alerts as data

REQUIRED_PANELS = ["Requests finished/s", "Time to first token (p50, p95)", "Time per output token (p50, p95)",
                   "Tokens/s (generated, prompt)", "Queue depth (waiting, running)", "KV cache in use",
                   "Gateway 4xx/s by API key id", "Gateway 5xx/s by API key id and route", "Gateway 429/s by API key id",
                   "GPU pool nodes ready"]
REQUIRED_ALERTS = ["KaitoModelDown", "KaitoQueueDepthHigh", "KaitoKvCacheNearFull", "KaitoTimeToFirstTokenHigh",
                   "KaitoGateway5xxHigh", "KaitoGpuNodeNotReady"]


def test_dashboard_shape(plan):
    board = monitoring.dashboard(plan)
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)) and board["uid"] == "kaito-aks" and board["id"] is None
    titles = [p["title"] for p in board["panels"]]
    assert set(REQUIRED_PANELS) <= set(titles)
    assert [v["name"] for v in board["templating"]["list"]] == ["datasource", "model", "workspace"]
    for title, _, expr in monitoring.dashboard_queries(board):
        assert families(expr), (title, expr)
        model_side = any(f.startswith("vllm:") or f == "up" for f in families(expr))
        if model_side:       # per model and replica: filtered by the variables, split by workspace
            assert 'model=~"$model"' in expr and 'workspace=~"$workspace"' in expr and "workspace" in expr, title
    for p in board["panels"]:
        if p["type"] != "row":
            assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert p["gridPos"]["x"] >= 0 and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24


def test_alert_rules_shape(plan):
    rules = monitoring.alert_rules(plan)
    assert set(REQUIRED_ALERTS) <= {r.name for r in rules}
    for r in rules:
        assert r.signal in r.expr and r.severity in monitoring.AZURE_SEVERITY
        assert "$value" not in json.dumps(r.annotations) and "|" not in json.dumps(r.annotations)
        assert "README.md" in r.annotations["runbook"]
    down = {r.name: r for r in rules}["KaitoModelReplicaDown"]     # only models with more than one replica
    assert 'workspace", "' + plan.replicas_of("tiny")[1].workspace in down.expr
    assert plan.replicas_of("solo")[0].workspace not in down.expr


def test_thresholds_come_from_the_settings():
    p = plan_of(observability={"alerts": {"queueDepth": 3, "kvCacheUsage": 0.8, "ttftP95Seconds": 2.5,
                                          "gateway5xxRatio": 0.2, "modelDownMinutes": 2, "nodeNotReadyMinutes": 7}})
    rules = {r.name: r for r in monitoring.alert_rules(p)}
    assert rules["KaitoQueueDepthHigh"].expr.endswith("> 3") and rules["KaitoKvCacheNearFull"].expr.endswith("> 0.8")
    assert rules["KaitoTimeToFirstTokenHigh"].expr.endswith("> 2.5") and "> 0.2 and" in rules["KaitoGateway5xxHigh"].expr
    assert rules["KaitoModelDown"].for_minutes == 2 and rules["KaitoGpuNodeNotReady"].for_minutes == 7


def promtool_or_skip() -> None:
    if reason := missing(PROMTOOL):
        unavailable(reason)


def render_rule_tests(plan, directory: pathlib.Path, rules: dict | None = None) -> pathlib.Path:
    """rules.yml from the plan, and alerts_test.yml with the plan's Workspace names and the rules' annotations."""
    ws = {"WS_TINY_0": plan.replicas_of("tiny")[0].workspace, "WS_TINY_1": plan.replicas_of("tiny")[1].workspace,
          "WS_SOLO": plan.replicas_of("solo")[0].workspace}
    text = (DATA / "alerts_test.yml").read_text()
    for placeholder, name in sorted(ws.items(), key=lambda kv: -len(kv[0])):
        text = text.replace(placeholder, name)
    cases = yaml.safe_load(text)
    annotations = {r.name: r.annotations for r in monitoring.alert_rules(plan)}
    for case in cases["tests"]:
        for check in case.get("alert_rule_test", []):
            for alert in check["exp_alerts"]:
                alert["exp_annotations"] = {
                    k: re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m, labels=alert["exp_labels"]: labels[m.group(1)], v)
                    for k, v in annotations[check["alertname"]].items()}
    (directory / "rules.yml").write_text(yaml.safe_dump(rules or monitoring.prometheus_rules(plan), sort_keys=False))
    (directory / "alerts_test.yml").write_text(yaml.safe_dump(cases, sort_keys=False))
    return directory / "alerts_test.yml"


@pytest.mark.servers
def test_promtool_checks_the_rules(plan, tmp_path):
    promtool_or_skip()
    for p in (plan, plan_of(gateway={"enabled": False}), plan_of(kaito={"mode": "addon", "version": "0.6.0"})):
        path = tmp_path / f"{p.stack}-{p.kaito_version}-{p.settings.gateway_enabled}.yml"
        path.write_text(yaml.safe_dump(monitoring.prometheus_rules(p), sort_keys=False))
        result = promtool("check", "rules", str(path))
        assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.servers
def test_promtool_unit_tests_fire_and_stay_quiet(plan, tmp_path):
    """Every alert fires on recorded series that break its threshold (per model / replica / route / node) and stays
    quiet on healthy ones and before its `for` (tests/data/prometheus/alerts_test.yml)."""
    promtool_or_skip()
    result = promtool("test", "rules", str(render_rule_tests(plan, tmp_path)), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    tested = {c["alertname"] for case in yaml.safe_load((tmp_path / "alerts_test.yml").read_text())["tests"]
              for c in case.get("alert_rule_test", [])}
    assert tested == {r.name for r in monitoring.alert_rules(plan)}            # every alert has a case


@pytest.mark.servers
def test_promtool_unit_tests_catch_a_wrong_metric_name(plan, tmp_path):
    """The rule tests can fail: the same cases against rules built for vLLM 0.9.0 (the old KV-cache name) miss the
    KV-cache alert."""
    promtool_or_skip()
    old_names = monitoring.prometheus_rules(plan, "0.9.0")
    result = promtool("test", "rules", str(render_rule_tests(plan, tmp_path, old_names)), cwd=tmp_path)
    assert result.returncode != 0 and "KaitoKvCacheNearFull" in result.stdout + result.stderr


# ---------------------------------------------------------------------------------------------------------
# Azure

def test_azure_monitor_profile_and_names(plan):
    assert monitoring.azure_monitor_profile(plan) == {"metrics": {"enabled": True, "kube_state_metrics": {
        "metric_labels_allowlist": "nodes=[kaito-aks/workspace]", "metric_annotations_allow_list": ""}}}
    assert monitoring.azure_monitor_profile(plan_of(observability={"enabled": False})) is None
    long = plan_of(cluster={"name": "a-very-long-cluster-name-for-the-prometheus-templates_x",
                            "apiServerAuthorizedIpRanges": ["203.0.113.0/24"]})
    n = monitoring.names(long)
    assert len(n["dce"]) <= 44 and len(n["dcr"]) <= 64 and n["dcra"].startswith("MSProm-eastus-")
    assert re.fullmatch(r"[A-Za-z][A-Za-z0-9-]{0,21}[A-Za-z0-9]", n["grafana"]), n["grafana"]
    assert re.fullmatch(r"[A-Za-z0-9-]+", n["workspace"]) and len(n["workspace"]) <= 44


def test_data_collection_like_microsoft_s_template(plan):
    dcr = monitoring.dcr_args(plan, "AMW-ID", "DCE-ID")
    assert dcr["data_collection_endpoint_id"] == "DCE-ID" and dcr["kind"] == "Linux"
    assert dcr["data_sources"]["prometheus_forwarder"][0]["streams"] == ["Microsoft-PrometheusMetrics"]
    assert dcr["destinations"]["monitoring_accounts"] == [{"account_resource_id": "AMW-ID", "name": "MonitoringAccount1"}]
    assert dcr["data_flows"] == [{"streams": ["Microsoft-PrometheusMetrics"], "destinations": ["MonitoringAccount1"]}]
    dcra = monitoring.dcra_args(plan, "CLUSTER-ID", "DCR-ID")
    assert dcra["resource_uri"] == "CLUSTER-ID" and dcra["data_collection_rule_id"] == "DCR-ID"


def test_rule_group_and_action_group(plan):
    group = monitoring.rule_group_args(plan, "AMW-ID", "CLUSTER-ID", "AG-ID")
    assert group["scopes"] == ["AMW-ID", "CLUSTER-ID"] and group["cluster_name"] == plan.settings.cluster_name
    assert group["interval"] == "PT1M" and len(group["rules"]) <= 20          # Azure's limit per group
    for rule in group["rules"]:
        assert re.fullmatch(r"PT\d+M", rule["for_"]) and rule["severity"] in (0, 2)
        assert rule["actions"] == [{"action_group_id": "AG-ID"}]
    assert "actions" not in monitoring.rule_group_args(plan, "AMW-ID", "CLUSTER-ID")["rules"][0]
    assert monitoring.action_group_args(plan) is None                                   # no receivers: none
    p = plan_of(secrets=frozenset({"apiKeys", "alertWebhookUrl"}),
                observability={"alerts": {"actionGroupEmails": ["a@example.com"]}})
    ag = monitoring.action_group_args(p, "https://x.example/h?sig=1")
    assert len(ag["group_short_name"]) <= 12 and ag["location"] == "Global"
    assert ag["email_receivers"][0]["email_address"] == "a@example.com"
    assert ag["webhook_receivers"][0]["service_uri"] == "https://x.example/h?sig=1"
    # the files `plan --manifests` writes carry a placeholder: the secret is never known offline
    assert monitoring.action_group_args(p)["webhook_receivers"][0]["service_uri"] == "${ALERT_WEBHOOK_URL}"
    only_webhook = plan_of(secrets=frozenset({"apiKeys", "alertWebhookUrl"}))
    assert monitoring.action_group_args(only_webhook)["email_receivers"] == []
    off = plan_of(observability={"alerts": {"enabled": False, "actionGroupEmails": ["a@example.com"]}})
    assert monitoring.rule_group_args(off, "A", "C") is None and monitoring.action_group_args(off) is None


def test_grafana_and_role_assignments(plan):
    g = monitoring.grafana_args(plan, "AMW-ID")
    assert g["sku"] == {"name": "Standard"} and g["identity"] == {"type": "SystemAssigned"}
    assert g["properties"]["grafana_integrations"]["azure_monitor_workspace_integrations"] == [
        {"azure_monitor_workspace_resource_id": "AMW-ID"}]
    roles = dict(monitoring.role_assignments(plan, ROLE, "AMW-ID", "GRAFANA-ID", "GRAFANA-PRINCIPAL", "ME"))
    reader = roles["grafana-reads-amw"]
    assert reader["scope"] == "AMW-ID" and reader["principal_type"] == "ServicePrincipal"
    assert reader["role_definition_id"].endswith("/b0d8363b-8ddd-447d-831f-62ca05bff136")
    assert roles["grafana-admin-deployer"]["principal_type"] == "User"        # the SDK would default to User anyway
    group = "11111111-2222-3333-4444-555555555555"
    with_groups = plan_of(cluster={"apiServerAuthorizedIpRanges": ["203.0.113.0/24"], "azureRbac": True,
                                   "adminGroupObjectIds": [group]},
                          observability={"grafana": {"deployerPrincipalType": "ServicePrincipal"}})
    roles = dict(monitoring.role_assignments(with_groups, ROLE, "A", "G", "P", "ME"))
    assert roles["grafana-admin-group-0"]["principal_id"] == group and roles["grafana-admin-group-0"]["principal_type"] == "Group"
    assert roles["grafana-admin-deployer"]["principal_type"] == "ServicePrincipal"
    no_grafana = plan_of(observability={"grafana": False})
    assert monitoring.grafana_args(no_grafana, "A") is None and monitoring.role_assignments(no_grafana, ROLE, "A", "G", "P", "M") == []


# ---------------------------------------------------------------------------------------------------------
# Files for `plan --manifests`

def test_write_files(plan, tmp_path):
    written = monitoring.write_files(plan, tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in written] == [
        "observability/grafana-dashboard.json", "observability/prometheus-alert-rules.yml"]
    assert json.loads(written[0].read_text()) == monitoring.dashboard(plan)
    assert yaml.safe_load(written[1].read_text()) == monitoring.prometheus_rules(plan)
    assert monitoring.write_files(plan_of(observability={"enabled": False}), tmp_path / "off") == []
