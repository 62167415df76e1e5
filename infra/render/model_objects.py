"""One model replica as Kubernetes objects: its inference ConfigMap, Workspace, endpoint Service, NetworkPolicy.

Nothing here talks to a cluster or to Pulumi. Secret *values* are parameters (a Pulumi secret Output inside
``pulumi up``, a ``${VAR}`` placeholder for the YAML export), so the same functions serve both paths.
"""
from __future__ import annotations

from typing import Any

import yaml

from infra import names
from infra.plan import Plan, ReplicaPlan
from infra.render.common import (
    HF_TOKEN_SECRET,
    IDENTITY_ANNOTATION,
    INFERENCE_PORT,
    KAITO_API_VERSION,
    MANAGED_BY,
    SERVICE_PORT,
    allowed_source_ranges,
    load_balancer_annotations,
    load_balancer_spec,
)


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


def model_objects(r: ReplicaPlan, plan: Plan, gateway_pod_labels: dict[str, str] | None) -> list[dict]:
    objects = [inference_config_map(r), workspace(r), endpoint_service(r, plan),
               inference_network_policy(r, plan, gateway_pod_labels)]
    return [o for o in objects if o is not None]
