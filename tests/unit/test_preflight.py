"""Preflight's decisions, offline: the plan's needs against Azure's usages, resource SKUs and running scale sets.

The Azure objects are the SDK's own model classes (azure-mgmt-compute 39.0.0) built from the REST API's published
examples (tests/data/azure/README.md): each GPU size or usage row is a copy of the example's entry with its names and
numbers changed, so the shape is the API's.
"""
import copy
import json
import pathlib
import subprocess

import pytest
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ServiceRequestError
from azure.identity import CredentialUnavailableError
from azure.mgmt.compute import models

from infra import preflight as pf
from infra.cli_preflight import resolve_subscription
from infra.errors import UserError
from infra.plan import build_plan
from infra.settings import load_stack_file

DATA = pathlib.Path(__file__).resolve().parents[1] / "data" / "azure"
SUB = "00000000-0000-0000-0000-000000000000"


def example(name):
    return json.loads((DATA / name).read_text())["responses"]["200"]["body"]


USAGE_ROW = example("Usage_List_MaximumSet_Gen.json")["value"][0]
SKU_ROW = example("ListAvailableResourceSkusForARegion.json")["value"][0]


def usage(name, current, limit, localized=None):
    row = copy.deepcopy(USAGE_ROW)
    row.update(currentValue=current, limit=limit, name={"value": name, "localizedValue": localized or name})
    return models.Usage(row)


def sku(name, family, vcpus, region="eastus", zones=("1", "2", "3"), restrictions=(), low_priority=True):
    row = copy.deepcopy(SKU_ROW)
    row.update(name=name, size=name.removeprefix("Standard_"), family=family, locations=[region],
               locationInfo=[{"location": region, "zones": list(zones)}], restrictions=list(restrictions))
    caps = {c["name"]: c for c in row["capabilities"]}
    caps["vCPUs"]["value"] = str(vcpus)
    caps["LowPriorityCapable"]["value"] = str(low_priority)
    return models.ResourceSku(row)


def scale_set(pool_name, size, capacity, priority="Regular"):
    return models.VirtualMachineScaleSet({
        "location": "eastus", "name": f"aks-{pool_name}-vmss", "tags": {"aks-managed-poolName": pool_name},
        "sku": {"name": size, "tier": "Standard", "capacity": capacity},
        "properties": {"virtualMachineProfile": {"priority": priority}}})


def location_restriction(region="eastus", reason="NotAvailableForSubscription"):
    return {"type": "Location", "values": [region], "restrictionInfo": {"locations": [region]}, "reasonCode": reason}


def zone_restriction(zones, region="eastus"):
    return {"type": "Zone", "values": [region], "restrictionInfo": {"locations": [region], "zones": list(zones)},
            "reasonCode": "NotAvailableForSubscription"}


A100 = "StandardNCADSA100v4Family"
A10 = "StandardNVADSA10v5Family"
H100 = "StandardNCadsH100v5Family"
DDS = "standardDDSv5Family"


def pool(label, size, nodes=1, vcpus=None, spot=False, setting=None, alternatives=(), surge=0, pool_name=None,
         zones=()):
    return pf.PoolNeed(label=label, setting=setting or "kaito-aks:models[0].instanceType",
                       pool_name=pool_name or f"g{label}", vm_size=size, nodes=nodes, spot=spot, vcpus=vcpus,
                       surge_nodes=surge, alternatives=tuple(alternatives), zones=tuple(zones))


def needs(*pools, region="eastus", addon=False):
    return pf.Needs(stack="t", region=region, pools=tuple(pools), kaito_addon=addon, node_resource_group="MC_rg_c_eastus")


SKUS = [sku("Standard_NC24ads_A100_v4", A100, 24), sku("Standard_NC48ads_A100_v4", A100, 48),
        sku("Standard_NV36ads_A10_v5", A10, 36), sku("Standard_NC40ads_H100_v5", H100, 40),
        sku("Standard_D4ds_v5", DDS, 4)]


def usages(**families):
    rows = [usage("cores", *families.pop("cores", (0, 1000)), localized="Total Regional vCPUs"),
            usage("lowPriorityCores", *families.pop("spot", (0, 1000)), localized="Total Regional Low-priority vCPUs")]
    rows += [usage(name, current, limit) for name, (current, limit) in families.items()]
    return rows


ALTS = (pf.AltSize("Standard_NC24ads_A100_v4", 1, 3.673, 24), pf.AltSize("Standard_NC40ads_H100_v5", 1, 6.98, 40))


def test_enough_quota_is_no_problem_and_says_what_was_checked():
    report = pf.decide(needs(pool("llama", "Standard_NC48ads_A100_v4", vcpus=48)), usages(**{A100: (24, 100)}), SKUS)
    assert report.ok, report.problems
    assert f"quota {A100} in eastus: the plan needs 48 vCPUs, 76 of 100 free" in report.lines
    assert "size Standard_NC48ads_A100_v4: offered in eastus (zones 1, 2, 3)" in report.lines


def test_too_little_quota_is_one_line_with_the_request_to_make():
    report = pf.decide(needs(pool("llama", "Standard_NC48ads_A100_v4", nodes=2, vcpus=48)),
                       usages(**{A100: (76, 100)}), SKUS)
    assert report.problems == [
        f"quota: {A100} in eastus has 24 of 100 vCPUs free, the plan needs 96: request 72 more vCPUs for {A100} "
        "in eastus (a new limit of 172; Azure portal > Quotas > Compute)"]


def test_a_short_family_suggests_the_plans_alternative_in_a_family_with_room():
    p = pool("llama", "Standard_NV36ads_A10_v5", vcpus=36, alternatives=ALTS)
    report = pf.decide(needs(p), usages(**{A10: (0, 10), A100: (0, 24)}), SKUS)
    assert len(report.problems) == 1
    assert report.problems[0].endswith(
        "or set kaito-aks:models[0].instanceType: Standard_NC24ads_A100_v4 (1 x, $3.673/h, the plan's next "
        "alternative with quota free)")


def test_family_names_match_whatever_the_spelling_of_the_two_apis():
    t4 = sku("Standard_NC8as_T4_v3", "Standard NCASv3_T4 Family", 8)      # SKUs API: with spaces
    report = pf.decide(needs(pool("phi", "Standard_NC8as_T4_v3", vcpus=8)),
                       usages(StandardNCASv3_T4Family=(0, 8)), [t4])     # usages: without
    assert report.ok, report.problems


def test_the_family_comes_from_the_skus_api_then_the_catalog_fallback():
    no_family = sku("Standard_NC24ads_A100_v4", None, 24)
    report = pf.decide(needs(pool("llama", "Standard_NC24ads_A100_v4", vcpus=24)),
                       usages(standardNCADSA100v4Family=(0, 10)), [no_family])
    assert len(report.problems) == 1 and "standardNCADSA100v4Family in eastus has 10 of 10" in report.problems[0]
    # unknown everywhere: a problem that says so, not a guess
    report = pf.decide(needs(pool("x", "Standard_NC24ads_A100_v4", vcpus=24)), usages(), [no_family], families={})
    assert report.problems and report.problems[0].startswith("quota: the quota family or vCPUs of Standard_NC24ads")


def test_a_restricted_size_names_the_next_available_alternative():
    restricted = sku("Standard_NV36ads_A10_v5", A10, 36, restrictions=[location_restriction()])
    skus = [restricted, *[s for s in SKUS if s.name != "Standard_NV36ads_A10_v5"]]
    replicas = [pool("llama", "Standard_NV36ads_A10_v5", vcpus=36, alternatives=ALTS),
                pool("llama-r1", "Standard_NV36ads_A10_v5", vcpus=36, alternatives=ALTS)]
    report = pf.decide(needs(*replicas), usages(**{A100: (0, 48), H100: (0, 100)}), skus)
    assert report.problems == [
        "size: Standard_NV36ads_A10_v5 (llama, llama-r1) is not available to this subscription in eastus "
        "(restriction: NotAvailableForSubscription): set kaito-aks:models[0].instanceType: Standard_NC24ads_A100_v4 "
        "(1 x, $3.673/h, the plan's next alternative available there), or ask Azure support to enable "
        "Standard_NV36ads_A10_v5 in eastus for the subscription"]


def test_an_alternative_without_room_for_every_replica_is_skipped():
    replicas = [pool("llama", "Standard_NV36ads_A10_v5", vcpus=36, alternatives=ALTS),
                pool("llama-r1", "Standard_NV36ads_A10_v5", vcpus=36, alternatives=ALTS)]
    skus = [s for s in SKUS if s.name != "Standard_NV36ads_A10_v5"]
    report = pf.decide(needs(*replicas), usages(**{A100: (0, 24), H100: (0, 80)}), skus)   # 2 x 24 > 24
    assert "is not offered in eastus" in report.problems[0]
    assert "instanceType: Standard_NC40ads_H100_v5 (1 x, $6.980/h" in report.problems[0]


def test_a_size_not_offered_in_the_region_without_any_alternative_says_choose_another_region():
    report = pf.decide(needs(pool("llama", "Standard_ND96isr_H100_v5", vcpus=96, alternatives=ALTS[:1])),
                       usages(), [s for s in SKUS if "A100" not in s.name])
    assert report.problems == [
        "size: Standard_ND96isr_H100_v5 (llama) is not offered in eastus (the resource SKUs API doesn't list it "
        "there): none of the plan's alternatives (Standard_NC24ads_A100_v4) is available there with quota either; "
        "choose another region (kaito-aks:cluster.location)"]


def test_zone_restrictions_only_block_pools_that_pin_those_zones():
    partly = sku("Standard_NC24ads_A100_v4", A100, 24, restrictions=[zone_restriction(["1"])])
    free = usages(**{A100: (0, 100)})
    report = pf.decide(needs(pool("a", "Standard_NC24ads_A100_v4", vcpus=24)), free, [partly])
    assert report.ok and any("restricted in zone(s) 1, which the pools don't pin" in line for line in report.lines)
    report = pf.decide(needs(pool("a", "Standard_NC24ads_A100_v4", vcpus=24, zones=["1", "2"])), free, [partly])
    assert report.problems[0].startswith("size: Standard_NC24ads_A100_v4 (a) is not available to this subscription "
                                         "in zone(s) 1 of eastus")


def test_spot_pools_count_against_the_regional_spot_quota_and_need_a_spot_capable_size():
    spot_pool = pool("s", "Standard_NC24ads_A100_v4", nodes=2, vcpus=24, spot=True)
    report = pf.decide(needs(spot_pool), usages(spot=(0, 24), **{A100: (0, 0)}), SKUS)
    assert report.problems == [
        "quota: Total Regional Low-priority vCPUs (lowPriorityCores) in eastus has 24 of 24 vCPUs free, the plan "
        "needs 48: request 24 more vCPUs in eastus (a new limit of 48; Azure portal > Quotas > Compute)"]
    no_spot = sku("Standard_NC24ads_A100_v4", A100, 24, low_priority=False)
    report = pf.decide(needs(spot_pool), usages(), [no_spot])
    assert "can't run as spot in eastus (LowPriorityCapable is False)" in report.problems[0]


def test_the_regional_total_and_the_upgrade_surge_count():
    system = pool("system pool", "Standard_D4ds_v5", nodes=3, surge=1, setting="kaito-aks:cluster.systemPool.vmSize",
                  pool_name="system")
    report = pf.decide(needs(system, pool("g", "Standard_NV36ads_A10_v5", vcpus=36)),
                       usages(cores=(300, 340), **{DDS: (0, 16), A10: (0, 36)}), SKUS)
    assert f"quota {DDS} in eastus: the plan needs 16 vCPUs (12 for the pools + 4 upgrade surge), 16 of 16 free" \
        in report.lines
    assert report.problems == [
        "quota: Total Regional vCPUs (cores) in eastus has 40 of 340 vCPUs free, the plan needs 52 (48 for the pools "
        "+ 4 upgrade surge): request 12 more vCPUs in eastus (a new limit of 352; Azure portal > Quotas > Compute)"]


def test_the_stacks_own_running_pools_are_not_counted_twice():
    p = pool("llama", "Standard_NC48ads_A100_v4", vcpus=48, pool_name="gllama12345")
    in_use = usages(cores=(48, 48), **{A100: (48, 48)})          # the pool runs: its 48 vCPUs are the usage
    report = pf.decide(needs(p), in_use, SKUS, [scale_set("gllama12345", "Standard_NC48ads_A100_v4", 1)])
    assert report.ok, report.problems
    assert any("counting the 48 vCPUs of its running pools as free" in line for line in report.lines)
    # another stack's pool of the same size is usage like any other
    report = pf.decide(needs(p), in_use, SKUS, [scale_set("gother", "Standard_NC48ads_A100_v4", 1)])
    assert any(line.startswith(f"quota: {A100} in eastus has 0 of 48") for line in report.problems)


def test_headroom_for_a_later_surge_rollout_is_a_warning_not_a_problem():
    p = pf.PoolNeed(label="llama-abc123", setting="kaito-aks:models[0].instanceType", pool_name="gllama1",
                    vm_size="Standard_NC48ads_A100_v4", nodes=1, vcpus=48, rollout_surge=True)
    report = pf.decide(needs(p), usages(**{A100: (0, 64)}), SKUS)
    assert report.ok
    assert (f"warning: quota {A100} in eastus: a later change of llama-abc123 (rollout: surge) runs new pools beside "
            "the old ones and needs up to 48 vCPUs more, 16 will be free: request 32 more (Azure portal > Quotas > "
            "Compute) before such a change, or preflight will stop it") in report.lines
    # the change itself: the new pool (a new name) needs free quota while the old one still runs and is usage
    report = pf.decide(needs(p), usages(**{A100: (48, 64)}), SKUS, [scale_set("gllama0", "Standard_NC48ads_A100_v4", 1)])
    assert report.problems and report.problems[0].startswith(f"quota: {A100} in eastus has 16 of 64 vCPUs free")


def test_a_family_without_a_usages_entry_is_zero_quota():
    report = pf.decide(needs(pool("a", "Standard_NC24ads_A100_v4", vcpus=24)), usages(), SKUS)
    assert report.problems == [
        f"quota: Azure reports no {A100} quota in eastus (no usages entry), the plan needs 24 vCPUs: request 24 more "
        f"vCPUs for {A100} in eastus (a new limit of 24; Azure portal > Quotas > Compute)"]


def test_a_region_azure_lists_nothing_for_is_one_problem():
    report = pf.decide(needs(pool("a", "Standard_NC24ads_A100_v4", vcpus=24), region="eastu"), usages(), SKUS)
    assert len(report.problems) == 1 and report.problems[0].startswith("region: Azure lists no VM size in 'eastu'")


def test_the_kaito_addon_needs_a_public_region():
    gov = [sku("Standard_NC24ads_A100_v4", A100, 24, region="usgovvirginia")]
    report = pf.decide(needs(pool("a", "Standard_NC24ads_A100_v4", vcpus=24), region="usgovvirginia", addon=True),
                       usages(**{A100: (0, 24)}), gov)
    assert report.problems == [
        "kaito-aks:kaito.mode: the AKS AI toolchain operator add-on is supported in public Azure regions only (MS "
        "Learn, AI toolchain operator, Limitations), and usgovvirginia is not one: use kaito.mode: helm, or a public "
        "region (kaito-aks:cluster.location)"]
    report = pf.decide(needs(pool("a", "Standard_NC24ads_A100_v4", vcpus=24), addon=True), usages(**{A100: (0, 24)}),
                       SKUS)
    assert report.ok and report.lines[0].startswith("KAITO add-on: eastus is a public Azure region")


@pytest.mark.parametrize("surge,nodes,expected", [("0", 3, 0), ("1", 3, 1), ("10%", 3, 1), ("33%", 10, 4),
                                                  ("100%", 2, 2), (None, 5, 0)])
def test_surge_nodes_follow_aks(surge, nodes, expected):
    assert pf.surge_nodes(surge, nodes) == expected


def test_needs_of_the_prod_plan():
    plan = build_plan(load_stack_file("prod"))
    n = pf.needs_from_plan(plan)
    gpu = [p for p in n.pools if p.label != "system pool"]
    assert [p.vm_size for p in gpu] == [r.instance_type for r in plan.replicas]
    assert all(p.surge_nodes == 0 for p in gpu)             # GPU_POOL_UPGRADE: maxSurge 0
    system = n.pools[-1]
    assert (system.vm_size, system.nodes, system.surge_nodes, system.pool_name) == ("Standard_D4ds_v5", 3, 1, "system")
    assert n.node_resource_group == "MC_rg-kaito-prod_kaito-prod_eastus" and not n.kaito_addon
    assert gpu[0].alternatives and gpu[0].alternatives[0].vcpus
    assert [p.rollout_surge for p in gpu] == [getattr(r, "rollout", "recreate") == "surge" for r in plan.replicas]


def test_fallback_families_cover_every_catalog_gpu_size():
    from infra.catalog import load_catalog

    families = pf.fallback_families()
    for name in load_catalog().sizes:
        assert name.lower() in families, name


# ---------------------------------------------------------------------------------------------------------
# Errors: one line, the fix, never a token

def test_credential_errors_are_one_line_with_the_fix():
    line = pf.azure_error_line(CredentialUnavailableError("Azure CLI not found on path"), SUB)
    assert line.startswith("Azure credentials: none usable") and "az login" in line and "AZURE_CLIENT_ID" in line
    expired = ClientAuthenticationError("AzureCliCredential: ERROR: AADSTS700082: The refresh token has expired due "
                                        "to inactivity. eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.sig")
    line = pf.azure_error_line(expired, SUB)
    assert line == ("Azure credentials: expired (AADSTS700082); run `az login` again, or renew the service "
                    "principal's secret or federated token")
    assert "eyJ" not in pf.scrub(str(expired))


def test_azure_errors_are_one_line_each():
    class Response:
        status_code = 403
        reason = "Forbidden"
        headers = {}
        def text(self):
            return '{"error": {"code": "AuthorizationFailed", "message": "no"}}'
    err = HttpResponseError(response=Response())
    err.status_code = 403
    assert "give it the Reader role" in pf.azure_error_line(err, SUB)
    assert pf.azure_error_line(ServiceRequestError("boom"), SUB).startswith(
        "Azure Resource Manager (https://management.azure.com) can't be reached (ServiceRequestError)")


def test_the_subscription_comes_from_the_argument_the_environment_the_stack_or_az():
    other = "11111111-1111-1111-1111-111111111111"
    assert resolve_subscription(SUB, {"AZURE_SUBSCRIPTION_ID": other}, {}) == SUB
    assert resolve_subscription(None, {"ARM_SUBSCRIPTION_ID": other}, {}) == other
    assert resolve_subscription(None, {}, {"azure-native:subscriptionId": other}) == other
    assert resolve_subscription(None, {}, {}, az=lambda: other) == other
    with pytest.raises(UserError) as err:
        resolve_subscription(None, {}, {}, az=lambda: None)
    assert err.value.exit_code == 2 and "az login" in err.value.lines[0]
    with pytest.raises(UserError) as err:
        resolve_subscription("my-sub", {}, {})
    assert err.value.lines[0].startswith("--subscription: 'my-sub' is not an Azure subscription id")


def test_the_cli_without_credentials_exits_2_with_one_line(tmp_path):
    env = {"PATH": str(tmp_path), "HOME": str(tmp_path), "AZURE_SUBSCRIPTION_ID": SUB,
           "PYTHONPATH": str(pathlib.Path(__file__).resolve().parents[2])}
    import sys
    done = subprocess.run([sys.executable, "-m", "infra", "preflight", "--stack", "prod"], capture_output=True,
                          text=True, timeout=180, env=env, cwd=pathlib.Path(__file__).resolve().parents[2])
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Azure credentials: none usable"), done.stderr


@pytest.mark.parametrize("variables,starts", [
    ({"ARM_TENANT_ID": "11111111-1111-1111-1111-111111111111", "ARM_CLIENT_ID": "x", "ARM_USE_OIDC": "true",
      "ARM_OIDC_TOKEN_FILE_PATH": "/nonexistent/token"},
     "Azure credentials: ARM_OIDC_TOKEN_FILE_PATH '/nonexistent/token' can't be read (No such file or directory)"),
    ({"ARM_TENANT_ID": "bad tenant!", "ARM_CLIENT_ID": "x", "ARM_CLIENT_SECRET": "sk-SECRET-VALUE"},
     "Azure credentials: the service principal settings in the environment are not valid"),
    ({"AZURE_TENANT_ID": "bad tenant!", "AZURE_CLIENT_ID": "x", "AZURE_CLIENT_SECRET": "sk-SECRET-VALUE"},
     "Azure credentials: the service principal settings in the environment are not valid"),
])
def test_credential_settings_azure_identity_refuses_are_one_line_not_a_bug_report(tmp_path, variables, starts):
    env = {"PATH": str(tmp_path), "HOME": str(tmp_path), "AZURE_SUBSCRIPTION_ID": SUB,
           "PYTHONPATH": str(pathlib.Path(__file__).resolve().parents[2]), **variables}
    import sys
    done = subprocess.run([sys.executable, "-m", "infra", "preflight", "--stack", "prod"], capture_output=True,
                          text=True, timeout=180, env=env, cwd=pathlib.Path(__file__).resolve().parents[2])
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(starts), done.stderr
    assert "SECRET" not in done.stderr and "internal error" not in done.stderr


def test_the_credential_is_pulumis_identity_where_only_its_arm_variables_are_set(tmp_path):
    from azure import identity

    from infra.cli_preflight import default_credential

    ids = {"ARM_TENANT_ID": "11111111-1111-1111-1111-111111111111", "ARM_CLIENT_ID": SUB}
    assert isinstance(default_credential({**ids, "ARM_CLIENT_SECRET": "s"}), identity.ClientSecretCredential)
    token_file = tmp_path / "oidc"
    token_file.write_text("header.payload.signature\n")
    cred = default_credential({**ids, "ARM_USE_OIDC": "true", "ARM_OIDC_TOKEN_FILE_PATH": str(token_file)})
    assert isinstance(cred, identity.ClientAssertionCredential)
    cred = default_credential({**ids, "ARM_USE_OIDC": "true", "ACTIONS_ID_TOKEN_REQUEST_URL": "https://x/?a=1",
                               "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "t"})
    assert isinstance(cred, identity.ClientAssertionCredential)
    assert isinstance(default_credential({"ARM_USE_MSI": "true"}), identity.ManagedIdentityCredential)
    # azure-identity's own variables, or nothing: the standard chain
    assert isinstance(default_credential({**ids, "ARM_CLIENT_SECRET": "s", "AZURE_CLIENT_ID": SUB}),
                      identity.DefaultAzureCredential)
    assert isinstance(default_credential({}), identity.DefaultAzureCredential)
