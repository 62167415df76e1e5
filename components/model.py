"""ModelDeployment: one model of the stack, one Workspace + one GPU pool + one endpoint Service per replica."""
from __future__ import annotations

from dataclasses import dataclass
import pulumi

from components import k8s
from components.gpu_pool import GpuNodePool
from components.pool_readiness import PoolReadiness
from infra import manifests, node_readiness
from infra.plan import Plan, ReplicaPlan


@dataclass
class ReplicaResources:
    plan: ReplicaPlan
    pool: GpuNodePool | None                    # None: KAITO provisions the nodes (pool_owner "kaito")
    nodes_ready: pulumi.Resource | None
    workspace: pulumi.CustomResource
    service: pulumi.CustomResource
    url: pulumi.Output[str] | None = None       # direct endpoint (no gateway)


class ModelDeployment(pulumi.ComponentResource):
    """Creates, per replica: its GPU pool; the inference ConfigMap when the plan sets vLLM flags; the Workspace,
    only once its pool and the KAITO controller are ready, waited on until WorkspaceSucceeded and replaced
    (delete first) when a field KAITO makes immutable changes; the endpoint Service; its NetworkPolicy.

    Outputs: ``workspaces``, ``endpoints`` (direct URLs; empty behind the gateway).
    """

    def __init__(self, name: str, plan: Plan, model_name: str, cluster, depends_on: list[pulumi.Resource],
                 gateway_pod_labels: dict[str, str] | None, opts: pulumi.ResourceOptions | None = None):
        super().__init__("kaito-aks:index:ModelDeployment", name, None, opts)
        self.replicas: list[ReplicaResources] = []
        for r in plan.replicas_of(model_name):
            self.replicas.append(self._replica(r, plan, cluster, depends_on, gateway_pod_labels))
        self.workspaces = [rr.plan.workspace for rr in self.replicas]
        self.endpoints = pulumi.Output.all(*[rr.url for rr in self.replicas if rr.url is not None])
        self.register_outputs({"workspaces": self.workspaces, "endpoints": self.endpoints})

    def _replica(self, r: ReplicaPlan, plan: Plan, cluster, depends_on: list[pulumi.Resource],
                 gateway_pod_labels: dict[str, str] | None) -> ReplicaResources:
        k8s_opts = lambda **kw: pulumi.ResourceOptions(parent=self, provider=cluster.provider, **kw)
        before_workspace: list[pulumi.Resource] = [*cluster.kaito_ready, *depends_on]
        pool: GpuNodePool | None = None
        nodes_ready: pulumi.Resource | None = None
        if r.pool_owner == "kaito-aks":
            pool = GpuNodePool(r.pool_name, r, cluster, opts=pulumi.ResourceOptions(parent=self))
            # KAITO must never see the pool half-ready (0.6 would provision a second pool; BYO nodes must carry
            # uniform GPU Feature Discovery labels, which the chart's GFD writes once it runs on them)
            nodes_ready = PoolReadiness(
                f"{r.workspace}-nodes-ready", kubeconfig=cluster.kubeconfig,
                expectation=node_readiness.expectation_for(r).to_dict(),
                opts=pulumi.ResourceOptions(parent=self, depends_on=[pool.agent_pool, *cluster.kaito_ready]))
            before_workspace = [nodes_ready, pool.agent_pool, *before_workspace]
        # else KAITO provisions the replica's nodes itself (0.7 reuses no pre-created pool): a pool of ours would be
        # a second one, paid for and unused
        config = manifests.inference_config_map(r)
        if config is not None:
            before_workspace.append(k8s.apply(f"{r.workspace}-config", config, k8s_opts(depends_on=depends_on)))
        workspace = k8s.apply(
            f"{r.workspace}-workspace", manifests.workspace(r),
            k8s_opts(
                depends_on=before_workspace,
                # KAITO makes model, selector and instance type immutable, never rolls pods for a new inference
                # config and fixes the node count once: replace on any of them (the identity annotation carries
                # the node count and the config's hash; the config's name changes with its content)
                replace_on_changes=["resource", "inference", f"metadata.annotations[\"{manifests.IDENTITY_ANNOTATION}\"]"],
                delete_before_replace=True,
                custom_timeouts=pulumi.CustomTimeouts(create=f"{r.wait_timeout_seconds}s",
                                                      update=f"{r.wait_timeout_seconds}s"),
            ),
        )
        service_obj = manifests.endpoint_service(r, plan)
        is_lb = service_obj["spec"]["type"] == "LoadBalancer"
        # a LoadBalancer is awaited until it has ready endpoints: create it once the model serves
        service = k8s.apply(f"{r.workspace}-endpoint", service_obj,
                            k8s_opts(depends_on=[workspace] if is_lb else depends_on))
        k8s.apply(f"{r.workspace}-netpol", manifests.inference_network_policy(r, plan, gateway_pod_labels),
                  k8s_opts(depends_on=depends_on))
        url = None
        if is_lb:
            url = k8s.load_balancer_address(service).apply(lambda a: f"http://{a}" if a else None)
        return ReplicaResources(r, pool, nodes_ready, workspace, service, url)
