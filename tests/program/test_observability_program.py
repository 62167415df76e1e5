"""The Observability component under the mocks harness (tests/program/harness.py): which Azure and Kubernetes
resources it registers, with which inputs (as the engine receives them, camelCase), and in which order; and the
Grafana dashboard provider's HTTP calls against a local stand-in for Grafana's API.

The component is constructed directly (components/platform.py wires it into the stack: see its docstring's
ObservabilityArgs), with the plan the offline CLI builds for the same stack file.
"""
from __future__ import annotations

import http.server
import json
import threading

import pulumi
import pytest
from harness import API_KEYS, HF_TOKEN, Mocks, RecordingMonitor, expected_plan, run_program

from infra.render import monitoring

CLUSTER_ID = "/subscriptions/0000/resourceGroups/rg-kaito-prod/providers/Microsoft.ContainerService/managedClusters/kaito-prod"
AMW = "azure-native:monitor:AzureMonitorWorkspace"
DCE = "azure-native:monitor:DataCollectionEndpoint"
DCR = "azure-native:monitor:DataCollectionRule"
DCRA = "azure-native:monitor:DataCollectionRuleAssociation"
RULES = "azure-native:alertsmanagement:PrometheusRuleGroup"
ACTIONS = "azure-native:monitor:ActionGroup"
GRAFANA = "azure-native:dashboard:Grafana"
ROLE = "azure-native:authorization:RoleAssignment"
SMON = "kubernetes:azmonitoring.coreos.com/v1:ServiceMonitor"
PMON = "kubernetes:azmonitoring.coreos.com/v1:PodMonitor"
NETPOL = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
SECRET_SIG = "4dabf18193072939515e22adb298388d"      # how a Pulumi secret reaches the mocks
WEBHOOK = "https://prod-01.westus.logic.azure.com/workflows/abc/triggers/manual/paths/invoke?sig=SECRET-SIG-1"


class Run:
    def __init__(self, resources, outputs):
        self.resources, self.outputs = resources, outputs

    def of_type(self, typ):
        return [r for r in self.resources if r.typ == typ]

    def one(self, typ):
        (r,) = self.of_type(typ)
        return r


def run_component(stack: str = "prod", overrides: dict | None = None) -> tuple[Run, object]:
    from components.observability import Observability, ObservabilityArgs

    plan = expected_plan(stack, overrides)
    mocks = Mocks()
    pulumi.runtime.set_mocks(mocks, project="kaito-aks", stack=stack, preview=False, monitor=RecordingMonitor(mocks))

    @pulumi.runtime.test
    def program():
        import pulumi_kubernetes as k8s

        provider = k8s.Provider("k8s", kubeconfig="apiVersion: v1\nkind: Config\n")
        namespace = k8s.core.v1.Namespace("ns", metadata={"name": plan.settings.namespace},
                                          opts=pulumi.ResourceOptions(provider=provider))
        component = Observability("obs", ObservabilityArgs(plan=plan, resource_group_name="rg-kaito-prod",
                                                           cluster_id=CLUSTER_ID, k8s_provider=provider,
                                                           k8s_depends_on=[namespace]))
        return pulumi.Output.all(grafana_url=component.grafana_url, workspace_id=component.workspace_id,
                                 dashboard_url=component.dashboard_url)

    program()
    return Run(mocks.resources, {}), plan


@pytest.fixture(scope="module")
def prod():
    return run_component("prod")


def test_the_azure_side_of_managed_prometheus(prod):
    run, plan = prod
    names = monitoring.names(plan)
    amw = run.one(AMW)
    assert amw.inputs["azureMonitorWorkspaceName"] == names["workspace"]
    assert run.one(DCE).inputs["dataCollectionEndpointName"] == names["dce"]
    dcr = run.one(DCR).inputs
    assert dcr["dataCollectionRuleName"] == names["dcr"] and dcr["kind"] == "Linux"
    assert dcr["dataSources"]["prometheusForwarder"][0]["streams"] == ["Microsoft-PrometheusMetrics"]
    assert dcr["destinations"]["monitoringAccounts"][0]["accountResourceId"] == "obs-amw-id"
    assert dcr["dataCollectionEndpointId"] == "obs-dce-id"
    dcra = run.one(DCRA).inputs
    assert dcra == {"associationName": names["dcra"], "resourceUri": CLUSTER_ID, "dataCollectionRuleId": "obs-dcr-id",
                    "description": dcra["description"]}


def test_alert_rules_become_one_azure_rule_group(prod):
    run, plan = prod
    group = run.one(RULES).inputs
    assert group["scopes"] == ["obs-amw-id", CLUSTER_ID] and group["clusterName"] == plan.settings.cluster_name
    assert [r["alert"] for r in group["rules"]] == [r.name for r in monitoring.alert_rules(plan)]
    for rule, expected in zip(group["rules"], monitoring.alert_rules(plan), strict=True):
        assert rule["expression"] == expected.expr
        assert rule["for"] == f"PT{expected.for_minutes}M"          # `for_` in Python, `for` on the wire
        assert "actions" not in rule                                 # Pulumi.prod.yaml names no receivers
    assert not run.of_type(ACTIONS)
    assert "obs-dcra" in {d.split("::")[-1] for d in run.one(RULES).dependencies}


def test_grafana_linked_to_the_workspace_with_its_roles(prod):
    run, plan = prod
    grafana = run.one(GRAFANA).inputs
    assert grafana["workspaceName"] == monitoring.names(plan)["grafana"] and grafana["sku"] == {"name": "Standard"}
    assert grafana["identity"] == {"type": "SystemAssigned"}
    assert grafana["properties"]["grafanaIntegrations"]["azureMonitorWorkspaceIntegrations"] == [
        {"azureMonitorWorkspaceResourceId": "obs-amw-id"}]
    roles = {r.name: r.inputs for r in run.of_type(ROLE)}
    assert set(roles) == {"obs-grafana-reads-amw", "obs-grafana-admin-deployer"}
    reader = roles["obs-grafana-reads-amw"]
    assert reader["scope"] == "obs-amw-id" and reader["principalType"] == "ServicePrincipal"
    assert reader["roleDefinitionId"] == ("/subscriptions/0000/providers/Microsoft.Authorization/roleDefinitions/"
                                          f"{monitoring.MONITORING_DATA_READER}")
    deployer = roles["obs-grafana-admin-deployer"]
    assert deployer["principalId"] == "o" and deployer["scope"] == "obs-grafana-id"      # getClientConfig's
    (board,) = [r for r in run.resources if r.typ.startswith("pulumi-python:dynamic") and r.name == "obs-dashboard"]
    assert json.loads(board.inputs["dashboard"]) == json.loads(json.dumps(monitoring.dashboard(plan), sort_keys=True))
    role_urns = {r.urn for r in run.of_type(ROLE)}
    assert role_urns <= board.dependencies                  # uploaded only once its uploader is a Grafana Admin


def test_kubernetes_objects_after_the_association_and_what_they_watch(prod):
    run, plan = prod
    monitors = run.of_type(SMON) + run.of_type(PMON)
    assert sorted(m.inputs["metadata"]["name"] for m in run.of_type(SMON)) == sorted(
        f"{n}-vllm" for n in plan.model_names)
    (pod_monitor,) = run.of_type(PMON)
    assert pod_monitor.inputs["spec"]["podMetricsEndpoints"][0]["port"] == "nginx-metrics"
    policies = {p.inputs["metadata"]["name"] for p in run.of_type(NETPOL)}
    assert policies == {"kaito-aks-metrics-models", "kaito-gateway-metrics"}
    dcra_urn = run.one(DCRA).urn
    ns_urn = next(r.urn for r in run.resources if r.typ == "kubernetes:core/v1:Namespace")
    for m in monitors + run.of_type(NETPOL):
        assert {dcra_urn, ns_urn} <= m.dependencies, m.name
        assert m.provider.startswith("urn:") and "k8s" in m.provider


def test_receivers_make_an_action_group_every_rule_notifies():
    run = run_program("prod", {"observability": {"alerts": {"actionGroupEmails": ["oncall@example.com"]}}},
                      secrets={"hfToken": HF_TOKEN, "apiKeys": json.dumps(API_KEYS), "alertWebhookUrl": WEBHOOK})
    group = run.named(ACTIONS, "observability-actions").inputs
    assert group["emailReceivers"] == [{"name": "email-0", "emailAddress": "oncall@example.com",
                                        "useCommonAlertSchema": True}]
    # the webhook is a credential: it reaches Azure as a Pulumi secret, never in plain state
    receivers = group["webhookReceivers"]
    assert receivers.get(SECRET_SIG) and receivers["value"][0]["serviceUri"] == WEBHOOK
    assert group["groupShortName"] == "kaito-aks" and group["location"] == "Global"
    for rule in run.named(RULES, "observability-alerts").inputs["rules"]:
        assert rule["actions"] == [{"actionGroupId": "observability-actions-id"}]


def test_a_webhook_that_is_not_https_stops_pulumi_up_without_quoting_it():
    with pytest.raises(Exception) as err:
        run_program("prod", {}, secrets={"hfToken": HF_TOKEN, "apiKeys": json.dumps(API_KEYS),
                                         "alertWebhookUrl": "http://hooks.example.com/x?sig=SECRET-SIG-9"})
    assert "kaito-aks:alertWebhookUrl: must be an https URL" in str(err.value) and "SECRET-SIG-9" not in str(err.value)


def test_no_grafana_no_alerts():
    run, _ = run_component("prod", {"observability": {"grafana": False, "alerts": {"enabled": False}}})
    assert not run.of_type(GRAFANA) and not run.of_type(ROLE) and not run.of_type(RULES)
    assert run.of_type(AMW) and run.of_type(DCRA) and run.of_type(SMON)     # still scraped into the workspace


# ---------------------------------------------------------------------------------------------------------
# The dashboard upload, against a local stand-in for Managed Grafana's HTTP API

class FakeGrafana:
    """Answers POST /api/dashboards/db and DELETE /api/dashboards/uid/<uid> like Grafana; refuses with 403 the
    first ``deny`` uploads (a role assignment not yet applied). Records every request."""

    def __init__(self, deny: int = 0):
        self.calls: list[tuple[str, str, dict, str]] = []
        self.deny = deny
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _reply(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.calls.append(("POST", self.path, body, self.headers.get("Authorization", "")))
                if fake.deny > 0:
                    fake.deny -= 1
                    return self._reply(403, {"message": "Permissions needed: dashboards:create"})
                uid = body["dashboard"]["uid"]
                self._reply(200, {"status": "success", "uid": uid, "url": f"/d/{uid}/kaito-aks", "version": 3})

            def do_DELETE(self):  # noqa: N802
                fake.calls.append(("DELETE", self.path, {}, self.headers.get("Authorization", "")))
                self._reply(200, {"title": "x"})

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_dashboard_provider_uploads_overwrites_and_deletes(monkeypatch):
    from components.observability import TOKEN_ENV, GrafanaDashboardProvider

    plan = expected_plan("prod")
    grafana = FakeGrafana()
    monkeypatch.setenv(TOKEN_ENV, "entra-token")
    try:
        provider = GrafanaDashboardProvider()
        props = {"endpoint": grafana.url, "dashboard": json.dumps(monitoring.dashboard(plan))}
        created = provider.create(props)
        assert created.id == "kaito-aks" and created.outs["url"] == f"{grafana.url}/d/kaito-aks/kaito-aks"
        method, path, body, auth = grafana.calls[0]
        assert (method, path, auth) == ("POST", "/api/dashboards/db", "Bearer entra-token")
        assert body["overwrite"] is True and body["dashboard"]["id"] is None
        assert body["dashboard"]["panels"] == monitoring.dashboard(plan)["panels"]
        assert not provider.diff("kaito-aks", created.outs, {**props}).changes
        changed = {**props, "dashboard": json.dumps({**monitoring.dashboard(plan), "title": "x"})}
        assert provider.diff("kaito-aks", created.outs, changed).changes
        provider.delete("kaito-aks", created.outs)
        assert grafana.calls[-1][:2] == ("DELETE", "/api/dashboards/uid/kaito-aks")
    finally:
        grafana.close()


def test_dashboard_upload_waits_for_the_role_assignment():
    from components.observability import upload_dashboard

    grafana = FakeGrafana(deny=2)
    try:
        answer = upload_dashboard(grafana.url, {"uid": "kaito-aks", "title": "t"}, "tok", wait_s=30,
                                  retry_every_s=0.05)
        assert answer["uid"] == "kaito-aks" and len(grafana.calls) == 3
        denied = FakeGrafana(deny=100)
        try:
            with pytest.raises(RuntimeError, match="needs Grafana Admin or Editor"):
                upload_dashboard(denied.url, {"uid": "kaito-aks"}, "tok", wait_s=0.2, retry_every_s=0.05)
        finally:
            denied.close()
    finally:
        grafana.close()
