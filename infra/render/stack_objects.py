"""Every Kubernetes object of a stack, in apply order, and ``plan --manifests``'s files (one assembly point)."""
from __future__ import annotations

import contextlib
import os
import pathlib
import re
from typing import Any

import yaml

from infra.errors import UserError, bounded_repr
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


# What `plan --manifests` wrote into a directory, one relative path a line: the next run may replace exactly that.
MANIFEST_INDEX = ".kaito-aks-manifests"


def write_manifests(plan: Plan, directory: pathlib.Path) -> list[pathlib.Path]:
    """One YAML file per object, numbered in apply order (`kubectl apply -f DIR` applies them in that order).

    The HF token Secret carries a ``${HF_TOKEN}`` placeholder: fill it with e.g. ``envsubst < NN-secret-....yaml |
    kubectl apply -f -`` or your secret store; never commit the value. The gateway's keys Secret is not written:
    ``python -m infra gateway-secret --stack S --api-keys-env VAR | kubectl apply -f -`` renders it.
    """
    _clear_previous_output(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for index, obj in enumerate(all_objects(plan), start=1):
        path = directory / f"{index:02d}-{file_name(obj)}"
        path.write_text(yaml.safe_dump(obj, sort_keys=False))
        written.append(path)
    written.extend(monitoring.write_files(plan, directory))   # DIR/observability/*.json|yml (not kubectl-applied)
    (directory / MANIFEST_INDEX).write_text("".join(f"{p.relative_to(directory).as_posix()}\n" for p in written))
    return written


def _clear_previous_output(directory: pathlib.Path) -> None:
    """`kubectl apply -f DIR` applies every file in DIR, so a file left there by another stack or an earlier plan
    (a Workspace, a Secret) would be deployed too. DIR must be new, empty, or hold only what kaito-aks wrote
    there last time (its index), which is removed first."""
    if not directory.is_dir():
        return                  # new (or not a directory: mkdir's error names it)
    present = sorted(_files_under(directory))
    if not present:
        return
    index = directory / MANIFEST_INDEX
    owned = set(index.read_text(errors="replace").splitlines()) | {MANIFEST_INDEX} if index.is_file() else set()
    foreign = [rel for rel in present if rel not in owned]
    if foreign:
        raise UserError(f"--manifests {bounded_repr(str(directory), 120)}: the directory holds {len(foreign)} "
                        f"file(s) kaito-aks didn't write there (e.g. {bounded_repr(foreign[0], 80)}), and "
                        "`kubectl apply -f` would apply them too; name a new or empty directory")
    for rel in present:
        (directory / rel).unlink()
    for sub in sorted({(directory / rel).parent for rel in present} - {directory}, reverse=True):
        with contextlib.suppress(OSError):      # ours, now empty (observability/); kept if anything else is there
            sub.rmdir()


def _files_under(directory: pathlib.Path) -> list[str]:
    """Every non-directory entry under ``directory`` (symlinks not followed), as a relative POSIX path."""
    found: list[str] = []
    for root, dirs, files in os.walk(directory):
        base = pathlib.Path(root)
        found.extend((base / f).relative_to(directory).as_posix() for f in files)
        found.extend((base / d).relative_to(directory).as_posix() for d in dirs if (base / d).is_symlink())
    return found
