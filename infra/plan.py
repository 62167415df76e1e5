"""Settings + catalogs + sizing -> the Plan: every model replica, its Azure size, nodes, cost and why.

The Plan is a plain, frozen data object. ``python -m infra plan`` prints it; ``__main__.py`` (the Pulumi
program) deploys exactly it; ``infra.render`` turns it into Kubernetes objects. Every check that needs the
KAITO version's rules runs here, and every problem becomes one line naming the stack setting and the fix.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from typing import Any, Literal

from infra import names, prices
from infra.catalog import (
    Catalog,
    Dtype,
    KaitoMode,
    KaitoRelease,
    ModelFacts,
    Runtime,
    UnknownKaitoVersionError,
    load_catalog,
)
from infra.errors import UserError
from infra.models import Resolution, ResolvedModel, ResolveError, resolve
from infra.settings import PROJECT, ModelSettings, Rollout, Settings
from infra.sizing import Decision, SizingError, SizingRequest, check_explicit, choose

PoolOwner = Literal["kaito-aks", "kaito"]
HOURS_PER_MONTH = 730
WORKSPACE_LABEL = "kaito-aks/workspace"  # our node/selector label: unique per Workspace, not KAITO-reserved
MAX_OS_DISK_GIB = 2048
IMAGE_SPACE_GIB = 64                      # room for the KAITO/vLLM images next to the weights
# GPU pools upgrade (Kubernetes version, node image) one node at a time without a surge node: no GPU quota beyond
# the plan's. A replica's endpoint is down while its node is reimaged, inside the maintenance window. Spot pools
# take no upgrade settings (Azure refuses maxSurge/maxUnavailable on them).
GPU_POOL_UPGRADE = {"max_surge": "0", "max_unavailable": "1"}


@dataclass(frozen=True)
class Alternative:
    instance_type: str
    nodes: int
    usd_per_hour: float


@dataclass(frozen=True)
class ReplicaPlan:
    """One Workspace, its own GPU node pool, its Service: everything decided for one model replica."""

    model_name: str               # the stack's models[i].name
    model_index: int
    replica: int
    slot: str                     # the replica's stable name: endpoint Service, gateway route, exported check
    workspace: str                # Workspace (and KAITO Service) name: the slot, plus the identity hash in surge
    rollout: Rollout              # surge: a change runs beside the old replica until its check passes
    namespace: str
    model_ref: str                # what the stack wrote
    preset: str                   # Workspace inference.preset.name
    hf_id: str
    served_model: str             # what GET /v1/models will list
    resolution: Resolution        # registered preset, catalog model (0.11+), or any Hugging Face id (0.9+)
    runtime: Runtime
    kaito_mode: KaitoMode
    kaito_version: str
    instance_type: str
    nodes: int                    # pool node count (what is paid for)
    kaito_count: int | None       # Workspace resource.count (0.6; transformers); None: omitted (the estimator decides)
    workspace_names_instance_type: bool   # node auto-provisioning needs it; bring-your-own nodes forbid it
    pool_owner: PoolOwner         # who creates the GPU nodes: kaito-aks (one pool per replica) or KAITO itself
    nodes_carry_workspace_labels: bool    # kaito.sh/workspace[namespace] on the nodes (KAITO 0.11+ reuse, BYO)
    gpus_per_node: int
    multi_node: bool
    parallelism: str
    max_model_len: int | None     # written to the inference ConfigMap; None: not set
    max_model_len_source: str
    sizing_context: int
    dtype: Dtype | None
    gpu_memory_required_gib: float
    gpu_memory_available_gib: float
    usd_per_hour: float
    reason: str
    alternatives: tuple[Alternative, ...]
    gated: bool                   # needs the HF token Secret (modelAccessSecret)
    reference_hf_token: bool      # the Workspace references the token Secret
    pool_name: str
    os_disk_gib: int
    spot: bool
    vm_family: str
    vcpus: int
    gpu_model: str
    gpu_memory_mib: int | None   # per GPU, as GPU Feature Discovery reports it (what KAITO 0.12 byo sizes from)
    gfd_product: str | None      # GFD's nvidia.com/gpu.product for this size; None: not sourced, not pre-set
    weights_gib: float | None
    inference_config: dict[str, Any] | None   # the inference ConfigMap's inference_config.yaml; None: none
    config_hash: str | None                   # of inference_config: part of the ConfigMap's name
    identity: str                # hash of what KAITO can't change in place (model, runtime, size, nodes, config)
    notes: tuple[str, ...]
    price_note: str              # when its price isn't the region's own (spot price unknown, region not in snapshot)

    @property
    def match_labels(self) -> dict[str, str]:
        """The Workspace's labelSelector: one label unique to this Workspace (two Workspaces never share nodes)."""
        return {WORKSPACE_LABEL: self.workspace}

    @property
    def node_labels(self) -> dict[str, str]:
        """Labels the GPU pool's nodes carry so that KAITO counts them as this Workspace's own."""
        labels = {**self.match_labels, "accelerator": "nvidia"}
        if self.nodes_carry_workspace_labels:
            labels["kaito.sh/workspace"] = self.workspace
            labels["kaito.sh/workspacenamespace"] = self.namespace
        if self.kaito_mode == "helm":      # bring-your-own nodes: KAITO sizes from GPU Feature Discovery labels
            labels.update(self.gfd_labels)
        return labels

    @property
    def gfd_labels(self) -> dict[str, str]:
        """The GPU Feature Discovery labels KAITO's BYO mode reads, with exactly the values GFD will write.

        GFD (through NFD) overwrites these on every node, so a value that differed would flip under a running
        Workspace; a value that isn't sourced (docs/gpu-feature-discovery.md) is left to GFD, and the pool's
        readiness gate waits for it before the Workspace is created.
        """
        labels = {"nvidia.com/gpu.count": str(self.gpus_per_node)}
        if self.gpu_memory_mib is not None:
            labels["nvidia.com/gpu.memory"] = str(self.gpu_memory_mib)
        if self.gfd_product is not None:
            labels["nvidia.com/gpu.product"] = self.gfd_product
        return labels

    @property
    def needs_config_map(self) -> bool:
        return self.inference_config is not None

    @property
    def config_map(self) -> str | None:
        """The inference ConfigMap's name (named by its content), or None: the replica has no inference config."""
        return names.config_map_name(self.workspace, self.config_hash) if self.config_hash else None

    @property
    def wait_timeout_seconds(self) -> int:
        """How long `pulumi up` waits for WorkspaceSucceeded: KAITO's startup probe budget + node/image time.

        KAITO's startup probe allows 15 min + 18 s per GiB of weights, clamped to [30, 180] min
        (docs/kaito-runtime.md#startup-and-readiness-budget).
        """
        weights = self.weights_gib or self.gpu_memory_required_gib
        probe = min(180 * 60, max(30 * 60, 15 * 60 + 18 * weights))
        return int(probe + 20 * 60)


@dataclass(frozen=True)
class Plan:
    stack: str
    settings: Settings
    kaito_mode: KaitoMode
    kaito_version: str
    replicas: tuple[ReplicaPlan, ...]
    price_source: str                        # "<region priced> list prices from <snapshot, commit, date>"
    kaito_version_source: str                # "stack", or "assumed: <evidence>" for the add-on's default
    release: KaitoRelease                    # the rules the plan followed
    price_region: str                        # the region whose prices the plan uses
    price_notes: tuple[str, ...]             # where a price isn't the region's own (region not in the snapshot, ...)

    @property
    def usd_per_hour(self) -> float:
        return round(sum(r.usd_per_hour for r in self.replicas), 4)

    @property
    def usd_per_month(self) -> float:
        return round(self.usd_per_hour * HOURS_PER_MONTH, 2)

    def replicas_of(self, model_name: str) -> tuple[ReplicaPlan, ...]:
        return tuple(r for r in self.replicas if r.model_name == model_name)

    @property
    def model_names(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(r.model_name for r in self.replicas))

    def quota_vcpus(self, replicas: tuple[ReplicaPlan, ...] | None = None) -> dict[str, int]:
        """vCPUs per Azure VM family the plan (or ``replicas``) needs: GPU quota is granted per family and region."""
        need: dict[str, int] = {}
        for r in self.replicas if replicas is None else replicas:
            key = f"{r.vm_family}{' (spot)' if r.spot else ''}"
            need[key] = need.get(key, 0) + r.vcpus * r.nodes
        return need

    def surge(self) -> dict[str, Any]:
        """What a change costs while old and new replicas run side by side (models with rollout: surge): at most
        every surge replica twice, until the old ones are deleted at the end of `pulumi up`."""
        surging = tuple(r for r in self.replicas if r.rollout == "surge")
        return {"models": list(dict.fromkeys(r.model_name for r in surging)),
                "extra_usd_per_hour": round(sum(r.usd_per_hour for r in surging), 4),
                "extra_quota_vcpus": self.quota_vcpus(surging)}

    def upgrades(self) -> dict[str, Any]:
        """How AKS upgrades the GPU pools, the extra GPU quota that needs, and when it may happen."""
        window = self.settings.maintenance_window
        return {
            "gpu_pool_max_surge": GPU_POOL_UPGRADE["max_surge"],
            "gpu_pool_max_unavailable": GPU_POOL_UPGRADE["max_unavailable"],
            "extra_quota_vcpus": {},          # maxSurge 0: no node beyond the plan's
            "maintenance_window": None if window is None else {
                "day_of_week": window.day_of_week, "start_time": window.start_time, "utc_offset": window.utc_offset,
                "duration_hours": window.duration_hours, "interval_weeks": window.interval_weeks},
        }

    def to_json(self) -> dict:
        """The documented, stable JSON shape (README "Plan JSON")."""
        return {
            "stack": self.stack,
            "kaito": {"mode": self.kaito_mode, "version": self.kaito_version,
                      "version_source": self.kaito_version_source},
            "models": [
                {
                    "name": r.model_name,
                    "replica": r.replica,
                    "slot": r.slot,
                    "workspace": r.workspace,
                    "rollout": r.rollout,
                    "model": r.model_ref,
                    "preset": r.preset,
                    "hf_id": r.hf_id,
                    "served_model": r.served_model,
                    "runtime": r.runtime,
                    "instance_type": r.instance_type,
                    "nodes": r.nodes,
                    "gpus_per_node": r.gpus_per_node,
                    "parallelism": r.parallelism,
                    "max_model_len": r.max_model_len,
                    "gpu_memory_required_gib": r.gpu_memory_required_gib,
                    "gpu_memory_available_gib": r.gpu_memory_available_gib,
                    "usd_per_hour": r.usd_per_hour,
                    "spot": r.spot,
                    "pool_owner": r.pool_owner,
                    "node_labels": r.node_labels,
                    "inference_config_map": r.config_map,
                    "inference_config": r.inference_config,
                    "identity": r.identity,
                    "reason": r.reason,
                    "alternatives": [
                        {"instance_type": a.instance_type, "nodes": a.nodes, "usd_per_hour": a.usd_per_hour}
                        for a in r.alternatives
                    ],
                }
                for r in self.replicas
            ],
            "usd_per_hour": self.usd_per_hour,
            "usd_per_month": self.usd_per_month,
            "quota_vcpus": self.quota_vcpus(),
            "upgrades": self.upgrades(),
            "surge": self.surge(),
            "price_source": self.price_source,
            "price_region": self.price_region,
            "price_notes": list(self.price_notes),
        }


# ---------------------------------------------------------------------------------------------------------

def kaito_release(settings: Settings, catalog: Catalog) -> tuple[KaitoRelease, str]:
    """The KAITO release whose rules the plan follows, and where that choice comes from.

    Helm mode: the chart version the stack pins, else the catalog's default. Add-on mode: the version the stack says
    the add-on runs, else the newest version there is evidence for (assumed, and checked against the cluster by the
    version gate before anything GPU-priced is created).
    """
    mode, version = settings.kaito.mode, settings.kaito.version
    key = f"{PROJECT}:kaito.version"
    if version is None:
        if mode == "helm":
            return catalog.release(catalog.default_helm_version), "stack"
        addon = catalog.addon_default
        assert addon is not None, "infra/catalog/kaito.yaml names no add-on default"
        return catalog.release(addon.version), f"assumed: {addon.source}"
    try:
        release = catalog.release(version)
    except UnknownKaitoVersionError as err:
        raise UserError(f"{key}: {err}") from None
    if mode == "helm" and not release.helm_byo:
        usable = ", ".join(v for v in catalog.known_versions if catalog.releases[v].helm_byo)
        raise UserError(
            f"{key}: kaito.mode=helm installs KAITO with bring-your-own nodes sized from GPU Feature Discovery labels, "
            f"which KAITO {version} doesn't support correctly; use one of {usable}, or kaito.mode=addon")
    return release, "stack"


# learn.microsoft.com/azure/aks/quotas-skus-regions, "Maximum node pools per cluster": every replica has its own
# GPU pool (kaito-aks's, or the one KAITO's gpu-provisioner creates), beside the system pool.
AKS_MAX_NODE_POOLS = 100


def build_plan(settings: Settings, catalog: Catalog | None = None) -> Plan:
    """Decide everything for ``settings``; raise :class:`UserError` listing every problem found."""
    catalog = catalog or load_catalog()
    mode = settings.kaito.mode
    release, version_source = kaito_release(settings, catalog)
    version = release.version
    problems: list[str] = _stack_problems(settings)
    replicas: list[ReplicaPlan] = []
    for index, model in enumerate(settings.models):
        try:
            replicas.extend(_plan_model(settings, index, model, release, catalog, mode))
        except _ModelProblemsError as err:
            problems.extend(err.lines)
    slot_problems = _slot_clashes(replicas)
    problems.extend(slot_problems or _pool_name_clashes(replicas))     # a slot clash is also a pool clash
    if len(replicas) + 1 > AKS_MAX_NODE_POOLS:
        problems.append(
            f"{PROJECT}:models: {len(replicas)} replicas need {len(replicas)} GPU node pools, and with the system pool "
            f"that is more than the {AKS_MAX_NODE_POOLS} node pools AKS allows per cluster; lower replicas, or split "
            "the models over two stacks"
        )
    basis = prices.basis(settings.cluster.location)
    notes = tuple(dict.fromkeys(n for n in (basis.note, *(r.price_note for r in replicas)) if n))
    plan = Plan(settings.stack, settings, mode, version, tuple(replicas), basis.summary,
                kaito_version_source=version_source, release=release, price_region=basis.region_priced,
                price_notes=notes)
    if not problems:
        problems.extend(_budget_problems(settings, plan))
    if problems:
        raise UserError(problems)
    return plan


class _ModelProblemsError(Exception):
    def __init__(self, lines: list[str]):
        self.lines = lines


def _plan_model(settings: Settings, index: int, model: ModelSettings, release: KaitoRelease,
                catalog: Catalog, mode: KaitoMode) -> list[ReplicaPlan]:
    key = f"{PROJECT}:models[{index}]"
    user_facts = _facts_from_settings(model)
    try:
        resolved = resolve(model.model, release, catalog, user_facts)
    except ResolveError as err:
        raise _ModelProblemsError([f"{key}.model: {err}"]) from None
    problems = _model_problems(settings, key, model, resolved, release, catalog) + _name_problems(settings, key, model)
    if problems:
        raise _ModelProblemsError(problems)
    request = SizingRequest(
        model=resolved,
        runtime=model.runtime,
        release=release,
        max_model_len=model.max_model_len,
        dtype=model.dtype,
        memory_source="node-labels" if mode == "helm" else "sku-table",
        spot=model.spot,
        region=settings.cluster.location,
    )
    try:
        if model.instance_type == "auto":
            decision = choose(request, catalog)
        else:
            decision = check_explicit(request, catalog, model.instance_type)
    except SizingError as err:
        field_name = "instanceType" if model.instance_type != "auto" else "model"
        raise _ModelProblemsError([f"{key}.{field_name}: {err}"]) from None
    return [_replica(settings, index, model, resolved, decision, i, catalog, release) for i in range(model.replicas)]


def _name_problems(settings: Settings, key: str, model: ModelSettings) -> list[str]:
    """Every name KAITO or kaito-aks derives from the model's name must fit its Kubernetes limit."""
    problems = []
    surge = settings.rollout_of(model) == "surge"
    limit = names.max_model_name_length(model.replicas, surge)
    if len(model.name) > limit:
        longest = names.workspace_name(model.name, model.replicas - 1, "0" * names.SURGE_HASH_CHARS, surge)
        with_replicas = f" with replicas: {model.replicas}" if model.replicas > 1 else ""
        with_surge = f"{' and' if with_replicas else ' with'} rollout: surge (a 6-character hash)" if surge else ""
        problems.append(
            f"{key}.name: '{model.name}' is {len(model.name)} characters; at most {limit}{with_replicas}{with_surge}: "
            f"the Workspace '{longest}' must be at most {names.WORKSPACE_MAX} characters (KAITO runs it as a "
            "StatefulSet whose pods are labelled controller-revision-hash=<name>-<10 characters>, a label value of at "
            "most 63, kubernetes/kubernetes#64023); use a shorter name"
        )
    # within the limit every derived name fits too: the Workspace's own limit is the one that binds (test_names)
    dns_label = settings.access.dns_label
    if dns_label and not settings.gateway_enabled:
        for replica in range(model.replicas):
            label = load_balancer_dns_label(dns_label, names.slot_name(model.name, replica))
            if len(label) > names.DNS_LABEL_MAX:
                where = key.removeprefix(f"{PROJECT}:")
                problems.append(
                    f"{PROJECT}:access.dnsLabel: the DNS label of {where}'s endpoint would be '{label}', over "
                    f"{names.DNS_LABEL_MAX} characters; use a shorter access.dnsLabel or model name"
                )
                break
    return problems


def load_balancer_dns_label(dns_label: str, slot: str | None) -> str:
    """The Azure DNS label of an endpoint: the stack's label for the gateway, '<label>-<slot>' per replica (the
    replica's stable name: the address survives rollouts)."""
    return dns_label if slot is None else f"{dns_label}-{slot}"


def _facts_from_settings(model: ModelSettings) -> ModelFacts | None:
    if model.facts is None:
        return None
    f = model.facts
    return ModelFacts(hf_id=model.model, weights_gib=f.weights_gib, layers=f.layers, kv_heads=f.kv_heads,
                      head_dim=f.head_dim, context_limit=f.context_limit, gated=f.gated, source="stack settings")


def _first_with(catalog: Catalog, capability: str) -> str:
    """The first KAITO release that has a (boolean) capability."""
    return next(v for v in catalog.known_versions if getattr(catalog.releases[v], capability))


def _model_problems(settings: Settings, key: str, model: ModelSettings, resolved: ResolvedModel,
                    release: KaitoRelease, catalog: Catalog) -> list[str]:
    problems = []
    if model.runtime not in resolved.runtimes:
        problems.append(
            # every model runs on vllm (ResolvedModel.runtimes), so only transformers is ever refused
            f"{key}.runtime: '{model.runtime}' can't serve {resolved.preset} in KAITO {release.version}; "
            "use runtime: vllm"
        )
    if model.runtime == "transformers" and (model.max_model_len or model.dtype):
        which = "maxModelLen" if model.max_model_len else "dtype"
        problems.append(f"{key}.{which}: only applies to the vllm runtime (KAITO passes it to vLLM); remove it")
    limit = resolved.context_limit
    if model.max_model_len and limit and model.max_model_len > limit:
        problems.append(
            f"{key}.maxModelLen: {model.max_model_len} exceeds {resolved.served_name}'s context limit of {limit} "
            f"tokens (KAITO rejects it); use at most {limit}"
        )
    if model.spot and not release.spot_toleration:
        problems.append(
            f"{key}.spot: KAITO {release.version}'s inference pods don't tolerate AKS's spot taint "
            f"(kubernetes.azure.com/scalesetpriority=spot; KAITO {_first_with(catalog, 'spot_toleration')} and later "
            "do); use spot: false, or kaito.mode=helm"
        )
    if resolved.gated and "hfToken" not in settings.secrets_set:
        problems.append(
            f"{PROJECT}:hfToken: {resolved.hf_id} ({key}) is gated on Hugging Face and needs a token; accept its "
            "licence on huggingface.co, then `pulumi config set --secret hfToken hf_...`"
        )
    if model.facts is not None and resolved.path != "generic-hf":
        problems.append(
            f"{key}.facts: {model.model} is in KAITO {release.version}'s catalog, which sizing follows; remove facts"
        )
    return problems


def _replica(settings: Settings, index: int, model: ModelSettings, resolved: ResolvedModel,
             decision: Decision, replica: int, catalog: Catalog, release: KaitoRelease) -> ReplicaPlan:
    chosen = decision.chosen
    size = catalog.sizes[chosen.instance_type]
    byo = settings.kaito.mode == "helm"    # kaito-aks installs KAITO with bring-your-own nodes
    disk = resolved.disk_gib + IMAGE_SPACE_GIB
    os_disk = min(MAX_OS_DISK_GIB, math.ceil(disk / 64) * 64)    # >= 134 GiB: every model's disk need is >= 70
    vllm_values: dict[str, Any] = {}
    if decision.max_model_len is not None:
        vllm_values["max-model-len"] = decision.max_model_len
    if model.dtype is not None:
        vllm_values["dtype"] = model.dtype
    if chosen.gpu_memory_utilization is not None:
        vllm_values["gpu-memory-utilization"] = chosen.gpu_memory_utilization
    config = inference_config(release, model.runtime, vllm_values)
    config_hash = short_hash(config) if config is not None else None
    # Everything KAITO fixes when it first reconciles a Workspace, and what AKS can't change on a node pool (spot,
    # OS disk): a change to any of it needs a new Workspace and pool (in surge, under new names beside the old ones)
    identity = short_hash({"preset": resolved.preset, "runtime": model.runtime, "instance_type": chosen.instance_type,
                           "nodes": chosen.nodes, "count": chosen.kaito_count, "config": config_hash,
                           "spot": model.spot, "os_disk_gib": os_disk}, length=10)
    rollout = settings.rollout_of(model)
    workspace = names.workspace_name(model.name, replica, identity, surge=rollout == "surge")
    return ReplicaPlan(
        model_name=model.name,
        model_index=index,
        replica=replica,
        slot=names.slot_name(model.name, replica),
        workspace=workspace,
        rollout=rollout,
        namespace=settings.namespace,
        model_ref=model.model,
        preset=resolved.preset,
        hf_id=resolved.hf_id,
        served_model=resolved.served_name,
        resolution=resolved.path,
        runtime=model.runtime,
        kaito_mode=settings.kaito.mode,
        kaito_version=release.version,
        instance_type=chosen.instance_type,
        nodes=chosen.nodes,
        kaito_count=chosen.kaito_count,
        workspace_names_instance_type=byo is False,
        pool_owner="kaito-aks" if byo or release.reuses_pre_created_nodes else "kaito",
        nodes_carry_workspace_labels=byo or release.nodes_need_workspace_labels,
        gpus_per_node=chosen.gpus_per_node,
        multi_node=chosen.multi_node,
        parallelism=chosen.parallelism,
        max_model_len=decision.max_model_len,
        max_model_len_source=decision.max_model_len_source,
        sizing_context=decision.sizing_context,
        dtype=model.dtype,
        gpu_memory_required_gib=chosen.gpu_memory_required_gib,
        gpu_memory_available_gib=chosen.gpu_memory_available_gib,
        usd_per_hour=chosen.usd_per_hour,
        price_note=chosen.price_note,
        reason=decision.reason,
        alternatives=tuple(Alternative(o.instance_type, o.nodes, o.usd_per_hour) for o in decision.alternatives[:5]),
        gated=resolved.gated,
        reference_hf_token=resolved.gated and resolved.secret_rule != "forbidden",
        pool_name=pool_name(workspace),
        os_disk_gib=os_disk,
        spot=model.spot,
        vm_family=size.family,
        vcpus=size.vcpus,
        gpu_model=size.gpu_model,
        gpu_memory_mib=size.nvml_memory_mib,
        gfd_product=size.gfd_product,
        weights_gib=resolved.facts.weights_gib if resolved.facts else None,
        inference_config=config,
        config_hash=config_hash,
        identity=identity,
        notes=resolved.notes,
    )


def inference_config(release: KaitoRelease, runtime: Runtime, vllm_values: dict[str, Any]) -> dict[str, Any] | None:
    """KAITO's own default inference_config.yaml for the release, with the plan's vLLM flags merged in.

    A Workspace's ConfigMap replaces KAITO's template whole, so its other keys are written too. vLLM reads the
    ConfigMap's `vllm:` flags after KAITO's own command-line flags, so they win (presets/workspace/inference/vllm/
    inference_api.py). None when the plan sets nothing (KAITO then uses its defaults).
    """
    if runtime != "vllm" or not vllm_values:
        return None
    config = json.loads(json.dumps(release.inference_config_template))   # deep copy of plain data
    config["vllm"] = {**(config.get("vllm") or {}), **vllm_values}
    return config


def short_hash(value: Any, length: int = 8) -> str:
    """A stable short hash of plain data (canonical JSON)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:length]


def pool_name(workspace: str) -> str:
    """AKS user pool name for a Workspace: 'g' + 6 name characters + 5 hash characters (12, lower alnum).

    Stable across runs (a pure function of the Workspace name) and unique in practice; the plan rejects the
    rare clash instead of silently sharing a pool.
    """
    stem = re.sub(r"[^a-z0-9]", "", workspace.lower())[:6]
    digest = hashlib.sha256(workspace.encode()).hexdigest()[:12 - 1 - len(stem)]
    return f"g{stem}{digest}"


def _slot_clashes(replicas: list[ReplicaPlan]) -> list[str]:
    """A model named like another model's extra replica (``a`` with ``replicas: 2`` serves ``a`` and ``a-r1``):
    both would own the endpoint Service, gateway route and check named ``a-r1``. (Two extra replicas can't clash:
    model names are unique.)"""
    seen: dict[str, ReplicaPlan] = {}
    problems = []
    for r in replicas:
        other = seen.setdefault(r.slot, r)
        if other is r:
            continue
        named, extra = (r, other) if r.replica == 0 else (other, r)
        problems.append(
            f"{PROJECT}:models[{named.model_index}].name: '{named.slot}' is also the name models[{extra.model_index}] "
            f"('{extra.model_name}') gives its replica {extra.replica + 1}, so their Services, gateway routes and "
            "checks would clash; rename one of the models")
    return problems


def _pool_name_clashes(replicas: list[ReplicaPlan]) -> list[str]:
    seen: dict[str, str] = {}
    problems = []
    for r in replicas:
        if r.pool_name in seen:
            problems.append(f"{PROJECT}:models[{r.model_index}].name: '{r.workspace}' and '{seen[r.pool_name]}' "
                            f"map to the same AKS pool name {r.pool_name}; rename one of the models")
        seen[r.pool_name] = r.workspace
    return problems


def _stack_problems(settings: Settings) -> list[str]:
    problems = []
    if settings.is_production and not settings.cluster.api_server_authorized_ip_ranges:
        problems.append(
            f"{PROJECT}:cluster.apiServerAuthorizedIpRanges: required for a production stack; list the CIDRs "
            "of your admins and CI runners (or set production: false)"
        )
    access = settings.access
    if not (access.source_ranges or access.allow_any_source or access.internal):
        problems.append(
            f"{PROJECT}:access.sourceRanges: not set, so the endpoints would be open to the internet; list your "
            "client CIDRs, or set access.internal: true (private IP), or access.allowAnySource: true"
        )
    check = settings.endpoint_check
    if access.internal and check.enabled and not check.url:
        problems.append(
            f"{PROJECT}:endpointCheck.url: the endpoints are internal (access.internal), so `pulumi up` can't reach "
            "them to check them; set endpointCheck.url to an address reachable from where Pulumi runs, or "
            "endpointCheck.enabled: false"
        )
    if settings.gateway_enabled and "apiKeys" not in settings.secrets_set:
        problems.append(
            f"{PROJECT}:apiKeys: the gateway (on for production stacks, or gateway.enabled) needs API keys; "
            "`pulumi config set --secret apiKeys '[\"sk-...\"]'` (e.g. python3 -c 'import secrets; "
            "print(\"sk-\" + secrets.token_urlsafe(32))'), or gateway.enabled: false"
        )
    if "apiKeys" in settings.secrets_set and not settings.gateway_enabled:
        off = ("gateway.enabled is false" if settings.gateway.enabled is False
               else "it is on by default for production stacks only")
        problems.append(
            f"{PROJECT}:apiKeys: set, but nothing checks them: the gateway is off ({off}), so clients reach the "
            "models without a key; set gateway.enabled: true to require the keys, or remove apiKeys"
        )
    if settings.cluster.azure_rbac and not settings.cluster.admin_group_object_ids:
        problems.append(
            f"{PROJECT}:cluster.adminGroupObjectIds: required with azureRbac (local accounts are disabled, so "
            "someone must be cluster admin); add the Entra ID group object ids"
        )
    return problems


def _budget_problems(settings: Settings, plan: Plan) -> list[str]:
    limit = settings.budget.max_usd_per_hour
    if limit is None or plan.usd_per_hour <= limit + 1e-9:
        return []
    biggest = max(plan.replicas, key=lambda r: r.usd_per_hour)
    return [
        f"{PROJECT}:budget.maxUsdPerHour: the plan costs ${plan.usd_per_hour:.2f}/h "
        f"(${plan.usd_per_month:,.0f}/month), over the budget of ${limit:.2f}/h; the largest item is "
        f"{biggest.workspace} at ${biggest.usd_per_hour:.2f}/h -- raise the budget, lower replicas, or choose smaller "
        "models"
    ]
