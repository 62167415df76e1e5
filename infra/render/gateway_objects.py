"""The gateway's Kubernetes objects (nginx Deployment, Service, keys Secret, config, budget, policy) from the Plan.

The configuration text comes from :mod:`infra.render.nginx`; the keys from :mod:`infra.api_keys`.
"""
from __future__ import annotations

import hashlib
from typing import Any

from infra.api_keys import parse_api_keys
from infra.plan import Plan
from infra.render.common import SERVICE_PORT, allowed_source_ranges, load_balancer_annotations, load_balancer_spec
from infra.render.model_objects import endpoint_service_name
from infra.render.nginx import (
    HEALTH_PORT,
    LISTEN_PORT,
    MTAIL_PROGRAM,
    PID_PATH,
    STATUS_PORT,
    SYSLOG_PORT,
    GatewayLimits,
    Route,
    keys_map_checksum,
    render_keys_map,
    render_nginx_conf,
)
from infra.settings import GatewaySettings

NAME = "kaito-gateway"


IMAGE = "nginx:1.28.0-alpine"          # the official image, pinned


CONF_DIR = "/etc/kaito-aks"


KEYS_FILE = "api-keys.map"


UID = 101                              # the nginx user of the official image


EXPORTER_IMAGE = "nginx/nginx-prometheus-exporter:1.5.3"   # connections and requests from stub_status


EXPORTER_PORT = 9113


# per status / key id / route counts from the access log; 3.0.5 or later: older versions read one datagram per poll
# interval and drop the rest of a burst (google/mtail afd77e48, issue #685)
MTAIL_IMAGE = "ghcr.io/google/mtail:3.0.9"


MTAIL_PORT = 3903


MTAIL_PROGRAM_FILE = "gateway.mtail"


# A gateway pod that is replaced (a config or key change rolls the pods) first leaves the Service's endpoints, then
# drains: it keeps serving for DRAIN_DELAY_SECONDS while kube-proxy and the Azure load balancer's health probe (5 s
# interval, 2 failures) stop sending it new connections, then quits gracefully (`nginx -s quit`: no new
# connections, in-flight requests and streams finish), and the kubelet waits up to the grace period before it kills.
DRAIN_DELAY_SECONDS = 15


def pod_labels() -> dict[str, str]:
    return {"app.kubernetes.io/name": NAME, "app.kubernetes.io/managed-by": "kaito-aks"}


def metrics_enabled(plan: Plan) -> bool:
    """The gateway exports metrics (stub_status + exporter, syslog + mtail) when the stack's observability is on."""
    return plan.settings.observability_enabled


def routes_for(plan: Plan) -> tuple[list[Route], list[Route]]:
    """Model routes (balanced over replicas) and per-replica routes, from the plan's endpoint Services."""

    ns = plan.settings.namespace
    host = lambda r: f"{endpoint_service_name(r)}.{ns}.svc.cluster.local:{SERVICE_PORT}"
    models = [Route(name, tuple(host(r) for r in plan.replicas_of(name)), plan.replicas_of(name)[0].served_model)
              for name in plan.model_names]
    # per-replica routes by the replica's stable name: a surge rollout moves the endpoint Service, not the route
    replicas = [Route(r.slot, (host(r),), r.served_model) for r in plan.replicas]
    return models, replicas


def limits_for(plan: Plan) -> GatewayLimits:
    return limits_from(plan.settings.gateway)


def limits_from(g: GatewaySettings) -> GatewayLimits:
    return GatewayLimits(rate_limit_per_minute=g.rate_limit_per_minute, max_body_kib=g.max_body_kib,
                         read_timeout_seconds=g.read_timeout_seconds,
                         unauthenticated_per_minute=g.unauthenticated_per_minute)


def nginx_conf_for(plan: Plan) -> str:
    models, replicas = routes_for(plan)
    metrics = metrics_enabled(plan)
    return render_nginx_conf(models, replicas, f"{CONF_DIR}/keys/{KEYS_FILE}", limits_for(plan),
                             status_listen=f"127.0.0.1:{STATUS_PORT}" if metrics else None,
                             syslog_server=f"127.0.0.1:{SYSLOG_PORT}" if metrics else None)


def config_map(plan: Plan) -> dict:
    """nginx.conf, and with metrics on the mtail program (one ConfigMap: the pod mounts each file where it's read)."""
    data = {"nginx.conf": nginx_conf_for(plan)}
    if metrics_enabled(plan):
        data[MTAIL_PROGRAM_FILE] = MTAIL_PROGRAM
    return {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": f"{NAME}-conf", "namespace": plan.settings.namespace, "labels": pod_labels()},
        "data": data,
    }


def keys_secret(plan: Plan, keys_map: Any) -> dict:
    """The Secret holding the rendered keys map (``render_keys_map``; a Pulumi secret Output in the program)."""
    return {
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": f"{NAME}-keys", "namespace": plan.settings.namespace, "labels": pod_labels()},
        "stringData": {KEYS_FILE: keys_map},
    }


def keys_secret_from_setting(plan: Plan, raw_setting_value: Any) -> dict:
    """The keys Secret from a value in the ``kaito-aks:apiKeys`` format (a JSON list, or comma/newline-separated
    keys), validated by :func:`parse_api_keys` (:class:`ApiKeysError` otherwise). For ``--manifests`` users:
    the Secret is only ever rendered from real keys, never from a placeholder for an internal format."""
    return keys_secret(plan, render_keys_map(parse_api_keys(raw_setting_value)))


def rollout_annotations(keys_map: str) -> dict[str, str]:
    """Pod-template annotations that change when the keys do (``kubectl patch`` them to roll the gateway)."""
    return {"kaito-aks/keys-sha256": keys_map_checksum(keys_map)}


def deployment(plan: Plan, keys_checksum: Any = "") -> dict:
    """2+ nginx replicas, non-root, read-only root FS; a key or config change rolls them one at a time."""
    g = plan.settings.gateway
    # nginx.conf (and the mtail program): a change rolls the pods. Without metrics, exactly nginx.conf's hash.
    conf_sha = hashlib.sha256("".join(config_map(plan)["data"].values()).encode()).hexdigest()[:16]
    probe = {"httpGet": {"path": "/healthz", "port": HEALTH_PORT}, "periodSeconds": 5}
    containers = [{
        "name": "nginx",
        "image": IMAGE,
        "command": ["nginx", "-c", f"{CONF_DIR}/nginx.conf", "-g", "daemon off;"],
        "ports": [{"name": "http", "containerPort": LISTEN_PORT},
                  {"name": "health", "containerPort": HEALTH_PORT}],
        "readinessProbe": probe,
        "livenessProbe": {**probe, "failureThreshold": 3},
        "lifecycle": {"preStop": {"exec": {"command": drain_command(f"{CONF_DIR}/nginx.conf", PID_PATH)}}},
        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"},
                      "limits": {"cpu": "1", "memory": "256Mi"}},
        "securityContext": _container_security(),
        "volumeMounts": [{"name": "conf", "mountPath": CONF_DIR, "readOnly": True},
                         {"name": "keys", "mountPath": f"{CONF_DIR}/keys", "readOnly": True},
                         {"name": "tmp", "mountPath": "/tmp"}],
    }]
    volumes: list[dict[str, Any]] = [{"name": "conf", "configMap": {"name": f"{NAME}-conf"}},
                                     {"name": "keys", "secret": {"secretName": f"{NAME}-keys"}},
                                     {"name": "tmp", "emptyDir": {}}]
    if metrics_enabled(plan):
        containers.extend(metrics_containers())
        volumes.append({"name": "mtail", "configMap": {"name": f"{NAME}-conf", "items": [
            {"key": MTAIL_PROGRAM_FILE, "path": MTAIL_PROGRAM_FILE}]}})
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": NAME, "namespace": plan.settings.namespace, "labels": pod_labels()},
        "spec": {
            "replicas": g.replicas,
            "selector": {"matchLabels": pod_labels()},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": pod_labels(),
                             "annotations": {"kaito-aks/conf-sha256": conf_sha,
                                             "kaito-aks/keys-sha256": keys_checksum}},
                "spec": {
                    "terminationGracePeriodSeconds": termination_grace_seconds(g.read_timeout_seconds),
                    "automountServiceAccountToken": False,
                    "securityContext": {"runAsNonRoot": True, "runAsUser": UID, "runAsGroup": UID,
                                        "seccompProfile": {"type": "RuntimeDefault"}},
                    "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                                                   "whenUnsatisfiable": "ScheduleAnyway",
                                                   "labelSelector": {"matchLabels": pod_labels()}}],
                    "containers": containers,
                    "volumes": volumes,
                },
            },
        },
    }


def drain_command(conf_path: str, pid_path: str, delay_seconds: int = DRAIN_DELAY_SECONDS) -> list[str]:
    """The nginx container's preStop hook: keep serving until the pod is out of the load balancer, quit gracefully,
    and return only once nginx has exited (the kubelet sends SIGTERM, nginx's *fast* shutdown, when the hook
    returns; by then there is nothing left to cut)."""
    return ["/bin/sh", "-c",
            f"sleep {delay_seconds}; nginx -c {conf_path} -s quit; while [ -e {pid_path} ]; do sleep 1; done"]


def termination_grace_seconds(read_timeout_seconds: int) -> int:
    """Long enough for the drain delay and the longest request the gateway lets run (its read timeout)."""
    return DRAIN_DELAY_SECONDS + read_timeout_seconds + 15


def _container_security() -> dict:
    return {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}


def metrics_containers() -> list[dict]:
    """The gateway pod's metrics sidecars: nginx-prometheus-exporter reads stub_status, mtail counts the access log
    (sent to it as syslog datagrams over the pod's loopback). Scraped by managed Prometheus (a PodMonitor, infra/
    monitoring.py) on their named ports, which a NetworkPolicy opens to the scraper only."""
    small = {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"cpu": "200m", "memory": "128Mi"}}
    return [
        {"name": "nginx-exporter", "image": EXPORTER_IMAGE,
         "args": [f"--nginx.scrape-uri=http://127.0.0.1:{STATUS_PORT}/stub_status",
                  f"--web.listen-address=:{EXPORTER_PORT}"],
         "ports": [{"name": "nginx-metrics", "containerPort": EXPORTER_PORT}],
         "resources": small, "securityContext": _container_security()},
        {"name": "mtail", "image": MTAIL_IMAGE,
         "args": ["-progs", "/etc/mtail", "-logs", f"udp://127.0.0.1:{SYSLOG_PORT}", "-port", str(MTAIL_PORT),
                  "-logtostderr"],
         "ports": [{"name": "log-metrics", "containerPort": MTAIL_PORT}],
         "resources": small, "securityContext": _container_security(),
         "volumeMounts": [{"name": "mtail", "mountPath": "/etc/mtail", "readOnly": True}]},
    ]


def service(plan: Plan) -> dict:

    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": NAME, "namespace": plan.settings.namespace, "labels": pod_labels(),
                     "annotations": {"pulumi.com/timeoutSeconds": "1200",
                                     **load_balancer_annotations(plan, suffix="")}},
        "spec": {**load_balancer_spec(plan), "selector": pod_labels(),
                 "ports": [{"name": "http", "port": 80, "targetPort": LISTEN_PORT, "protocol": "TCP"}]},
    }


def network_policy(plan: Plan) -> dict:

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


def objects(plan: Plan, keys_map: Any = None) -> list[dict]:
    """The gateway's objects in apply order; without ``keys_map`` no keys Secret (``keys_secret_from_setting``
    renders it separately, from the real keys)."""
    secret = [keys_secret(plan, keys_map)] if keys_map is not None else []
    return [config_map(plan), *secret, deployment(plan), disruption_budget(plan), service(plan), network_policy(plan)]
