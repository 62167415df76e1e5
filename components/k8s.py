"""Turn the plain Kubernetes objects of ``infra.render`` into pulumi-kubernetes resources, unchanged."""
from __future__ import annotations

from typing import Any

import pulumi
import pulumi_kubernetes as k8s

_TYPED = {
    ("v1", "Namespace"): k8s.core.v1.Namespace,
    ("v1", "ConfigMap"): k8s.core.v1.ConfigMap,
    ("v1", "Secret"): k8s.core.v1.Secret,
    ("v1", "Service"): k8s.core.v1.Service,
    ("v1", "ResourceQuota"): k8s.core.v1.ResourceQuota,
    ("v1", "LimitRange"): k8s.core.v1.LimitRange,
    ("apps/v1", "Deployment"): k8s.apps.v1.Deployment,
    ("policy/v1", "PodDisruptionBudget"): k8s.policy.v1.PodDisruptionBudget,
    ("networking.k8s.io/v1", "NetworkPolicy"): k8s.networking.v1.NetworkPolicy,
}
# top-level fields other than apiVersion/kind/metadata, by their Python argument names
_FIELDS = {"spec": "spec", "data": "data", "stringData": "string_data", "type": "type"}


class KaitoWorkspace(pulumi.CustomResource):
    """A KAITO Workspace. Its `resource` and `inference` are top-level fields, which
    ``apiextensions.CustomResource`` can't express in Python (it only takes ``spec``)."""

    status: pulumi.Output[Any]

    def __init__(self, name: str, obj: dict, opts: pulumi.ResourceOptions):
        props = {key: obj[key] for key in ("apiVersion", "kind", "metadata", "resource", "inference")}
        super().__init__(f"kubernetes:{obj['apiVersion']}:{obj['kind']}", name, {**props, "status": None}, opts)


def apply(name: str, obj: dict, opts: pulumi.ResourceOptions) -> pulumi.CustomResource:
    """Create ``obj`` (a manifest dict) as a Pulumi resource named ``name``."""
    if obj["kind"] == "Workspace":
        return KaitoWorkspace(name, obj, opts)
    cls = _TYPED[(obj["apiVersion"], obj["kind"])]
    kwargs = {arg: obj[field] for field, arg in _FIELDS.items() if field in obj}
    return cls(name, metadata=obj["metadata"], **kwargs, opts=opts)


def apply_service(name: str, obj: dict, opts: pulumi.ResourceOptions) -> k8s.core.v1.Service:
    """:func:`apply` for a Service manifest, typed as one (its ``status`` has the load balancer's address)."""
    service = apply(name, obj, opts)
    assert isinstance(service, k8s.core.v1.Service), f"{name}: a {obj['kind']} manifest, not a Service"
    return service


def load_balancer_address(service: k8s.core.v1.Service) -> pulumi.Output[str | None]:
    """The IP (or host name) Azure gave a LoadBalancer Service; None until it has one."""
    def address(status: k8s.core.v1.outputs.ServiceStatus | None) -> str | None:
        ingress = status.load_balancer.ingress if status and status.load_balancer else None
        return (ingress[0].ip or ingress[0].hostname) if ingress else None

    return service.status.apply(address)
