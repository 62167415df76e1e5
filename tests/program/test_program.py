"""The real __main__.py under mocks, for both stacks and both KAITO modes."""
import json

import pulumi
import pytest
from harness import API_KEYS, HF_TOKEN, expected_plan

SECRET_SIG = "4dabf18193072939515e22adb298388d"
WS = "kubernetes:kaito.sh/v1beta1:Workspace"
POOL = "azure-native:containerservice:AgentPool"
AKS = "azure-native:containerservice:ManagedCluster"
SVC = "kubernetes:core/v1:Service"
NETPOL = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
CHECK = "pulumi-python:dynamic/kaito:EndpointCheck"

# stack, overrides -> (mode, version)
VARIANTS = {
    "dev-addon": ("dev", {}),
    "dev-addon-0.6": ("dev", {"kaito": {"mode": "addon", "version": "0.6.0"}}),
    "dev-addon-0.7": ("dev", {"kaito": {"mode": "addon", "version": "0.7.2"}}),
    "dev-helm": ("dev", {"kaito": {"mode": "helm"}, "budget": {"maxUsdPerHour": 4}}),
    "prod-helm": ("prod", {}),
    "prod-addon": ("prod", {"kaito": {"mode": "addon"}, "budget": {"maxUsdPerHour": 35}}),
}


@pytest.fixture(params=list(VARIANTS))
def variant(request, run_program):
    stack, overrides = VARIANTS[request.param]
    return run_program(stack, overrides), expected_plan(stack, overrides)


def test_cluster_has_oidc_workload_identity_policy_engine_and_kaito(variant):
    run, plan = variant
    (aks,) = run.of_type(AKS)
    inputs = aks.inputs
    assert inputs["oidcIssuerProfile"] == {"enabled": True}
    assert inputs["securityProfile"]["workloadIdentity"] == {"enabled": True}
    assert inputs["networkProfile"]["networkPluginMode"] == "overlay"
    assert inputs["networkProfile"]["networkPolicy"] == plan.settings.cluster.network_policy
    assert [p["mode"] for p in inputs["agentPoolProfiles"]] == ["System"]          # GPU pools are separate
    assert "agentPoolProfiles" in run.opts(AKS, aks.name).ignore_changes
    if plan.kaito_mode == "addon":
        assert inputs["aiToolchainOperatorProfile"] == {"enabled": True}
        assert not run.of_type("kubernetes:helm.sh/v3:Release")
    else:
        assert "aiToolchainOperatorProfile" not in inputs
        (release,) = run.of_type("kubernetes:helm.sh/v3:Release")
        assert release.inputs["chart"] == "workspace" and release.inputs["version"] == "0.12.0"
        assert release.inputs["values"]["nodeProvisioner"] == "byo"
        assert release.inputs["repositoryOpts"]["repo"] == "https://kaito-project.github.io/kaito/charts/kaito"
    ranges = plan.settings.cluster.api_server_authorized_ip_ranges
    if ranges:
        assert inputs["apiServerAccessProfile"]["authorizedIPRanges"] == list(ranges)


def test_one_gpu_pool_per_replica_as_planned(variant):
    run, plan = variant
    pools = {p.inputs["agentPoolName"]: p for p in run.of_type(POOL)}
    ours = [r for r in plan.replicas if r.pool_owner == "kaito-aks"]
    assert sorted(pools) == sorted(r.pool_name for r in ours)
    # KAITO 0.7 reuses no pre-created pool: it provisions the nodes, and a pool of ours would be paid for twice
    assert (len(ours) == len(plan.replicas)) is plan.release.reuses_pre_created_nodes or plan.kaito_mode == "helm"
    gate = "cluster-kaito-version"
    for r in ours:
        assert gate in {d._name for d in run.opts(POOL, f"{r.pool_name}-pool").depends_on}
        pool = pools[r.pool_name].inputs
        assert (pool["vmSize"], pool["count"], pool["mode"]) == (r.instance_type, r.nodes, "User")
        assert pool["nodeTaints"] == ["sku=gpu:NoSchedule"]
        labels = pool["nodeLabels"]
        assert labels["kaito-aks/workspace"] == r.workspace and labels["accelerator"] == "nvidia"
        if plan.kaito_mode == "helm" or plan.release.nodes_need_workspace_labels:
            assert labels["kaito.sh/workspace"] == r.workspace and labels["kaito.sh/workspacenamespace"] == "llm"
        else:                              # an old gpu-provisioner garbage-collects pools it thinks are KAITO's
            assert "kaito.sh/workspace" not in labels
        if plan.kaito_mode == "helm":
            assert int(labels["nvidia.com/gpu.count"]) == r.gpus_per_node
        assert pool["osDiskSizeGB"] >= 128
        assert len(r.pool_name) <= 12 and r.pool_name.isalnum()


def test_workspaces_shape_annotations_and_dependencies(variant):
    run, plan = variant
    workspaces = {w.inputs["metadata"]["name"]: w for w in run.of_type(WS)}
    assert sorted(workspaces) == sorted(r.workspace for r in plan.replicas)
    for r in plan.replicas:
        ws = workspaces[r.workspace]
        inputs = ws.inputs
        assert inputs["apiVersion"] == "kaito.sh/v1beta1" and inputs["kind"] == "Workspace"
        assert "spec" not in inputs and {"resource", "inference"} <= set(inputs)
        annotations = inputs["metadata"]["annotations"]
        assert annotations["kaito.sh/runtime"] == r.runtime
        assert annotations["pulumi.com/waitFor"] == "condition=WorkspaceSucceeded"
        assert int(annotations["pulumi.com/timeoutSeconds"]) >= 1800
        assert inputs["resource"]["labelSelector"] == {"matchLabels": {"kaito-aks/workspace": r.workspace}}
        if plan.kaito_mode == "addon":     # node auto-provisioning: KAITO matches nodes by instance type
            assert inputs["resource"]["instanceType"] == r.instance_type
        else:                              # bring-your-own nodes: the webhook wants no instance type
            assert "instanceType" not in inputs["resource"]
        if plan.release.workspace_has_count:       # KAITO 0.6 runs `count` nodes
            assert inputs["resource"]["count"] == r.nodes
        else:                                      # the estimator decides (vLLM)
            assert "count" not in inputs["resource"]
        assert inputs["inference"]["preset"]["name"] == r.preset
        if r.reference_hf_token:
            assert inputs["inference"]["preset"]["presetOptions"] == {"modelAccessSecret": "hf-token"}
        assert ("config" in inputs["inference"]) == r.needs_config_map
        # options: explicit provider, waits for its pool and KAITO, replaces (delete first) on immutable changes
        assert ws.provider.startswith("urn:pulumi:") and "pulumi:providers:kubernetes" in ws.provider
        opts = run.opts(WS, ws.name)
        deps = opts.depends_on
        pool_deps = [d for d in deps if isinstance(d, pulumi.CustomResource) and d._name.endswith("-pool")]
        kaito = "kaito-workspace" if plan.kaito_mode == "helm" else "-aks"
        assert any(d._name.endswith(kaito) for d in deps)
        assert any(d._name == "cluster-kaito-version" for d in deps)   # the version gate, before any Workspace
        # recreate: replaced delete-first under the same name; surge: a change is a new name, nothing deletes first
        assert opts.delete_before_replace is (r.rollout == "recreate")
        # replaced (not updated) when the model, size, node count or inference config changes: KAITO fixes them
        assert set(opts.replace_on_changes) == {"resource", "inference", 'metadata.annotations["kaito-aks/identity"]'}
        assert annotations["kaito-aks/identity"] == r.identity
        gates = [d for d in deps if d._name == f"{r.workspace}-nodes-ready"]
        if r.pool_owner == "kaito":      # KAITO provisions the nodes: no pool of ours, nothing to wait for
            assert pool_deps == [] and gates == []
            continue
        assert [d._name for d in pool_deps] == [f"{r.pool_name}-pool"]
        # the node-readiness gate sits between the pool and the Workspace, and itself waits for pool and KAITO
        assert len(gates) == 1
        gate_opts = run.opts("pulumi-python:dynamic:Resource", f"{r.workspace}-nodes-ready")
        gate_deps = {d._name for d in gate_opts.depends_on}
        assert f"{r.pool_name}-pool" in gate_deps and any(n.endswith(kaito) for n in gate_deps)
        gate = run.named("pulumi-python:dynamic:Resource", f"{r.workspace}-nodes-ready")
        assert gate.inputs["expectation"]["count"] == r.nodes
        assert gate.inputs["expectation"]["selector"] == {"kaito-aks/workspace": r.workspace}
        assert gate.inputs["expectation"]["gfd"] is (plan.kaito_mode == "helm")


def test_services_select_the_inference_pod_on_port_5000(variant):
    run, plan = variant
    for r in plan.replicas:
        svc = run.named(SVC, f"{r.slot}-endpoint").inputs
        assert svc["metadata"]["name"] == f"{r.slot}-endpoint"      # the slot's: stable across rollouts
        spec = svc["spec"]
        assert spec["selector"]["kaito.sh/workspace"] == r.workspace
        assert ("statefulset.kubernetes.io/pod-name" in spec["selector"]) == r.multi_node
        assert spec["ports"] == [{"name": "http", "port": 80, "targetPort": 5000, "protocol": "TCP"}]
        if plan.settings.gateway_enabled:
            assert spec["type"] == "ClusterIP"
        else:
            assert spec["type"] == "LoadBalancer"
            assert spec["loadBalancerSourceRanges"] == list(plan.settings.access.source_ranges)
            assert "0.0.0.0/0" not in spec["loadBalancerSourceRanges"]


def test_network_policies_default_deny_and_admit_only_allowed_sources(variant):
    run, plan = variant
    deny = run.named(NETPOL, "default-deny").inputs["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress"]}
    for r in plan.replicas:
        spec = run.named(NETPOL, f"{r.workspace}-netpol").inputs["spec"]
        assert spec["podSelector"] == {"matchLabels": {"kaito.sh/workspace": r.workspace}}
        sources = [peer for rule in spec["ingress"] for peer in rule["from"]]
        if plan.settings.gateway_enabled:
            assert {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "kaito-gateway",
                                                    "app.kubernetes.io/managed-by": "kaito-aks"}}} in sources
            assert not any("ipBlock" in p for p in sources)
        else:
            cidrs = [p["ipBlock"]["cidr"] for p in sources if "ipBlock" in p]
            assert cidrs == list(plan.settings.access.source_ranges)


def test_secrets_stay_secret(variant):
    run, plan = variant
    secrets = [HF_TOKEN, *API_KEYS, "KUBE-SECRET-TOKEN-5b2"]
    for resource in run.resources:
        for path, text in _plain_strings(resource.inputs):
            for secret in secrets:
                assert secret not in text, f"{resource.typ} {resource.name}: {secret!r} in plain input {path}"
    kubeconfig = run.outputs["kubeconfig"]
    assert _is_secret(kubeconfig)
    for key, value in run.outputs.items():
        if key != "kubeconfig":
            assert not _leaks(value, secrets), key
    if any(r.reference_hf_token for r in plan.replicas):
        secret = run.named("kubernetes:core/v1:Secret", "hf-token").inputs
        assert secret["stringData"].get(SECRET_SIG), "HF_TOKEN must be a secret input"
        assert secret["stringData"]["value"] == {"HF_TOKEN": HF_TOKEN}


def test_endpoint_check_per_replica_after_its_endpoint(variant):
    run, plan = variant
    checks = {c.name: c.inputs for c in run.of_type(CHECK)}
    public = sorted(f"{r.slot}-check" for r in plan.replicas)
    pre_switch = sorted(f"{r.workspace}-ready" for r in plan.replicas if r.rollout == "surge")
    assert sorted(checks) == sorted(public + pre_switch)
    for r in plan.replicas:
        check = checks[f"{r.slot}-check"]
        assert check["expected_model"] == r.served_model and check["runtime"] == r.runtime
        assert check.get("pod_target") is None and check["trigger"] == f"{r.workspace}|{r.identity}"
        if plan.settings.gateway_enabled:
            assert check["api_key"].get(SECRET_SIG), "the gateway key reaches the check as a secret"


def test_exports_per_model(variant):
    run, plan = variant
    models = run.outputs["models"]
    assert sorted(models) == sorted(plan.model_names)
    for name in plan.model_names:
        first = plan.replicas_of(name)[0]
        out = models[name]
        assert (out["served_model"], out["instance_type"], out["nodes_per_replica"]) == (
            first.served_model, first.instance_type, first.nodes)
        assert out["usd_per_hour"] == pytest.approx(sum(r.usd_per_hour for r in plan.replicas_of(name)))
        endpoint = pulumi.runtime.sync_await._sync_await(pulumi.Output.from_input(out["endpoint"]).future())
        if plan.settings.gateway_enabled:
            assert endpoint.startswith("http://10.0.0.") and endpoint.endswith(f"/{name}/v1")
        else:
            assert len(endpoint) == len(plan.replicas_of(name))
            assert all(e.startswith("http://10.0.0.") and e.endswith("/v1") for e in endpoint)


def test_resource_names_are_unique(variant):
    run, _ = variant
    keys = [(r.typ, r.name) for r in run.resources]
    assert len(keys) == len(set(keys)), "duplicate URNs fail in the real engine (mocks don't notice)"


def test_prod_has_the_gateway_and_dev_does_not(run_program):
    prod = run_program("prod")
    # the spec carries a checksum of the keys, so Pulumi keeps the whole spec secret
    spec = prod.named("kubernetes:apps/v1:Deployment", "gateway").inputs["spec"]
    assert spec.get(SECRET_SIG) and spec["value"]["replicas"] >= 2
    gw_svc = prod.named(SVC, "gateway-service").inputs["spec"]
    assert gw_svc["type"] == "LoadBalancer" and gw_svc["loadBalancerSourceRanges"] == ["198.51.100.0/24"]
    keys = prod.named("kubernetes:core/v1:Secret", "gateway-keys").inputs
    assert keys["stringData"].get(SECRET_SIG) and API_KEYS[0] in keys["stringData"]["value"]["api-keys.map"]
    assert prod.named("kubernetes:core/v1:ResourceQuota", "kaito-aks-quota").inputs["spec"]["hard"][
        "requests.nvidia.com/gpu"] == "4"
    dev = run_program("dev")
    assert not [r for r in dev.resources if r.name.startswith("gateway")]


def test_settings_errors_stop_the_program_without_a_traceback(run_program):
    with pytest.raises(Exception) as err:
        run_program("dev", {"models": [{"name": "x", "model": "phi-2", "replicas": 0}]})
    assert "kaito-aks:models[0].replicas" in str(err.value)


def _plain_strings(value, path="$"):
    if isinstance(value, dict):
        if value.get(SECRET_SIG):
            return
        for k, v in value.items():
            yield from _plain_strings(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _plain_strings(v, f"{path}[{i}]")
    elif isinstance(value, str):
        yield path, value


def _is_secret(output) -> bool:
    return pulumi.runtime.sync_await._sync_await(output.is_secret())


def _leaks(value, secrets) -> bool:
    resolved = pulumi.runtime.sync_await._sync_await(pulumi.Output.from_input(value).future())
    return any(s in json.dumps(resolved, default=str) for s in secrets)


def test_azure_rbac_option_disables_local_accounts(run_program):
    admins = ["00000000-0000-0000-0000-00000000a001"]
    run = run_program("dev", {"cluster": {"azureRbac": True, "adminGroupObjectIds": admins,
                                          "systemPool": {"vmSize": "Standard_D4ds_v5", "count": 1}}})
    (aks,) = run.of_type(AKS)
    assert aks.inputs["aadProfile"] == {"managed": True, "enableAzureRBAC": True, "adminGroupObjectIDs": admins}
    assert aks.inputs["disableLocalAccounts"] is True


def test_entra_kubeconfig_uses_the_azure_cli_login():
    import base64

    from components.cluster import _kubeconfig

    exec_config = "users:\n- user:\n    exec:\n      args:\n      - get-token\n      - --login\n      - devicecode\n"
    encoded = base64.b64encode(exec_config.encode()).decode()
    assert "- azurecli" in _kubeconfig(encoded, azure_rbac=True) and "devicecode" not in _kubeconfig(encoded, True)
    assert _kubeconfig(encoded, azure_rbac=False) == exec_config


@pytest.mark.parametrize("change", [
    {"maxModelLen": 4096},                                            # a new context
    {"instanceType": "Standard_NC24ads_A100_v4", "maxModelLen": 8192},  # a new size (and no A10 headroom)
])
def test_a_changed_inference_config_or_size_replaces_the_workspace_in_recreate_mode(run_program, change):
    """Two stack variants under mocks: the Workspace's replace-on-change paths differ, so Pulumi replaces it."""
    base = {"models": [{"name": "llama-8b", "model": "llama-3.1-8b-instruct", "maxModelLen": 8192,
                        "rollout": "recreate"}]}
    changed = {"models": [{"name": "llama-8b", "model": "llama-3.1-8b-instruct", "rollout": "recreate", **change}]}
    before, after = run_program("prod", base), run_program("prod", changed)
    ws_before = before.named(WS, "llama-8b-workspace").inputs
    ws_after = after.named(WS, "llama-8b-workspace").inputs
    replace_paths = set(after.opts(WS, "llama-8b-workspace").replace_on_changes)
    differs = {"inference": ws_before["inference"] != ws_after["inference"],
               'metadata.annotations["kaito-aks/identity"]':
                   ws_before["metadata"]["annotations"]["kaito-aks/identity"]
                   != ws_after["metadata"]["annotations"]["kaito-aks/identity"]}
    assert differs['metadata.annotations["kaito-aks/identity"]']
    assert any(changed_ for path, changed_ in differs.items() if path in replace_paths)
    # the ConfigMap (if any) carries its content hash in its name, so old and new configs never collide
    names_before = {c.inputs["metadata"]["name"] for c in before.of_type("kubernetes:core/v1:ConfigMap")}
    names_after = {c.inputs["metadata"]["name"] for c in after.of_type("kubernetes:core/v1:ConfigMap")}
    assert names_before != names_after


def test_maintenance_windows_exist_in_production_only(run_program):
    prod, dev = run_program("prod"), run_program("dev")
    configs = prod.of_type("azure-native:containerservice:MaintenanceConfiguration")
    assert sorted(c.inputs["configName"] for c in configs) == ["aksManagedAutoUpgradeSchedule",
                                                               "aksManagedNodeOSUpgradeSchedule"]
    assert all(c.inputs["maintenanceWindow"]["durationHours"] == 4 for c in configs)
    assert not dev.of_type("azure-native:containerservice:MaintenanceConfiguration")


def test_a_plain_text_setting_reaches_the_program_as_written(run_program):
    # Pulumi hands every config value over as text: "serving" is no JSON, and must arrive as the string itself
    run = run_program("dev", {"namespace": "serving"})
    namespaces = [r for r in run.of_type("kubernetes:core/v1:Namespace") if r.inputs["metadata"]["name"] == "serving"]
    assert len(namespaces) == 1
    ws = run.of_type(WS)
    assert ws and all(w.inputs["metadata"]["namespace"] == "serving" for w in ws)
