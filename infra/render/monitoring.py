"""Observability of a stack, decided offline: what is scraped, the dashboard, the alert rules, the Azure resources.

Everything here is a pure function of the Plan (and, for Azure ids, of values passed in), like ``infra.render``
and ``infra.render.azure_args``: ``components/observability.py`` turns the results into resources unchanged, and
``python -m infra plan --manifests`` writes them as files. Nothing here talks to Azure, a cluster or Pulumi.

The loop (README "Observability"):

- **Scraping.** AKS managed Prometheus (``azureMonitorProfile.metrics``) sends to an Azure Monitor workspace
  through the data collection endpoint, rule and association of Microsoft's "enable Prometheus" templates. Its
  scraper reads ``azmonitoring.coreos.com/v1`` custom resources: one **ServiceMonitor per model** on kaito-aks's own
  endpoint Services (port ``http``, 80 -> 5000: vLLM serves ``/metrics`` on its API port), and one **PodMonitor**
  for the gateway's two metrics sidecars. A ServiceMonitor and not a PodMonitor for the models because KAITO 0.6's
  inference container port has no name (a PodMonitor's ``port`` needs one; ``portNumber`` needs the 2025-07 CRD),
  because the endpoint Service selects exactly the pod that serves (the leader of a multi-node group: Ray workers
  have no ``/metrics``), and because the Service carries kaito-aks's own labels on every KAITO version. Relabelings
  give every model series ``model`` (the stack's model name) and ``workspace`` (the replica), and ``job``
  ``kaito-model`` / ``kaito-gateway``. NetworkPolicies admit the managed scraper (``ama-metrics`` pods in
  kube-system) to those ports and nothing else.
- **Names.** vLLM renamed metrics across releases; :func:`vllm_metric` names every vLLM metric from
  ``infra/catalog/vllm_metrics.yaml`` for the vLLM version of the stack's KAITO release.
- **Dashboard and alerts as data.** :func:`dashboard` (Grafana JSON) and :func:`alert_rules` (Prometheus rules,
  also as Azure Prometheus rule groups) name metrics only through :func:`vllm_metric` and this module's constants.
"""
from __future__ import annotations

import functools
import json
import pathlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import yaml

from infra.catalog import CATALOG_DIR
from infra.plan import Plan, ReplicaPlan
from infra.render import gateway_objects, nginx
from infra.render.common import INFERENCE_PORT
from infra.render.model_objects import model_labels

METRICS_FILE = CATALOG_DIR / "vllm_metrics.yaml"


# ---------------------------------------------------------------------------------------------------------
# vLLM metric names per vLLM version

class UnknownVllmMetricError(KeyError):
    """A metric key that isn't in vllm_metrics.yaml, or a vLLM version older than every entry."""


@functools.cache
def _metrics_catalog() -> dict:
    return yaml.safe_load(METRICS_FILE.read_text())


def version_tuple(version: str) -> tuple[int, ...]:
    """'0.10.1.1' -> (0, 10, 1, 1); local suffixes ('0.32.0+cpu') are ignored."""
    core = re.match(r"\d+(?:\.\d+)*", version)
    if not core:
        raise ValueError(f"{version!r} is not a vLLM version")
    return tuple(int(p) for p in core.group(0).split("."))


def vllm_metric_keys() -> tuple[str, ...]:
    return tuple(_metrics_catalog()["metrics"])


def vllm_metric(version: str, key: str) -> str:
    """The name vLLM ``version`` exposes for the metric ``key`` (e.g. ``kv_cache_usage``): the entry of
    vllm_metrics.yaml with the highest ``since`` not above ``version``. Histograms: the family name (add _bucket)."""
    entry = _metrics_catalog()["metrics"].get(key)
    if entry is None:
        raise UnknownVllmMetricError(f"no vLLM metric {key!r} in {METRICS_FILE.name} "
                                     f"(known: {', '.join(vllm_metric_keys())})")
    v = version_tuple(version)
    candidates = [n for n in entry["names"] if version_tuple(n["since"]) <= v]
    if not candidates:
        raise UnknownVllmMetricError(f"vLLM {version} is older than every name of {key!r} in {METRICS_FILE.name}")
    return max(candidates, key=lambda n: version_tuple(n["since"]))["name"]


def vllm_metric_type(key: str) -> str:
    return _metrics_catalog()["metrics"][key]["type"]


def exposed_families(version: str) -> frozenset[str] | None:
    """The metric families (as scraped) vllm_metrics.yaml records for an inspected vLLM version; None if not
    inspected."""
    names = _metrics_catalog()["exposed"].get(version)
    return frozenset(names) if names is not None else None


def vllm_version(plan: Plan) -> str:
    """The vLLM version the stack's KAITO release runs (its preset images' pin, infra/catalog/kaito-*.yaml)."""
    assert plan.release is not None, "a plan from build_plan knows its KAITO release"
    return plan.release.vllm_version


# ---------------------------------------------------------------------------------------------------------
# What every series of ours is labelled with (the monitors' relabelings)

MODEL_JOB = "kaito-model"
GATEWAY_JOB = "kaito-gateway"
KSM_WORKSPACE_LABEL = "label_kaito_aks_workspace"   # kube-state-metrics' name for the node label kaito-aks/workspace
NODE_LABELS_ALLOWLIST = "nodes=[kaito-aks/workspace]"   # kube-state-metrics --metric-labels-allowlist
MONITOR_API = "azmonitoring.coreos.com/v1"               # what AKS managed Prometheus reads (not monitoring.coreos.com)
SCRAPE_INTERVAL = "30s"
# Microsoft's pod/service monitor templates: "so that the metrics don't get dropped" by the ingestion pipeline
MONITOR_LIMITS = {"labelLimit": 63, "labelNameLengthLimit": 511, "labelValueLengthLimit": 1023}
# The managed scraper: Deployment ama-metrics in kube-system (Azure/prometheus-collector otelcollector/deploy/
# addon-chart/.../ama-metrics-deployment.yaml: pod labels rsName: ama-metrics, kubernetes.azure.com/managedby: aks);
# the target allocator hands ServiceMonitor/PodMonitor targets to these pods. Not hostNetwork: NetworkPolicy applies.
SCRAPER_NAMESPACE = "kube-system"
SCRAPER_POD_LABELS = {"rsName": "ama-metrics", "kubernetes.azure.com/managedby": "aks"}
MANAGED_BY = {"app.kubernetes.io/managed-by": "kaito-aks"}


def meta_label(kind: str, label: str) -> str:
    """Prometheus' Kubernetes discovery label for an object label: ('service', 'kaito-aks/model') ->
    '__meta_kubernetes_service_label_kaito_aks_model'."""
    return f"__meta_kubernetes_{kind}_label_{re.sub(r'[^a-zA-Z0-9_]', '_', label)}"


def model_relabelings() -> list[dict]:
    """ServiceMonitor relabelings (prometheus-operator RelabelConfig): model and workspace from the endpoint
    Service's own labels (infra.render.model_objects.model_labels), and one job name for every model target."""
    return [
        {"sourceLabels": [meta_label("service", "kaito-aks/model")], "targetLabel": "model", "action": "replace"},
        {"sourceLabels": [meta_label("service", "kaito-aks/workspace")], "targetLabel": "workspace",
         "action": "replace"},
        {"targetLabel": "job", "replacement": MODEL_JOB, "action": "replace"},
    ]


def gateway_relabelings() -> list[dict]:
    return [{"targetLabel": "job", "replacement": GATEWAY_JOB, "action": "replace"}]


def model_selector(extra: str = "") -> str:
    """The label matchers of every model series (``extra``: more matchers, e.g. the dashboard's variables)."""
    return "{" + f'job="{MODEL_JOB}"' + (f", {extra}" if extra else "") + "}"


def gateway_selector(extra: str = "") -> str:
    return "{" + f'job="{GATEWAY_JOB}"' + (f", {extra}" if extra else "") + "}"


# ---------------------------------------------------------------------------------------------------------
# Kubernetes objects: what managed Prometheus scrapes, and the NetworkPolicies that let only it in

def service_monitor(plan: Plan, model_name: str) -> dict:
    """One per model: its replicas' endpoint Services (label kaito-aks/model), port `http`, path /metrics."""

    first = plan.replicas_of(model_name)[0]
    return {
        "apiVersion": MONITOR_API,
        "kind": "ServiceMonitor",
        "metadata": {"name": f"{model_name}-vllm", "namespace": plan.settings.namespace,
                     "labels": {**MANAGED_BY, "kaito-aks/model": model_name}},
        "spec": {
            **MONITOR_LIMITS,
            "selector": {"matchLabels": {"kaito-aks/model": model_labels(first)["kaito-aks/model"],
                                         **MANAGED_BY}},
            "namespaceSelector": {"matchNames": [plan.settings.namespace]},
            "endpoints": [{"port": "http", "path": "/metrics", "scheme": "http", "interval": SCRAPE_INTERVAL,
                           "relabelings": model_relabelings()}],
        },
    }


def gateway_pod_monitor(plan: Plan) -> dict:
    """The gateway pods' two sidecars: nginx-prometheus-exporter and mtail (infra/render/gateway_objects.py)."""
    endpoint = lambda port: {"port": port, "path": "/metrics", "scheme": "http", "interval": SCRAPE_INTERVAL,
                             "relabelings": gateway_relabelings()}
    return {
        "apiVersion": MONITOR_API,
        "kind": "PodMonitor",
        "metadata": {"name": gateway_objects.NAME, "namespace": plan.settings.namespace,
                     "labels": gateway_objects.pod_labels()},
        "spec": {
            **MONITOR_LIMITS,
            "selector": {"matchLabels": gateway_objects.pod_labels()},
            "namespaceSelector": {"matchNames": [plan.settings.namespace]},
            "podMetricsEndpoints": [endpoint("nginx-metrics"), endpoint("log-metrics")],
        },
    }


def _scraper_peer() -> dict:
    # one peer: namespace AND pod selector (two peers would admit any kube-system pod, or any ama-metrics pod)
    return {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": SCRAPER_NAMESPACE}},
            "podSelector": {"matchLabels": dict(SCRAPER_POD_LABELS)}}


def model_scrape_network_policy(plan: Plan) -> dict:
    """The managed scraper may reach the inference pods' port 5000 (vLLM serves /metrics on its API port, so a
    NetworkPolicy can't narrow it to the path): the default-deny of the namespace stays for everyone else."""

    return {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "kaito-aks-metrics-models", "namespace": plan.settings.namespace,
                     "labels": {**MANAGED_BY}},
        "spec": {
            "podSelector": {"matchExpressions": [{"key": "kaito.sh/workspace", "operator": "In",
                                                  "values": [r.workspace for r in plan.replicas]}]},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [_scraper_peer()], "ports": [{"protocol": "TCP", "port": INFERENCE_PORT}]}],
        },
    }


def gateway_scrape_network_policy(plan: Plan) -> dict:
    """The managed scraper may reach the gateway's metrics sidecars; nobody else may (stub_status and the syslog
    port listen on the pod's loopback only)."""
    return {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": f"{gateway_objects.NAME}-metrics", "namespace": plan.settings.namespace,
                     "labels": gateway_objects.pod_labels()},
        "spec": {
            "podSelector": {"matchLabels": gateway_objects.pod_labels()},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [_scraper_peer()],
                         "ports": [{"protocol": "TCP", "port": gateway_objects.EXPORTER_PORT},
                                   {"protocol": "TCP", "port": gateway_objects.MTAIL_PORT}]}],
        },
    }


def kubernetes_objects(plan: Plan) -> list[dict]:
    """The stack's monitoring objects, in apply order (after the models and the gateway); empty when off."""
    if not plan.settings.observability_enabled:
        return []
    objects = [model_scrape_network_policy(plan)]
    objects += [service_monitor(plan, name) for name in plan.model_names]
    if plan.settings.gateway_enabled:
        objects += [gateway_scrape_network_policy(plan), gateway_pod_monitor(plan)]
    return objects


# ---------------------------------------------------------------------------------------------------------
# Queries shared by the dashboard and the alerts

def _quantile(q: float, family: str, selector: str, window: str, by: str = "model, workspace") -> str:
    return f"histogram_quantile({q}, sum by (le, {by}) (rate({family}_bucket{selector}[{window}])))"


def gpu_nodes_ready_query(workspace_matcher: str = "") -> str:
    """Ready GPU nodes per workspace: kube-state-metrics' Ready condition joined to the node label kaito-aks/
    workspace (allow-listed for kube-state-metrics by :data:`NODE_LABELS_ALLOWLIST`), renamed ``workspace``."""
    extra = f", {KSM_WORKSPACE_LABEL}=~\"{workspace_matcher}\"" if workspace_matcher else ""
    labels = f"kube_node_labels{{{KSM_WORKSPACE_LABEL}!=\"\"{extra}}}"
    joined = (f"kube_node_status_condition{{condition=\"Ready\", status=\"true\"}} * on (node) group_left "
              f"({KSM_WORKSPACE_LABEL}) max by (node, {KSM_WORKSPACE_LABEL}) ({labels})")
    return f"label_replace({joined}, \"workspace\", \"$1\", \"{KSM_WORKSPACE_LABEL}\", \"(.*)\")"


def gpu_nodes_query(workspace_matcher: str = "") -> str:
    extra = f", {KSM_WORKSPACE_LABEL}=~\"{workspace_matcher}\"" if workspace_matcher else ""
    return (f"label_replace(max by (node, {KSM_WORKSPACE_LABEL}) "
            f"(kube_node_labels{{{KSM_WORKSPACE_LABEL}!=\"\"{extra}}}), "
            f"\"workspace\", \"$1\", \"{KSM_WORKSPACE_LABEL}\", \"(.*)\")")


# ---------------------------------------------------------------------------------------------------------
# The Grafana dashboard

DASHBOARD_UID = "kaito-aks"
RATE = "$__rate_interval"      # Grafana's macro; tests substitute a window


@dataclass(frozen=True)
class Target:
    expr: str
    legend: str


@dataclass(frozen=True)
class Panel:
    title: str
    unit: str
    targets: tuple[Target, ...]
    description: str = ""
    kind: str = "timeseries"


def dashboard_panels(plan: Plan, version: str | None = None) -> list[tuple[str, list[Panel]]]:
    """(row title, panels) for the stack: models (per model and replica), the gateway (when on), GPU nodes."""
    v = version or vllm_version(plan)
    m = lambda key: vllm_metric(v, key)
    sel = model_selector('model=~"$model", workspace=~"$workspace"')
    per = "model, workspace"
    rate = lambda key, extra_sel=sel: f"sum by ({per}) (rate({m(key)}{extra_sel}[{RATE}]))"
    legend = "{{workspace}}"
    models = [
        Panel("Requests finished/s", "reqps", (Target(rate("requests_finished"), legend),),
              "Finished requests per replica (every finished_reason: stop, length, abort)."),
        Panel("Time to first token (p50, p95)", "s",
              (Target(_quantile(0.5, m("time_to_first_token"), sel, RATE), f"p50 {legend}"),
               Target(_quantile(0.95, m("time_to_first_token"), sel, RATE), f"p95 {legend}")),
              "Queueing plus prefill; the TTFT alert fires on the p95."),
        Panel("Time per output token (p50, p95)", "s",
              (Target(_quantile(0.5, m("time_per_output_token"), sel, RATE), f"p50 {legend}"),
               Target(_quantile(0.95, m("time_per_output_token"), sel, RATE), f"p95 {legend}")),
              f"Decode speed ({m('time_per_output_token')} in vLLM {v})."),
        Panel("Tokens/s (generated, prompt)", "short",
              (Target(rate("generation_tokens"), f"generated {legend}"),
               Target(rate("prompt_tokens"), f"prompt {legend}"))),
        Panel("Queue depth (waiting, running)", "short",
              (Target(f"sum by ({per}) ({m('requests_waiting')}{sel})", f"waiting {legend}"),
               Target(f"sum by ({per}) ({m('requests_running')}{sel})", f"running {legend}")),
              "Waiting requests grow when a replica is saturated; the queue-depth alert fires on them."),
        Panel("KV cache in use", "percentunit",
              (Target(f"max by ({per}) ({m('kv_cache_usage')}{sel})", legend),),
              f"{m('kv_cache_usage')} (vLLM {v}); near 1, requests are preempted and queue."),
        Panel("End-to-end latency p95", "s",
              (Target(_quantile(0.95, m("e2e_latency"), sel, RATE), legend),)),
        Panel("Preemptions/s", "short", (Target(rate("preemptions"), legend),),
              "Requests evicted from the KV cache (recomputed later): the cache is too small for the load."),
        Panel("Replicas up (scraped)", "short",
              (Target(f"max by ({per}) (up{sel})", legend),),
              "1: managed Prometheus scrapes the replica's /metrics; 0 or no line: the replica is down."),
    ]
    rows: list[tuple[str, list[Panel]]] = [("Models: per model and replica", models)]
    if plan.settings.gateway_enabled:
        g = nginx.REQUESTS_METRIC
        gsel = lambda extra="": gateway_selector(extra)
        s4xx, s429, s5xx = gsel('status=~"4.."'), gsel('status="429"'), gsel('status=~"5.."')
        rows.append(("Gateway", [
            Panel("Gateway requests/s by status", "reqps",
                  (Target(f"sum by (status) (rate({g}{gsel()}[{RATE}]))", "{{status}}"),)),
            Panel("Gateway 4xx/s by API key id", "reqps",
                  (Target(f"sum by (key, status) (rate({g}{s4xx}[{RATE}]))",
                          "{{key}} {{status}}"),),
                  "key: the key's id (`python -m infra gateway-secret` names ids); '-' is no valid key (401)."),
            Panel("Gateway 429/s by API key id", "reqps",
                  (Target(f"sum by (key) (rate({g}{s429}[{RATE}]))", "{{key}}"),),
                  "Rate-limited requests: per key (gateway.rateLimitPerMinute), or '-' for failed authentication."),
            Panel("Gateway 5xx/s by API key id and route", "reqps",
                  (Target(f"sum by (key, route, status) (rate({g}{s5xx}[{RATE}]))",
                          "{{route}} {{key}} {{status}}"),),
                  "503: no replica of the route answered (the model-down alerts say which)."),
            Panel("Gateway connections (nginx)", "short",
                  (Target(f"sum(nginx_connections_active{gsel()})", "active"),
                   Target(f"sum(rate(nginx_http_requests_total{gsel()}[{RATE}]))", "requests/s"),
                   Target(f"sum(nginx_up{gsel()})", "nginx up (pods)"))),
        ]))
    rows.append(("GPU nodes", [
        Panel("GPU pool nodes ready", "short",
              (Target(f"sum by (workspace) ({gpu_nodes_ready_query('$workspace')})", "ready {{workspace}}"),
               Target(f"count by (workspace) ({gpu_nodes_query('$workspace')})", "nodes {{workspace}}")),
              "Nodes of each replica's GPU pool (label kaito-aks/workspace) and how many are Ready."),
    ]))
    return rows


def dashboard(plan: Plan, version: str | None = None) -> dict:
    """The stack's Grafana dashboard (classic JSON model, schemaVersion 39), data source chosen by a variable (Managed
    Grafana names the Azure Monitor workspace's Prometheus data source itself)."""
    v = version or vllm_version(plan)
    panels: list[dict] = []
    y, next_id = 0, 1
    for row_title, row_panels in dashboard_panels(plan, v):
        panels.append({"id": next_id, "type": "row", "title": row_title, "collapsed": False,
                       "gridPos": {"x": 0, "y": y, "w": 24, "h": 1}, "panels": []})
        next_id, y = next_id + 1, y + 1
        for index, p in enumerate(row_panels):
            x = (index % 3) * 8
            if index and index % 3 == 0:
                y += 8
            panels.append({
                "id": next_id, "type": p.kind, "title": p.title, "description": p.description,
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "gridPos": {"x": x, "y": y, "w": 8, "h": 8},
                "fieldConfig": {"defaults": {"unit": p.unit}, "overrides": []},
                "options": {"legend": {"showLegend": True, "displayMode": "list", "placement": "bottom"},
                            "tooltip": {"mode": "multi"}},
                "targets": [{"refId": chr(ord("A") + i), "expr": t.expr, "legendFormat": t.legend,
                             "datasource": {"type": "prometheus", "uid": "${datasource}"}}
                            for i, t in enumerate(p.targets)],
            })
            next_id += 1
        y += 8
    query_var = lambda name, query, label: {
        "name": name, "label": label, "type": "query", "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "query": {"query": query, "refId": f"{name}-var"}, "definition": query, "refresh": 2, "multi": True,
        "includeAll": True, "allValue": ".*", "current": {"text": "All", "value": "$__all"}, "sort": 1}
    return {
        "id": None, "uid": DASHBOARD_UID, "title": f"kaito-aks: {plan.stack}",
        "description": f"Models, gateway and GPU nodes of stack {plan.stack} (KAITO {plan.kaito_version}, vLLM {v}); "
                       "generated by kaito-aks (infra/render/monitoring.py)",
        "tags": ["kaito-aks", "vllm", "kaito"], "timezone": "utc", "editable": True, "graphTooltip": 1,
        "time": {"from": "now-6h", "to": "now"}, "refresh": "1m", "schemaVersion": 39, "version": 1,
        "links": [], "annotations": {"list": []},
        "templating": {"list": [
            {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
             "current": {}, "hide": 0},
            query_var("model", f"label_values(up{model_selector()}, model)", "Model"),
            query_var("workspace", "label_values(up" + model_selector('model=~"$model"') + ", workspace)", "Replica"),
        ]},
        "panels": panels,
    }


def dashboard_queries(board: dict) -> list[tuple[str, str, str]]:
    """(panel title, refId, expression) of every query of a dashboard JSON."""
    return [(p["title"], t["refId"], t["expr"]) for p in board["panels"] if p["type"] != "row" for t in p["targets"]]


def as_promql(expr: str, window: str = "5m", model: str = ".*", workspace: str = ".*") -> str:
    """A dashboard query with Grafana's macro and variables filled in, as Prometheus evaluates it (tests)."""
    return (expr.replace("$__rate_interval", window).replace("$model", model).replace("$workspace", workspace))


# ---------------------------------------------------------------------------------------------------------
# Alert rules

Severity = Literal["critical", "warning"]
AZURE_SEVERITY: dict[Severity, int] = {"critical": 0, "warning": 2}   # Azure Monitor: Sev0 critical .. Sev4 verbose


@dataclass(frozen=True)
class AlertRule:
    """A Prometheus alerting rule. ``signal`` is the measured quantity (returns series whenever the metrics exist;
    the tests evaluate it against real servers); ``expr`` compares it with the stack's threshold. Annotations name
    labels only (``{{ $labels.x }}``), never ``$value`` or template functions: Azure and Prometheus render them
    alike, and the notification carries the value."""

    name: str
    signal: str
    expr: str
    for_minutes: int
    severity: Severity
    summary: str
    description: str

    @property
    def labels(self) -> dict[str, str]:
        return {"severity": self.severity, "source": "kaito-aks"}

    @property
    def annotations(self) -> dict[str, str]:
        return {"summary": self.summary, "description": self.description,
                "runbook": f"README.md, Observability: {self.name}"}


def _zero_for(labels_per_series: list[dict[str, str]]) -> str:
    """`or`-terms that give 0 for each expected label set: an absent series (no target at all) counts as down."""
    terms = []
    for labels in labels_per_series:
        term = "vector(0)"
        for name, value in labels.items():
            term = f'label_replace({term}, "{name}", "{value}", "", "")'
        terms.append(term)
    return " or ".join(terms)


def alert_rules(plan: Plan, version: str | None = None) -> list[AlertRule]:
    """The stack's alerts, thresholds from ``observability.alerts``; per model and replica where it matters."""
    a = plan.settings.observability.alerts
    v = version or vllm_version(plan)
    m = lambda key: vllm_metric(v, key)
    sel = model_selector()
    per = "model, workspace"
    models = [{"model": name} for name in plan.model_names]
    multi = [name for name in plan.model_names if len(plan.replicas_of(name)) > 1]
    rules = []
    down_signal = f"max by (model) (up{sel}) or {_zero_for(models)}"
    rules.append(AlertRule(
        "KaitoModelDown", down_signal, f"({down_signal}) == 0", a.model_down_minutes, "critical",
        "{{ $labels.model }}: no replica answers",
        "No replica of {{ $labels.model }} has served /metrics for " + f"{a.model_down_minutes} minutes: the model's "
        "endpoint answers 503 (gateway) or nothing. Check the Workspaces (kubectl get workspace -n "
        f"{plan.settings.namespace}), their pods' events and logs, and the GPU node alerts."))
    if multi:
        replicas = [{"model": r.model_name, "workspace": r.workspace} for r in plan.replicas if r.model_name in multi]
        multi_sel = model_selector('model=~"' + "|".join(multi) + '"')
        replica_signal = f"max by ({per}) (up{multi_sel}) or {_zero_for(replicas)}"
        rules.append(AlertRule(
            "KaitoModelReplicaDown", replica_signal, f"({replica_signal}) == 0", a.model_down_minutes, "warning",
            "{{ $labels.workspace }} ({{ $labels.model }}) is down",
            "Replica {{ $labels.workspace }} has not served /metrics for " + f"{a.model_down_minutes} minutes; the "
            "gateway routes around it, with less capacity. Check its Workspace, pod and GPU node."))
    queue = f"max by ({per}) ({m('requests_waiting')}{sel})"
    rules.append(AlertRule(
        "KaitoQueueDepthHigh", queue, f"{queue} > {a.queue_depth}", 10, "warning",
        f"{{{{ $labels.workspace }}}}: over {a.queue_depth} requests waiting",
        f"More than {a.queue_depth} requests have waited in {{{{ $labels.workspace }}}}'s queue for 10 minutes: the "
        "replica is saturated. Add replicas (models[].replicas), or lower the gateway's per-key rate limit."))
    kv = f"max by ({per}) ({m('kv_cache_usage')}{sel})"
    rules.append(AlertRule(
        "KaitoKvCacheNearFull", kv, f"{kv} > {a.kv_cache_usage}", 10, "warning",
        f"{{{{ $labels.workspace }}}}: KV cache over {a.kv_cache_usage:.0%} in use",
        f"{{{{ $labels.workspace }}}}'s KV cache has been over {a.kv_cache_usage:.0%} in use for 10 minutes: vLLM "
        "preempts and queues requests. Add replicas, lower maxModelLen, or use a larger GPU size."))
    ttft = _quantile(0.95, m("time_to_first_token"), sel, "10m")
    rules.append(AlertRule(
        "KaitoTimeToFirstTokenHigh", ttft, f"{ttft} > {a.ttft_p95_seconds:g}", 10, "warning",
        f"{{{{ $labels.workspace }}}}: p95 time to first token over {a.ttft_p95_seconds:g} s",
        f"The p95 time to first token of {{{{ $labels.workspace }}}} has been over {a.ttft_p95_seconds:g} s for 10 "
        "minutes (long prompts, queueing or preemption). Check the queue-depth and KV-cache panels; add replicas."))
    if plan.settings.gateway_enabled:
        g = nginx.REQUESTS_METRIC
        total = f"sum by (route) (rate({g}{gateway_selector()}[5m]))"
        s5xx = gateway_selector('status=~"5.."')
        errors = f"sum by (route) (rate({g}{s5xx}[5m]))"
        volume = f"sum by (route) (increase({g}{gateway_selector()}[5m]))"
        ratio = f"{errors} / {total}"
        rules.append(AlertRule(
            "KaitoGateway5xxHigh", ratio, f"({ratio}) > {a.gateway_5xx_ratio:g} and on (route) {volume} >= 10", 5,
            "critical", f"gateway route {{{{ $labels.route }}}}: over {a.gateway_5xx_ratio:.0%} 5xx",
            f"More than {a.gateway_5xx_ratio:.0%} of the gateway's responses on route {{{{ $labels.route }}}} (a "
            "model, or _replicas/<slot>) were 5xx for 5 minutes (at least 10 requests): 503 means no replica "
            "answered. Check the model-down alerts, then the gateway pods' logs."))
    ready = f"max by (node, workspace) ({gpu_nodes_ready_query()})"
    rules.append(AlertRule(
        "KaitoGpuNodeNotReady", ready, f"{ready} == 0", a.node_not_ready_minutes, "critical",
        "GPU node {{ $labels.node }} ({{ $labels.workspace }}) NotReady",
        f"A node of {{{{ $labels.workspace }}}}'s GPU pool has not been Ready for {a.node_not_ready_minutes} minutes: "
        "that replica is down. kubectl describe node {{ $labels.node }}; a spot node may have been evicted (AKS "
        "re-creates it); otherwise reimage or delete the node (AKS replaces it)."))
    return rules


RULE_GROUP_INTERVAL_MINUTES = 1


def prometheus_rules(plan: Plan, version: str | None = None) -> dict:
    """The alert rules as a Prometheus rule file (``promtool check rules`` / ``test rules``, or any Prometheus)."""
    return {"groups": [{
        "name": f"kaito-aks-{plan.stack}",
        "interval": f"{RULE_GROUP_INTERVAL_MINUTES}m",
        "rules": [{"alert": r.name, "expr": r.expr, "for": f"{r.for_minutes}m", "labels": r.labels,
                   "annotations": r.annotations} for r in alert_rules(plan, version)],
    }]}


# ---------------------------------------------------------------------------------------------------------
# Azure: the arguments of each resource (snake_case, as pulumi-azure-native takes them)

# Built-in role definitions (Azure RBAC built-in roles; Microsoft's FullAzureMonitorMetricsProfile templates)
MONITORING_DATA_READER = "b0d8363b-8ddd-447d-831f-62ca05bff136"   # Grafana's identity reads the AMW
GRAFANA_ADMIN = "22926164-76b3-42b3-bc55-97df8dab3e41"
GRAFANA_TOKEN_AUDIENCE = "https://dashboard.azure.com"           # Entra ID audience of Grafana's data-plane API


def _azure_name(text: str, limit: int) -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", text)[:limit].strip("-")


def azure_monitor_profile(plan: Plan) -> dict | None:
    """``ManagedCluster.azure_monitor_profile``: managed Prometheus, with kube-state-metrics keeping the GPU pools'
    node label (managed Prometheus drops every other object label; kube_node_labels and kube_node_status_condition
    are in its minimal ingestion profile). None when off."""
    if not plan.settings.observability_enabled:
        return None
    return {"metrics": {"enabled": True, "kube_state_metrics": {
        "metric_labels_allowlist": NODE_LABELS_ALLOWLIST, "metric_annotations_allow_list": ""}}}


def names(plan: Plan) -> dict[str, str]:
    """Azure resource names: those of Microsoft's "enable Prometheus" templates (MSProm-<region>-<cluster>, the
    DCE capped at 44 characters, the DCR at 64) and kaito-aks's own."""
    s = plan.settings
    location, cluster = s.cluster.location, s.cluster_name
    prom = f"MSProm-{location}-{cluster}"
    return {
        "workspace": _azure_name(f"amw-{cluster}", 44),
        "dce": prom[:44],
        "dcr": prom[:64],
        "dcra": prom,
        "grafana": _azure_name(f"amg-{cluster}", 23),
        "action_group": _azure_name(f"ag-{cluster}", 260),
        "rule_group": _azure_name(f"kaito-aks-{cluster}-alerts", 260),
    }


def workspace_args(plan: Plan) -> dict:
    s = plan.settings
    return {"azure_monitor_workspace_name": names(plan)["workspace"], "location": s.cluster.location,
            "tags": _tags(plan)}


def dce_args(plan: Plan) -> dict:
    return {"data_collection_endpoint_name": names(plan)["dce"], "location": plan.settings.cluster.location,
            "kind": "Linux", "description": "Managed Prometheus of kaito-aks stack " + plan.stack,
            "network_acls": {"public_network_access": "Enabled"}, "tags": _tags(plan)}


def dcr_args(plan: Plan, workspace_id: Any, dce_id: Any) -> dict:
    """What FullAzureMonitorMetricsProfile creates: Prometheus metrics forwarded to the Azure Monitor workspace."""
    return {
        "data_collection_rule_name": names(plan)["dcr"], "location": plan.settings.cluster.location, "kind": "Linux",
        "data_collection_endpoint_id": dce_id,
        "description": "DCR for Azure Monitor Metrics Profile (Managed Prometheus)",
        "data_sources": {"prometheus_forwarder": [{"name": "PrometheusDataSource",
                                                   "streams": ["Microsoft-PrometheusMetrics"],
                                                   "label_include_filter": {}}]},
        "destinations": {"monitoring_accounts": [{"account_resource_id": workspace_id, "name": "MonitoringAccount1"}]},
        "data_flows": [{"streams": ["Microsoft-PrometheusMetrics"], "destinations": ["MonitoringAccount1"]}],
        "tags": _tags(plan),
    }


def dcra_args(plan: Plan, cluster_id: Any, dcr_id: Any) -> dict:
    return {"association_name": names(plan)["dcra"], "resource_uri": cluster_id, "data_collection_rule_id": dcr_id,
            "description": "Association of data collection rule. Deleting this association will break the data "
                           "collection for this AKS Cluster."}


def grafana_args(plan: Plan, workspace_id: Any) -> dict | None:
    if not plan.settings.grafana_enabled:
        return None
    return {
        "workspace_name": names(plan)["grafana"], "location": plan.settings.cluster.location,
        "sku": {"name": "Standard"}, "identity": {"type": "SystemAssigned"},
        "properties": {"grafana_integrations": {"azure_monitor_workspace_integrations": [
            {"azure_monitor_workspace_resource_id": workspace_id}]},
            "public_network_access": "Enabled", "api_key": "Disabled"},
        "tags": _tags(plan),
    }


def grafana_admin_groups(plan: Plan) -> tuple[str, ...]:
    g = plan.settings.observability.grafana
    if g.admin_group_object_ids is not None:
        return g.admin_group_object_ids
    return plan.settings.cluster.admin_group_object_ids


def role_definition_id(subscription_id: str, role: str) -> str:
    return f"/subscriptions/{subscription_id}/providers/Microsoft.Authorization/roleDefinitions/{role}"


def role_assignments(plan: Plan, role: Callable[[str], Any], workspace_id: Any, grafana_id: Any,
                     grafana_principal_id: Any, deployer_object_id: Any) -> list[tuple[str, dict]]:
    """(name, args): Grafana's identity reads the workspace (Monitoring Data Reader); the identity running
    `pulumi up` (it uploads the dashboard) and the admin groups are Grafana Admins. ``role(guid)`` gives a role
    definition's id (:func:`role_definition_id` with the subscription; the subscription is an Output in a run)."""
    if not plan.settings.grafana_enabled:
        return []
    g = plan.settings.observability.grafana
    out = [("grafana-reads-amw", {"scope": workspace_id, "role_definition_id": role(MONITORING_DATA_READER),
                                  "principal_id": grafana_principal_id, "principal_type": "ServicePrincipal",
                                  "description": "Azure Managed Grafana reads the stack's Azure Monitor workspace"}),
           ("grafana-admin-deployer", {"scope": grafana_id, "role_definition_id": role(GRAFANA_ADMIN),
                                       "principal_id": deployer_object_id, "principal_type": g.deployer_principal_type,
                                       "description": "kaito-aks uploads the stack's dashboard"})]
    for index, group in enumerate(grafana_admin_groups(plan)):
        out.append((f"grafana-admin-group-{index}", {
            "scope": grafana_id, "role_definition_id": role(GRAFANA_ADMIN), "principal_id": group,
            "principal_type": "Group", "description": "kaito-aks admin group"}))
    return out


WEBHOOK_PLACEHOLDER = "${ALERT_WEBHOOK_URL}"   # in files written by `plan --manifests`: the secret is not known


def action_group_args(plan: Plan, webhook_url: Any = WEBHOOK_PLACEHOLDER) -> dict | None:
    """Who is notified: emails and/or a webhook (common alert schema). None without receivers (alerts still show
    in Azure Monitor). ``webhook_url`` is the secret ``alertWebhookUrl`` (a Pulumi secret Output in `pulumi up`)."""
    a = plan.settings.observability.alerts
    webhook = plan.settings.alert_webhook_set
    if not plan.settings.alerts_enabled or not (a.action_group_emails or webhook):
        return None
    args: dict = {"action_group_name": names(plan)["action_group"], "group_short_name": "kaito-aks",
                  "location": "Global", "enabled": True, "tags": _tags(plan),
                  "email_receivers": [{"name": f"email-{i}", "email_address": e, "use_common_alert_schema": True}
                                      for i, e in enumerate(a.action_group_emails)]}
    if webhook:
        args["webhook_receivers"] = [{"name": "webhook", "service_uri": webhook_url,
                                      "use_common_alert_schema": True}]
    return args


def rule_group_args(plan: Plan, workspace_id: Any, cluster_id: Any, action_group_id: Any = None,
                    version: str | None = None) -> dict | None:
    """The alerts as an Azure Prometheus rule group on the workspace, for this cluster's series."""
    if not plan.settings.alerts_enabled:
        return None
    actions = [{"action_group_id": action_group_id}] if action_group_id is not None else None
    rules = []
    for r in alert_rules(plan, version):
        rule: dict = {"alert": r.name, "expression": r.expr, "for_": f"PT{r.for_minutes}M",
                      "severity": AZURE_SEVERITY[r.severity], "labels": r.labels, "annotations": r.annotations,
                      "enabled": True,
                      "resolve_configuration": {"auto_resolved": True, "time_to_resolve": "PT10M"}}
        if actions:
            rule["actions"] = actions
        rules.append(rule)
    return {"rule_group_name": names(plan)["rule_group"], "location": plan.settings.cluster.location,
            "cluster_name": plan.settings.cluster_name, "scopes": [workspace_id, cluster_id],
            "interval": f"PT{RULE_GROUP_INTERVAL_MINUTES}M", "enabled": True,
            "description": f"kaito-aks alerts of stack {plan.stack} (README: Observability)", "rules": rules,
            "tags": _tags(plan)}


def _tags(plan: Plan) -> dict[str, str]:
    return {"managed-by": "kaito-aks", "stack": plan.stack}


# ---------------------------------------------------------------------------------------------------------
# Files for `plan --manifests`

FILES_DIR = "observability"     # a subdirectory: `kubectl apply -f DIR` (not -R) leaves it alone


def write_files(plan: Plan, directory: pathlib.Path) -> list[pathlib.Path]:
    """The dashboard (import it into any Grafana) and the alert rules (a Prometheus rule file), under
    ``DIR/observability/``; nothing when observability is off."""
    if not plan.settings.observability_enabled:
        return []
    out = directory / FILES_DIR
    out.mkdir(parents=True, exist_ok=True)
    board, rules = out / "grafana-dashboard.json", out / "prometheus-alert-rules.yml"
    board.write_text(json.dumps(dashboard(plan), indent=2) + "\n")
    rules.write_text(yaml.safe_dump(prometheus_rules(plan), sort_keys=False, width=120))
    return [board, rules]


def replica_labels(r: ReplicaPlan) -> dict[str, str]:
    """The labels the relabelings give a replica's series (tests and on-call queries)."""
    return {"job": MODEL_JOB, "model": r.model_name, "workspace": r.workspace}
