"""The Plan as Kubernetes objects: plain dicts, shared by the Pulumi components and `plan --manifests`.

Nothing here talks to a cluster or to Pulumi. Secret *values* are parameters (a Pulumi secret Output inside
``pulumi up``, a ``${VAR}`` placeholder for the YAML export), so the same functions serve both paths.
"""
from __future__ import annotations

import pathlib
import re
from typing import Any

import yaml

from infra import names, observability
from infra.plan import Plan, ReplicaPlan, load_balancer_dns_label

KAITO_API_VERSION = "kaito.sh/v1beta1"
INFERENCE_PORT = 5000               # KAITO's inference server (PortInferenceServer)
SERVICE_PORT = 80
HF_TOKEN_SECRET = "hf-token"        # Secret with key HF_TOKEN, referenced by presetOptions.modelAccessSecret
MANAGED_BY = {"app.kubernetes.io/managed-by": "kaito-aks"}
GPU_TAINT = "sku=gpu:NoSchedule"    # the taint KAITO's inference pods tolerate (and KAITO puts on its own nodes)
AZURE_INTERNAL_LB = "service.beta.kubernetes.io/azure-load-balancer-internal"
AZURE_DNS_LABEL = "service.beta.kubernetes.io/azure-dns-label-name"
IDENTITY_ANNOTATION = "kaito-aks/identity"
PRIVATE_RANGES = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")


def config_map_name(r: ReplicaPlan) -> str:
    assert r.config_hash is not None, "only replicas with an inference config have a ConfigMap"
    return names.config_map_name(r.workspace, r.config_hash)


def endpoint_service_name(r: ReplicaPlan) -> str:
    """The replica's stable Service (by slot): its address survives rollouts; only its selector moves."""
    return names.endpoint_service_name(r.slot)


def model_labels(r: ReplicaPlan) -> dict[str, str]:
    return {**MANAGED_BY, "kaito-aks/model": r.model_name, "kaito-aks/slot": r.slot, "kaito-aks/workspace": r.workspace}


def inference_pod_selector(r: ReplicaPlan) -> dict[str, str]:
    """The KAITO inference pod a client should reach: the leader (pod 0) of a multi-node group."""
    selector = {"kaito.sh/workspace": r.workspace}
    if r.multi_node:
        selector["statefulset.kubernetes.io/pod-name"] = names.leader_pod_name(r.workspace)
    return selector


def inference_pod_target(r: ReplicaPlan) -> dict[str, Any]:
    """The pod a surge rollout checks before it moves traffic (``infra.pod_transport.PodTarget`` as a dict): the
    pod the endpoint Service will select -- the leader of a multi-node group, else any Ready pod -- on KAITO's port."""
    leader = inference_pod_selector(r).get("statefulset.kubernetes.io/pod-name")
    return {"namespace": r.namespace, "selector": {"kaito.sh/workspace": r.workspace}, "pod": leader,
            "port": INFERENCE_PORT, "label": r.workspace}


# ---------------------------------------------------------------------------------------------------------
# Objects

def namespace(plan: Plan) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": plan.settings.namespace, "labels": {**MANAGED_BY}},
    }


def hf_token_secret(plan: Plan, token: Any) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": HF_TOKEN_SECRET, "namespace": plan.settings.namespace, "labels": {**MANAGED_BY}},
        "type": "Opaque",
        "stringData": {"HF_TOKEN": token},
    }


def needs_hf_token(plan: Plan) -> bool:
    return any(r.reference_hf_token for r in plan.replicas)


def inference_config_map(r: ReplicaPlan) -> dict | None:
    """KAITO's `inference.config`: KAITO's own template for the version with the plan's vLLM flags merged in.

    Named after its content (``<workspace>-inference-<hash>``): KAITO neither watches ConfigMaps nor rolls pods
    when one changes, so a new config must be a new name, which replaces the Workspace.
    """
    if r.inference_config is None:
        return None
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": config_map_name(r), "namespace": r.namespace, "labels": model_labels(r)},
        "data": {"inference_config.yaml": yaml.safe_dump(r.inference_config, sort_keys=False)},
    }


def workspace(r: ReplicaPlan) -> dict:
    """A KAITO Workspace: `resource` and `inference` at the top level (there is no `.spec`)."""
    resource: dict[str, Any] = {}
    # Node auto-provisioning (the add-on) needs the instance type, and KAITO only counts nodes of that type;
    # bring-your-own nodes (kaito-aks's Helm path) must leave it empty (docs/kaito-versions.md).
    if r.workspace_names_instance_type:
        resource["instanceType"] = r.instance_type
    # resource.count decides the node count only in 0.6 and for non-vLLM runtimes; the estimator ignores it
    if r.kaito_count is not None:
        resource["count"] = r.kaito_count
    resource["labelSelector"] = {"matchLabels": dict(r.match_labels)}
    preset: dict[str, Any] = {"name": r.preset}
    if r.reference_hf_token:
        preset["presetOptions"] = {"modelAccessSecret": HF_TOKEN_SECRET}
    inference: dict[str, Any] = {"preset": preset}
    if r.needs_config_map:
        inference["config"] = config_map_name(r)
    return {
        "apiVersion": KAITO_API_VERSION,
        "kind": "Workspace",
        "metadata": {
            "name": r.workspace,
            "namespace": r.namespace,
            "labels": model_labels(r),
            "annotations": {
                "kaito.sh/runtime": r.runtime,
                # what KAITO can't change in place (model, size, nodes, config): a change replaces the Workspace
                IDENTITY_ANNOTATION: r.identity,
                # Pulumi waits for KAITO's summary condition, as long as the model's startup can take
                "pulumi.com/waitFor": "condition=WorkspaceSucceeded",
                "pulumi.com/timeoutSeconds": str(r.wait_timeout_seconds),
            },
        },
        "resource": resource,
        "inference": inference,
    }


def endpoint_service(r: ReplicaPlan, plan: Plan) -> dict:
    """Port 80 -> 5000 on the inference pod: a LoadBalancer without the gateway, ClusterIP behind it."""
    spec: dict[str, Any] = {
        "selector": inference_pod_selector(r),
        "ports": [{"name": "http", "port": SERVICE_PORT, "targetPort": INFERENCE_PORT, "protocol": "TCP"}],
    }
    annotations: dict[str, str] = {"pulumi.com/timeoutSeconds": "1800"}
    if plan.settings.gateway_enabled:
        spec["type"] = "ClusterIP"
        # the gateway only needs the name to resolve; don't hold `pulumi up` until the model serves
        annotations = {"pulumi.com/skipAwait": "true"}
    else:
        spec.update(load_balancer_spec(plan))
        annotations.update(load_balancer_annotations(plan, suffix=r.slot))
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": endpoint_service_name(r), "namespace": r.namespace, "labels": model_labels(r),
                     "annotations": annotations},
        "spec": spec,
    }


def load_balancer_spec(plan: Plan) -> dict:
    spec: dict[str, Any] = {"type": "LoadBalancer", "externalTrafficPolicy": "Local"}  # keep client IPs
    ranges = allowed_source_ranges(plan)
    if ranges:
        spec["loadBalancerSourceRanges"] = list(ranges)
    return spec


def load_balancer_annotations(plan: Plan, suffix: str) -> dict[str, str]:
    access = plan.settings.access
    annotations = {}
    if access.internal:
        annotations[AZURE_INTERNAL_LB] = "true"
    if access.dns_label:
        # the plan has checked that every label fits (no truncation here: two replicas must never share one)
        annotations[AZURE_DNS_LABEL] = load_balancer_dns_label(access.dns_label, suffix or None)
    return annotations


def allowed_source_ranges(plan: Plan) -> tuple[str, ...]:
    """Client CIDRs that may reach an endpoint; empty means 'any' (only when the stack says so)."""
    access = plan.settings.access
    if access.source_ranges:
        return tuple(access.source_ranges)
    if access.internal:
        return PRIVATE_RANGES
    return ()


def default_deny_ingress(plan: Plan) -> dict:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "default-deny-ingress", "namespace": plan.settings.namespace, "labels": {**MANAGED_BY}},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
    }


def inference_network_policy(r: ReplicaPlan, plan: Plan, gateway_pod_labels: dict[str, str] | None) -> dict:
    """Inference pods accept: their own Workspace's pods (multi-node Ray), and the gateway or the client ranges."""
    peers: list[dict[str, Any]] = [{"podSelector": {"matchLabels": {"kaito.sh/workspace": r.workspace}}}]
    rules: list[dict[str, Any]] = [{"from": peers}]
    if gateway_pod_labels:
        rules.append({"from": [{"podSelector": {"matchLabels": dict(gateway_pod_labels)}}],
                      "ports": [{"protocol": "TCP", "port": INFERENCE_PORT}]})
    else:
        ranges = allowed_source_ranges(plan) or ("0.0.0.0/0",)   # empty only with allowAnySource
        rules.append({"from": [{"ipBlock": {"cidr": cidr}} for cidr in ranges],
                      "ports": [{"protocol": "TCP", "port": INFERENCE_PORT}]})
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": names.network_policy_name(r.workspace), "namespace": r.namespace,
                     "labels": model_labels(r)},
        "spec": {"podSelector": {"matchLabels": {"kaito.sh/workspace": r.workspace}},
                 "policyTypes": ["Ingress"], "ingress": rules},
    }


# ---------------------------------------------------------------------------------------------------------
# Everything, in apply order

def model_objects(r: ReplicaPlan, plan: Plan, gateway_pod_labels: dict[str, str] | None) -> list[dict]:
    objects = [inference_config_map(r), workspace(r), endpoint_service(r, plan),
               inference_network_policy(r, plan, gateway_pod_labels)]
    return [o for o in objects if o is not None]


def all_objects(plan: Plan, hf_token: Any = "${HF_TOKEN}", api_keys: Any = None) -> list[dict]:
    """Every Kubernetes object of the stack, in apply order. Without ``api_keys`` (a rendered keys map) the
    gateway's keys Secret is left out: `python -m infra gateway-secret` renders it from the real keys."""
    from infra import gateway  # the gateway's objects come from its own module

    gateway_labels = gateway.pod_labels() if plan.settings.gateway_enabled else None
    objects = [namespace(plan), default_deny_ingress(plan), *gateway.namespace_guardrails(plan)]
    if needs_hf_token(plan):
        objects.append(hf_token_secret(plan, hf_token))
    for r in plan.replicas:
        objects.extend(model_objects(r, plan, gateway_labels))
    if plan.settings.gateway_enabled:
        objects.extend(gateway.objects(plan, api_keys))
    objects.extend(observability.kubernetes_objects(plan))
    return objects


def file_name(obj: dict) -> str:
    meta = obj["metadata"]
    kind = re.sub(r"(?<!^)(?=[A-Z])", "-", obj["kind"]).lower()
    ns = meta.get("namespace")
    return f"{kind}-{ns + '-' if ns else ''}{meta['name']}.yaml"


def write_manifests(plan: Plan, directory: pathlib.Path) -> list[pathlib.Path]:
    """One YAML file per object, numbered in apply order (`kubectl apply -f DIR` applies them in that order).

    The HF token Secret carries a ``${HF_TOKEN}`` placeholder: fill it with e.g. ``envsubst < NN-secret-....yaml |
    kubectl apply -f -`` or your secret store; never commit the value. The gateway's keys Secret is not written:
    ``python -m infra gateway-secret --stack S --api-keys-env VAR | kubectl apply -f -`` renders it.
    """
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for index, obj in enumerate(all_objects(plan), start=1):
        path = directory / f"{index:02d}-{file_name(obj)}"
        path.write_text(yaml.safe_dump(obj, sort_keys=False))
        written.append(path)
    written.extend(observability.write_files(plan, directory))   # DIR/observability/*.json|yml (not kubectl-applied)
    return written
