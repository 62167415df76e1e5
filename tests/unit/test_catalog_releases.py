"""Each KAITO release's rules, from the catalog, against worked examples read from KAITO's source at each tag.

One or more examples per rule set (docs/kaito-versions.md cites every upstream line): a model one release accepts
and the next refuses, a size one release schedules and the next doesn't, a node count the estimator changes, and
the named capabilities the program and manifests follow.
"""
from __future__ import annotations

import pytest

from infra.catalog import UnknownKaitoVersionError, load_catalog
from infra.errors import UserError
from infra.models import ResolveError, resolve
from infra.plan import build_plan
from infra.render import azure_args, model_objects
from infra.settings import settings_from_config
from infra.sizing import SizingRequest, evaluate

CAT = load_catalog()


def plan(model: dict, mode: str = "addon", version: str | None = None):
    kaito = {"mode": mode, **({"version": version} if version else {})}
    values = {"models": [model], "kaito": kaito, "access": {"sourceRanges": ["203.0.113.0/24"]}}
    return build_plan(settings_from_config("dev", values, {"hfToken"}))


def refused(model: dict, mode: str = "addon", version: str | None = None) -> str:
    with pytest.raises(UserError) as err:
        plan(model, mode, version)
    return "\n".join(err.value.lines)


# --- presets: accepted by one release, refused by the next ----------------------------------------------------

@pytest.mark.parametrize("ref,last_ok,first_refused,phrase", [
    ("phi-2", "0.7.2", "0.8.0", "'phi-2' is deprecated in KAITO 0.8.0"),                  # 57feef8b
    ("falcon-7b-instruct", "0.10.0", "0.11.0", "'falcon-7b-instruct' was removed in KAITO 0.11.0"),  # d325c369
])
def test_a_preset_one_release_accepts_the_next_refuses(ref, last_ok, first_refused, phrase):
    assert resolve(ref, CAT.release(last_ok), CAT).preset == ref
    with pytest.raises(ResolveError, match=phrase):
        resolve(ref, CAT.release(first_refused), CAT)


@pytest.mark.parametrize("ref,first_ok", [("gpt-oss-20b", "0.7.0"), ("gemma-3-4b-instruct", "0.8.0")])
def test_a_preset_that_arrives_in_a_release(ref, first_ok):
    previous = CAT.known_versions[CAT.known_versions.index(first_ok) - 1]
    with pytest.raises(ResolveError, match=f"is a KAITO preset from {first_ok} on, not in {previous}"):
        resolve(ref, CAT.release(previous), CAT)
    assert resolve(ref, CAT.release(first_ok), CAT).preset == ref


def test_any_hugging_face_id_is_accepted_from_0_9():
    facts = {"weightsGiB": 5, "layers": 32, "kvHeads": 8, "headDim": 128}
    model = {"name": "x", "model": "acme/tiny-7b", "facts": facts}
    assert "it accepts only its 29 presets, not Hugging Face ids" in refused(model, version="0.8.1")
    assert plan(model, version="0.9.0").replicas[0].resolution == "generic-hf"


def test_the_0_11_served_name_rename():
    # 0.6-0.10 serve the preset name; 0.11 serves the last part of the Hugging Face id, lower-cased (d325c369)
    assert resolve("mistral-7b-instruct", CAT.release("0.10.0"), CAT).served_name == "mistral-7b-instruct"
    assert resolve("mistral-7b-instruct", CAT.release("0.11.0"), CAT).served_name == "mistral-7b-instruct-v0.3"
    # deepseek-v3-0324 was served as deepseek-r1-0528 until 0.10
    assert resolve("deepseek-v3-0324", CAT.release("0.9.0"), CAT).served_name == "deepseek-r1-0528"
    assert resolve("deepseek-v3-0324", CAT.release("0.10.0"), CAT).served_name == "deepseek-v3-0324"


# --- sizes: scheduled by one release, not the next ------------------------------------------------------------

@pytest.mark.parametrize("size,last_in,first_out", [
    ("Standard_NC24s_v3", "0.8.1", "0.9.0"),         # V100 rows removed (35efc391)
    ("Standard_NV6", "0.8.1", "0.9.0"),               # NV (M60) rows removed
    ("Standard_NV32as_v4", "0.10.0", "0.11.0"),       # the AMD MI25 row removed (9a9d6214)
    ("Standard_NC4as_T4_v3", "0.11.0", "0.12.0"),     # T4 removed: compute capability < 8.0 (d521cf02)
])
def test_a_sku_one_release_lists_and_the_next_does_not(size, last_in, first_out):
    assert CAT.release(last_in).kaito_sku(size) is not None
    assert CAT.release(first_out).kaito_sku(size) is None


def test_the_t4_runs_kaito_0_9s_vllm_but_not_0_10s():
    model = resolve("phi-3-mini-4k-instruct", CAT.release("0.9.4"), CAT)
    t4 = CAT.sizes["Standard_NC4as_T4_v3"]
    assert evaluate(SizingRequest(model, "vllm", CAT.release("0.9.4")), t4).feasible
    model10 = resolve("phi-3-mini-4k-instruct", CAT.release("0.10.0"), CAT)
    option = evaluate(SizingRequest(model10, "vllm", CAT.release("0.10.0")), t4)
    assert not option.feasible and "kaito-project/kaito#2114" in option.why


def test_sku_lookup_ignores_case_from_0_10():
    assert CAT.release("0.9.4").kaito_sku("standard_nc24ads_a100_v4") is None
    assert CAT.release("0.10.0").kaito_sku("standard_nc24ads_a100_v4") is not None


# --- the node estimator: what each release's constants change -------------------------------------------------

@pytest.mark.parametrize("preset,size,before,after", [
    # the /1.05 weight overhead (5009de884, v0.11.0): one more node for qwen on one A100, for llama-70b on A10s
    ("qwen2.5-coder-32b-instruct", "Standard_NC24ads_A100_v4", 1, 2),
    ("llama-3.3-70b-instruct", "Standard_NV72ads_A10_v5", 4, 5),
])
def test_the_0_11_estimator_targets_more_nodes(preset, size, before, after):
    old, new = CAT.release("0.10.0"), CAT.release("0.11.0")
    from infra.sizing import estimator_nodes
    sku_old, sku_new = old.kaito_sku(size), new.kaito_sku(size)
    for release, sku, nodes in ((old, sku_old, before), (new, sku_new, after)):
        facts = resolve(preset, release, CAT).facts
        assert estimator_nodes(facts, sku.total_gpu_memory_gib / sku.gpus, sku.gpus, 2048, release.estimator) == nodes


def test_0_7_to_0_10_refuse_to_spread_a_preset_that_is_not_distributed():
    a10 = CAT.sizes["Standard_NV36ads_A10_v5"]
    old = evaluate(SizingRequest(resolve("qwen2.5-coder-32b-instruct", CAT.release("0.10.0"), CAT), "vllm",
                                 CAT.release("0.10.0")), a10)
    assert not old.feasible and "refuses to spread qwen2.5-coder-32b-instruct over nodes" in old.why
    new = evaluate(SizingRequest(resolve("qwen2.5-coder-32b-instruct", CAT.release("0.11.0"), CAT), "vllm",
                                 CAT.release("0.11.0")), a10)
    assert new.feasible and new.nodes == 4                       # every catalog model may span nodes
    # two nodes are already "over nodes": phi-4 needs 2 x NV36ads_A10_v5 on 0.10.0, which refuses it
    phi4 = evaluate(SizingRequest(resolve("phi-4", CAT.release("0.10.0"), CAT), "vllm", CAT.release("0.10.0")), a10)
    assert phi4.why == ("KAITO's estimator needs 2 nodes of it, and KAITO 0.10.0 refuses to spread phi-4 over nodes "
                        "(not a distributed preset)")


def test_0_6_sizes_by_count_and_0_7_by_the_estimator():
    six = plan({"name": "m", "model": "llama-3.1-8b-instruct", "instanceType": "Standard_NC4as_T4_v3"},
               version="0.6.0").replicas[0]
    assert (six.nodes, six.kaito_count) == (2, 2) and model_objects.workspace(six)["resource"]["count"] == 2
    seven = plan({"name": "m", "model": "llama-3.1-8b-instruct", "instanceType": "Standard_NC4as_T4_v3"},
                 version="0.7.2").replicas[0]
    assert seven.kaito_count is None and "count" not in model_objects.workspace(seven)["resource"]


# --- nodes, spot, transformers, the Helm path ---------------------------------------------------------------

def test_who_creates_the_gpu_nodes_on_the_add_on():
    model = {"name": "m", "model": "phi-3-mini-4k-instruct", "instanceType": "Standard_NC24ads_A100_v4"}
    r6, r7, r8, r11 = (plan(model, version=v).replicas[0] for v in ("0.6.2", "0.7.2", "0.8.1", "0.11.0"))
    assert (r6.pool_owner, r7.pool_owner, r8.pool_owner, r11.pool_owner) == ("kaito-aks", "kaito", "kaito-aks",
                                                                             "kaito-aks")
    # 0.11 counts a pre-created node only with the ownership labels, which also pin the pods (cb140a3d)
    assert "kaito.sh/workspace" in r11.node_labels and "kaito.sh/workspace" not in r8.node_labels
    assert all(r.workspace_names_instance_type for r in (r6, r7, r8, r11))


def test_spot_needs_0_10():
    model = {"name": "m", "model": "phi-3-mini-4k-instruct", "spot": True}
    assert "KAITO 0.9.4's inference pods don't tolerate AKS's spot taint" in refused(model, version="0.9.4")
    assert "KAITO 0.10.0 and later do" in refused(model, version="0.9.4")
    assert plan(model, version="0.10.0").replicas[0].spot


def test_the_transformers_api_changes_at_0_9():
    assert CAT.release("0.8.1").transformers_api == "kaito-chat"
    assert CAT.release("0.9.0").transformers_api == "openai-chat"


def test_the_helm_path_needs_bring_your_own_nodes_sized_from_gpu_labels():
    model = {"name": "m", "model": "phi-3-mini-4k-instruct"}
    assert ("KAITO 0.9.4 doesn't support correctly; use one of 0.10.0, 0.11.0, 0.12.0"
            in refused(model, mode="helm", version="0.9.4"))
    ten = plan(model, mode="helm", version="0.10.0")
    values = azure_args.kaito_chart_values(ten)
    assert values["featureGates"] == {"disableNodeAutoProvisioning": True} and "nodeProvisioner" not in values
    eleven = azure_args.kaito_chart_values(plan(model, mode="helm", version="0.11.0"))
    assert eleven["nodeProvisioner"] == "byo"


def test_the_add_on_default_is_assumed_with_its_evidence_and_a_pinned_version_is_the_stacks():
    assumed = plan({"name": "m", "model": "phi-3-mini-4k-instruct"})
    assert assumed.kaito_version == CAT.addon_default.version
    assert assumed.kaito_version_source == f"assumed: {CAT.addon_default.source}"
    pinned = plan({"name": "m", "model": "phi-3-mini-4k-instruct"}, version="0.6.0")
    assert (pinned.kaito_version, pinned.kaito_version_source) == ("0.6.0", "stack")


def test_unknown_versions_are_refused_with_the_known_ones_and_new_patches_follow_their_line():
    assert "kaito-aks has no rules for KAITO 0.13.0; it knows 0.6.0, 0.6.1" in refused(
        {"name": "m", "model": "phi-3-mini-4k-instruct"}, version="0.13.0")
    with pytest.raises(UnknownKaitoVersionError):
        CAT.release("0.5.9")
    patch = CAT.release("0.11.3")
    assert patch.line == "0.11" and patch.estimator == CAT.release("0.11.0").estimator and "0.11.0" in patch.note
