"""The Azure side of the plan as plain arguments: the AKS cluster, one GPU agent pool per replica, KAITO's chart.

Pure functions of the Plan; ``components/`` passes them to pulumi-azure-native / pulumi-kubernetes unchanged
(snake_case keys, which the SDK accepts for its ``...Args`` types).
"""
from __future__ import annotations

from infra.plan import GPU_POOL_UPGRADE, Plan, ReplicaPlan
from infra.render import monitoring
from infra.render.common import GPU_TAINT

KAITO_CHART = "workspace"
KAITO_CHART_REPO = "https://kaito-project.github.io/kaito/charts/kaito"
SYSTEM_POOL = "system"
GPU_TOLERATIONS = [
    {"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"},
    {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "kubernetes.azure.com/scalesetpriority", "operator": "Equal", "value": "spot", "effect": "NoSchedule"},
]


def managed_cluster_args(plan: Plan) -> dict:
    """AKS with OIDC + workload identity, Azure CNI overlay with a policy engine, and KAITO's add-on if asked."""
    s = plan.settings
    c = s.cluster
    network = {
        "network_plugin": "azure",
        "network_plugin_mode": "overlay",
        "network_policy": c.network_policy,
        "load_balancer_sku": "standard",
    }
    if c.network_policy == "cilium":
        network["network_dataplane"] = "cilium"   # Azure CNI powered by Cilium enforces NetworkPolicy
    args: dict = {
        "resource_name_": s.cluster_name,
        "location": c.location,
        "dns_prefix": s.cluster_name,
        "identity": {"type": "SystemAssigned"},
        "agent_pool_profiles": [{
            "name": SYSTEM_POOL,
            "mode": "System",
            "vm_size": c.system_pool.vm_size,
            "count": c.system_pool.count,
            "os_type": "Linux",
            "os_sku": "Ubuntu",
            "type": "VirtualMachineScaleSets",
        }],
        "network_profile": network,
        "oidc_issuer_profile": {"enabled": True},
        "security_profile": {"workload_identity": {"enabled": True}},
        "auto_upgrade_profile": {"upgrade_channel": "patch", "node_os_upgrade_channel": "NodeImage"},
        "tags": tags(plan),
    }
    if c.kubernetes_version:
        args["kubernetes_version"] = c.kubernetes_version
    if c.api_server_authorized_ip_ranges:
        args["api_server_access_profile"] = {"authorized_ip_ranges": list(c.api_server_authorized_ip_ranges)}
    if s.kaito.mode == "addon":
        args["ai_toolchain_operator_profile"] = {"enabled": True}
    if c.azure_rbac:
        args["aad_profile"] = {"managed": True, "enable_azure_rbac": True,
                               "admin_group_object_ids": list(c.admin_group_object_ids)}
        args["disable_local_accounts"] = True
    profile = monitoring.azure_monitor_profile(plan)
    if profile is not None:
        args["azure_monitor_profile"] = profile
    return args


MAINTENANCE_CONFIGS = ("aksManagedAutoUpgradeSchedule", "aksManagedNodeOSUpgradeSchedule")


def maintenance_configuration_args(plan: Plan) -> list[dict]:
    """AKS planned maintenance: the cluster's auto-upgrade and node-OS (NodeImage) channels both wait for the
    stack's window, so GPU nodes are never reimaged (and their models reloaded) at a random hour. Empty without
    a window. (Microsoft.ContainerService/managedClusters/maintenanceConfigurations, API 2023-05-01+.)"""
    window = plan.settings.maintenance_window
    if window is None:
        return []
    spec = {
        "schedule": {"weekly": {"day_of_week": window.day_of_week, "interval_weeks": window.interval_weeks}},
        "duration_hours": window.duration_hours,
        "start_time": window.start_time,
        "utc_offset": window.utc_offset,
    }
    return [{"config_name": name, "maintenance_window": spec} for name in MAINTENANCE_CONFIGS]


def tags(plan: Plan) -> dict[str, str]:
    # kaito-version: the KAITO release the plan sized for (the policy pack and operators read it off the cluster)
    return {"managed-by": "kaito-aks", "stack": plan.stack, "kaito-version": plan.kaito_version}


def gpu_pool_args(r: ReplicaPlan) -> dict:
    """One AKS user pool per replica: the plan's size and node count, labelled and tainted for KAITO."""
    args: dict = {
        "agent_pool_name": r.pool_name,
        "mode": "User",
        "vm_size": r.instance_type,
        "count": r.nodes,
        "enable_auto_scaling": False,     # KAITO's node count is fixed per Workspace
        # Node image and Kubernetes upgrades without an extra (surge) GPU node: no GPU quota beyond the plan's,
        # one node at a time inside the cluster's maintenance window (user pools only; AKS API 2025-03-01+)
        "upgrade_settings": dict(GPU_POOL_UPGRADE),
        "os_type": "Linux",
        "os_sku": "Ubuntu",               # KAITO's images and the AKS GPU driver path kaito-aks tests with
        "os_disk_size_gb": r.os_disk_gib,
        "node_labels": r.node_labels,
        "node_taints": [GPU_TAINT],
        "type": "VirtualMachineScaleSets",
        "tags": {"managed-by": "kaito-aks", "kaito-workspace": r.workspace},
    }
    if r.spot:
        args.update({
            "scale_set_priority": "Spot", "scale_set_eviction_policy": "Delete", "spot_max_price": -1,
            # An evicted spot node is deleted; with the autoscaler pinned at the plan's count (min = max), AKS
            # creates a replacement as soon as capacity returns, instead of waiting for the next `pulumi up`
            "enable_auto_scaling": True, "min_count": r.nodes, "max_count": r.nodes,
        })
        del args["upgrade_settings"]      # Azure rejects maxSurge/maxUnavailable on spot pools (HTTP 400)
    return args


def kaito_chart_values(plan: Plan) -> dict:
    """KAITO's workspace chart in bring-your-own-nodes mode (the release's own switches, from the catalog), with what
    advertises GPUs on kaito-aks's nodes."""
    assert plan.release is not None and plan.release.helm_byo, "the Helm path needs a release with BYO support"
    return {
        "clusterName": plan.settings.cluster_name,
        "cloudProviderName": "azure",
        **plan.release.byo_chart_values,                    # nodeProvisioner / the BYO gate / no local CSI driver
        "nvidiaDevicePlugin": {"enabled": True},            # nvidia.com/gpu on the tainted GPU nodes
        "spotInstance": {"enabled": any(r.spot for r in plan.replicas)},
        "gpu-feature-discovery": {
            "gfd": {"enabled": True},                        # nvidia.com/gpu.product/.count/.memory labels
            "nfd": {"enabled": True, "worker": {"tolerations": GPU_TOLERATIONS}},
            "tolerations": GPU_TOLERATIONS,
        },
    }
