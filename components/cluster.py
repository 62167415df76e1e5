"""KaitoCluster: resource group, AKS with KAITO (add-on or Helm chart), identities, Kubernetes provider."""
from __future__ import annotations

import base64
from dataclasses import dataclass

import pulumi
import pulumi_azure_native.containerservice as containerservice
import pulumi_azure_native.resources as resources
import pulumi_kubernetes as k8s

from components.options import child_opts
from components.version_gate import KaitoVersionGate
from infra.plan import Plan
from infra.render import azure_args
from infra.settings import KAITO_HELM_NAMESPACE


@dataclass(frozen=True)
class KaitoClusterArgs:
    plan: Plan


class KaitoCluster(pulumi.ComponentResource):
    """An AKS cluster ready for KAITO Workspaces.

    Outputs: ``resource_group_name``, ``cluster_id``, ``cluster_name``, ``node_resource_group``, ``oidc_issuer_url``,
    ``kubeconfig`` (secret). Attributes for other components: ``provider`` (Kubernetes, from the cluster's
    user credentials), ``version_gate`` (passes only when the cluster runs the plan's KAITO release: GPU pools wait
    for it) and ``kaito_ready`` (what a Workspace must wait for: KAITO installed, its webhook fails closed, and the
    version gate).
    """

    def __init__(self, name: str, args: KaitoClusterArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("kaito-aks:index:KaitoCluster", name, None, opts)
        self._name = name
        plan = args.plan
        settings = plan.settings
        child = child_opts(self)

        self.resource_group = resources.ResourceGroup(
            f"{name}-rg", resource_group_name=settings.resource_group, location=settings.cluster.location,
            tags=azure_args.tags(plan), opts=child)

        self.cluster = containerservice.ManagedCluster(
            f"{name}-aks",
            resource_group_name=self.resource_group.name,
            **azure_args.managed_cluster_args(plan),
            # GPU pools are separate AgentPool resources; AKS reports them in agentPoolProfiles too
            opts=child_opts(self, ignore_changes=["agentPoolProfiles"]),
        )
        for maintenance in azure_args.maintenance_configuration_args(plan):
            containerservice.MaintenanceConfiguration(
                f"{name}-{maintenance['config_name']}",
                resource_group_name=self.resource_group.name,
                resource_name_=self.cluster.name,
                **maintenance,
                opts=child_opts(self),
            )
        self.resource_group_name = self.resource_group.name
        self.cluster_id = self.cluster.id
        self.cluster_name = self.cluster.name
        self.node_resource_group = self.cluster.node_resource_group
        self.oidc_issuer_url = self.cluster.oidc_issuer_profile.apply(lambda p: p.issuer_url if p else None)

        self.kubeconfig: pulumi.Output[str] = pulumi.Output.secret(
            containerservice.list_managed_cluster_user_credentials_output(
                resource_group_name=self.resource_group.name,
                resource_name=self.cluster.name,
                format="exec" if settings.cluster.azure_rbac else None,
            ).kubeconfigs[0].value.apply(lambda v: _kubeconfig(v, settings.cluster.azure_rbac))
        )
        self.provider = k8s.Provider(
            f"{name}-k8s", kubeconfig=self.kubeconfig, delete_unreachable=True,
            opts=child_opts(self, depends_on=[self.cluster]))

        installed: list[pulumi.Resource] = [self.cluster]
        if settings.kaito.mode == "helm":
            installed = [self._kaito_chart(plan)]
        # Nothing GPU-priced before the cluster is known to run the KAITO release the plan was sized for
        self.version_gate = KaitoVersionGate(
            f"{name}-kaito-version", kubeconfig=self.kubeconfig, mode=settings.kaito.mode,
            planned_version=plan.kaito_version, opts=child_opts(self, depends_on=installed))
        self.kaito_ready: list[pulumi.Resource] = [*installed, self.version_gate]

        self.register_outputs({
            "resource_group_name": self.resource_group_name,
            "cluster_id": self.cluster_id,
            "cluster_name": self.cluster_name,
            "node_resource_group": self.node_resource_group,
            "oidc_issuer_url": self.oidc_issuer_url,
            "kubeconfig": self.kubeconfig,
        })

    def _kaito_chart(self, plan: Plan) -> pulumi.Resource:
        """KAITO's workspace chart, pinned, in bring-your-own-nodes mode; waits until its webhook serves."""
        ns = k8s.core.v1.Namespace(f"{self._name}-kaito-ns", metadata={"name": KAITO_HELM_NAMESPACE},
                                   opts=child_opts(self, provider=self.provider))
        return k8s.helm.v3.Release(
            f"{self._name}-kaito-workspace",
            name="kaito-workspace",
            namespace=KAITO_HELM_NAMESPACE,
            chart=azure_args.KAITO_CHART,
            version=plan.kaito_version,
            repository_opts={"repo": azure_args.KAITO_CHART_REPO},
            values=azure_args.kaito_chart_values(plan),
            atomic=True,
            timeout=900,
            opts=child_opts(self, provider=self.provider, depends_on=[ns]),
        )


def _kubeconfig(encoded: str, azure_rbac: bool) -> str:
    text = base64.b64decode(encoded).decode()
    if azure_rbac:
        # Entra ID clusters hand out an exec kubeconfig (kubelogin); use the Azure CLI login that CI and
        # operators already have instead of an interactive device code.
        text = text.replace("- devicecode", "- azurecli")
    return text
