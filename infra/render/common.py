"""What every rendered object shares: API versions, ports, labels, taints, and how a Service is exposed."""
from __future__ import annotations

from typing import Any

from infra.plan import Plan, load_balancer_dns_label

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
