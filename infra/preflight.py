"""Preflight: will Azure let this plan's node pools be created? Quota, size availability, the KAITO add-on's region.

Azure reports a missing GPU quota (``QuotaExceeded``) or a size the subscription can't use in the region
(``SkuNotAvailable``) only when the GPU pool is created, ten or more minutes into ``pulumi up``. Preflight asks first,
with the read-only Azure APIs the same errors come from:

- the compute usages API (``Microsoft.Compute/locations/{region}/usages``): per VM family and region, the vCPU quota
  (``limit``) and what is in use (``currentValue``), plus the regional totals ``cores`` (regular VMs) and
  ``lowPriorityCores`` (spot VMs);
- the resource SKUs API (``Microsoft.Compute/skus``, filtered to the region): whether a size is offered in the region,
  its quota ``family``, its vCPUs, whether it can run as spot, and its ``restrictions`` (``Location`` or ``Zone``, with
  ``reasonCode`` ``NotAvailableForSubscription`` or ``QuotaId``);
- the scale sets of the cluster's node resource group: the stack's own pools that already run (their vCPUs are in
  ``currentValue`` and are not needed twice; AKS tags each scale set with ``aks-managed-poolName``). Pools the plan
  no longer has (an old surge replica, a removed model) stay counted as usage: `pulumi up` deletes them last.

Everything here except :func:`read_azure` is pure: :func:`decide` takes the plan's needs (:func:`needs_from_plan`) and
the objects the Azure SDK returned, and gives one line per problem, naming the family/size/region and the fix: the
quota request to make, or the next of the plan's alternatives that is available. The quota family of a size comes from
the SKUs API's ``family`` at run time; ``infra/catalog/azure_quota_families.yaml`` is the fallback. Family names are
compared lowercased without spaces (the two APIs spell some differently).
"""
from __future__ import annotations

import functools
import math
import pathlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from infra.catalog import load_catalog
from infra.plan import GPU_POOL_UPGRADE
from infra.render.azure_args import SYSTEM_POOL
from infra.settings import PROJECT

QUOTA_FAMILIES_FILE = pathlib.Path(__file__).resolve().parent / "catalog" / "azure_quota_families.yaml"
REGIONAL_CORES = "cores"                  # usages: "Total Regional vCPUs" (every regular VM in the region)
SPOT_CORES = "lowPriorityCores"           # usages: "Total Regional Low-priority vCPUs" (spot VMs, every family)
QUOTA_WHERE = "Azure portal > Quotas > Compute"
POOL_TAG = "aks-managed-poolName"         # AKS's tag on each node pool's scale set
SYSTEM_POOL_DEFAULT_MAX_SURGE = "10%"     # AKS's default when upgradeSettings.maxSurge isn't set (REST docs)
PUBLIC_ARM = "https://management.azure.com"
# Region-name prefixes of the sovereign clouds (Azure Government, Azure China, the retired Azure Germany): the KAITO
# add-on "is supported in public Azure regions" (MS Learn, AKS AI toolchain operator, Limitations)
SOVEREIGN_PREFIXES = ("usgov", "usdod", "usnat", "ussec", "china", "germany")


def family_key(name: str) -> str:
    """How usages and SKUs names are matched: lowercased, spaces removed."""
    return name.replace(" ", "").lower()


def _s(value: Any) -> str:
    """An SDK enum or string as its plain string value."""
    return str(getattr(value, "value", value) if value is not None else "")


# ---------------------------------------------------------------------------------------------------------
# What the plan needs

@dataclass(frozen=True)
class AltSize:
    instance_type: str
    nodes: int
    usd_per_hour: float
    vcpus: int | None = None              # per VM, from the catalog


@dataclass(frozen=True)
class PoolNeed:
    label: str                            # the workspace, or "system pool"
    setting: str                          # the stack setting that chose the size
    pool_name: str                        # the AKS pool name (matched against running scale sets)
    vm_size: str
    nodes: int
    spot: bool = False
    vcpus: int | None = None              # per VM, from the catalog; the SKUs API's value wins
    surge_nodes: int = 0                  # extra nodes while the pool upgrades
    alternatives: tuple[AltSize, ...] = ()
    zones: tuple[str, ...] = ()           # availability zones the pool pins (none today)
    rollout_surge: bool = False           # a later change runs a new pool beside this one (rollout: surge)


@dataclass(frozen=True)
class Needs:
    stack: str
    region: str
    pools: tuple[PoolNeed, ...]
    kaito_addon: bool
    node_resource_group: str


def surge_nodes(max_surge: str | int | None, nodes: int) -> int:
    """Extra nodes AKS adds while upgrading a pool of ``nodes``: ``maxSurge`` as a count, or a percentage rounded up."""
    if max_surge is None or max_surge == "":
        return 0
    text = str(max_surge).strip()
    if text.endswith("%"):
        return math.ceil(nodes * float(text[:-1]) / 100)
    return int(text)


def needs_from_plan(plan, gpu_pool_upgrade: Mapping[str, str] | None = None) -> Needs:
    """The node pools a plan creates, with the surge their upgrades need: GPU pools upgrade with the plan's
    ``GPU_POOL_UPGRADE`` (maxSurge 0 today: no surge), spot pools never surge (Azure forbids it), the system pool with
    AKS's default maxSurge (10%, at least one node).

    Rollouts need no extra term here, because :func:`decide` counts what runs: a ``recreate`` rollout replaces a pool
    under the same name, deleting it first (components/gpu_pool.py ``delete_before_replace``), so its running vCPUs
    are reused; a ``surge`` rollout creates the new replica's pool under a new name (the Workspace name carries the
    identity hash) beside the old one, which stays in Azure's ``currentValue`` until `pulumi up` deletes it. Run
    before each `up`, preflight therefore asks for exactly what that `up` creates; the headroom a later surge rollout
    will need is a warning line."""

    upgrade = GPU_POOL_UPGRADE if gpu_pool_upgrade is None else gpu_pool_upgrade
    catalog = load_catalog()
    settings = plan.settings
    pools = []
    for r in plan.replicas:
        alts = tuple(AltSize(a.instance_type, a.nodes, a.usd_per_hour,
                             catalog.sizes[a.instance_type].vcpus if a.instance_type in catalog.sizes else None)
                     for a in r.alternatives)
        pools.append(PoolNeed(
            label=r.workspace, setting=f"{PROJECT}:models[{r.model_index}].instanceType", pool_name=r.pool_name,
            vm_size=r.instance_type, nodes=r.nodes, spot=r.spot, vcpus=r.vcpus,
            surge_nodes=0 if r.spot else surge_nodes(upgrade.get("max_surge"), r.nodes), alternatives=alts,
            rollout_surge=getattr(r, "rollout", "recreate") == "surge"))
    system = settings.cluster.system_pool
    pools.append(PoolNeed(
        label="system pool", setting=f"{PROJECT}:cluster.systemPool.vmSize", pool_name=SYSTEM_POOL,
        vm_size=system.vm_size, nodes=system.count,
        surge_nodes=max(1, surge_nodes(SYSTEM_POOL_DEFAULT_MAX_SURGE, system.count))))
    region = settings.cluster.location
    return Needs(stack=plan.stack, region=region, pools=tuple(pools), kaito_addon=settings.kaito.mode == "addon",
                 node_resource_group=f"MC_{settings.resource_group}_{settings.cluster_name}_{region}")


# ---------------------------------------------------------------------------------------------------------
# What Azure says, read off the SDK's objects

@dataclass(frozen=True)
class UsageRow:
    name: str                             # name.value, as the usages API spells it
    localized: str
    current: int
    limit: int


@dataclass(frozen=True)
class SkuRow:
    name: str
    family: str | None
    vcpus: int | None
    zones: tuple[str, ...]
    location_restriction: str | None      # reasonCode of a Location restriction, or None
    restricted_zones: tuple[str, ...]
    low_priority_capable: bool | None


@dataclass(frozen=True)
class RunningPool:
    pool_name: str
    vm_size: str
    nodes: int
    spot: bool


def usage_rows(usages: Iterable[Any]) -> dict[str, UsageRow]:
    """Usages by family key (``u.name.value``, ``u.current_value``, ``u.limit`` of the SDK's ``Usage``)."""
    out = {}
    for u in usages:
        name = getattr(u, "name", None)
        value = _s(getattr(name, "value", None))
        if not value:
            continue
        out[family_key(value)] = UsageRow(value, _s(getattr(name, "localized_value", None)) or value,
                                          int(u.current_value or 0), int(u.limit or 0))
    return out


def _capability(sku: Any, name: str) -> str | None:
    for cap in getattr(sku, "capabilities", None) or ():
        if _s(cap.name).lower() == name.lower():
            return _s(cap.value)
    return None


def sku_rows(skus: Iterable[Any], region: str) -> dict[str, SkuRow]:
    """VM sizes offered in ``region`` by lowercased name, from the SDK's ``ResourceSku`` objects."""
    out = {}
    for sku in skus:
        if _s(getattr(sku, "resource_type", "")).lower() != "virtualmachines":
            continue
        locations = [_s(loc).lower() for loc in getattr(sku, "locations", None) or ()]
        infos = [i for i in getattr(sku, "location_info", None) or () if _s(i.location).lower() == region.lower()]
        if region.lower() not in locations and not infos:
            continue
        zones = tuple(sorted(str(z) for i in infos for z in (i.zones or ())))
        location_restriction: str | None = None
        restricted_zones: set[str] = set()
        for r in getattr(sku, "restrictions", None) or ():
            kind = _s(r.type).lower()
            info = getattr(r, "restriction_info", None)
            if kind == "location" and region.lower() in [_s(v).lower() for v in (r.values_property or ())]:
                location_restriction = _s(r.reason_code) or "restricted"
            elif kind == "zone":
                restricted_zones.update(str(z) for z in (getattr(info, "zones", None) or ()))
        vcpus = _capability(sku, "vCPUs")
        low_priority = _capability(sku, "LowPriorityCapable")
        out[_s(sku.name).lower()] = SkuRow(
            name=_s(sku.name), family=_s(getattr(sku, "family", None)) or None,
            vcpus=int(vcpus) if vcpus and vcpus.isdigit() else None, zones=zones,
            location_restriction=location_restriction, restricted_zones=tuple(sorted(restricted_zones)),
            low_priority_capable=None if low_priority is None else low_priority.lower() == "true")
    return out


def running_pools(scale_sets: Iterable[Any]) -> list[RunningPool]:
    """AKS node pools that already run, from the SDK's ``VirtualMachineScaleSet`` objects of the node resource group."""
    out = []
    for vmss in scale_sets:
        tags = getattr(vmss, "tags", None) or {}
        pool = tags.get(POOL_TAG)
        sku = getattr(vmss, "sku", None)
        if not pool or sku is None or not sku.name:
            continue
        profile = getattr(vmss, "virtual_machine_profile", None)
        priority = _s(getattr(profile, "priority", None)).lower()
        out.append(RunningPool(str(pool), _s(sku.name), int(sku.capacity or 0), priority in ("spot", "low")))
    return out


@functools.lru_cache(maxsize=1)
def fallback_families() -> dict[str, str]:
    """The catalog's size -> quota family mapping (used when the SKUs API doesn't list a size)."""
    raw = yaml.safe_load(QUOTA_FAMILIES_FILE.read_text())["families"]
    return {size.lower(): row["family"] for size, row in raw.items()}


# ---------------------------------------------------------------------------------------------------------
# Deciding

@dataclass
class Report:
    lines: list[str] = field(default_factory=list)      # what was checked, and how it stands
    problems: list[str] = field(default_factory=list)   # one line each, with the fix

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class _Bucket:
    """One quota: a VM family, or a regional total."""

    key: str
    display: str
    steady: int = 0
    surge: int = 0
    credit: int = 0                      # vCPUs of the stack's own running pools (in currentValue already)
    rollout: int = 0                     # vCPUs a later surge rollout of its pools adds while old and new both run
    pools: list[PoolNeed] = field(default_factory=list)

    @property
    def need(self) -> int:
        return self.steady + self.surge


def _free(bucket: _Bucket, usage: UsageRow | None) -> tuple[int, int]:
    """(free vCPUs, limit), counting the stack's own running vCPUs as free (they are reused, not added)."""
    if usage is None:
        return 0, 0
    in_use = max(0, usage.current - min(bucket.credit, usage.current))
    return usage.limit - in_use, usage.limit


def _availability(pool_spot: bool, size: str, sku: SkuRow | None, region: str,
                  zones: Sequence[str] = ()) -> str | None:
    """Why ``size`` can't be used in ``region`` (None: it can)."""
    if sku is None:
        return f"is not offered in {region} (the resource SKUs API doesn't list it there)"
    if sku.location_restriction:
        return f"is not available to this subscription in {region} (restriction: {sku.location_restriction})"
    blocked = sorted(set(zones) & set(sku.restricted_zones)) + sorted(set(zones) - set(sku.zones))
    if zones and blocked:
        return f"is not available to this subscription in zone(s) {', '.join(blocked)} of {region}"
    if pool_spot and sku.low_priority_capable is False:
        return f"can't run as spot in {region} (LowPriorityCapable is False)"
    return None


def _vcpus(size: str, skus: Mapping[str, SkuRow], catalog_vcpus: int | None) -> int | None:
    row = skus.get(size.lower())
    return row.vcpus if row and row.vcpus else catalog_vcpus


def decide(needs: Needs, usages: Iterable[Any], skus: Iterable[Any], scale_sets: Iterable[Any] = (), *,
           families: Mapping[str, str] | None = None, arm_endpoint: str = PUBLIC_ARM) -> Report:
    """Every problem Azure would raise creating ``needs``' pools, from the SDK's usages, resource SKUs and the node
    resource group's scale sets. Pure: no network."""
    families = fallback_families() if families is None else families
    region = needs.region
    report = Report()
    usage = usage_rows(usages)
    offered = sku_rows(skus, region)
    running = {p.pool_name: p for p in running_pools(scale_sets)}
    where = f"{needs.stack} in {region}"

    if not offered:
        report.problems.append(
            f"region: Azure lists no VM size in '{region}' for this subscription (kaito-aks:cluster.location): check "
            "the region name (`az account list-locations --query '[].name' -o tsv`) and that the subscription may "
            "use it")
        return report

    if needs.kaito_addon:
        sovereign = region.startswith(SOVEREIGN_PREFIXES) or arm_endpoint.rstrip("/") != PUBLIC_ARM
        if sovereign:
            report.problems.append(
                f"kaito-aks:kaito.mode: the AKS AI toolchain operator add-on is supported in public Azure regions only "
                f"(MS Learn, AI toolchain operator, Limitations), and {region} is not one: use kaito.mode: helm, or a "
                "public region (kaito-aks:cluster.location)")
        else:
            report.lines.append(f"KAITO add-on: {region} is a public Azure region (the add-on's documented condition; "
                                "Azure publishes no per-region list of it)")

    planned = _planned_need(needs, offered, families)

    # sizes: offered, not restricted, spot-capable where spot
    usable: list[PoolNeed] = []
    groups: dict[tuple[str, bool, str, tuple[str, ...]], list[PoolNeed]] = {}
    for pool in needs.pools:            # one line per size and setting, naming every pool it concerns
        groups.setdefault((pool.vm_size, pool.spot, pool.setting, pool.zones), []).append(pool)
    for (size, on_spot, _setting, zones), pools in groups.items():
        sku = offered.get(size.lower())
        why = _availability(on_spot, size, sku, region, zones)
        if why is None:
            usable.extend(pools)
            listed = f" (zones {', '.join(sku.zones)})" if sku and sku.zones else ""
            partial = (f"; restricted in zone(s) {', '.join(sku.restricted_zones)}, which the pools don't pin"
                       if sku and sku.restricted_zones and not zones else "")
            report.lines.append(f"size {size}{' (spot)' if on_spot else ''}: offered in {region}{listed}{partial}")
            continue
        fix = _size_fix(pools, offered, region, usage, families, planned)
        if sku is not None and sku.location_restriction:
            fix += f", or ask Azure support to enable {size} in {region} for the subscription"
        report.problems.append(f"size: {size} ({', '.join(p.label for p in pools)}) {why}: {fix}")

    # quota: per family (regular VMs), regional total, spot total
    buckets: dict[str, _Bucket] = {}
    cores = _Bucket(family_key(REGIONAL_CORES), "Total Regional vCPUs (cores)")
    spot = _Bucket(family_key(SPOT_CORES), "Total Regional Spot vCPUs (lowPriorityCores)")
    for pool in usable:
        vcpus = _vcpus(pool.vm_size, offered, pool.vcpus)
        family = _family(pool.vm_size, offered, families)
        if vcpus is None or family is None:
            report.problems.append(
                f"quota: the quota family or vCPUs of {pool.vm_size} ({pool.label}) are unknown (not in the resource "
                f"SKUs API for {region}, nor in infra/catalog/azure_quota_families.yaml): check its quota in "
                f"{QUOTA_WHERE} before deploying")
            continue
        if pool.spot:
            target = [spot]
        else:
            bucket = buckets.setdefault(family_key(family), _Bucket(family_key(family), family))
            target = [bucket, cores]
        for b in target:
            b.steady += pool.nodes * vcpus
            b.surge += pool.surge_nodes * vcpus
            b.rollout += pool.nodes * vcpus if pool.rollout_surge else 0
            b.pools.append(pool)
        mine = running.get(pool.pool_name)
        if mine is not None and mine.spot == pool.spot:
            mine_vcpus = _vcpus(mine.vm_size, offered, None) or 0
            mine_family = _family(mine.vm_size, offered, families)
            credited = mine.nodes * mine_vcpus
            if pool.spot:
                spot.credit += credited
            else:
                cores.credit += credited
                if mine_family:
                    buckets.setdefault(family_key(mine_family), _Bucket(family_key(mine_family), mine_family)).credit \
                        += credited
    for b in [*sorted(buckets.values(), key=lambda b: b.key), cores, spot]:
        if b.need == 0:
            continue
        row = usage.get(b.key)
        free, limit = _free(b, row)
        name = (f"{row.localized} ({row.name})" if b in (cores, spot) else row.name) if row else b.display
        own = f", counting the {min(b.credit, row.current if row else 0)} vCPUs of its running pools as free" \
            if b.credit and row else ""
        detail = f" ({b.steady} for the pools + {b.surge} upgrade surge)" if b.surge else ""
        if b.need <= free:
            report.lines.append(f"quota {name} in {region}: the plan needs {b.need} vCPUs{detail}, {free} of {limit} "
                                f"free{own}")
            if b.rollout > free - b.need:
                models = ", ".join(dict.fromkeys(p.label for p in b.pools if p.rollout_surge))
                report.lines.append(
                    f"warning: quota {name} in {region}: a later change of {models} (rollout: surge) runs new pools "
                    f"beside the old ones and needs up to {b.rollout} vCPUs more, {free - b.need} will be free: "
                    f"request {b.rollout - (free - b.need)} more ({QUOTA_WHERE}) before such a change, or "
                    "preflight will stop it")
            continue
        short = b.need - free
        if row is None:
            head = f"quota: Azure reports no {name} quota in {region} (no usages entry), the plan needs {b.need} vCPUs"
        else:
            head = f"quota: {name} in {region} has {free} of {limit} vCPUs free{own}, the plan needs {b.need}{detail}"
        what = "vCPUs" if b in (cores, spot) else f"vCPUs for {name}"
        fix = f"request {short} more {what} in {region} (a new limit of {limit + short}; {QUOTA_WHERE})"
        alt = _quota_alternative(b, free, offered, usage, families, planned, region) if b not in (cores, spot) else None
        if alt:
            fix += f", or {alt}"
        report.problems.append(f"{head}: {fix}")
    if not report.problems:
        report.lines.append(f"preflight of {where}: Azure will accept every pool of the plan")
    return report


def _family(size: str, offered: Mapping[str, SkuRow], families: Mapping[str, str]) -> str | None:
    row = offered.get(size.lower())
    return (row.family if row and row.family else None) or families.get(size.lower())


def _alt_ok(alt: AltSize, spot: bool, offered: Mapping[str, SkuRow], region: str, usage: Mapping[str, UsageRow],
            families: Mapping[str, str], extra_need: Mapping[str, int], exclude_family: str | None,
            copies: int = 1) -> bool:
    """The alternative is offered, unrestricted, and its quota has room for it on top of the plan's own need."""
    if _availability(spot, alt.instance_type, offered.get(alt.instance_type.lower()), region) is not None:
        return False
    vcpus = _vcpus(alt.instance_type, offered, alt.vcpus)
    family = SPOT_CORES if spot else _family(alt.instance_type, offered, families)
    if vcpus is None or family is None:
        return False
    key = family_key(family)
    if exclude_family is not None and key == exclude_family:
        return False
    row = usage.get(key)
    if row is None:
        return False
    return row.limit - row.current - extra_need.get(key, 0) >= copies * alt.nodes * vcpus


def _planned_need(needs: Needs, offered: Mapping[str, SkuRow], families: Mapping[str, str]) -> dict[str, int]:
    """vCPUs the plan's pools need per quota key (families, and the spot total), whatever their availability."""
    out: dict[str, int] = {}
    for pool in needs.pools:
        vcpus = _vcpus(pool.vm_size, offered, pool.vcpus)
        family = SPOT_CORES if pool.spot else _family(pool.vm_size, offered, families)
        if vcpus and family:
            key = family_key(family)
            out[key] = out.get(key, 0) + (pool.nodes + pool.surge_nodes) * vcpus
    return out


def _size_fix(pools: Sequence[PoolNeed], offered: Mapping[str, SkuRow], region: str, usage: Mapping[str, UsageRow],
              families: Mapping[str, str], planned: Mapping[str, int]) -> str:
    """The first of the plan's alternatives for ``pools`` (replicas of one model) that is available with quota."""
    pool = pools[0]
    others = dict(planned)                # the alternative replaces these pools: their own need is not added
    vcpus = _vcpus(pool.vm_size, offered, pool.vcpus)
    family = SPOT_CORES if pool.spot else _family(pool.vm_size, offered, families)
    if vcpus and family:
        own = sum((p.nodes + p.surge_nodes) * vcpus for p in pools)
        others[family_key(family)] = others.get(family_key(family), 0) - own
    for alt in pool.alternatives:
        if _alt_ok(alt, pool.spot, offered, region, usage, families, others, None, copies=len(pools)):
            return (f"set {pool.setting}: {alt.instance_type} ({alt.nodes} x, ${alt.usd_per_hour:.3f}/h, the plan's "
                    f"next alternative available there)")
    if pool.alternatives:
        return (f"none of the plan's alternatives ({', '.join(a.instance_type for a in pool.alternatives)}) is "
                f"available there with quota either; choose another region (kaito-aks:cluster.location)")
    return f"choose another size ({pool.setting}) or region (kaito-aks:cluster.location)"


def _quota_alternative(bucket: _Bucket, free: int, offered: Mapping[str, SkuRow], usage: Mapping[str, UsageRow],
                       families: Mapping[str, str], planned: Mapping[str, int], region: str) -> str | None:
    """For a short family: moving one model's pools (all its replicas) to the first of its alternatives in another
    family with room, when that alone makes the short family fit."""
    by_setting: dict[str, list[PoolNeed]] = {}
    for pool in bucket.pools:
        by_setting.setdefault(pool.setting, []).append(pool)
    candidates = sorted(by_setting.values(), key=lambda ps: -sum(p.nodes * (p.vcpus or 0) for p in ps))
    for pools in candidates:
        pool = pools[0]
        vcpus = _vcpus(pool.vm_size, offered, pool.vcpus) or 0
        if bucket.need - sum((p.nodes + p.surge_nodes) * vcpus for p in pools) > free:
            continue
        for alt in pool.alternatives:
            if _alt_ok(alt, pool.spot, offered, region, usage, families, planned, bucket.key, copies=len(pools)):
                return (f"set {pool.setting}: {alt.instance_type} ({alt.nodes} x, ${alt.usd_per_hour:.3f}/h, the "
                        f"plan's next alternative with quota free)")
    return None


# ---------------------------------------------------------------------------------------------------------
# The Azure SDK edge

@dataclass
class AzureFacts:
    usages: list
    skus: list
    scale_sets: list


def read_azure(needs: Needs, subscription_id: str, credential: Any, *, base_url: str | None = None,
               **request_options: Any) -> AzureFacts:
    """The usages, resource SKUs and node-resource-group scale sets of ``needs.region``, with azure-mgmt-compute.

    ``request_options`` go to every call (tests pass ``enforce_https=False`` to use a local http:// server). Azure's
    exceptions propagate: :func:`azure_error_line` turns them into one line.
    """
    from azure.core.exceptions import ResourceNotFoundError
    from azure.mgmt.compute import ComputeManagementClient

    client = ComputeManagementClient(credential, subscription_id, base_url=base_url) if base_url \
        else ComputeManagementClient(credential, subscription_id)
    region = needs.region
    usages = list(client.usage.list(region, **request_options))
    skus = list(client.resource_skus.list(filter=f"location eq '{region}'", **request_options))
    try:
        scale_sets = list(client.virtual_machine_scale_sets.list(needs.node_resource_group, **request_options))
    except ResourceNotFoundError:          # no node resource group yet: nothing of the stack runs
        scale_sets = []
    return AzureFacts(usages, skus, scale_sets)


_TOKEN_LIKE = re.compile(r"eyJ[A-Za-z0-9_-]{8,}(\.[A-Za-z0-9_-]*){0,2}|(?i:bearer)\s+\S+")
_EXPIRED = re.compile(r"AADSTS700082|AADSTS50173|AADSTS70043|AADSTS700024|ExpiredAuthenticationFailed|"
                      r"ExpiredAuthenticationToken|"
                      r"InvalidAuthenticationTokenTokenExpired|token (has )?expired|refresh token .*expired", re.I)
CREDENTIALS_FIX = ("run `az login` (and `az account set --subscription ID`), or set AZURE_CLIENT_ID, AZURE_TENANT_ID "
                   "and AZURE_CLIENT_SECRET (service principal) or AZURE_FEDERATED_TOKEN_FILE (workload identity)")


def scrub(text: str) -> str:
    """``text`` without anything shaped like a token."""
    return _TOKEN_LIKE.sub("[redacted]", text)


def _error_code(err: Any) -> str:
    error = getattr(err, "error", None)
    code = getattr(error, "code", None)
    return str(code) if code else ""


def azure_error_line(err: BaseException, subscription_id: str, endpoint: str = PUBLIC_ARM) -> str:
    """One line (no token, no traceback) for an exception of azure-identity or azure-mgmt-compute, with the fix."""
    from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ServiceRequestError

    text = scrub(" ".join(str(err).split()))
    code = _error_code(err)
    if isinstance(err, ClientAuthenticationError):
        found = _EXPIRED.search(code) or _EXPIRED.search(text)
        if found:
            return (f"Azure credentials: expired ({found.group(0)}); run `az login` again, or renew the service "
                    "principal's secret or federated token")
        status = getattr(getattr(err, "response", None), "status_code", None)
        if status == 401:
            refused = f"HTTP 401{' ' + code if code else ''}"
            return f"Azure credentials: Azure refused the token ({refused}); {CREDENTIALS_FIX}"
        return f"Azure credentials: none usable (no credential of the chain could get a token); {CREDENTIALS_FIX}"
    if isinstance(err, ServiceRequestError):
        return (f"Azure Resource Manager ({endpoint}) can't be reached ({type(err).__name__}); check the network or "
                "proxy (HTTPS_PROXY), then run preflight again")
    if isinstance(err, HttpResponseError):
        status = err.status_code
        if status == 403:
            return (f"Azure: the signed-in identity may not read compute usages, SKUs or scale sets in subscription "
                    f"{subscription_id} (HTTP 403{' ' + code if code else ''}); give it the Reader role on the "
                    "subscription")
        if status == 404 and code in ("SubscriptionNotFound", "InvalidSubscriptionId"):
            return (f"Azure subscription {subscription_id}: not found for the signed-in identity ({code}); pass "
                    "--subscription with one it can read (`az account list -o table`)")
        return f"Azure answered HTTP {status}{' ' + code if code else ''}; run preflight again later"
    return f"Azure: {type(err).__name__}; run preflight again (KAITO_AKS_DEBUG=1 shows the traceback)"
