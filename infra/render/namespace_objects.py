"""The model namespace's own objects: the Namespace, default-deny ingress, the HF token Secret, quota and limits."""
from __future__ import annotations

from typing import Any

from infra.plan import Plan
from infra.render.common import HF_TOKEN_SECRET, MANAGED_BY


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


def default_deny_ingress(plan: Plan) -> dict:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "default-deny-ingress", "namespace": plan.settings.namespace, "labels": {**MANAGED_BY}},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
    }


def namespace_guardrails(plan: Plan) -> list[dict]:
    """Namespace resource quotas: GPUs capped at what the plan deploys, load balancers at what it exposes,
    and default requests for containers that set none (requests only: a default *limit* could OOM-kill vLLM)."""
    ns = plan.settings.namespace
    gpus = sum(r.nodes * r.gpus_per_node for r in plan.replicas)
    lbs = 1 if plan.settings.gateway_enabled else len(plan.replicas)
    return [
        {"apiVersion": "v1", "kind": "ResourceQuota",
         "metadata": {"name": "kaito-aks-quota", "namespace": ns,
                      "labels": {"app.kubernetes.io/managed-by": "kaito-aks"}},
         "spec": {"hard": {"requests.nvidia.com/gpu": str(gpus), "services.loadbalancers": str(lbs),
                           "pods": str(20 + 4 * len(plan.replicas))}}},
        {"apiVersion": "v1", "kind": "LimitRange",
         "metadata": {"name": "kaito-aks-defaults", "namespace": ns,
                      "labels": {"app.kubernetes.io/managed-by": "kaito-aks"}},
         "spec": {"limits": [{"type": "Container", "defaultRequest": {"cpu": "100m", "memory": "128Mi"}}]}},
    ]
