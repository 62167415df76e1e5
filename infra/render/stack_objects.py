"""Every Kubernetes object of a stack, in apply order, and ``plan --manifests``'s files (one assembly point)."""
from __future__ import annotations

import pathlib
import re
from typing import Any

import yaml

from infra.plan import Plan
from infra.render import gateway_objects, monitoring
from infra.render.model_objects import model_objects
from infra.render.namespace_objects import (
    default_deny_ingress,
    hf_token_secret,
    namespace,
    namespace_guardrails,
    needs_hf_token,
)


def all_objects(plan: Plan, hf_token: Any = "${HF_TOKEN}", api_keys: Any = None) -> list[dict]:
    """Every Kubernetes object of the stack, in apply order. Without ``api_keys`` (a rendered keys map) the
    gateway's keys Secret is left out: `python -m infra gateway-secret` renders it from the real keys."""

    gateway_labels = gateway_objects.pod_labels() if plan.settings.gateway_enabled else None
    objects = [namespace(plan), default_deny_ingress(plan), *namespace_guardrails(plan)]
    if needs_hf_token(plan):
        objects.append(hf_token_secret(plan, hf_token))
    for r in plan.replicas:
        objects.extend(model_objects(r, plan, gateway_labels))
    if plan.settings.gateway_enabled:
        objects.extend(gateway_objects.objects(plan, api_keys))
    objects.extend(monitoring.kubernetes_objects(plan))
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
    written.extend(monitoring.write_files(plan, directory))   # DIR/observability/*.json|yml (not kubectl-applied)
    return written
