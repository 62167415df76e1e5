"""Observability: managed Prometheus's Azure side, alerts, Grafana with the stack's dashboard, and what it scrapes.

Every argument comes from ``infra.render.monitoring`` (pure functions of the Plan); this component only creates:

- an Azure Monitor workspace, and the data collection endpoint, rule and association of Microsoft's "enable
  Prometheus" templates (the cluster itself gets ``azureMonitorProfile.metrics`` from ``azure_monitor_profile``);
- the alert rules as an Azure Prometheus rule group, and an action group when the stack names receivers;
- Azure Managed Grafana linked to the workspace, its identity allowed to read it (Monitoring Data Reader), the
  identity running ``pulumi up`` and the admin groups made Grafana Admin, and the dashboard uploaded through
  Grafana's HTTP API (:class:`GrafanaDashboard`: pulumi-azure-native has no resource for a dashboard inside a
  Managed Grafana);
- in the cluster, the ServiceMonitors / PodMonitor (``azmonitoring.coreos.com/v1``) and the NetworkPolicies that
  admit only the managed scraper.

Outputs: ``grafana_url`` (None without Grafana), ``dashboard_url``, ``workspace_id``, ``prometheus_query_endpoint``.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, Resource, ResourceProvider, UpdateResult

from components import k8s as k8s_objects
from components.options import child_opts
from infra.plan import Plan
from infra.render import monitoring
from infra.settings import webhook_url_problem

TOKEN_ENV = "KAITO_AKS_GRAFANA_TOKEN"     # an Entra ID token for https://dashboard.azure.com, instead of `az`
RBAC_WAIT_S = 600.0                       # a new Grafana Admin role assignment takes minutes to apply


@dataclass(frozen=True)
class ObservabilityArgs:
    """What the component needs from the rest of the stack."""

    plan: Plan
    resource_group_name: pulumi.Input[str]
    cluster_id: pulumi.Input[str]                       # the AKS cluster's ARM id (the DCRA's and rules' scope)
    k8s_provider: pulumi.ProviderResource | None = None  # the cluster's Kubernetes provider
    k8s_depends_on: Sequence[pulumi.Resource] = ()      # the namespace, model Services and gateway the monitors watch
    subscription_id: pulumi.Input[str] | None = None     # default: the deploying identity's (getClientConfig)
    deployer_object_id: pulumi.Input[str] | None = None  # default: the deploying identity's object id
    extra_tags: Mapping[str, str] = field(default_factory=dict)
    alert_webhook_url: pulumi.Input[str] | None = None    # the secret alertWebhookUrl, when set


class Observability(pulumi.ComponentResource):
    def __init__(self, name: str, args: ObservabilityArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("kaito-aks:index:Observability", name, None, opts)
        from pulumi_azure_native import alertsmanagement, authorization, dashboard, monitor

        plan, rg = args.plan, args.resource_group_name
        child = lambda deps=(): child_opts(self, depends_on=deps)
        subscription: pulumi.Input[str]
        deployer: pulumi.Input[str]
        if args.subscription_id is not None and args.deployer_object_id is not None:
            subscription, deployer = args.subscription_id, args.deployer_object_id
        else:   # the deploying identity's, for what isn't given
            client = authorization.get_client_config_output(opts=pulumi.InvokeOutputOptions(parent=self))
            subscription = args.subscription_id if args.subscription_id is not None else client.subscription_id
            deployer = args.deployer_object_id if args.deployer_object_id is not None else client.object_id

        self.workspace = monitor.AzureMonitorWorkspace(f"{name}-amw", resource_group_name=rg,
                                                       **monitoring.workspace_args(plan), opts=child())
        self.dce = monitor.DataCollectionEndpoint(f"{name}-dce", resource_group_name=rg, **monitoring.dce_args(plan),
                                                  opts=child())
        self.dcr = monitor.DataCollectionRule(f"{name}-dcr", resource_group_name=rg,
                                              **monitoring.dcr_args(plan, self.workspace.id, self.dce.id), opts=child())
        self.dcra = monitor.DataCollectionRuleAssociation(f"{name}-dcra",
                                                          **monitoring.dcra_args(plan, args.cluster_id, self.dcr.id),
                                                          opts=child())

        self.action_group = None
        webhook = (pulumi.Output.secret(args.alert_webhook_url).apply(_checked_webhook)
                   if args.alert_webhook_url is not None else None)
        action_args = monitoring.action_group_args(plan, webhook)
        if action_args is not None:
            self.action_group = monitor.ActionGroup(f"{name}-actions", resource_group_name=rg, **action_args,
                                                    opts=child())
        self.rule_group = None
        rules = monitoring.rule_group_args(plan, self.workspace.id, args.cluster_id,
                                    self.action_group.id if self.action_group is not None else None)
        if rules is not None:
            self.rule_group = alertsmanagement.PrometheusRuleGroup(f"{name}-alerts", resource_group_name=rg, **rules,
                                                                   opts=child([self.dcra]))

        self.grafana = None
        self.grafana_url: pulumi.Output = pulumi.Output.from_input(None)
        self.dashboard_url: pulumi.Output = pulumi.Output.from_input(None)
        grafana_args = monitoring.grafana_args(plan, self.workspace.id)
        if grafana_args is not None:
            self.grafana = dashboard.Grafana(f"{name}-grafana", resource_group_name=rg, **grafana_args, opts=child())
            principal = self.grafana.identity.apply(lambda i: i.principal_id if i else None)
            role_id = lambda guid: pulumi.Output.from_input(subscription).apply(
                lambda sub: monitoring.role_definition_id(sub, guid))
            assignments = [
                authorization.RoleAssignment(f"{name}-{role_name}", **role_args, opts=child())
                for role_name, role_args in monitoring.role_assignments(plan, role_id, self.workspace.id,
                                                                  self.grafana.id, principal, deployer)
            ]
            self.grafana_url = self.grafana.properties.apply(lambda p: p.endpoint if p else None)
            board = GrafanaDashboard(f"{name}-dashboard", endpoint=self.grafana_url,
                                     dashboard=json.dumps(monitoring.dashboard(plan), sort_keys=True),
                                     opts=child_opts(self, depends_on=assignments))
            self.dashboard_url = board.url

        self.kubernetes: list[pulumi.Resource] = []
        if args.k8s_provider is not None:
            self.kubernetes = self._kubernetes(plan, args, [self.dcra])

        self.workspace_id = self.workspace.id
        self.prometheus_query_endpoint = self.workspace.metrics.apply(
            lambda m: m.prometheus_query_endpoint if m else None)
        self.register_outputs({"grafana_url": self.grafana_url, "dashboard_url": self.dashboard_url,
                               "workspace_id": self.workspace_id,
                               "prometheus_query_endpoint": self.prometheus_query_endpoint})

    def _kubernetes(self, plan: Plan, args: ObservabilityArgs, azure: list[pulumi.Resource]) -> list[pulumi.Resource]:
        """The monitors (custom resources of the managed Prometheus add-on: created after the data collection
        association, and after what they watch) and the scraper's NetworkPolicies."""
        made: list[pulumi.Resource] = []
        for obj in monitoring.kubernetes_objects(plan):
            meta = obj["metadata"]
            name = f"obs-{obj['kind'].lower()}-{meta['name']}"
            opts = child_opts(self, provider=args.k8s_provider, depends_on=[*azure, *args.k8s_depends_on])
            if obj["apiVersion"] == monitoring.MONITOR_API:
                made.append(k8s.apiextensions.CustomResource(name, api_version=obj["apiVersion"], kind=obj["kind"],
                                                             metadata=meta, spec=obj["spec"], opts=opts))
            else:
                made.append(k8s_objects.apply(name, obj, opts))
        return made


# ---------------------------------------------------------------------------------------------------------
# The dashboard inside Managed Grafana: Grafana's HTTP API, as a dynamic resource

def grafana_token() -> str:
    """An Entra ID access token for Managed Grafana's data plane: ``KAITO_AKS_GRAFANA_TOKEN``, else the Azure CLI's
    login (``az account get-access-token --resource https://dashboard.azure.com``, MS Learn "Authenticate to the
    Azure Managed Grafana data plane API")."""
    token = os.environ.get(TOKEN_ENV)
    if token:
        return token
    try:
        proc = subprocess.run(["az", "account", "get-access-token", "--resource", monitoring.GRAFANA_TOKEN_AUDIENCE,
                               "--query", "accessToken", "-o", "tsv"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise RuntimeError(f"uploading the Grafana dashboard needs an Entra ID token: set {TOKEN_ENV}, or install the "
                           f"Azure CLI and `az login` ({err})") from None
    if proc.returncode != 0 or not proc.stdout.strip():
        raise RuntimeError(f"`az account get-access-token --resource {monitoring.GRAFANA_TOKEN_AUDIENCE}` failed "
                           f"({proc.stderr.strip()[:300]}); `az login`, or set {TOKEN_ENV}")
    return proc.stdout.strip()


def upload_dashboard(endpoint: str, board: dict, token: str, wait_s: float = RBAC_WAIT_S,
                     request=None, retry_every_s: float = 15.0) -> dict:
    """POST /api/dashboards/db (overwrite): returns Grafana's answer (uid, url, version). 401/403 are retried for
    ``wait_s`` (a role assignment made in the same `pulumi up` takes minutes to reach Grafana)."""
    import requests

    request = request or requests.request
    deadline = time.monotonic() + wait_s
    body = {"dashboard": {**board, "id": None}, "overwrite": True, "message": "kaito-aks (pulumi up)"}
    while True:
        r = request("POST", f"{endpoint.rstrip('/')}/api/dashboards/db", json=body, timeout=60,
                    headers={"Authorization": f"Bearer {token}"})
        if r.status_code == 200:
            return r.json()
        if r.status_code in (401, 403) and time.monotonic() < deadline:
            time.sleep(retry_every_s)
            continue
        raise RuntimeError(f"Grafana refused the dashboard: HTTP {r.status_code} {r.text[:300]}"
                           + (" (the identity running `pulumi up` needs Grafana Admin or Editor)"
                              if r.status_code in (401, 403) else ""))


def delete_dashboard(endpoint: str, uid: str, token: str, request=None) -> None:
    import requests

    request = request or requests.request
    r = request("DELETE", f"{endpoint.rstrip('/')}/api/dashboards/uid/{uid}", timeout=60,
                headers={"Authorization": f"Bearer {token}"})
    if r.status_code not in (200, 404):
        raise RuntimeError(f"Grafana refused to delete dashboard {uid}: HTTP {r.status_code} {r.text[:300]}")


def _digest(board: str) -> str:
    return hashlib.sha256(board.encode()).hexdigest()[:16]


class GrafanaDashboardProvider(ResourceProvider):
    """Create/update: upload (overwrite) the dashboard; delete: remove it (Grafana may be gone already: then
    nothing to do). A change of the dashboard's JSON or of the Grafana endpoint updates it. Pickled by reference
    (this module is importable); it captures nothing secret (the token is fetched when it runs)."""

    serialize_as_secret_always = False

    def _upload(self, props: Mapping[str, Any]) -> dict:
        board = json.loads(props["dashboard"])
        answer = upload_dashboard(props["endpoint"], board, grafana_token())
        return {**props, "uid": answer.get("uid", board["uid"]),
                "url": f"{props['endpoint'].rstrip('/')}{answer.get('url', '')}",
                "version": answer.get("version"), "digest": _digest(props["dashboard"])}

    def create(self, props):
        outs = self._upload(props)
        return CreateResult(id_=outs["uid"], outs=outs)

    def diff(self, _id, olds, news):
        changed = [k for k in ("endpoint", "dashboard") if olds.get(k) != news.get(k)]
        return DiffResult(changes=bool(changed), replaces=[], delete_before_replace=False)

    def update(self, _id, _olds, news):
        return UpdateResult(outs=self._upload(news))

    def read(self, id_, props):
        return ReadResult(id_=id_, outs=props)

    def delete(self, _id, props):
        if props.get("endpoint"):
            try:
                delete_dashboard(props["endpoint"], props.get("uid") or monitoring.DASHBOARD_UID, grafana_token())
            except Exception as err:      # a deleted Grafana takes its dashboards with it
                pulumi.log.warn(f"Grafana dashboard not deleted: {err}")


class GrafanaDashboard(Resource):
    """The stack's dashboard in its Managed Grafana. Outputs: ``url``, ``version``."""

    url: pulumi.Output[str]
    version: pulumi.Output[int]

    def __init__(self, name: str, *, endpoint: pulumi.Input[str], dashboard: str,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__(GrafanaDashboardProvider(), name,
                         {"endpoint": endpoint, "dashboard": dashboard, "uid": None, "url": None, "version": None,
                          "digest": None}, opts)


def _checked_webhook(url: Any) -> str:
    """The secret alertWebhookUrl, validated when `pulumi up` reads it; a mistake is one line that never quotes it."""
    problem = webhook_url_problem(url)
    if problem:
        raise pulumi.RunError(f"invalid kaito-aks settings:\n  kaito-aks:alertWebhookUrl: {problem}")
    return str(url)
