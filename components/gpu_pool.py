"""GpuNodePool: one AKS agent pool per model replica, exactly as the plan sized it."""
from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_azure_native.containerservice as containerservice

from components.cluster import KaitoCluster
from components.options import child_opts
from infra.plan import ReplicaPlan
from infra.render import azure_args


@dataclass(frozen=True)
class GpuNodePoolArgs:
    replica: ReplicaPlan
    cluster: KaitoCluster


class GpuNodePool(pulumi.ComponentResource):
    """The replica's own GPU nodes: its VM size and node count, labelled so KAITO counts them as the Workspace's
    own (and provisions nothing), tainted ``sku=gpu:NoSchedule`` so only KAITO's inference pods land there.

    Outputs: ``pool_name``, ``vm_size``, ``node_count``.
    """

    def __init__(self, name: str, args: GpuNodePoolArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("kaito-aks:index:GpuNodePool", name, None, opts)
        replica, cluster = args.replica, args.cluster
        pool_args = azure_args.gpu_pool_args(replica)
        self.agent_pool = containerservice.AgentPool(
            f"{name}-pool",   # child names are unique per stack, not per parent
            resource_group_name=cluster.resource_group_name,
            resource_name_=cluster.cluster_name,
            **pool_args,
            opts=child_opts(
                self,
                # no GPU node is paid for before the cluster is known to run the plan's KAITO release
                depends_on=[cluster.version_gate],
                # a new size or a different spot setting is a new pool (AKS can't change them in place); in surge
                # they are in the replica's identity, so in the pool's name: a new pool beside the old one instead
                replace_on_changes=["vmSize", "scaleSetPriority", "osDiskSizeGB"],
                delete_before_replace=replica.rollout != "surge",
                custom_timeouts=pulumi.CustomTimeouts(create="60m", update="60m", delete="60m"),
            ),
        )
        self.pool_name = self.agent_pool.name
        self.vm_size = pulumi.Output.from_input(replica.instance_type)
        self.node_count = pulumi.Output.from_input(replica.nodes)
        self.register_outputs({"pool_name": self.pool_name, "vm_size": self.vm_size, "node_count": self.node_count})
