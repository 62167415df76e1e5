"""Model resolution per KAITO version: presets, catalog, generic Hugging Face ids, and the models of the README's examples."""
import pytest

from infra.catalog import load_catalog
from infra.models import ResolveError, resolve
from infra.sizing import SizingRequest, choose

CAT = load_catalog()
V06, V011, V012 = CAT.release("0.6.0"), CAT.release("0.11.0"), CAT.release("0.12.0")
# every mode: the add-on at 0.6.0 (MS Learn's last pinned version) and at 0.11.0 (the assumed current one, sized from
# KAITO's SKU table), and kaito-aks's Helm path at 0.12.0 (bring-your-own nodes, sized from GPU Feature Discovery labels)
MEMORY_SOURCE = {"0.6.0": "sku-table", "0.11.0": "sku-table", "0.12.0": "node-labels"}

# seed model -> per version: ("preset"|"catalog"|"generic-hf", preset name, served name, chosen size, nodes, $/h)
#               or ("error", a phrase the message must contain)
SEEDS = {
    "microsoft/phi-2": {
        "0.6.0": ("preset", "phi-2", "phi-2", "Standard_NC4as_T4_v3", 1, 0.526),
        "0.11.0": ("generic-hf", "microsoft/phi-2", "phi-2", "Standard_NV36ads_A10_v5", 1, 3.20),  # bf16: no T4
        "0.12.0": ("generic-hf", "microsoft/phi-2", "phi-2", "Standard_NV36ads_A10_v5", 1, 3.20),
    },
    "microsoft/phi-3-mini-4k-instruct": {
        "0.6.0": ("preset", "phi-3-mini-4k-instruct", "phi-3-mini-4k-instruct", "Standard_NC4as_T4_v3", 1, 0.526),
        "0.11.0": ("catalog", "phi-3-mini-4k-instruct", "phi-3-mini-4k-instruct", "Standard_NV36ads_A10_v5", 1, 3.20),
        "0.12.0": ("catalog", "phi-3-mini-4k-instruct", "phi-3-mini-4k-instruct", "Standard_NV36ads_A10_v5", 1, 3.20),
    },
    "stabilityai/stablelm-2-1_6b": {
        "0.6.0": ("error", "use the preset 'phi-3-mini-4k-instruct', or kaito.mode=helm"),
        "0.11.0": ("generic-hf", "stabilityai/stablelm-2-1_6b", "stablelm-2-1_6b", "Standard_NV36ads_A10_v5", 1, 3.20),
        "0.12.0": ("generic-hf", "stabilityai/stablelm-2-1_6b", "stablelm-2-1_6b", "Standard_NV36ads_A10_v5", 1, 3.20),
    },
    "meta-llama/Meta-Llama-3-8B-Instruct": {
        "0.6.0": ("error", "use the preset 'llama-3.1-8b-instruct', or kaito.mode=helm"),
        "0.11.0": ("generic-hf", "meta-llama/Meta-Llama-3-8B-Instruct", "meta-llama-3-8b-instruct",
                   "Standard_NV36ads_A10_v5", 1, 3.20),
        "0.12.0": ("generic-hf", "meta-llama/Meta-Llama-3-8B-Instruct", "meta-llama-3-8b-instruct",
                   "Standard_NV36ads_A10_v5", 1, 3.20),
    },
    "mistralai/Mistral-7B-Instruct-v0.2": {
        "0.6.0": ("error", "use the preset 'mistral-7b-instruct', or kaito.mode=helm"),
        "0.11.0": ("generic-hf", "mistralai/Mistral-7B-Instruct-v0.2", "mistral-7b-instruct-v0.2",
                   "Standard_NV36ads_A10_v5", 1, 3.20),
        "0.12.0": ("generic-hf", "mistralai/Mistral-7B-Instruct-v0.2", "mistral-7b-instruct-v0.2",
                   "Standard_NV36ads_A10_v5", 1, 3.20),
    },
    "tiiuae/falcon-7b-instruct": {
        # 13.44 GiB on one 16 GiB T4 leaves vLLM no room: the A10 is the cheapest that fits
        "0.6.0": ("preset", "falcon-7b-instruct", "falcon-7b-instruct", "Standard_NV36ads_A10_v5", 1, 3.20),
        "0.11.0": ("generic-hf", "tiiuae/falcon-7b-instruct", "falcon-7b-instruct", "Standard_NV36ads_A10_v5", 1, 3.20),
        "0.12.0": ("generic-hf", "tiiuae/falcon-7b-instruct", "falcon-7b-instruct", "Standard_NV36ads_A10_v5", 1, 3.20),
    },
    "meta-llama/Meta-Llama-3-70B-Instruct": {
        "0.6.0": ("error", "use the preset 'llama-3.3-70b-instruct', or kaito.mode=helm"),
        "0.11.0": ("generic-hf", "meta-llama/Meta-Llama-3-70B-Instruct", "meta-llama-3-70b-instruct",
                   "Standard_NC24ads_A100_v4", 3, 11.019),
        "0.12.0": ("generic-hf", "meta-llama/Meta-Llama-3-70B-Instruct", "meta-llama-3-70b-instruct",
                   "Standard_NC24ads_A100_v4", 3, 11.019),
    },
    "tiiuae/falcon-40b-instruct": {
        "0.6.0": ("preset", "falcon-40b-instruct", "falcon-40b-instruct", "Standard_NC48ads_A100_v4", 1, 7.346),
        "0.11.0": ("generic-hf", "tiiuae/falcon-40b-instruct", "falcon-40b-instruct", "Standard_NC48ads_A100_v4", 1, 7.346),
        "0.12.0": ("generic-hf", "tiiuae/falcon-40b-instruct", "falcon-40b-instruct", "Standard_NC48ads_A100_v4", 1, 7.346),
    },
}
CASES = [(model, version, expected) for model, per in SEEDS.items() for version, expected in per.items()]


@pytest.mark.parametrize("model,version,expected", CASES, ids=[f"{m}@{v}" for m, v, _ in CASES])
def test_every_seed_model_in_every_mode(model, version, expected):
    release = CAT.release(version)
    if expected[0] == "error":
        with pytest.raises(ResolveError) as err:
            resolve(model, release, CAT)
        assert expected[1] in str(err.value)
        return
    path, preset, served, size, nodes, price = expected
    resolved = resolve(model, release, CAT)
    assert (resolved.path, resolved.preset, resolved.served_name) == (path, preset, served)
    decision = choose(SizingRequest(resolved, "vllm", release, memory_source=MEMORY_SOURCE[version]), CAT)
    assert (decision.chosen.instance_type, decision.chosen.nodes) == (size, nodes)
    assert decision.chosen.usd_per_hour == pytest.approx(price)


def test_gated_seed_models_need_a_token():
    assert resolve("meta-llama/Meta-Llama-3-8B-Instruct", V012, CAT).gated
    assert resolve("llama-3.1-8b-instruct", V06, CAT).secret_rule == "required"
    assert resolve("phi-3-mini-4k-instruct", V06, CAT).secret_rule == "forbidden"   # 0.6 rejects a secret here
    assert not resolve("microsoft/phi-2", V012, CAT).gated


@pytest.mark.parametrize("ref,phrase", [
    ("phi-2", "'phi-2' is deprecated in KAITO 0.12.0; use phi-4-mini-instruct, or KAITO 0.7.2 or older (kaito.version)"),
    ("falcon-7b-instruct", "was removed in KAITO 0.11.0; use mistral-7b-instruct, or KAITO 0.10.0 or older (kaito.version)"),
    ("falcon-40b", "use gemma-3-27b-instruct"),
    ("phi-3-mini", "is not a KAITO 0.12.0 preset (did you mean 'phi-3.5-mini-instruct'?); or give a Hugging Face id"),
])
def test_kaito_0_12_rejections_name_the_replacement(ref, phrase):
    with pytest.raises(ResolveError) as err:
        resolve(ref, V012, CAT)
    assert phrase in str(err.value)


@pytest.mark.parametrize("ref,phrase", [
    ("gpt-oss-20b", "is a KAITO preset from 0.7.0 on, not in 0.6.0; kaito.mode=helm (installs KAITO 0.12.0)"),
    ("Phi-2", "matches preset names exactly; write 'phi-2'"),
    ("qwen/unknown-model", "kaito.mode=helm"),
])
def test_kaito_0_6_rejections(ref, phrase):
    with pytest.raises(ResolveError) as err:
        resolve(ref, V06, CAT)
    assert phrase in str(err.value)


def test_unknown_hf_id_asks_for_facts_and_uses_them():
    with pytest.raises(ResolveError) as err:
        resolve("acme/tiny-7b", V012, CAT)
    assert "facts.weightsGiB" in str(err.value) and "facts.kvHeads" in str(err.value)


def test_catalog_hf_id_matches_case_insensitively_and_uses_the_short_name():
    resolved = resolve("META-LLAMA/llama-3.3-70b-instruct", V012, CAT)
    assert (resolved.path, resolved.preset, resolved.hf_id) == ("catalog", "llama-3.3-70b-instruct",
                                                                "meta-llama/Llama-3.3-70B-Instruct")


def test_catalog_only_model_keeps_its_hf_id_as_preset():
    resolved = resolve("Qwen/Qwen3-8B-AWQ", V012, CAT)
    assert (resolved.path, resolved.preset, resolved.served_name) == ("catalog", "Qwen/Qwen3-8B-AWQ", "qwen3-8b-awq")


def test_deepseek_v3_preset_of_0_6_serves_r1():
    resolved = resolve("deepseek-v3-0324", V06, CAT)
    assert resolved.served_name == "deepseek-r1-0528" and resolved.notes


def test_transformers_runtime_is_only_offered_where_kaito_has_params():
    assert "transformers" in resolve("phi-3-mini-4k-instruct", V012, CAT).runtimes
    assert "transformers" in resolve("llama-3.1-8b-instruct", V012, CAT).runtimes     # 0.11+ has 20 such models
    assert resolve("phi-4-mini-instruct", V012, CAT).runtimes == ("vllm",)            # commented out upstream
    assert resolve("microsoft/phi-2", V012, CAT).runtimes == ("vllm",)
