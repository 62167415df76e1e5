"""The authenticated gateway in front of a stack's models: nginx configuration and its Kubernetes objects.

KAITO's inference endpoint has no authentication. The gateway gives a stack one address where each model is
served at ``/<model-name>/v1/...`` (so an OpenAI client uses ``base_url=http://<address>/<model-name>/v1``),
checks ``Authorization: Bearer <key>`` against the stack's API keys, load-balances a model's replicas with
passive health checks, streams responses unbuffered, limits request size and per-key request rate, and logs
without secrets. ``GET /v1/models`` at the root lists the stack's models; ``/_replicas/<workspace>/v1/...``
reaches one replica (for the post-deploy check and on-call).

Everything here is pure: ``render_nginx_conf`` is what the tests run under a real nginx.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Iterable

from infra.plan import Plan

NAME = "kaito-gateway"
IMAGE = "nginx:1.28.0-alpine"          # the official image, pinned
LISTEN_PORT = 8080                     # API traffic (non-root: no port < 1024)
HEALTH_PORT = 8081                     # probes, unauthenticated, never exposed by the Service
CONF_DIR = "/etc/kaito-aks"
KEYS_FILE = "api-keys.map"
UID = 101                              # the nginx user of the official image


@dataclass(frozen=True)
class Route:
    """A path prefix and the upstream servers (host:port) behind it."""

    name: str                          # path segment: /<name>/v1/...
    servers: tuple[str, ...]
    served_model: str                  # what the upstream answers to (informational, in /v1/models)


@dataclass(frozen=True)
class GatewayLimits:
    rate_limit_per_minute: int = 600
    max_body_kib: int = 1024
    read_timeout_seconds: int = 600
    connect_timeout_seconds: int = 5
    max_fails: int = 1                 # passive health check: failures before a replica is skipped...
    fail_timeout_seconds: int = 10     # ...for this long


def model_prefix(model_name: str) -> str:
    """Where a model lives on the gateway: OpenAI clients use base_url = <gateway><prefix>/v1."""
    return f"/{model_name}"


def replica_prefix(workspace: str) -> str:
    """One replica, bypassing the load balancing (the post-deploy check, on-call)."""
    return f"/_replicas/{workspace}"


def pod_labels() -> dict[str, str]:
    return {"app.kubernetes.io/name": NAME, "app.kubernetes.io/managed-by": "kaito-aks"}


def key_id(key: str) -> str:
    """A non-secret name for a key (logs, rate-limit buckets): the first 12 hex digits of its SHA-256."""
    return "k" + hashlib.sha256(key.encode()).hexdigest()[:12]


def _error_body(message: str, type_: str, code: str) -> str:
    return json.dumps({"error": {"message": message, "type": type_, "param": None, "code": code}})


def _nginx_str(text: str) -> str:
    """Quote a string for an nginx directive argument."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def render_keys_map(keys: Iterable[str]) -> str:
    """The `map` entries that turn a valid Authorization header into the key's id. Secret: mount from a Secret."""
    lines = []
    for key in keys:
        key = key.strip()
        if not key:
            continue
        if any(c in key for c in "\"'\\;{} \t\n"):
            raise ValueError("API keys may not contain quotes, backslashes, ';', braces or whitespace")
        lines.append(f'"Bearer {key}" {key_id(key)};')
    if not lines:
        raise ValueError("no API keys: set kaito-aks:apiKeys")
    return "\n".join(lines) + "\n"


def parse_api_keys(raw: Any) -> list[str]:
    """The apiKeys setting: a JSON/YAML list of strings, or one string of comma/newline-separated keys."""
    if isinstance(raw, str):
        text = raw.strip()
        if text.startswith("["):
            raw = json.loads(text)
        else:
            raw = [k for part in text.splitlines() for k in part.split(",")]
    keys = [str(k).strip() for k in raw if str(k).strip()]
    if not keys:
        raise ValueError("kaito-aks:apiKeys is empty; set at least one key")
    return keys


def models_document(routes: Iterable[Route]) -> str:
    return json.dumps({
        "object": "list",
        "data": [{"id": r.name, "object": "model", "owned_by": "kaito-aks", "served_model": r.served_model}
                 for r in routes],
    })


def render_nginx_conf(
    routes: list[Route],
    replica_routes: list[Route],
    keys_map_path: str,
    limits: GatewayLimits = GatewayLimits(),
    listen: str = str(LISTEN_PORT),
    health_listen: str = str(HEALTH_PORT),
    temp_dir: str = "/tmp",
    pid_path: str = "/tmp/nginx.pid",
    access_log: str = "/dev/stdout",
    error_log: str = "/dev/stderr",
) -> str:
    """nginx.conf for the gateway. Works on nginx 1.22 (Debian 12, the tests) and 1.28 (the image)."""
    burst = max(1, limits.rate_limit_per_minute // 6)
    unauthorized = _error_body("Missing or invalid API key: send 'Authorization: Bearer <key>'.",
                               "invalid_request_error", "invalid_api_key")
    not_found = _error_body("Unknown path. Models are served at /<model>/v1/...; GET /v1/models lists them.",
                            "invalid_request_error", "model_not_found")
    too_large = _error_body(f"Request body larger than {limits.max_body_kib} KiB.", "invalid_request_error",
                            "request_too_large")
    rate_limited = _error_body("Rate limit exceeded for this API key.", "rate_limit_exceeded", "rate_limit_exceeded")
    unavailable = _error_body("The model is not reachable right now; retry later.", "server_error",
                              "model_unavailable")

    def upstream(prefix: str, route: Route) -> str:
        servers = "\n".join(
            f"        server {s} max_fails={limits.max_fails} fail_timeout={limits.fail_timeout_seconds}s;"
            for s in route.servers)
        return f"    upstream {prefix}_{_ident(route.name)} {{\n{servers}\n        keepalive 16;\n    }}\n"

    def location(path: str, upstream_name: str) -> str:
        return f"""        location {path} {{
            limit_req zone=per_key burst={burst} nodelay;
            proxy_pass http://{upstream_name}/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $proxy_host;
            proxy_set_header Authorization "";
            proxy_set_header X-Request-Id $request_id;
            proxy_buffering off;
            proxy_cache off;
            proxy_connect_timeout {limits.connect_timeout_seconds}s;
            proxy_send_timeout {limits.read_timeout_seconds}s;
            proxy_read_timeout {limits.read_timeout_seconds}s;
            proxy_next_upstream error timeout http_502 http_503 http_504;
            proxy_next_upstream_tries 3;
        }}
"""

    upstreams = "".join(upstream("model", r) for r in routes) + "".join(upstream("replica", r) for r in replica_routes)
    locations = "".join(location(f"{model_prefix(r.name)}/", f"model_{_ident(r.name)}") for r in routes)
    locations += "".join(location(f"{replica_prefix(r.name)}/", f"replica_{_ident(r.name)}") for r in replica_routes)
    return f"""# Generated by kaito-aks (infra/gateway.py). Do not edit: change the stack settings instead.
worker_processes auto;
pid {pid_path};
error_log {error_log} warn;

events {{
    worker_connections 2048;
}}

http {{
    server_tokens off;
    default_type application/json;
    client_body_temp_path {temp_dir}/client_body;
    proxy_temp_path {temp_dir}/proxy;
    fastcgi_temp_path {temp_dir}/fastcgi;
    uwsgi_temp_path {temp_dir}/uwsgi;
    scgi_temp_path {temp_dir}/scgi;

    # Authorization header -> key id; empty when absent or unknown. The map file is mounted from a Secret.
    map $http_authorization $api_key_id {{
        default "";
        include {keys_map_path};
    }}

    # No secrets in the access log: the key's id, never the header.
    log_format kaito_aks escape=json '{{"time":"$time_iso8601","client":"$remote_addr","key":"$api_key_id",'
        '"method":"$request_method","path":"$uri","status":$status,"bytes":$body_bytes_sent,'
        '"seconds":$request_time,"upstream":"$upstream_addr","upstream_status":"$upstream_status",'
        '"request_id":"$request_id"}}';
    access_log {access_log} kaito_aks;

    limit_req_zone $api_key_id zone=per_key:10m rate={limits.rate_limit_per_minute}r/m;
    limit_req_status 429;
    client_max_body_size {limits.max_body_kib}k;
    client_body_buffer_size {limits.max_body_kib}k;

{upstreams}
    server {{
        listen {listen};

        error_page 413 = @too_large;
        error_page 429 = @rate_limited;
        error_page 502 503 504 = @unavailable;

        if ($api_key_id = "") {{
            return 401 {_nginx_str(unauthorized)};
        }}

        location = /v1/models {{
            return 200 {_nginx_str(models_document(routes))};
        }}

{locations}
        location / {{
            return 404 {_nginx_str(not_found)};
        }}

        location @too_large {{ return 413 {_nginx_str(too_large)}; }}
        location @rate_limited {{ return 429 {_nginx_str(rate_limited)}; }}
        location @unavailable {{ return 503 {_nginx_str(unavailable)}; }}
    }}

    server {{
        listen {health_listen};
        access_log off;
        location = /healthz {{
            return 200 '{{"status":"ok"}}';
        }}
    }}
}}
"""


def _ident(name: str) -> str:
    return name.replace("-", "_").replace(".", "_")


# ---------------------------------------------------------------------------------------------------------
# Kubernetes objects

def routes_for(plan: Plan) -> tuple[list[Route], list[Route]]:
    """Model routes (balanced over replicas) and per-replica routes, from the plan's endpoint Services."""
    from infra.manifests import SERVICE_PORT, endpoint_service_name

    ns = plan.settings.namespace
    host = lambda r: f"{endpoint_service_name(r)}.{ns}.svc.cluster.local:{SERVICE_PORT}"
    models = [Route(name, tuple(host(r) for r in plan.replicas_of(name)), plan.replicas_of(name)[0].served_model)
              for name in plan.model_names]
    replicas = [Route(r.workspace, (host(r),), r.served_model) for r in plan.replicas]
    return models, replicas


def limits_for(plan: Plan) -> GatewayLimits:
    g = plan.settings.gateway
    return GatewayLimits(rate_limit_per_minute=g.rate_limit_per_minute, max_body_kib=g.max_body_kib,
                         read_timeout_seconds=g.read_timeout_seconds)


def nginx_conf_for(plan: Plan) -> str:
    models, replicas = routes_for(plan)
    return render_nginx_conf(models, replicas, f"{CONF_DIR}/keys/{KEYS_FILE}", limits_for(plan))


def config_map(plan: Plan) -> dict:
    return {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": f"{NAME}-conf", "namespace": plan.settings.namespace, "labels": pod_labels()},
        "data": {"nginx.conf": nginx_conf_for(plan)},
    }


def keys_secret(plan: Plan, keys_map: Any) -> dict:
    return {
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": f"{NAME}-keys", "namespace": plan.settings.namespace, "labels": pod_labels()},
        "stringData": {KEYS_FILE: keys_map},
    }


def deployment(plan: Plan, keys_checksum: Any = "") -> dict:
    """2+ nginx replicas, non-root, read-only root FS; a key or config change rolls them one at a time."""
    g = plan.settings.gateway
    conf_sha = hashlib.sha256(nginx_conf_for(plan).encode()).hexdigest()[:16]
    probe = {"httpGet": {"path": "/healthz", "port": HEALTH_PORT}, "periodSeconds": 5}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": NAME, "namespace": plan.settings.namespace, "labels": pod_labels()},
        "spec": {
            "replicas": g.replicas,
            "selector": {"matchLabels": pod_labels()},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": pod_labels(),
                             "annotations": {"kaito-aks/conf-sha256": conf_sha, "kaito-aks/keys-sha256": keys_checksum}},
                "spec": {
                    "automountServiceAccountToken": False,
                    "securityContext": {"runAsNonRoot": True, "runAsUser": UID, "runAsGroup": UID,
                                        "seccompProfile": {"type": "RuntimeDefault"}},
                    "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                                                   "whenUnsatisfiable": "ScheduleAnyway",
                                                   "labelSelector": {"matchLabels": pod_labels()}}],
                    "containers": [{
                        "name": "nginx",
                        "image": IMAGE,
                        "command": ["nginx", "-c", f"{CONF_DIR}/nginx.conf", "-g", "daemon off;"],
                        "ports": [{"name": "http", "containerPort": LISTEN_PORT},
                                  {"name": "health", "containerPort": HEALTH_PORT}],
                        "readinessProbe": probe,
                        "livenessProbe": {**probe, "failureThreshold": 3},
                        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"},
                                      "limits": {"cpu": "1", "memory": "256Mi"}},
                        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                            "capabilities": {"drop": ["ALL"]}},
                        "volumeMounts": [{"name": "conf", "mountPath": CONF_DIR, "readOnly": True},
                                         {"name": "keys", "mountPath": f"{CONF_DIR}/keys", "readOnly": True},
                                         {"name": "tmp", "mountPath": "/tmp"}],
                    }],
                    "volumes": [{"name": "conf", "configMap": {"name": f"{NAME}-conf"}},
                                {"name": "keys", "secret": {"secretName": f"{NAME}-keys"}},
                                {"name": "tmp", "emptyDir": {}}],
                },
            },
        },
    }


def service(plan: Plan) -> dict:
    from infra.manifests import load_balancer_annotations, load_balancer_spec

    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": NAME, "namespace": plan.settings.namespace, "labels": pod_labels(),
                     "annotations": {"pulumi.com/timeoutSeconds": "1200", **load_balancer_annotations(plan, suffix="")}},
        "spec": {**load_balancer_spec(plan), "selector": pod_labels(),
                 "ports": [{"name": "http", "port": 80, "targetPort": LISTEN_PORT, "protocol": "TCP"}]},
    }


def network_policy(plan: Plan) -> dict:
    from infra.manifests import allowed_source_ranges

    ranges = allowed_source_ranges(plan) or ("0.0.0.0/0",)
    return {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": f"{NAME}-ingress", "namespace": plan.settings.namespace, "labels": pod_labels()},
        "spec": {"podSelector": {"matchLabels": pod_labels()}, "policyTypes": ["Ingress"],
                 "ingress": [{"from": [{"ipBlock": {"cidr": c}} for c in ranges],
                              "ports": [{"protocol": "TCP", "port": LISTEN_PORT}]}]},
    }


def disruption_budget(plan: Plan) -> dict:
    return {
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": NAME, "namespace": plan.settings.namespace, "labels": pod_labels()},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": pod_labels()}},
    }


def objects(plan: Plan, keys_map: Any) -> list[dict]:
    return [config_map(plan), keys_secret(plan, keys_map), deployment(plan), disruption_budget(plan),
            service(plan), network_policy(plan)]


def namespace_guardrails(plan: Plan) -> list[dict]:
    """The seed's "resource quotas": GPUs capped at what the plan deploys, load balancers at what it exposes,
    and default requests for containers that set none (requests only: a default *limit* could OOM-kill vLLM)."""
    ns = plan.settings.namespace
    gpus = sum(r.nodes * r.gpus_per_node for r in plan.replicas)
    lbs = 1 if plan.settings.gateway_enabled else len(plan.replicas)
    return [
        {"apiVersion": "v1", "kind": "ResourceQuota",
         "metadata": {"name": "kaito-aks-quota", "namespace": ns, "labels": {"app.kubernetes.io/managed-by": "kaito-aks"}},
         "spec": {"hard": {"requests.nvidia.com/gpu": str(gpus), "services.loadbalancers": str(lbs),
                           "pods": str(20 + 4 * len(plan.replicas))}}},
        {"apiVersion": "v1", "kind": "LimitRange",
         "metadata": {"name": "kaito-aks-defaults", "namespace": ns, "labels": {"app.kubernetes.io/managed-by": "kaito-aks"}},
         "spec": {"limits": [{"type": "Container", "defaultRequest": {"cpu": "100m", "memory": "128Mi"}}]}},
    ]
