"""When may a Workspace be created on its GPU pool? A pure judgement over the cluster's Node objects.

Creating the Workspace the moment the AKS AgentPool resource completes is too early:

- KAITO 0.6 counts only Ready nodes that match the selector and ``node.kubernetes.io/instance-type``, and on the
  first reconcile with fewer than ``count`` it creates NodeClaims for the shortfall: a second, billed GPU pool
  that ``pulumi destroy`` doesn't know about (kaito-project/kaito@v0.6.0
  pkg/workspace/controllers/workspace_controller.go getAllQualifiedNodes; no grace period).
- KAITO 0.8+ in bring-your-own-nodes mode reads GPU count, memory and product from the GPU Feature Discovery
  labels of the matching nodes, and its webhook rejects a Workspace whose nodes disagree ("Non-uniform GPU
  product", api/v1beta1/workspace_validation.go); NFD rewrites those labels when GFD starts on a node.

:func:`judge` says whether the pool is ready, and if not, what is missing, in one line. The Node objects are the
JSON the API server returns (``kubectl get nodes -o json``); nothing here talks to a cluster.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from infra.plan import ReplicaPlan
from infra.sizing import byo_per_gpu_gib

INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"
GFD_PRODUCT = "nvidia.com/gpu.product"
GFD_COUNT = "nvidia.com/gpu.count"
GFD_MEMORY = "nvidia.com/gpu.memory"
GPU_RESOURCE = "nvidia.com/gpu"


@dataclass(frozen=True)
class PoolExpectation:
    """What the plan needs from one replica's GPU pool before its Workspace may exist."""

    pool_name: str
    workspace: str
    selector: dict[str, str]        # labels only this pool's nodes carry (the Workspace's labelSelector)
    instance_type: str
    count: int                      # nodes the plan pays for and KAITO must find
    gpus_per_node: int
    gfd: bool                       # KAITO sizes from GFD labels (bring-your-own nodes): wait for uniform ones
    gpu_memory_gib: int | None = None   # per GPU, as KAITO rounds the GFD label; what the plan sized with

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> PoolExpectation:
        return PoolExpectation(**{k: data[k] for k in PoolExpectation.__dataclass_fields__ if k in data})

    @property
    def label_selector(self) -> str:
        """The selector in the API's ``labelSelector`` query syntax."""
        return ",".join(f"{k}={v}" for k, v in sorted(self.selector.items()))


@dataclass(frozen=True)
class Readiness:
    ready: bool
    summary: str                    # one line: what is ready, or what is missing
    nodes: tuple[str, ...] = ()     # the matching Ready nodes
    mismatch: bool = False          # a difference waiting won't fix while it lasts (wrong size, memory, count)


def expectation_for(r: ReplicaPlan) -> PoolExpectation:
    """What replica ``r``'s pool must show before its Workspace is created."""
    gfd = r.kaito_mode == "helm"          # KAITO runs with nodeProvisioner=byo: it sizes from GFD labels
    return PoolExpectation(
        pool_name=r.pool_name, workspace=r.workspace, selector=dict(r.match_labels), instance_type=r.instance_type,
        count=r.nodes, gpus_per_node=r.gpus_per_node, gfd=gfd,
        gpu_memory_gib=byo_per_gpu_gib(r.gpu_memory_mib) if gfd and r.gpu_memory_mib else None,
    )


def _labels(node: Mapping[str, Any]) -> dict[str, str]:
    return dict((node.get("metadata") or {}).get("labels") or {})


def _name(node: Mapping[str, Any]) -> str:
    return str((node.get("metadata") or {}).get("name") or "?")


def _is_ready(node: Mapping[str, Any]) -> bool:
    conditions = (node.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _not_ready_reason(node: Mapping[str, Any]) -> str:
    for c in (node.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return f"Ready={c.get('status')}" + (f" ({c['reason']})" if c.get("reason") else "")
    return "no Ready condition yet"


def _allocatable_gpus(node: Mapping[str, Any]) -> int:
    """GPUs the device plugin advertises: KAITO checks ``status.capacity`` (pkg/utils/resources/nodes.go)."""
    value = ((node.get("status") or {}).get("capacity") or {}).get(GPU_RESOURCE, "0")
    try:
        return int(str(value))
    except ValueError:
        return 0


def judge(nodes: list[Mapping[str, Any]], exp: PoolExpectation) -> Readiness:
    """Is the pool ready for its Workspace? ``nodes``: Node objects (any; those not matching are ignored)."""
    pool = f"GPU pool {exp.pool_name} (Workspace {exp.workspace})"
    matching = [n for n in nodes
                if all(_labels(n).get(k) == v for k, v in exp.selector.items())
                and not (n.get("metadata") or {}).get("deletionTimestamp")]
    ready = [n for n in matching if _is_ready(n)]
    if len(ready) < exp.count:
        waiting = [f"{_name(n)}: {_not_ready_reason(n)}" for n in matching if not _is_ready(n)]
        detail = f" ({'; '.join(waiting[:3])})" if waiting else ""
        return Readiness(False, f"{pool}: {len(ready)} of {exp.count} nodes Ready{detail}",
                         tuple(sorted(_name(n) for n in ready)))
    names = tuple(sorted(_name(n) for n in ready))
    for node in ready:
        got = _labels(node).get(INSTANCE_TYPE_LABEL)
        if got is None:
            return Readiness(False, f"{pool}: node {_name(node)} has no {INSTANCE_TYPE_LABEL} label yet", names)
        if got != exp.instance_type:
            return Readiness(False, f"{pool}: node {_name(node)} is a {got}, the plan sized {exp.instance_type} "
                                    "(KAITO only counts nodes of the Workspace's instance type)", names, mismatch=True)
    short = [n for n in ready if _allocatable_gpus(n) < exp.gpus_per_node]
    if short:
        node = short[0]
        return Readiness(False, f"{pool}: node {_name(node)} advertises {_allocatable_gpus(node)} of "
                                f"{exp.gpus_per_node} {GPU_RESOURCE} (GPU driver or device plugin not ready)", names)
    if exp.gfd:
        verdict = _judge_gfd(matching, exp, pool, names)
        if verdict is not None:
            return verdict
    return Readiness(True, f"{pool}: {len(ready)} of {exp.count} nodes Ready"
                           + (" with uniform GPU Feature Discovery labels" if exp.gfd else ""), names)


def _gib_label(value: str) -> str:
    """gpu.memory as KAITO compares it across nodes: rounded to GiB (a label that isn't a number stays as is)."""
    return str(byo_per_gpu_gib(int(value))) if value.isdigit() else value


def _judge_gfd(matching: list[Mapping[str, Any]], exp: PoolExpectation, pool: str,
               names: tuple[str, ...]) -> Readiness | None:
    """KAITO's BYO sizing reads these labels; its webhook reads them on every node that matches the selector,
    Ready or not, and wants product, count and memory (as GiB) equal across them
    (api/v1beta1/workspace_validation.go @ v0.12.0, "Non-uniform GPU product")."""
    for node in matching:
        missing = [k for k in (GFD_PRODUCT, GFD_COUNT, GFD_MEMORY) if not _labels(node).get(k)]
        if missing:
            return Readiness(False, f"{pool}: node {_name(node)} has no {', '.join(missing)} label yet "
                                    "(GPU Feature Discovery has not labelled it)", names)
    for key, normalize in ((GFD_PRODUCT, str), (GFD_COUNT, str), (GFD_MEMORY, _gib_label)):
        values = sorted({normalize(_labels(n)[key]) for n in matching})
        if len(values) > 1:
            shown = ", ".join(f"{v} GiB" if key == GFD_MEMORY else v for v in values)
            return Readiness(False, f"{pool}: nodes disagree on {key} ({shown}); KAITO's webhook rejects "
                                    "non-uniform nodes (waiting for GPU Feature Discovery to relabel)", names)
    labels = _labels(matching[0])
    if labels[GFD_COUNT] != str(exp.gpus_per_node):
        return Readiness(False, f"{pool}: nodes report {GFD_COUNT}={labels[GFD_COUNT]}, the plan sized "
                                f"{exp.gpus_per_node} GPUs per node", names, mismatch=True)
    if exp.gpu_memory_gib is not None:
        try:
            gib = byo_per_gpu_gib(int(labels[GFD_MEMORY]))
        except ValueError:
            return Readiness(False, f"{pool}: {GFD_MEMORY}={labels[GFD_MEMORY]!r} is not a number of MiB", names,
                             mismatch=True)
        if gib != exp.gpu_memory_gib:
            return Readiness(False, (
                f"{pool}: nodes report {GFD_MEMORY}={labels[GFD_MEMORY]} MiB ({gib} GiB per GPU as KAITO rounds it), "
                f"the plan sized with {exp.gpu_memory_gib} GiB; KAITO would choose a different node count: correct "
                "the size's memory in infra/catalog/azure_gpu_skus.yaml and run the plan again"), names, mismatch=True)
    return None


class PoolNotReadyError(Exception):
    """The pool didn't become ready in time (or shows a lasting mismatch); ``str()`` is one line."""


def wait_until_ready(
    list_nodes: Callable[[], list[Mapping[str, Any]]],
    exp: PoolExpectation,
    *,
    timeout_s: float = 1800.0,
    poll_s: float = 10.0,
    mismatch_grace_s: float = 300.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Readiness:
    """Poll ``list_nodes`` until :func:`judge` says ready; raise :class:`PoolNotReadyError` with the last reason.

    A mismatch (wrong size, GPU count or memory) fails once it has lasted ``mismatch_grace_s``: GFD relabels a node
    within seconds of starting, so a difference that outlives that is real. A failing API call is retried until
    the deadline (the API server may be briefly unreachable during cluster operations).
    """
    started = clock()
    mismatch_since: float | None = None
    last = Readiness(False, f"GPU pool {exp.pool_name} (Workspace {exp.workspace}): no answer from the API server")
    while True:
        try:
            last = judge(list_nodes(), exp)
        except Exception as err:  # noqa: BLE001 -- any client error is a reason to retry, reported if it lasts
            last = Readiness(False, f"GPU pool {exp.pool_name} (Workspace {exp.workspace}): listing nodes failed: "
                                    f"{type(err).__name__}")
        if last.ready:
            return last
        now = clock()
        if not last.mismatch:
            mismatch_since = None
        elif mismatch_since is None:
            mismatch_since = now
        if mismatch_since is not None and now - mismatch_since >= mismatch_grace_s:
            raise PoolNotReadyError(last.summary)
        if now - started >= timeout_s:
            raise PoolNotReadyError(f"after {now - started:.0f} s: {last.summary}")
        sleep(min(poll_s, max(0.0, timeout_s - (now - started))))
