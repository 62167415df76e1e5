"""An instanceType the stack names is checked by the same rules; the budget holds or the plan fails."""
import pytest

from infra.catalog import load_catalog
from infra.errors import UserError
from infra.plan import build_plan
from infra.settings import settings_from_config

CAT = load_catalog()
OPEN = {"access": {"sourceRanges": ["203.0.113.0/24"]}}
V06 = {"mode": "addon", "version": "0.6.0"}     # the add-on at the version MS Learn last pinned


def plan_for(models, kaito=None, **extra):
    values = {**OPEN, "models": models, "kaito": kaito or V06, **extra}
    return build_plan(settings_from_config("dev", values, secret_keys={"hfToken"}))


def problems(models, kaito=None, **extra):
    with pytest.raises(UserError) as err:
        plan_for(models, kaito, **extra)
    return err.value.lines


@pytest.mark.parametrize("kaito,model,size,phrase", [
    # too small for KAITO's own per-GPU rule (0.6)
    (V06, "llama-3.3-70b-instruct", "Standard_NV72ads_A10_v5", "24 GiB per GPU < the 80 GiB per GPU KAITO 0.6 requires"),
    # accepted by KAITO 0.6 but no room for vLLM (physical fit)
    (V06, "mistral-7b-instruct", "Standard_NC4as_T4_v3", "KAITO 0.6.0 accepts it, but vLLM can't run it"),
    # too small for the transformers runtime (single node) on 0.12
    ({"mode": "helm"}, "phi-3-medium-4k-instruct", "Standard_NV36ads_A10_v5", "transformers runtime is single-node"),
    # retired by Azure
    (V06, "phi-3-mini-4k-instruct", "Standard_NC6s_v3", "retired by Azure on 2025-09-30"),
    # unknown to Azure / the catalog
    (V06, "phi-3-mini-4k-instruct", "Standard_NC99xyz_v9", "is not an Azure GPU size kaito-aks knows"),
    # not schedulable: KAITO 0.12 dropped CC < 8.0
    ({"mode": "helm"}, "phi-3-mini-4k-instruct", "Standard_NC4as_T4_v3", "not in KAITO 0.12.0's SKU table (compute capability 7.5 < 8.0)"),
    # not in KAITO 0.6's table at all
    (V06, "phi-3-mini-4k-instruct", "Standard_NV36adms_A10_v5", "not in KAITO 0.6.0's SKU table"),
    # KAITO's row is spelled differently from the VM size: never matched
    (V06, "llama-3.3-70b-instruct", "Standard_ND96asr_v4", "spells it Standard_ND96asr_A100_v4"),
    # AMD: pods request nvidia.com/gpu
    (V06, "phi-3-mini-4k-instruct", "Standard_NG32ads_V620_v1", "never schedule"),
    # case matters for node matching
    (V06, "phi-3-mini-4k-instruct", "standard_nc24ads_a100_v4", "write 'Standard_NC24ads_A100_v4'"),
    # no price, no plan
    ({"mode": "helm"}, "llama-3.3-70b-instruct", "Standard_ND96isr_H200_v5", "no East US price"),
])
def test_explicit_instance_type_rejections(kaito, model, size, phrase):
    runtime = "transformers" if model == "phi-3-medium-4k-instruct" else "vllm"
    lines = problems([{"name": "m", "model": model, "instanceType": size, "runtime": runtime}], kaito)
    assert len(lines) == 1
    assert lines[0].startswith("kaito-aks:models[0].instanceType: ")
    assert phrase in lines[0]
    if "retired" in phrase or "unknown" in phrase or "0.12.0's SKU table" in phrase:
        assert "use instanceType: auto (cheapest:" in lines[0]


def test_explicit_instance_type_gets_kaitos_node_count_and_says_what_auto_would_save():
    plan = plan_for([{"name": "big", "model": "llama-3.3-70b-instruct", "instanceType": "Standard_NC48ads_A100_v4"}])
    r = plan.replicas[0]
    assert (r.instance_type, r.nodes, r.kaito_count, r.multi_node) == ("Standard_NC48ads_A100_v4", 2, 2, True)
    assert r.max_model_len is not None            # 0.6 demands one for count > 1
    assert "set in the stack" in r.reason


def test_explicit_more_expensive_than_auto_says_so():
    plan = plan_for([{"name": "big", "model": "llama-3.3-70b-instruct", "instanceType": "Standard_NC80adis_H100_v5"}],
                    {"mode": "helm"})
    assert "more than auto's 3 x Standard_NC24ads_A100_v4" in plan.replicas[0].reason


def test_budget_holds():
    plan = plan_for([{"name": "phi", "model": "phi-3-mini-4k-instruct", "replicas": 3}], budget={"maxUsdPerHour": 1.6})
    assert plan.usd_per_hour == pytest.approx(3 * 0.526)


def test_budget_exceeded_fails_with_the_numbers():
    lines = problems([{"name": "big", "model": "llama-3.3-70b-instruct"}], budget={"maxUsdPerHour": 10})
    assert lines == [
        "kaito-aks:budget.maxUsdPerHour: the plan costs $14.69/h ($10,725/month), over the budget of $10.00/h; "
        "the largest item is big at $14.69/h -- raise the budget, lower replicas, or choose smaller models"
    ]


def test_spot_is_rejected_on_the_addon_and_allowed_on_helm():
    lines = problems([{"name": "p", "model": "phi-3-mini-4k-instruct", "spot": True}])
    assert lines[0].startswith("kaito-aks:models[0].spot: KAITO 0.6.0's inference pods don't tolerate")
    plan = plan_for([{"name": "p", "model": "phi-3-mini-4k-instruct", "spot": True}], {"mode": "helm"})
    assert plan.replicas[0].spot


def test_bfloat16_is_not_planned_on_gpus_without_it():
    plan = plan_for([{"name": "p", "model": "phi-3-mini-4k-instruct", "dtype": "bfloat16"}])
    assert plan.replicas[0].instance_type == "Standard_NV36ads_A10_v5"   # the T4 (CC 7.5) is skipped


def test_max_model_len_beyond_the_context_limit():
    lines = problems([{"name": "p", "model": "phi-3-mini-4k-instruct", "maxModelLen": 8192}])
    assert lines == ["kaito-aks:models[0].maxModelLen: 8192 exceeds phi-3-mini-4k-instruct's context limit of 4096 "
                     "tokens (KAITO rejects it); use at most 4096"]


def test_transformers_runtime_where_kaito_has_none():
    # KAITO 0.12 has Transformers parameters for 20 catalog models; phi-4-mini-instruct's are commented out upstream
    lines = problems([{"name": "l", "model": "phi-4-mini-instruct", "runtime": "transformers"}], {"mode": "helm"})
    assert lines == ["kaito-aks:models[0].runtime: 'transformers' can't serve phi-4-mini-instruct in KAITO "
                     "0.12.0; use runtime: vllm"]


def test_user_facts_size_an_unknown_hf_model():
    facts = {"weightsGiB": 30, "layers": 48, "kvHeads": 8, "headDim": 128, "contextLimit": 32768}
    plan = plan_for([{"name": "x", "model": "acme/thing-14b", "facts": facts}], {"mode": "helm"})
    r = plan.replicas[0]
    assert (r.resolution, r.preset, r.served_model) == ("generic-hf", "acme/thing-14b", "thing-14b")
    assert r.instance_type == "Standard_NC24ads_A100_v4"


def test_errors_in_several_models_are_all_reported():
    lines = problems([{"name": "a", "model": "phi-2"}, {"name": "b", "model": "falcon-7b"}], {"mode": "helm"})
    assert [line.split(":")[1] for line in lines] == ["models[0].model", "models[1].model"]
