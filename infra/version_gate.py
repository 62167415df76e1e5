"""Which KAITO release does the cluster really run, and may the plan's GPU pools and Workspaces be created?

The plan sizes every replica by one KAITO release's rules. The AKS add-on's version is AKS's choice (kaito-aks can
only assume it; docs/kaito-versions.md), and a Helm install may find an older KAITO in place, so before anything
GPU-priced is created the running version is read from the cluster and compared with the plan's:

1. The controller's image: Deployment ``kaito-workspace`` (``kube-system`` for the add-on, ``kaito-workspace`` for
   the Helm chart) runs ``mcr.microsoft.com/aks/kaito/workspace:<X.Y.Z>`` (charts/kaito/workspace/values.yaml and
   templates/deployment.yaml at every tag; the AKS VS Code extension finds the add-on's pod by the same image).
2. When that tag is not a version (a digest, a suffix nobody documented), the release line from the CRDs it
   installed: each release line adds a field or a CRD (its ``crd_mark`` in infra/catalog/kaito-<line>.yaml).

Everything here is pure: the inputs are the API server's JSON; :func:`gate_problem` is the decision.
"""
from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from infra.catalog import KaitoMode, load_catalog

DEPLOYMENT = "kaito-workspace"
IMAGE_REPOSITORY = "mcr.microsoft.com/aks/kaito/workspace"
NAMESPACE: dict[KaitoMode, str] = {"addon": "kube-system", "helm": "kaito-workspace"}
WORKSPACE_CRD = "workspaces.kaito.sh"

@dataclass(frozen=True)
class RunningKaito:
    """What the cluster shows: an exact version, or only a release line, and how it was found."""

    version: str | None            # e.g. "0.11.2"
    line: str | None               # e.g. "0.11"
    evidence: str                  # e.g. "image mcr.microsoft.com/aks/kaito/workspace:0.11.2 in kube-system"

    @property
    def shown(self) -> str:
        return self.version or (f"{self.line}.x" if self.line else "an unknown version")


def version_from_deployment(deployment: Mapping[str, Any] | None) -> str | None:
    """X.Y.Z from the controller's image tag (``...workspace:0.11.2``, ``:v0.11.2``, ``:0.11.2-aks.1``), or None."""
    if not deployment:
        return None
    containers = (((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or []
    for container in containers:
        image = str(container.get("image") or "")
        name, _, tag = image.partition("@")[0].rpartition(":")
        if name.endswith("/kaito/workspace") and tag:
            found = re.fullmatch(r"v?(\d+\.\d+\.\d+)(?:[-+].*)?", tag)
            if found:
                return found.group(1)
    return None


def _schema_paths(node: Any, prefix: str = "") -> set[str]:
    out: set[str] = set()
    if isinstance(node, dict):
        for key, child in (node.get("properties") or {}).items():
            out.add(prefix + key)
            out |= _schema_paths(child, f"{prefix}{key}.")
    return out


def line_from_crds(crd_names: Iterable[str], workspace_crd: Mapping[str, Any] | None) -> str | None:
    """The KAITO release line whose CRDs these are, or None (no KAITO)."""
    marks = {f"crd:{name}" for name in crd_names}
    if workspace_crd:
        marks.add(f"crd:{WORKSPACE_CRD}")
        for version in (workspace_crd.get("spec") or {}).get("versions") or []:
            if version.get("name") == "v1beta1":
                schema = (version.get("schema") or {}).get("openAPIV3Schema") or {}
                marks |= {f"field:{p}" for p in _schema_paths(schema)}
    # the newest line whose mark is present is the line it runs (each line keeps what older ones added)
    return next((release.line for release in load_catalog().lines_newest_first() if release.crd_mark in marks), None)


def running_kaito(mode: KaitoMode, deployment: Mapping[str, Any] | None,
                  crd_names: Iterable[str], workspace_crd: Mapping[str, Any] | None) -> RunningKaito:
    namespace = NAMESPACE[mode]
    version = version_from_deployment(deployment)
    if version:
        image = next(str(c.get("image")) for c in deployment["spec"]["template"]["spec"]["containers"]  # type: ignore[index]
                     if "/kaito/workspace" in str(c.get("image")))
        return RunningKaito(version, ".".join(version.split(".")[:2]), f"image {image} in {namespace}")
    line = line_from_crds(crd_names, workspace_crd)
    if line:
        return RunningKaito(None, line, f"its CRDs (the {DEPLOYMENT} image in {namespace} names no version)")
    return RunningKaito(None, None, f"no {DEPLOYMENT} Deployment in {namespace} and no KAITO CRDs")


def gate_problem(running: RunningKaito, planned: str, mode: KaitoMode) -> str | None:
    """One line when the cluster runs another KAITO release than the plan's, else None."""
    who = "the AKS add-on" if mode == "addon" else "the cluster"
    if running.version is not None:
        if running.version == planned:
            return None
        return (f"{who} runs KAITO {running.version} but this stack was planned for {planned} ({running.evidence}): "
                f"set kaito.version: {running.version} and run python -m infra plan again")
    planned_line = ".".join(planned.split(".")[:2])
    if running.line is not None:
        if running.line == planned_line:
            return None         # the line decides every rule kaito-aks applies; the image named no patch
        return (f"{who} runs KAITO {running.line}.x but this stack was planned for {planned} ({running.evidence}): "
                f"set kaito.version to the {running.line} release it runs and run python -m infra plan again")
    return f"{who} runs no KAITO yet ({running.evidence}); wait for it, then run `pulumi up` again"


class VersionGateError(Exception):
    """The cluster runs another KAITO release (or none in time); ``str()`` is one line."""


def wait_for_version(read: Callable[[], RunningKaito], planned: str, mode: KaitoMode, *,
                     timeout_s: float = 1200.0, poll_s: float = 10.0,
                     clock: Callable[[], float] = time.monotonic,
                     sleep: Callable[[float], None] = time.sleep) -> RunningKaito:
    """Read the running release until KAITO is there; pass when it is the planned one, fail at once when it isn't.

    A cluster just created may not run the add-on's controller yet, and the API server may briefly not answer:
    both are waited out until ``timeout_s``. A different release fails immediately.
    """
    deadline = clock() + timeout_s
    while True:
        running: RunningKaito | None
        try:
            running = read()
            problem = gate_problem(running, planned, mode)
        except Exception as err:  # noqa: BLE001 -- any client error is retried; reported if it lasts
            running, problem = None, f"reading the cluster's KAITO version failed: {type(err).__name__}"
        if problem is None and running is not None:
            return running
        settled = running is not None and (running.version is not None or running.line is not None)
        if settled or clock() >= deadline:
            raise VersionGateError(problem)
        sleep(poll_s)


def read_running(kubeconfig: str, mode: KaitoMode) -> RunningKaito:
    """The KAITO release the cluster runs, read over the Kubernetes API (the gate in `pulumi up`, and the
    Automation driver's preview when the cluster exists)."""
    # imported here: only a deploy or a preview against a cluster needs the Kubernetes client
    import yaml
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException

    api_client = config.new_client_from_config_dict(yaml.safe_load(kubeconfig))
    apps, ext = client.AppsV1Api(api_client), client.ApiextensionsV1Api(api_client)
    try:
        deployment = api_client.sanitize_for_serialization(
            apps.read_namespaced_deployment(DEPLOYMENT, NAMESPACE[mode], _request_timeout=30))
    except ApiException as err:
        if err.status != 404:
            raise
        deployment = None
    crds = api_client.sanitize_for_serialization(ext.list_custom_resource_definition(_request_timeout=30))
    names = [c["metadata"]["name"] for c in crds.get("items", []) if c["metadata"]["name"].endswith(".kaito.sh")]
    workspace = next((c for c in crds.get("items", []) if c["metadata"]["name"] == WORKSPACE_CRD), None)
    return running_kaito(mode, deployment, names, workspace)
