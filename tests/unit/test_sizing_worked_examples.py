"""Every worked example of docs/kaito-sizing.md, reproduced by infra.sizing.

The tables are the worked examples there (computed by KAITO's rules, which that page cites at their upstream lines):
KAITO 0.6's admission and placement, the 0.12 estimator's node counts and max-model-len cut-overs, the cheapest size
per model and version, and bring-your-own-nodes memory rounding.
"""
import pytest

from infra.catalog import load_catalog
from infra.models import resolve
from infra.sizing import SizingRequest, byo_per_gpu_gib, choose, estimator_nodes, evaluate, kaito_v06_placement

CAT = load_catalog()
V06 = CAT.release("0.6.0")
V012 = CAT.release("0.12.0")

SKUS = ["NC4as_T4_v3", "NC8as_T4_v3", "NC16as_T4_v3", "NC64as_T4_v3", "NC6s_v3", "NC12s_v3", "NC24s_v3",
        "NV36ads_A10_v5", "NV72ads_A10_v5", "NC24ads_A100_v4", "NC48ads_A100_v4", "NC96ads_A100_v4",
        "ND96amsr_A100_v4", "NC40ads_H100_v5", "NC80adis_H100_v5", "ND96isr_H100_v5"]

# KAITO 0.6 (docs/kaito-sizing.md#kaito-06-add-on-count-pods-and-price-per-sku): per SKU (in SKUS order): "count/nodes/mml/$ result", result in OK, MULTI, NOFIT, IDLE, REJ.
D = {
    "phi-2": "1/1/n/0.526 OK|1/1/n/0.752 OK|1/1/n/1.204 OK|1/1/y/4.352 OK|1/1/n/3.06 OK|1/1/y/6.12 OK|1/1/y/12.24 OK|"
             "1/1/n/3.2 OK|1/1/n/6.52 OK|1/1/n/3.673 OK|1/1/n/7.346 OK|1/1/n/14.692 OK|1/1/n/32.77 OK|1/1/n/6.98 OK|"
             "1/1/n/13.96 OK|1/1/n/98.32 OK",
    "phi-3-mini-4k-instruct": "1/1/n/0.526 OK|1/1/n/0.752 OK|1/1/n/1.204 OK|1/1/y/4.352 OK|1/1/n/3.06 OK|1/1/y/6.12 OK|"
             "1/1/y/12.24 OK|1/1/n/3.2 OK|1/1/n/6.52 OK|1/1/n/3.673 OK|1/1/n/7.346 OK|1/1/n/14.692 OK|1/1/n/32.77 OK|"
             "1/1/n/6.98 OK|1/1/n/13.96 OK|1/1/n/98.32 OK",
    "llama-3.1-8b-instruct": "2/2/y/1.052 MULTI|2/2/y/1.504 MULTI|2/2/y/2.408 MULTI|1/1/y/4.352 OK|2/2/y/6.12 MULTI|"
             "1/1/y/6.12 OK|1/1/y/12.24 OK|1/1/n/3.2 OK|1/1/n/6.52 OK|1/1/n/3.673 OK|1/1/n/7.346 OK|1/1/n/14.692 OK|"
             "1/1/n/32.77 OK|1/1/n/6.98 OK|1/1/n/13.96 OK|1/1/n/98.32 OK",
    "mistral-7b-instruct": "1/1/n/0.526 OK|1/1/n/0.752 OK|1/1/n/1.204 OK|1/1/y/4.352 OK|1/1/n/3.06 OK|1/1/y/6.12 OK|"
             "1/1/y/12.24 OK|1/1/n/3.2 OK|1/1/n/6.52 OK|1/1/n/3.673 OK|1/1/n/7.346 OK|1/1/n/14.692 OK|1/1/n/32.77 OK|"
             "1/1/n/6.98 OK|1/1/n/13.96 OK|1/1/n/98.32 OK",
    "qwen2.5-coder-32b-instruct": "5/5/y/2.63 NOFIT|5/5/y/3.76 NOFIT|5/5/y/6.02 NOFIT|2/2/y/8.704 NOFIT|5/5/y/15.3 NOFIT|"
             "3/3/y/18.36 NOFIT|2/2/y/24.48 NOFIT|3/3/y/9.6 NOFIT|2/2/y/13.04 NOFIT|1/1/n/3.673 OK|1/1/n/7.346 OK|"
             "1/1/n/14.692 OK|1/1/n/32.77 OK|1/1/n/6.98 OK|1/1/n/13.96 OK|1/1/n/98.32 OK",
    "llama-3.3-70b-instruct": "REJ|REJ|REJ|REJ|REJ|REJ|REJ|REJ|REJ|4/4/y/14.692 MULTI|2/2/y/14.692 MULTI|1/1/n/14.692 OK|"
             "1/1/n/32.77 OK|4/4/y/27.92 MULTI|2/2/y/27.92 MULTI|1/1/n/98.32 OK",
    "falcon-40b-instruct": "6/6/y/3.156 NOFIT|6/6/y/4.512 NOFIT|6/6/y/7.224 NOFIT|2/2/y/8.704 NOFIT|6/6/y/18.36 NOFIT|"
             "3/3/y/18.36 NOFIT|2/2/y/24.48 NOFIT|4/4/y/12.8 NOFIT|2/2/y/13.04 NOFIT|2/2/y/7.346 NOFIT|1/1/n/7.346 OK|"
             "1/1/n/14.692 OK|1/1/n/32.77 OK|2/1/y/13.96 IDLE|1/1/n/13.96 OK|1/1/n/98.32 OK",
}
D_CASES = [(preset, sku, cell) for preset, row in D.items() for sku, cell in zip(SKUS, row.split("|"), strict=True)]


@pytest.mark.parametrize("preset,sku,cell", D_CASES, ids=[f"{p}-{s}" for p, s, _ in D_CASES])
def test_kaito_0_6_admits_and_places_each_model_on_each_size_as_documented(preset, sku, cell):
    placement = kaito_v06_placement(V06.presets[preset], V06.kaito_sku(f"Standard_{sku}"), "vllm")
    if cell == "REJ":
        assert not placement.accepted and "per GPU" in placement.why
        return
    numbers, result = cell.split(" ")
    count, nodes, mml, price = numbers.split("/")
    assert placement.accepted
    assert (placement.count, placement.pods) == (int(count), int(nodes))
    assert placement.max_model_len_required is (mml == "y")
    assert round(placement.count * CAT.sizes[f"Standard_{sku}"].usd_per_hour, 3) == pytest.approx(float(price))
    assert placement.multi_node is (result == "MULTI")
    assert placement.no_fit is (result == "NOFIT")
    assert (placement.count > placement.pods) is (result == "IDLE")


def test_mistral_on_one_16_gib_gpu_is_admitted_by_kaito_0_6_but_does_not_fit():
    """The TIGHT note: KAITO 0.6 accepts mistral-7b on one T4, but vLLM has no room for its KV cache."""
    model = resolve("mistral-7b-instruct", V06, CAT)
    for sku in ("Standard_NC4as_T4_v3", "Standard_NC8as_T4_v3", "Standard_NC16as_T4_v3"):
        assert kaito_v06_placement(model.spec, V06.kaito_sku(sku), "vllm").accepted
        option = evaluate(SizingRequest(model, "vllm", V06), CAT.sizes[sku])
        assert not option.feasible and "vLLM can't run it" in option.why


# KAITO 0.12 (docs/kaito-sizing.md#kaito-012-target-node-count-per-sku; SKU table, sizing context 2048): targetNodeCount and parallelism per SKU (that table's order).
E_SKUS = ["NV36ads_A10_v5", "NV72ads_A10_v5", "NC24ads_A100_v4", "NC48ads_A100_v4", "NC96ads_A100_v4",
          "ND96amsr_A100_v4", "NC40ads_H100_v5", "NC80adis_H100_v5", "ND96isr_H100_v5"]
E = {
    "phi-3-mini-4k-instruct": "1 TP=1|1 DP=2|1 TP=1|1 DP=2|1 DP=4|1 DP=8|1 TP=1|1 DP=2|1 DP=8",
    "llama-3.1-8b-instruct": "1 TP=1|1 TP=2|1 TP=1|1 DP=2|1 DP=4|1 DP=8|1 TP=1|1 DP=2|1 DP=8",
    "mistral-7b-instruct": "1 TP=1|1 TP=2|1 TP=1|1 DP=2|1 DP=4|1 DP=8|1 TP=1|1 DP=2|1 DP=8",
    "qwen2.5-coder-32b-instruct": "4 PP|2 PP|2 PP|1 TP=2|1 TP=4|1 TP=8|1 TP=1|1 TP=2|1 TP=8",
    "llama-3.3-70b-instruct": "9 PP|5 PP|3 PP|2 PP|1 TP=4|1 TP=8|2 PP|1 TP=2|1 TP=8",
}
E_CASES = [(preset, sku, cell) for preset, row in E.items() for sku, cell in zip(E_SKUS, row.split("|"), strict=True)]


@pytest.mark.parametrize("memory_source", ["sku-table", "node-labels"])
@pytest.mark.parametrize("preset,sku,cell", E_CASES, ids=[f"{p}-{s}" for p, s, _ in E_CASES])
def test_kaito_0_12_estimator_node_counts_and_parallelism_per_size(preset, sku, cell, memory_source):
    """Same node counts from KAITO's SKU table and from the GFD memory labels kaito-aks's BYO nodes report."""
    nodes, parallelism = cell.split(" ")
    size = CAT.sizes[f"Standard_{sku}"]
    option = evaluate(SizingRequest(resolve(preset, V012, CAT), "vllm", V012, memory_source=memory_source), size)
    assert option.feasible
    assert option.nodes == int(nodes)
    assert option.usd_per_hour == pytest.approx(int(nodes) * size.usd_per_hour)
    if parallelism == "PP":
        assert option.parallelism == f"TP={size.gpus} x PP={nodes} (Ray)"
    else:
        assert option.parallelism == parallelism


# The exact max-model-len cut-overs of KAITO 0.12's estimator (one more token needs one more node).
CUTOVERS = [
    ("llama-3.1-8b-instruct", "Standard_NV36ads_A10_v5", 15055, 1),
    ("mistral-7b-instruct", "Standard_NV36ads_A10_v5", 27865, 1),
    ("llama-3.3-70b-instruct", "Standard_NC24ads_A100_v4", 58926, 3),
    ("llama-3.3-70b-instruct", "Standard_NC80adis_H100_v5", 41186, 1),
    ("llama-3.3-70b-instruct", "Standard_NC40ads_H100_v5", 20593, 2),
]


@pytest.mark.parametrize("preset,sku,last_fit,nodes", CUTOVERS)
def test_kaito_estimator_max_model_len_cutovers(preset, sku, last_fit, nodes):
    """KAITO's own node estimator (its 0.84 and constants), from the GPU memory BYO nodes report."""
    model = resolve(preset, V012, CAT)
    size, est = CAT.sizes[sku], V012.estimator
    at = lambda tokens: estimator_nodes(model.facts, byo_per_gpu_gib(size.nvml_memory_mib), size.gpus, tokens, est)
    assert at(last_fit) == nodes
    assert at(last_fit + 1) == nodes + 1
    if size.vllm_gpu_memory_utilization is None:     # evaluate() follows KAITO's count wherever no headroom applies
        option = evaluate(SizingRequest(model, "vllm", V012, max_model_len=last_fit), size)
        assert option.feasible and option.nodes == nodes


def test_a10_is_sized_at_kaitos_a10_utilization_and_refused_where_kaitos_count_would_not_fit():
    """KAITO's estimator counts at 0.84; on A10 vLLM must run at 0.82 (KAITO v0.12.0's own A10 rule), so a
    context that fits KAITO's 1-node count only at 0.84 is refused rather than deployed to run out of memory."""
    model = resolve("llama-3.1-8b-instruct", V012, CAT)
    a10 = CAT.sizes["Standard_NV36ads_A10_v5"]
    ok = evaluate(SizingRequest(model, "vllm", V012, max_model_len=8192), a10)
    assert ok.feasible and ok.nodes == 1 and ok.gpu_memory_utilization == 0.82
    edge = evaluate(SizingRequest(model, "vllm", V012, max_model_len=15055), a10)   # KAITO: 1 node at 0.84
    assert not edge.feasible
    assert "places it on 1 node(s) at --gpu-memory-utilization 0.84" in edge.why and "needs 0.82" in edge.why
    not_a10 = evaluate(SizingRequest(model, "vllm", V012, max_model_len=8192), CAT.sizes["Standard_NC24ads_A100_v4"])
    assert not_a10.feasible and not_a10.gpu_memory_utilization is None


@pytest.mark.parametrize("preset,sku", [("llama-3.3-70b-instruct", "Standard_NC96ads_A100_v4"),
                                        ("llama-3.1-8b-instruct", "Standard_NC24ads_A100_v4")])
def test_one_node_for_every_context(preset, sku):
    model = resolve(preset, V012, CAT)
    option = evaluate(SizingRequest(model, "vllm", V012, max_model_len=131072), CAT.sizes[sku])
    assert option.nodes == 1


def test_mistral_at_its_context_limit_needs_an_a100():
    model = resolve("mistral-7b-instruct", V012, CAT)
    decision = choose(SizingRequest(model, "vllm", V012, max_model_len=32768), CAT)
    assert (decision.chosen.instance_type, decision.chosen.nodes) == ("Standard_NC24ads_A100_v4", 1)


# The cheapest (docs/kaito-sizing.md#cheapest-configuration-per-model): configuration per model and version, as infra.sizing.choose picks it.
F1 = [
    ("0.6.0", "phi-2", "Standard_NC4as_T4_v3", 1, 0.526),
    ("0.6.0", "phi-3-mini-4k-instruct", "Standard_NC4as_T4_v3", 1, 0.526),
    ("0.6.0", "llama-3.1-8b-instruct", "Standard_NC4as_T4_v3", 2, 1.052),
    ("0.6.0", "mistral-7b-instruct", "Standard_NV36ads_A10_v5", 1, 3.20),   # T4 is TIGHT: excluded
    ("0.6.0", "qwen2.5-coder-32b-instruct", "Standard_NC24ads_A100_v4", 1, 3.673),
    ("0.6.0", "llama-3.3-70b-instruct", "Standard_NC96ads_A100_v4", 1, 14.692),  # 3-way tie: fewest nodes
    ("0.6.0", "falcon-40b-instruct", "Standard_NC48ads_A100_v4", 1, 7.346),
    ("0.12.0", "phi-3-mini-4k-instruct", "Standard_NV36ads_A10_v5", 1, 3.20),
    ("0.12.0", "llama-3.1-8b-instruct", "Standard_NV36ads_A10_v5", 1, 3.20),
    ("0.12.0", "mistral-7b-instruct", "Standard_NV36ads_A10_v5", 1, 3.20),
    ("0.12.0", "qwen2.5-coder-32b-instruct", "Standard_NC40ads_H100_v5", 1, 6.98),
    ("0.12.0", "llama-3.3-70b-instruct", "Standard_NC24ads_A100_v4", 3, 11.019),
]


# KAITO 0.6 always sizes from its SKU table; 0.12 is checked with both memory sources.
F1_CASES = [(*case, "sku-table") for case in F1] + [(*case, "node-labels") for case in F1 if case[0] == "0.12.0"]


@pytest.mark.parametrize("version,preset,sku,nodes,price,memory_source", F1_CASES)
def test_cheapest_configuration_per_model_and_version(version, preset, sku, nodes, price, memory_source):
    release = CAT.release(version)
    decision = choose(SizingRequest(resolve(preset, release, CAT), "vllm", release, memory_source=memory_source), CAT)
    assert (decision.chosen.instance_type, decision.chosen.nodes) == (sku, nodes)
    assert decision.chosen.usd_per_hour == pytest.approx(price)


def test_llama_8b_on_two_t4s_writes_a_max_model_len_that_fits():
    """0.6 demands max-model-len for count > 1; kaito-aks writes the largest that fits the 2 T4 nodes."""
    decision = choose(SizingRequest(resolve("llama-3.1-8b-instruct", V06, CAT), "vllm", V06), CAT)
    assert decision.chosen.max_model_len_required and decision.max_model_len >= 2048
    model = resolve("llama-3.1-8b-instruct", V06, CAT)
    too_long = SizingRequest(model, "vllm", V06, max_model_len=decision.max_model_len + 256)
    assert not evaluate(too_long, CAT.sizes["Standard_NC4as_T4_v3"]).feasible


# KAITO 0.12 in BYO mode sizes from the GFD memory label, rounded half-up per GPU.
B7 = {22: [1, 2, 1, 5, 10], 23: [1, 1, 1, 4, 9], 24: [1, 1, 1, 4, 9]}
B7_MODELS = ["phi-3-mini-4k-instruct", "llama-3.1-8b-instruct", "mistral-7b-instruct",
             "qwen2.5-coder-32b-instruct", "llama-3.3-70b-instruct"]


@pytest.mark.parametrize("gib,expected", B7.items())
def test_byo_gpu_memory_is_rounded_half_up_per_gpu(gib, expected):
    got = [estimator_nodes(resolve(m, V012, CAT).facts, gib, 1, 2048, V012.estimator) for m in B7_MODELS]
    assert got == expected


def test_byo_label_rounding_is_half_up():
    assert byo_per_gpu_gib(23039) == 22 and byo_per_gpu_gib(23040) == 23
    assert byo_per_gpu_gib(24512) == 24 and byo_per_gpu_gib(95830) == 94 and byo_per_gpu_gib(81559) == 80
