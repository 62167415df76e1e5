"""infra.plan: the numbers the README shows, the pool each replica gets, and the plan's own checks.

The CLI's output and JSON shape are in test_plan_output.py, prices and regions in test_plan_prices.py, named sizes and
the budget in test_plan_explicit_and_budget.py, name lengths in test_names.py.
"""
import dataclasses
import hashlib
import json
import math
import pathlib
import re

import pytest

from infra.catalog import load_catalog
from infra.errors import UserError
from infra.models import resolve
from infra.plan import (
    HOURS_PER_MONTH,
    IMAGE_SPACE_GIB,
    build_plan,
    inference_config,
    load_balancer_dns_label,
    pool_name,
    short_hash,
)
from infra.settings import load_stack_file, settings_from_config
from infra.sizing import SizingRequest, choose

CAT = load_catalog()
README = pathlib.Path(__file__).resolve().parents[2] / "README.md"
RANGES = {"access": {"sourceRanges": ["203.0.113.0/24"]}}
HELM = {"mode": "helm"}
ADDON_06 = {"mode": "addon", "version": "0.6.0"}


def plan_for(models, kaito=None, stack="dev", secrets=("hfToken",), **extra):
    values = {**RANGES, "models": models, "kaito": kaito or HELM, **extra}
    return build_plan(settings_from_config(stack, values, set(secrets)))


def problems(models, kaito=None, stack="dev", secrets=("hfToken",), **extra) -> list[str]:
    with pytest.raises(UserError) as err:
        plan_for(models, kaito, stack, secrets, **extra)
    return err.value.lines


def readme_plan_block() -> list[str]:
    text = README.read_text()
    start = text.index("$ python -m infra plan --stack prod")
    return text[start:text.index("```", start)].splitlines()


# ---------------------------------------------------------------------------------------------------------
# What the README shows is what the plan decides

ROW = re.compile(r"^(?P<slot>[a-z0-9-]+)\b.*\s(?P<size>Standard_\S+)\s+(?P<nodes>\d+) x (?P<gpus>\d+)\s+"
                 r"(?P<need>\d+)/(?P<have>\d+)\s+(?P<usd>[\d.]+)$")


def test_the_readmes_plan_rows_are_the_plans_numbers():
    plan = build_plan(load_stack_file("prod"))
    rows = [m.groupdict() for m in map(ROW.match, readme_plan_block()) if m]
    assert len(rows) == len(plan.replicas) == 3
    for row, r in zip(rows, plan.replicas, strict=True):
        assert row == {"slot": r.slot, "size": r.instance_type, "nodes": str(r.nodes), "gpus": str(r.gpus_per_node),
                       "need": f"{r.gpu_memory_required_gib:.0f}", "have": f"{r.gpu_memory_available_gib:.0f}",
                       "usd": f"{r.usd_per_hour:.3f}"}
    # and the numbers themselves: the A10 holds llama-8b at 8192 tokens (19 of 24 GiB), the H100 pair llama-70b
    assert [(row["need"], row["have"]) for row in rows] == [("19", "24"), ("19", "24"), ("139", "188")]


def test_the_readmes_plan_totals_and_reasons_are_the_plans():
    plan = build_plan(load_stack_file("prod"))
    block = "\n".join(readme_plan_block())
    assert (f"Total: ${plan.usd_per_hour:.3f}/hour, ${plan.usd_per_month:,.2f}/month ({HOURS_PER_MONTH} h)"
            in block)
    assert "Total: $20.360/hour, $14,862.80/month (730 h)" in block
    budget = plan.settings.budget.max_usd_per_hour
    assert f"Budget: ${budget:.2f}/hour ({plan.usd_per_hour / budget:.0%} used)" in block
    for name in plan.model_names:
        assert f"  {name}: {plan.replicas_of(name)[0].reason}" in block
    assert ("llama-8b: cheapest that KAITO 0.12.0 accepts and that fits: 1 x Standard_NV36ads_A10_v5, TP=1 "
            "(next: 1 x Standard_NC24ads_A100_v4 $3.673/h)") in block
    assert ("llama-70b: set in the stack: 1 x Standard_NC80adis_H100_v5, TP=2 ($2.941/h more than auto's "
            "3 x Standard_NC24ads_A100_v4)") in block
    assert "max-model-len 8192 (settings)" in block
    assert "GPU quota needed in eastus: NCads_H100_v5: 80 vCPUs, NVadsA10_v5: 72 vCPUs" in block
    assert plan.quota_vcpus() == {"NVadsA10_v5": 72, "NCads_H100_v5": 80}


def test_alternatives_are_the_next_five_feasible_sizes_cheapest_first():
    plan = build_plan(load_stack_file("prod"))
    r = plan.replicas[0]
    assert [(a.instance_type, a.nodes, a.usd_per_hour) for a in r.alternatives] == [
        ("Standard_NC24ads_A100_v4", 1, 3.673), ("Standard_NV72ads_A10_v5", 1, 6.52),
        ("Standard_NC40ads_H100_v5", 1, 6.98), ("Standard_NC48ads_A100_v4", 1, 7.346),
        ("Standard_NC80adis_H100_v5", 1, 13.96)]
    big = plan.replicas[2]                   # a named size: auto's choice leads its alternatives
    assert [(a.instance_type, a.nodes) for a in big.alternatives][:2] == [
        ("Standard_NC24ads_A100_v4", 3), ("Standard_NC40ads_H100_v5", 2)]
    assert big.instance_type not in {a.instance_type for a in big.alternatives}
    assert len(big.alternatives) == 5
    doc = plan.to_json()["models"][0]["alternatives"]
    assert doc[0] == {"instance_type": "Standard_NC24ads_A100_v4", "nodes": 1, "usd_per_hour": 3.673}


def test_a_plan_with_fewer_than_five_other_sizes_lists_them_all():
    plan = plan_for([{"name": "big", "model": "llama-3.3-70b-instruct"}], ADDON_06)
    r = plan.replicas[0]
    model = resolve("llama-3.3-70b-instruct", plan.release, CAT)
    decision = choose(SizingRequest(model, "vllm", plan.release), CAT)
    assert [a.instance_type for a in r.alternatives] == [o.instance_type for o in decision.alternatives[:5]]
    assert r.reason == decision.reason


# ---------------------------------------------------------------------------------------------------------
# The GPU pool of a replica

def test_the_os_disk_holds_the_weights_and_the_images_in_64_gib_steps():
    plan = build_plan(load_stack_file("prod"))
    disks = {r.model_name: r.os_disk_gib for r in plan.replicas}
    assert disks == {"llama-8b": 192, "llama-70b": 320}    # 94 + 64 -> 192; 211 + 64 -> 320
    for r in plan.replicas:
        need = resolve(r.model_ref, plan.release, CAT).disk_gib + IMAGE_SPACE_GIB
        assert r.os_disk_gib == math.ceil(need / 64) * 64 and r.os_disk_gib % 64 == 0


@pytest.mark.parametrize("weights,disk", [
    (48, 192),          # 48 + 80 GiB (KAITO's disk base) + 64 GiB of images = 192: exactly 3 x 64
    (49, 256),          # one GiB more: the next 64 GiB step
    (2000, 2048),       # capped at 2048 GiB
])
def test_the_os_disk_rounds_up_to_64_gib_and_is_at_most_2048(weights, disk):
    facts = {"weightsGiB": weights, "layers": 1, "kvHeads": 1, "headDim": 1, "contextLimit": 4096}
    plan = plan_for([{"name": "x", "model": "acme/thing", "facts": facts}])
    assert plan.release.disk_base_gib == 80
    assert plan.replicas[0].os_disk_gib == disk


def test_bring_your_own_pools_carry_the_gfd_values_kaito_sizes_from():
    plan = build_plan(load_stack_file("prod"))
    a10, h100 = plan.replicas[0], plan.replicas[2]
    assert a10.node_labels["nvidia.com/gpu.memory"] == "24512"          # MiB per GPU, as GFD writes it
    assert a10.node_labels["nvidia.com/gpu.count"] == "1"
    assert a10.node_labels["nvidia.com/gpu.product"] == "NVIDIA-A10-24Q"
    assert h100.node_labels["nvidia.com/gpu.memory"] == "95830" and h100.node_labels["nvidia.com/gpu.count"] == "2"
    assert a10.node_labels["kaito.sh/workspace"] == a10.workspace
    assert a10.node_labels["kaito.sh/workspacenamespace"] == "llm"
    assert a10.node_labels["kaito-aks/workspace"] == a10.workspace and a10.node_labels["accelerator"] == "nvidia"
    assert plan.to_json()["models"][0]["node_labels"] == a10.node_labels


def test_add_on_pools_carry_no_gfd_values():
    plan = plan_for([{"name": "p", "model": "phi-3-mini-4k-instruct"}], ADDON_06)
    labels = plan.replicas[0].node_labels
    assert labels == {"kaito-aks/workspace": plan.replicas[0].workspace, "accelerator": "nvidia"}


def test_a_size_whose_gpu_memory_is_not_sourced_leaves_the_label_to_gfd():
    plan = plan_for([{"name": "p", "model": "phi-3-mini-4k-instruct", "instanceType": "Standard_NC24ads_A100_v4"}])
    r = plan.replicas[0]
    assert r.gfd_labels["nvidia.com/gpu.memory"] == str(CAT.sizes["Standard_NC24ads_A100_v4"].nvml_memory_mib)
    unsourced = dataclasses.replace(r, gpu_memory_mib=None, gfd_product=None)
    assert unsourced.gfd_labels == {"nvidia.com/gpu.count": str(r.gpus_per_node)}


@pytest.mark.parametrize("weights,seconds", [
    (None, 30 * 60 + 20 * 60),           # no weights known: the GPU need counts, small: the 30-minute floor
    (50, 15 * 60 + 18 * 50 + 20 * 60),   # 15 min + 18 s per GiB
    (600, 180 * 60 + 20 * 60),           # the 3-hour ceiling
])
def test_pulumi_waits_for_kaitos_startup_probe_budget_plus_20_minutes(weights, seconds):
    plan = build_plan(load_stack_file("prod"))
    r = plan.replicas[0]
    changed = dataclasses.replace(r, weights_gib=weights, gpu_memory_required_gib=10.0)
    assert changed.wait_timeout_seconds == seconds


def test_pool_names_are_g_six_name_characters_and_a_hash():
    name = pool_name("llama-8b-0d7a53")
    assert re.fullmatch(r"g[a-z0-9]{11}", name) and name.startswith("gllama8")
    assert pool_name("ab") == "gab" + hashlib.sha256(b"ab").hexdigest()[:9]
    assert pool_name("llama-8b-0d7a53") == name and pool_name("llama-8b-0d7a54") != name


def test_plain_data_hashes_are_stable_short_and_order_independent():
    assert short_hash({"a": 1, "b": [2]}) == short_hash({"b": [2], "a": 1})
    assert len(short_hash({"a": 1})) == 8 and len(short_hash({"a": 1}, length=10)) == 10
    assert short_hash({"a": 1}) != short_hash({"a": 2})
    assert short_hash({"a": 1}) == hashlib.sha256(b'{"a":1}').hexdigest()[:8]


# ---------------------------------------------------------------------------------------------------------
# The inference config

def test_no_inference_config_for_transformers_or_without_flags():
    release = CAT.release("0.12.0")
    assert inference_config(release, "transformers", {"max-model-len": 4096}) is None
    assert inference_config(release, "vllm", {}) is None


def test_the_inference_config_is_kaitos_template_with_the_plans_flags_winning():
    release = CAT.release("0.12.0")
    before = json.dumps(release.inference_config_template, sort_keys=True)
    config = inference_config(release, "vllm", {"max-model-len": 4096, "cpu-offload-gb": 1})
    assert config["vllm"]["max-model-len"] == 4096 and config["vllm"]["cpu-offload-gb"] == 1
    for key, value in release.inference_config_template.items():
        if key != "vllm":
            assert config[key] == value
    assert json.dumps(release.inference_config_template, sort_keys=True) == before    # the template is not changed


def test_the_plan_writes_dtype_max_model_len_and_the_a10_utilization():
    plan = plan_for([{"name": "p", "model": "phi-3-mini-4k-instruct", "dtype": "float16", "maxModelLen": 2048}])
    r = plan.replicas[0]
    assert r.instance_type == "Standard_NV36ads_A10_v5"
    assert {k: r.inference_config["vllm"][k] for k in ("dtype", "max-model-len", "gpu-memory-utilization")} == {
        "dtype": "float16", "max-model-len": 2048, "gpu-memory-utilization": 0.82}
    assert r.config_hash == short_hash(r.inference_config)
    assert (r.dtype, r.max_model_len, r.max_model_len_source, r.sizing_context) == ("float16", 2048, "settings", 2048)


def test_kaito_0_6_multi_node_writes_the_largest_max_model_len_that_fits():
    plan = plan_for([{"name": "l", "model": "llama-3.1-8b-instruct", "instanceType": "Standard_NC4as_T4_v3"}],
                    ADDON_06)
    r = plan.replicas[0]
    assert (r.nodes, r.kaito_count, r.multi_node) == (2, 2, True)
    assert r.max_model_len == 33280 and r.inference_config["vllm"]["max-model-len"] == 33280
    assert r.max_model_len_source == "largest that fits; KAITO 0.6.0 requires one for this size"


# ---------------------------------------------------------------------------------------------------------
# Costs and quota

def test_totals_quota_and_surge_add_up_over_replicas():
    plan = plan_for([{"name": "a", "model": "phi-3-mini-4k-instruct", "replicas": 2, "rollout": "surge"},
                     {"name": "b", "model": "phi-3-mini-4k-instruct", "rollout": "recreate"}])
    per = plan.replicas[0].usd_per_hour
    assert plan.usd_per_hour == round(3 * per, 4)
    assert plan.usd_per_month == round(plan.usd_per_hour * 730, 2)
    family, vcpus = plan.replicas[0].vm_family, plan.replicas[0].vcpus
    assert plan.quota_vcpus() == {family: 3 * vcpus}
    assert plan.surge() == {"models": ["a"], "extra_usd_per_hour": round(2 * per, 4),
                            "extra_quota_vcpus": {family: 2 * vcpus}}
    assert plan.model_names == ("a", "b") and len(plan.replicas_of("a")) == 2


def test_spot_quota_is_counted_apart():
    plan = plan_for([{"name": "a", "model": "phi-3-mini-4k-instruct", "spot": True},
                     {"name": "b", "model": "phi-3-mini-4k-instruct"}])
    spot, on_demand = plan.replicas
    assert spot.spot and not on_demand.spot
    assert plan.quota_vcpus() == {f"{spot.vm_family} (spot)": spot.vcpus, on_demand.vm_family: on_demand.vcpus}


def test_upgrades_use_no_surge_node_and_follow_the_window():
    prod = build_plan(load_stack_file("prod")).upgrades()
    assert prod == {"gpu_pool_max_surge": "0", "gpu_pool_max_unavailable": "1", "extra_quota_vcpus": {},
                    "maintenance_window": {"day_of_week": "Sunday", "start_time": "00:00", "utc_offset": "+00:00",
                                           "duration_hours": 4, "interval_weeks": 1}}
    assert plan_for([{"name": "a", "model": "phi-3-mini-4k-instruct"}]).upgrades()["maintenance_window"] is None


def test_a_plan_exactly_at_the_budget_passes_and_a_cent_over_fails():
    one = plan_for([{"name": "a", "model": "phi-3-mini-4k-instruct"}])
    cost = one.usd_per_hour
    assert plan_for([{"name": "a", "model": "phi-3-mini-4k-instruct"}], budget={"maxUsdPerHour": cost}).usd_per_hour \
        == cost
    lines = problems([{"name": "a", "model": "phi-3-mini-4k-instruct"}], budget={"maxUsdPerHour": cost - 0.01})
    assert lines == [f"kaito-aks:budget.maxUsdPerHour: the plan costs ${cost:.2f}/h (${cost * 730:,.0f}/month), over "
                     f"the budget of ${cost - 0.01:.2f}/h; the largest item is {one.replicas[0].workspace} at "
                     f"${cost:.2f}/h -- raise the budget, lower replicas, or choose smaller models"]


def test_the_largest_item_over_budget_is_named():
    lines = problems([{"name": "small", "model": "phi-3-mini-4k-instruct"},
                      {"name": "big", "model": "phi-3-mini-4k-instruct", "instanceType": "Standard_NC96ads_A100_v4"}],
                     budget={"maxUsdPerHour": 1})
    assert "the largest item is big at $14.69/h" in lines[0]


# ---------------------------------------------------------------------------------------------------------
# The plan's own checks: one line each, naming the setting

def test_the_release_follows_the_mode_and_the_stack():
    default = plan_for([{"name": "a", "model": "phi-3-mini-4k-instruct"}])
    # Helm installs the chart kaito-aks pins: a known version, not an assumption
    assert (default.kaito_version, default.kaito_version_source) == (CAT.default_helm_version, "stack")
    addon = plan_for([{"name": "a", "model": "phi-3-mini-4k-instruct"}], {"mode": "addon"})
    assert addon.kaito_version == CAT.addon_default.version
    assert addon.kaito_version_source == f"assumed: {CAT.addon_default.source}"
    pinned = plan_for([{"name": "a", "model": "phi-3-mini-4k-instruct"}], {"mode": "helm", "version": "0.10.0"})
    assert (pinned.kaito_version, pinned.kaito_version_source) == ("0.10.0", "stack")


def test_an_unknown_release_or_a_helm_release_without_byo_is_one_line():
    assert problems([{"name": "a", "model": "phi-3-mini-4k-instruct"}], {"mode": "addon", "version": "0.99.0"})[0] \
        .startswith("kaito-aks:kaito.version: kaito-aks has no rules for KAITO 0.99.0")
    line, = problems([{"name": "a", "model": "phi-3-mini-4k-instruct"}], {"mode": "helm", "version": "0.9.0"})
    assert line.endswith("which KAITO 0.9.0 doesn't support correctly; use one of 0.10.0, 0.11.0, 0.12.0, or "
                         "kaito.mode=addon")


def test_production_needs_api_server_ranges():
    line, = problems([{"name": "a", "model": "phi-3-mini-4k-instruct"}], stack="prod", gateway={"enabled": False})
    assert line == ("kaito-aks:cluster.apiServerAuthorizedIpRanges: required for a production stack; list the CIDRs "
                    "of your admins and CI runners (or set production: false)")
    plan_for([{"name": "a", "model": "phi-3-mini-4k-instruct"}], stack="prod", gateway={"enabled": False},
             cluster={"apiServerAuthorizedIpRanges": ["203.0.113.0/24"]})


def test_endpoints_open_to_everyone_must_be_said():
    with pytest.raises(UserError) as err:
        build_plan(settings_from_config("dev", {"models": [{"name": "a", "model": "phi-3-mini-4k-instruct"}]}, set()))
    assert err.value.lines == [
        "kaito-aks:access.sourceRanges: not set, so the endpoints would be open to the internet; list your client "
        "CIDRs, or set access.internal: true (private IP), or access.allowAnySource: true"]
    for access in ({"allowAnySource": True}, {"internal": True, "sourceRanges": []}):
        extra = {"endpointCheck": {"url": "http://10.0.0.9"}} if access.get("internal") else {}
        build_plan(settings_from_config("dev", {"models": [{"name": "a", "model": "phi-3-mini-4k-instruct"}],
                                                "access": access, **extra}, set()))


def test_internal_endpoints_need_a_reachable_check_url_or_no_check():
    base = {"models": [{"name": "a", "model": "phi-3-mini-4k-instruct"}], "access": {"internal": True}}
    with pytest.raises(UserError) as err:
        build_plan(settings_from_config("dev", base, set()))
    assert err.value.lines[0].startswith("kaito-aks:endpointCheck.url: the endpoints are internal (access.internal)")
    build_plan(settings_from_config("dev", {**base, "endpointCheck": {"enabled": False}}, set()))


def test_azure_rbac_needs_admin_groups():
    line, = problems([{"name": "a", "model": "phi-3-mini-4k-instruct"}], cluster={"azureRbac": True})
    assert line.startswith("kaito-aks:cluster.adminGroupObjectIds: required with azureRbac")
    plan_for([{"name": "a", "model": "phi-3-mini-4k-instruct"}],
             cluster={"azureRbac": True, "adminGroupObjectIds": ["00000000-0000-0000-0000-000000000001"]})


def test_a_max_model_len_equal_to_the_context_limit_is_accepted():
    plan = plan_for([{"name": "p", "model": "phi-3-mini-4k-instruct", "maxModelLen": 4096}], ADDON_06)
    assert plan.replicas[0].max_model_len == 4096
    assert problems([{"name": "p", "model": "phi-3-mini-4k-instruct", "maxModelLen": 4097}], ADDON_06) == [
        "kaito-aks:models[0].maxModelLen: 4097 exceeds phi-3-mini-4k-instruct's context limit of 4096 tokens (KAITO "
        "rejects it); use at most 4096"]


@pytest.mark.parametrize("extra,which", [({"maxModelLen": 2048}, "maxModelLen"), ({"dtype": "float16"}, "dtype")])
def test_vllm_flags_on_the_transformers_runtime_are_refused(extra, which):
    lines = problems([{"name": "p", "model": "phi-3-mini-4k-instruct", "runtime": "transformers", **extra}], ADDON_06)
    assert lines == [f"kaito-aks:models[0].{which}: only applies to the vllm runtime (KAITO passes it to vLLM); "
                     "remove it"]


def test_the_transformers_runtime_is_planned_where_kaito_has_it():
    plan = plan_for([{"name": "p", "model": "phi-3-mini-4k-instruct", "runtime": "transformers"}], ADDON_06)
    r = plan.replicas[0]
    assert (r.runtime, r.kaito_count, r.inference_config) == ("transformers", 1, None)


def test_spot_on_kaito_0_6_names_the_first_release_that_tolerates_it():
    line, = problems([{"name": "p", "model": "phi-3-mini-4k-instruct", "spot": True}], ADDON_06)
    assert line == ("kaito-aks:models[0].spot: KAITO 0.6.0's inference pods don't tolerate AKS's spot taint "
                    "(kubernetes.azure.com/scalesetpriority=spot; KAITO 0.10.0 and later do); use spot: false, or "
                    "kaito.mode=helm")


def test_a_gated_model_without_a_token_is_one_line_and_with_one_references_it():
    line, = problems([{"name": "l", "model": "llama-3.1-8b-instruct"}], secrets=())
    assert line == ("kaito-aks:hfToken: meta-llama/Llama-3.1-8B-Instruct (kaito-aks:models[0]) is gated on Hugging "
                    "Face and needs a token; accept its licence on huggingface.co, then `pulumi config set --secret "
                    "hfToken hf_...`")
    r = plan_for([{"name": "l", "model": "llama-3.1-8b-instruct"}]).replicas[0]
    assert r.gated and r.reference_hf_token


def test_a_gated_model_whose_preset_forbids_the_secret_does_not_reference_it():
    """KAITO 0.10's webhook refuses modelAccessSecret on mistral-7b-instruct, though its weights are gated: the
    Workspace must not name the token Secret there (it would be refused at admission)."""
    r = plan_for([{"name": "m", "model": "mistral-7b-instruct"}], {"mode": "helm", "version": "0.10.0"}).replicas[0]
    assert r.gated and not r.reference_hf_token


def test_facts_for_a_model_kaito_knows_are_refused():
    facts = {"weightsGiB": 30, "layers": 48, "kvHeads": 8, "headDim": 128, "contextLimit": 32768}
    line, = problems([{"name": "p", "model": "phi-3-mini-4k-instruct", "facts": facts}])
    assert line == ("kaito-aks:models[0].facts: phi-3-mini-4k-instruct is in KAITO 0.12.0's catalog, which sizing "
                    "follows; remove facts")


def test_facts_size_an_unknown_model_with_its_weights():
    facts = {"weightsGiB": 30, "layers": 48, "kvHeads": 8, "headDim": 128, "contextLimit": 32768, "gated": True}
    r = plan_for([{"name": "x", "model": "acme/thing-14b", "facts": facts}]).replicas[0]
    assert (r.weights_gib, r.gated, r.resolution) == (30, True, "generic-hf")


def test_a_size_that_does_not_fit_names_the_setting_it_came_from():
    assert problems([{"name": "m", "model": "mistral-7b-instruct", "instanceType": "Standard_NC4as_T4_v3"}],
                    ADDON_06)[0].startswith("kaito-aks:models[0].instanceType: Standard_NC4as_T4_v3: KAITO 0.6.0 "
                                            "accepts it, but vLLM can't run it")
    facts = {"weightsGiB": 9000, "layers": 1, "kvHeads": 1, "headDim": 1, "contextLimit": 4096}
    assert problems([{"name": "x", "model": "acme/huge", "facts": facts}])[0].startswith(
        "kaito-aks:models[0].model: no Azure GPU size in the catalog runs acme/huge")


def test_load_balancer_dns_labels_are_the_stacks_for_the_gateway_and_per_slot_otherwise():
    assert load_balancer_dns_label("api", None) == "api"
    assert load_balancer_dns_label("api", "llama-8b-r1") == "api-llama-8b-r1"


def test_replicas_get_their_slot_index_and_the_stacks_namespace():
    plan = plan_for([{"name": "a", "model": "phi-3-mini-4k-instruct", "replicas": 3}], namespace="serving")
    assert [(r.slot, r.replica, r.model_index, r.namespace) for r in plan.replicas] == [
        ("a", 0, 0, "serving"), ("a-r1", 1, 0, "serving"), ("a-r2", 2, 0, "serving")]
    assert len({r.pool_name for r in plan.replicas}) == 3


def test_every_model_kaito_knows_needs_a_disk_of_at_least_70_gib():
    """Why the OS disk needs no floor: weights + KAITO's disk base is at least 70 GiB for every preset and catalog
    model of every release (0.6's own DiskStorageRequirement; weights + 80 GiB from 0.7), 134 GiB with the images."""
    needs = [resolve(name, release, CAT).disk_gib for release in CAT.releases.values()
             for name in (*release.presets, *release.catalog)]
    assert len(needs) > 100 and min(needs) >= 70


def test_an_unchanged_stack_keeps_its_workspace_and_pool_names():
    """The names are derived, not stored: if the identity recipe or the pool-name hash changed between kaito-aks
    releases, the next `pulumi up` of an unchanged prod stack would roll every surge replica onto new GPU pools.
    Changing them on purpose means updating these values and saying so in the release notes."""
    plan = build_plan(load_stack_file("prod"))
    assert [(r.identity, r.workspace, r.pool_name) for r in plan.replicas] == [
        ("0d7a53cacb", "llama-8b-0d7a53", "gllama8bde21"),
        ("0d7a53cacb", "llama-8b-r1-0d7a53", "gllama8c2dc6"),
        ("2eb2ff86a9", "llama-70b-2eb2ff", "gllama72dae9"),
    ]


# ---------------------------------------------------------------------------------------------------------
# Stack-wide rules

@pytest.mark.parametrize("gateway,why", [(None, "it is on by default for production stacks only"),
                                         ({"enabled": False}, "gateway.enabled is false")])
def test_api_keys_that_nothing_checks_are_refused(gateway, why):
    # a user who set keys believes the endpoints need one; without the gateway they don't
    extra = {} if gateway is None else {"gateway": gateway}
    assert problems([{"name": "a", "model": "phi-3-mini-4k-instruct"}], secrets=("apiKeys",), **extra) == [
        f"kaito-aks:apiKeys: set, but nothing checks them: the gateway is off ({why}), so clients reach the models "
        "without a key; set gateway.enabled: true to require the keys, or remove apiKeys"]
    with_gateway = plan_for([{"name": "a", "model": "phi-3-mini-4k-instruct"}], secrets=("apiKeys",),
                            gateway={"enabled": True})
    assert with_gateway.settings.gateway_enabled


def test_more_replicas_than_aks_has_node_pools_for_are_refused():
    phi = {"model": "phi-3-mini-4k-instruct"}
    models = [{"name": f"m{i}", "replicas": 11, **phi} for i in range(9)]            # 99 pools + the system pool
    assert len(plan_for(models).replicas) == 99
    lines = problems([*models, {"name": "one-more", **phi}])
    assert lines == ["kaito-aks:models: 100 replicas need 100 GPU node pools, and with the system pool that is more "
                     "than the 100 node pools AKS allows per cluster; lower replicas, or split the models over two "
                     "stacks"]


@pytest.mark.parametrize("rollout", ["surge", "recreate"])
@pytest.mark.parametrize("order", ["replicas first", "name first"])
def test_a_model_named_like_another_models_extra_replica_is_refused(rollout, order):
    # 'a' with replicas: 2 serves 'a' and 'a-r1'; a model named 'a-r1' would share its Service, route and check,
    # also in surge mode, where a different model gives the two Workspaces (and pools) different hashes
    scaled = {"name": "a", "model": "phi-3-mini-4k-instruct", "replicas": 2, "rollout": rollout}
    named = {"name": "a-r1", "model": "microsoft/phi-4-mini-instruct", "rollout": rollout}
    models = [scaled, named] if order == "replicas first" else [named, scaled]
    i_named, i_scaled = (1, 0) if order == "replicas first" else (0, 1)
    assert problems(models) == [
        f"kaito-aks:models[{i_named}].name: 'a-r1' is also the name models[{i_scaled}] ('a') gives its replica 2, so "
        "their Services, gateway routes and checks would clash; rename one of the models"]


def test_two_workspaces_whose_pool_names_collide_are_refused_not_merged():
    # 'g' + 6 name characters + 5 hex characters: two names with the same first six characters can share a pool
    # name (about one pair in a thousand); found here by search, so the test states the rule, not a lucky pair
    seen: dict[str, str] = {}
    for i in range(100_000):
        name = f"model{i}"
        clash = seen.setdefault(pool_name(name), name)
        if clash != name:
            break
    assert pool_name(clash) == pool_name(name)
    models = [{"name": clash, "model": "phi-3-mini-4k-instruct"}, {"name": name, "model": "phi-3-mini-4k-instruct"}]
    assert problems(models) == [
        f"kaito-aks:models[1].name: '{name}' and '{clash}' map to the same AKS pool name {pool_name(name)}; rename "
        "one of the models"]


def test_an_endpoint_dns_label_of_exactly_63_characters_is_accepted_and_64_refused():
    # per-replica labels are '<access.dnsLabel>-<slot>'; Azure DNS labels hold at most 63 characters
    model = {"name": "m", "model": "phi-3-mini-4k-instruct"}
    fits = plan_for([model], access={**RANGES["access"], "dnsLabel": "a" * 61})
    assert fits.settings.access.dns_label == "a" * 61                 # 'aaa...a-m': 63 characters
    assert problems([model], access={**RANGES["access"], "dnsLabel": "a" * 62}) == [
        f"kaito-aks:access.dnsLabel: the DNS label of models[0]'s endpoint would be '{'a' * 62}-m', over 63 "
        "characters; use a shorter access.dnsLabel or model name"]
