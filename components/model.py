"""ModelDeployment: one model of the stack, one Workspace + one GPU pool + one endpoint Service per replica."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes

from components import k8s
from components.cluster import KaitoCluster
from components.endpoint_check import EndpointCheck
from components.gpu_pool import GpuNodePool, GpuNodePoolArgs
from components.options import child_opts
from components.pool_readiness import PoolReadiness
from infra import node_readiness
from infra.plan import Plan, ReplicaPlan
from infra.pod_transport import PodTarget
from infra.render import common, model_objects


@dataclass
class ReplicaResources:
    plan: ReplicaPlan
    pool: GpuNodePool | None                    # None: KAITO provisions the nodes (pool_owner "kaito")
    nodes_ready: pulumi.Resource | None
    workspace: pulumi.CustomResource
    service: pulumi_kubernetes.core.v1.Service  # the slot's endpoint Service: stable name and address
    ready_check: EndpointCheck | None = None    # surge: the new Workspace's check, before the Service moves to it
    url: pulumi.Output[str | None] | None = None   # direct endpoint (no gateway); None until Azure gives an address


@dataclass(frozen=True)
class ModelDeploymentArgs:
    plan: Plan
    model_name: str                                    # the stack's models[i].name
    cluster: KaitoCluster
    depends_on: Sequence[pulumi.Resource] = ()         # the namespace and its guardrails, the HF token Secret
    gateway_pod_labels: Mapping[str, str] | None = None   # the gateway's pods may reach the model (None: no gateway)


class ModelDeployment(pulumi.ComponentResource):
    """Creates, per replica: its GPU pool; the inference ConfigMap when the plan sets vLLM flags; the Workspace,
    only once its pool and the KAITO controller are ready, waited on until WorkspaceSucceeded; the slot's endpoint
    Service; its NetworkPolicy.

    How a change KAITO can't make in place (model, size, node count, inference config, spot) rolls out:

    - ``rollout: recreate``: the Workspace keeps its name and is replaced delete-first (the endpoint is down
      until the new one has loaded); the pool likewise.
    - ``rollout: surge``: the Workspace, its pool, ConfigMap and NetworkPolicy carry the replica's identity hash in
      their names, so the change is a *new* replica beside the old one. Its ``<workspace>-ready`` EndpointCheck
      runs the full OpenAI check on the new pod through a Kubernetes port-forward; only then does the slot's
      endpoint Service (same name, same address) move its selector to the new Workspace -- and with it the
      gateway's upstream for the model. Pulumi deletes the old Workspace and pool at the end of the update; a
      failed check fails ``pulumi up`` with the old replica still serving.

    Outputs: ``workspaces``, ``endpoints`` (direct URLs; empty behind the gateway).
    """

    def __init__(self, name: str, args: ModelDeploymentArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("kaito-aks:index:ModelDeployment", name, None, opts)
        labels = dict(args.gateway_pod_labels) if args.gateway_pod_labels is not None else None
        self.replicas: list[ReplicaResources] = [
            self._replica(r, args.plan, args.cluster, list(args.depends_on), labels)
            for r in args.plan.replicas_of(args.model_name)]
        self.workspaces = [rr.plan.workspace for rr in self.replicas]
        self.endpoints = pulumi.Output.all(*[rr.url for rr in self.replicas if rr.url is not None])
        self.register_outputs({"workspaces": self.workspaces, "endpoints": self.endpoints})

    def _replica(self, r: ReplicaPlan, plan: Plan, cluster: KaitoCluster, depends_on: list[pulumi.Resource],
                 gateway_pod_labels: dict[str, str] | None) -> ReplicaResources:
        k8s_opts = lambda **kw: child_opts(self, provider=cluster.provider, **kw)
        surge = r.rollout == "surge"
        before_workspace: list[pulumi.Resource] = [*cluster.kaito_ready, *depends_on]
        pool: GpuNodePool | None = None
        nodes_ready: pulumi.Resource | None = None
        if r.pool_owner == "kaito-aks":
            pool = GpuNodePool(r.pool_name, GpuNodePoolArgs(r, cluster), opts=child_opts(self))
            # KAITO must never see the pool half-ready (0.6 would provision a second pool; BYO nodes must carry
            # uniform GPU Feature Discovery labels, which the chart's GFD writes once it runs on them)
            nodes_ready = PoolReadiness(
                f"{r.workspace}-nodes-ready", kubeconfig=cluster.kubeconfig,
                expectation=node_readiness.expectation_for(r).to_dict(),
                opts=child_opts(self, depends_on=[pool.agent_pool, *cluster.kaito_ready]))
            before_workspace = [nodes_ready, pool.agent_pool, *before_workspace]
        # else KAITO provisions the replica's nodes itself (0.7 reuses no pre-created pool): a pool of ours would be
        # a second one, paid for and unused
        config = model_objects.inference_config_map(r)
        if config is not None:
            before_workspace.append(k8s.apply(f"{r.workspace}-config", config, k8s_opts(depends_on=depends_on)))
        workspace = k8s.apply(
            f"{r.workspace}-workspace", model_objects.workspace(r),
            k8s_opts(
                depends_on=before_workspace,
                # KAITO makes model, selector and instance type immutable, never rolls pods for a new inference
                # config and fixes the node count once: replace on any of them (the identity annotation carries
                # the node count and the config's hash; the config's name changes with its content). In surge
                # the identity is in the name too, so a change is a new Workspace, never this replacement.
                replace_on_changes=["resource", "inference", f"metadata.annotations[\"{common.IDENTITY_ANNOTATION}\"]"],
                delete_before_replace=not surge,
                custom_timeouts=pulumi.CustomTimeouts(create=f"{r.wait_timeout_seconds}s",
                                                      update=f"{r.wait_timeout_seconds}s"),
            ),
        )
        ready_check = self._ready_check(r, plan, cluster, workspace) if surge else None
        service_obj = model_objects.endpoint_service(r, plan)
        is_lb = service_obj["spec"]["type"] == "LoadBalancer"
        # surge: the Service moves to the new Workspace only once it passed its check; recreate: a LoadBalancer is
        # awaited until it has ready endpoints, so it is created once the model serves
        service_after = [ready_check] if ready_check is not None else [workspace] if is_lb else depends_on
        service = k8s.apply_service(f"{r.slot}-endpoint", service_obj, k8s_opts(depends_on=service_after))
        k8s.apply(f"{r.workspace}-netpol", model_objects.inference_network_policy(r, plan, gateway_pod_labels),
                  k8s_opts(depends_on=depends_on))
        url = None
        if is_lb:
            url = k8s.load_balancer_address(service).apply(lambda a: f"http://{a}" if a else None)
        return ReplicaResources(r, pool, nodes_ready, workspace, service, ready_check, url)

    def _ready_check(self, r: ReplicaPlan, plan: Plan, cluster: KaitoCluster,
                     workspace: pulumi.Resource) -> EndpointCheck:
        """The new Workspace's full check through a port-forward to its pod, before any traffic reaches it (also
        when post-deploy checks are off: a surge never moves traffic to an unproven replica)."""
        settings = plan.settings.endpoint_check
        target = PodTarget.from_dict(model_objects.inference_pod_target(r))
        return EndpointCheck(
            f"{r.workspace}-ready",
            base_url=target.base_url(),
            pod_target=target.to_dict(),
            kubeconfig=cluster.kubeconfig,
            runtime=r.runtime,
            kaito_version=r.kaito_version,
            expected_model=r.served_model,
            timeout_s=settings.timeout_seconds,
            concurrency=settings.concurrency,
            trigger=r.identity,
            opts=child_opts(self, depends_on=[workspace]),
        )
