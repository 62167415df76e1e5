"""infra.sizing's rules one by one: the estimator's arithmetic, KAITO 0.6's placement, what each rejection says, how the
cheapest size is chosen and how a named size is checked.

The worked examples of docs/kaito-sizing.md are in test_sizing_worked_examples.py; these tests pin the rules at their
edges (a GPU exactly as big as the reserve, exactly 16 nodes, exactly compute capability 8.0, a model exactly half a
GPU) with small synthetic inputs where the catalog has no such case.
"""
from dataclasses import replace

import pytest

from infra import prices
from infra.catalog import EstimatorConstants, KaitoSku, ModelFacts, load_catalog
from infra.models import resolve
from infra.sizing import (
    MAX_NODES,
    SizingError,
    SizingRequest,
    TooSmallError,
    check_explicit,
    choose,
    estimator_nodes,
    evaluate,
    evaluate_all,
    kaito_v06_placement,
    largest_fitting_context,
    memory_need_gib,
    v06_gpu_memory_utilization,
)

CAT = load_catalog()
V06 = CAT.release("0.6.0")
V094 = CAT.release("0.9.4")
V010 = CAT.release("0.10.0")
V012 = CAT.release("0.12.0")
GIB = 1024**3

T4 = "Standard_NC4as_T4_v3"
A10 = "Standard_NV36ads_A10_v5"
A10_X2 = "Standard_NV72ads_A10_v5"
A100 = "Standard_NC24ads_A100_v4"
A100_X2 = "Standard_NC48ads_A100_v4"
A100_X4 = "Standard_NC96ads_A100_v4"
H100 = "Standard_NC40ads_H100_v5"

# A plain estimator: utilization 1, no weight expansion, 1 GiB per GPU of CUDA overhead, no /1.05.
PLAIN = EstimatorConstants(gpu_memory_utilization=1.0, weight_expansion_factor=1.0, base_overhead_gib=1.0,
                           overhead_weight_factor=0.0, default_max_model_len=2048,
                           multi_node_needs_distributed_preset=False)


def facts(weights_gib: float, kv_bytes_per_token_factor: int = 1, context: int = 131072) -> ModelFacts:
    """A model with these weights; KV cache 4 bytes per token per factor (1 layer, 1 head, head_dim=factor)."""
    return ModelFacts("example/model", weights_gib, layers=1, kv_heads=1, head_dim=kv_bytes_per_token_factor,
                      context_limit=context)


def hf_model(weights_gib: float, release=V012, layers=1, kv_heads=1, head_dim=1, context=131072):
    ref = "example/model"
    return resolve(ref, release, CAT, user_facts=ModelFacts(ref, weights_gib, layers, kv_heads, head_dim, context))


def refused(option, gate: str) -> str:
    """Why ``option`` was rejected (and that it was, at ``gate``: the size, the KAITO release or the model)."""
    assert not option.feasible, option
    assert option.gate == gate, (option.gate, option.why)
    return option.why


def request(ref_or_model, release=V012, runtime="vllm", **kw) -> SizingRequest:
    model = resolve(ref_or_model, release, CAT) if isinstance(ref_or_model, str) else ref_or_model
    return SizingRequest(model, runtime, release, **kw)


# ---------------------------------------------------------------------------------------------------------
# The estimator's arithmetic (KAITO 0.7+, and 0.6's physical fit)

def test_the_estimator_counts_floor_plus_one_gpus_and_rounds_nodes_up():
    # 11 GiB GPUs, 1 GiB reserve: 10 GiB per GPU for weights; 20 GiB of weights is exactly 2 GPUs' worth, and KAITO
    # takes floor(20 / 10) + 1 = 3 GPUs (not ceil): 3 one-GPU nodes, 2 two-GPU nodes, 1 four-GPU node.
    model = facts(20.0)
    assert estimator_nodes(model, 11, 1, 0, PLAIN) == 3
    assert estimator_nodes(model, 11, 2, 0, PLAIN) == 2
    assert estimator_nodes(model, 11, 4, 0, PLAIN) == 1
    assert estimator_nodes(facts(19.0), 11, 1, 0, PLAIN) == 2


def test_the_estimator_applies_weight_expansion_and_the_overhead_factor():
    assert estimator_nodes(facts(20.0), 11, 1, 0, replace(PLAIN, weight_expansion_factor=1.5)) == 4   # 30 / 10
    assert estimator_nodes(facts(20.0), 11, 1, 0, replace(PLAIN, overhead_weight_factor=1.0)) == 5    # 20 / 5


def test_the_estimator_reserves_kv_cache_per_gpu_split_over_the_node():
    # 2 GiB of KV cache for 512 Mi tokens of 4 bytes: on one GPU it is reserved whole, over two GPUs half each
    model = facts(20.0)
    tokens = GIB // 2
    assert estimator_nodes(model, 13, 1, tokens, PLAIN) == 3        # (13 - 1 - 2) = 10 GiB per GPU for weights
    assert estimator_nodes(model, 12, 2, tokens, PLAIN) == 2        # (12 - 1 - 1) = 10 GiB per GPU: 3 GPUs, 2 nodes


def test_the_estimator_uses_the_utilization_it_is_given():
    assert estimator_nodes(facts(20.0), 22, 1, 0, replace(PLAIN, gpu_memory_utilization=0.5)) == 3   # 11 GiB usable
    assert estimator_nodes(facts(20.0), 22, 1, 0, PLAIN, gpu_memory_utilization=0.5) == 3
    assert estimator_nodes(facts(20.0), 22, 1, 0, PLAIN) == 1


def test_a_gpu_exactly_as_big_as_the_fixed_reserve_is_too_small():
    with pytest.raises(TooSmallError) as err:
        estimator_nodes(facts(1.0), 1, 1, 0, PLAIN)                  # 1 GiB GPU, 1 GiB reserve
    assert str(err.value) == "1 GiB per GPU can't hold the 1.0 GiB fixed reserve (CUDA overhead + KV cache for 0 tokens)"
    with pytest.raises(TooSmallError, match=r"^16 GiB per GPU can't hold the 17\.0 GiB fixed reserve \(CUDA overhead "
                                            r"\+ KV cache for 4294967296 tokens\)$"):
        estimator_nodes(facts(1.0), 16, 1, 4 * GIB, PLAIN)           # 16 GiB of KV cache + 1 GiB overhead


def test_memory_need_counts_weights_per_gpu_overhead_and_kv_cache_per_node():
    # 20 GiB x 1.5 + 4 GPUs x 2 GiB + 2 GiB of KV cache on each of 2 nodes
    need = memory_need_gib(facts(20.0), 4, 2, GIB // 2, replace(PLAIN, weight_expansion_factor=1.5,
                                                                 base_overhead_gib=2.0))
    assert need == pytest.approx(30 + 8 + 4)


@pytest.mark.parametrize("per_gpu_gib,expected", [(12, 0.87), (16, 0.9), (24, 0.93), (30, 0.95), (40, 0.95), (80, 0.95)])
def test_kaito_0_6_gpu_memory_utilization_is_one_minus_1_5_gib_per_gpu_floored_to_a_percent_at_most_0_95(
        per_gpu_gib, expected):
    assert v06_gpu_memory_utilization(per_gpu_gib) == expected


# ---------------------------------------------------------------------------------------------------------
# A long context on a small GPU: refused with the reserve reason, on both KAITO lines

@pytest.mark.parametrize("release,ref", [(V06, "phi-3-mini-128k-instruct"), (V012, "microsoft/Phi-3-mini-128k-instruct")])
def test_a_long_context_on_a_small_gpu_is_refused_with_the_reserve_reason(release, ref):
    # 128k tokens of phi-3-mini's KV cache are 48 GiB per GPU: no 16 or 24 GiB GPU holds them
    req = request(ref, release, max_model_len=131072)
    a10 = evaluate(req, CAT.sizes[A10])
    assert not a10.feasible
    assert "24 GiB per GPU can't hold the 50.3 GiB fixed reserve (CUDA overhead + KV cache for 131072 tokens)" in a10.why
    two_a10s = evaluate(req, CAT.sizes[A10_X2])                   # split over the node's 2 GPUs: 26.3 GiB each
    assert not two_a10s.feasible and "can't hold the 26.3 GiB fixed reserve" in two_a10s.why
    decision = choose(req, CAT)
    assert (decision.chosen.instance_type, decision.chosen.nodes) == (A100, 1)
    assert decision.chosen.usd_per_hour == pytest.approx(3.673)
    assert all(o.nodes >= 1 and o.usd_per_hour > 0 for o in (decision.chosen, *decision.alternatives))
    assert A10 not in {o.instance_type for o in decision.alternatives}


def test_kaito_0_6_says_it_accepts_the_small_gpu_but_the_reserve_does_not_fit():
    option = evaluate(request("phi-3-mini-128k-instruct", V06, max_model_len=131072), CAT.sizes[T4])
    assert not option.feasible
    assert refused(option, "model") == ("KAITO 0.6.0 accepts it, but 16 GiB per GPU can't hold the 50.3 GiB fixed reserve "
                          "(CUDA overhead + KV cache for 131072 tokens)")


def test_kaito_0_12_says_its_estimator_rejects_the_small_gpu():
    option = evaluate(request("microsoft/Phi-3-mini-128k-instruct", max_model_len=131072), CAT.sizes[A10])
    assert refused(option, "model") == ("KAITO's estimator rejects it: 24 GiB per GPU can't hold the 50.3 GiB fixed reserve "
                          "(CUDA overhead + KV cache for 131072 tokens)")


def test_a_gpu_that_holds_the_reserve_only_at_kaitos_utilization_is_refused_at_the_a10s():
    # KV cache of 128 KiB per token (32 layers x 8 heads x 128): 144000 tokens are 17.6 GiB, + 2.3 GiB = 19.9 GiB:
    # inside 24 GiB x 0.84 (KAITO's estimator), over 24 GiB x 0.82 (what an A10 can give vLLM)
    model = hf_model(1.0, layers=32, kv_heads=8, head_dim=128, context=200_000)
    option = evaluate(request(model, max_model_len=144000), CAT.sizes[A10])
    assert not option.feasible
    assert option.why.startswith("KAITO's estimator accepts it at 0.84, but NVIDIA A10 24GB needs "
                                 "--gpu-memory-utilization 0.82, where 24 GiB per GPU can't hold the 19.9 GiB")


# ---------------------------------------------------------------------------------------------------------
# The 16-node cap

def test_kaito_0_12_sizes_that_need_16_nodes_are_planned_and_17_are_refused():
    sixteen = evaluate(request(hf_model(940.0)), CAT.sizes[A100])
    assert sixteen.feasible and sixteen.nodes == MAX_NODES == 16
    assert sixteen.why == "16 x Standard_NC24ads_A100_v4, TP=1 x PP=16 (Ray)"
    assert sixteen.usd_per_hour == pytest.approx(16 * 3.673)
    seventeen = evaluate(request(hf_model(1000.0)), CAT.sizes[A100])
    assert not seventeen.feasible
    assert refused(seventeen, "model") == "KAITO's estimator targets 17 nodes (more than 16)"


def test_kaito_0_6_counts_above_16_nodes_are_refused():
    model = resolve("llama-3.1-8b-instruct", V06, CAT)

    def with_total(gib):      # the preset's total GPU memory requirement, in 16 GiB T4 nodes
        spec = replace(model.spec, webhook=replace(model.spec.webhook, total_gpu_memory_gib=gib))
        return evaluate(SizingRequest(replace(model, spec=spec), "vllm", V06), CAT.sizes[T4])

    assert refused(with_total(17 * 16), "model") == "would need 17 nodes (more than 16)"
    sixteen = with_total(16 * 16)
    assert sixteen.feasible and (sixteen.nodes, sixteen.kaito_count, sixteen.pods) == (16, 16, 16)


# ---------------------------------------------------------------------------------------------------------
# Nothing fits

def test_when_no_size_fits_the_error_is_one_line_naming_the_two_closest_sizes_and_why():
    req = request(hf_model(20_000.0))
    with pytest.raises(SizingError) as err:
        choose(req, CAT)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("no Azure GPU size in the catalog runs example/model on KAITO 0.12.0 with runtime vllm "
                              "at 2048 tokens (")
    named = message[message.index("(") + 1:-1].split("; ")
    # closest: sizes only this model's size stopped, the most GPU memory per node first (640 GiB: 8 x 80 GiB);
    # never a size that was out of the question for any model (retired, AMD, unpriced, not offered)
    assert named == ["Standard_ND96amsr_A100_v4: KAITO's estimator targets 42 nodes (more than 16)",
                     "Standard_ND96isr_H100_v5: KAITO's estimator targets 42 nodes (more than 16)"]
    for entry in named:
        size, why = entry.split(": ", 1)
        assert why == evaluate(req, CAT.sizes[size]).why


def test_when_every_size_stops_before_the_model_the_error_names_that_reason():
    # spot on KAITO 0.6: no size reaches the model's rules, so the furthest any got is the release's spot taint
    req = request("phi-3-mini-4k-instruct", V06, spot=True)
    with pytest.raises(SizingError) as err:
        choose(req, CAT)
    named = str(err.value).split(" tokens (", 1)[1].removesuffix(")").split("; ")
    assert len(named) == 2
    assert all(entry.endswith(": KAITO 0.6.0's pods don't tolerate AKS's spot taint") for entry in named), named


def test_when_no_size_fits_a_named_size_gets_no_cheapest_hint():
    with pytest.raises(SizingError) as err:
        check_explicit(request(hf_model(20_000.0)), CAT, A100)
    assert str(err.value) == "Standard_NC24ads_A100_v4: KAITO's estimator targets 331 nodes (more than 16)"


# ---------------------------------------------------------------------------------------------------------
# Choosing the cheapest, and checking a named size

def test_the_choice_says_why_and_names_the_runner_up():
    decision = choose(request("phi-3-mini-4k-instruct", V06), CAT)
    assert decision.chosen.instance_type == T4
    assert decision.reason == ("cheapest that KAITO 0.6.0 accepts and that fits: 1 x Standard_NC4as_T4_v3, TP=1 "
                               "(next: 1 x Standard_NC8as_T4_v3 $0.752/h)")
    assert decision.alternatives[0].instance_type == "Standard_NC8as_T4_v3"
    prices = [o.usd_per_hour for o in decision.alternatives]
    assert prices == sorted(prices) and all(o.feasible for o in decision.alternatives)
    feasible = [o for o in evaluate_all(request("phi-3-mini-4k-instruct", V06), CAT) if o.feasible]
    assert [decision.chosen, *decision.alternatives] == feasible     # every feasible size, cheapest first


def test_equal_prices_go_to_fewer_nodes():
    # KAITO 0.6 runs llama-3.3-70b on 1 x 4 A100s, 2 x 2 or 4 x 1, all $14.692/h
    decision = choose(request("llama-3.3-70b-instruct", V06), CAT)
    picks = [(o.instance_type, o.nodes, o.usd_per_hour) for o in (decision.chosen, *decision.alternatives[:2])]
    assert picks == [(A100_X4, 1, 14.692), (A100_X2, 2, 14.692), (A100, 4, 14.692)]
    assert decision.reason.endswith("(next: 2 x Standard_NC48ads_A100_v4 $14.692/h)")


def test_a_single_feasible_size_has_no_runner_up():
    # 3000 GiB of weights: in centralus only 13 x NC96ads_A100_v4 runs it (the 8-GPU sizes aren't offered there)
    decision = choose(request(hf_model(3000.0), region="centralus"), CAT)
    assert (decision.chosen.instance_type, decision.chosen.nodes, decision.alternatives) == (A100_X4, 13, ())
    assert decision.reason == ("cheapest that KAITO 0.12.0 accepts and that fits: "
                               "13 x Standard_NC96ads_A100_v4, TP=4 x PP=13 (Ray)")


def test_a_named_size_equal_to_autos_choice_is_accepted_without_a_saving_note():
    req = request("phi-3-mini-4k-instruct", V06)
    auto = choose(req, CAT)
    named = check_explicit(req, CAT, auto.chosen.instance_type)
    assert named.chosen == auto.chosen
    assert named.reason == "set in the stack: 1 x Standard_NC4as_T4_v3, TP=1"
    assert named.alternatives == auto.alternatives
    assert auto.chosen.instance_type not in {o.instance_type for o in named.alternatives}


def test_a_named_size_at_autos_price_on_more_nodes_claims_no_saving():
    named = check_explicit(request("llama-3.3-70b-instruct", V06), CAT, A100)
    assert (named.chosen.nodes, named.chosen.usd_per_hour) == (4, 14.692)
    assert named.reason == "set in the stack: 4 x Standard_NC24ads_A100_v4, TP=1 x PP=4 (Ray)"
    assert A100_X4 in {o.instance_type for o in named.alternatives}


def test_a_named_size_dearer_than_auto_says_by_how_much():
    named = check_explicit(request("phi-3-mini-4k-instruct", V06), CAT, A100)
    assert named.reason == ("set in the stack: 1 x Standard_NC24ads_A100_v4, TP=1 "
                            "($3.147/h more than auto's 1 x Standard_NC4as_T4_v3)")
    assert T4 in {o.instance_type for o in named.alternatives}
    assert A100 not in {o.instance_type for o in named.alternatives}


def test_a_named_size_that_does_not_fit_names_autos_cheapest():
    with pytest.raises(SizingError) as err:
        check_explicit(request("mistral-7b-instruct", V06), CAT, T4)
    assert str(err.value).endswith("; use instanceType: auto (cheapest: 1 x Standard_NV36ads_A10_v5, $3.200/h)")


def test_an_unknown_size_names_the_catalog_and_autos_cheapest():
    with pytest.raises(SizingError) as err:
        check_explicit(request("phi-3-mini-4k-instruct", V06), CAT, "Standard_Nope")
    assert str(err.value) == ("'Standard_Nope' is not an Azure GPU size kaito-aks knows (infra/catalog/azure_gpu_skus.yaml)"
                              "; use instanceType: auto (cheapest: 1 x Standard_NC4as_T4_v3, $0.526/h)")


# ---------------------------------------------------------------------------------------------------------
# max-model-len: the stack's, or the largest that fits where KAITO 0.6 demands one

def test_the_stacks_max_model_len_is_written_as_given():
    decision = choose(request("phi-3-mini-4k-instruct", V06, max_model_len=3000), CAT)
    assert (decision.max_model_len, decision.sizing_context, decision.max_model_len_source) == (3000, 3000, "settings")


def test_no_max_model_len_is_written_where_kaito_does_not_demand_one():
    decision = choose(request("phi-3-mini-4k-instruct", V06), CAT)
    assert (decision.max_model_len, decision.sizing_context, decision.max_model_len_source) == (None, 2048, "")


@pytest.mark.parametrize("ref,size,nodes", [
    ("llama-3.1-8b-instruct", T4, 2),            # 2 x T4, TP=1 x PP=2
    ("llama-3.3-70b-instruct", A100, 4),         # 4 x A100, TP=1 x PP=4
])
def test_kaito_0_6_multi_node_gets_the_largest_multiple_of_256_tokens_that_fits(ref, size, nodes):
    req = request(ref, V06)
    decision = check_explicit(req, CAT, size)
    assert decision.chosen.multi_node and decision.chosen.nodes == nodes
    assert decision.max_model_len_source == "largest that fits; KAITO 0.6.0 requires one for this size"
    tokens = decision.max_model_len
    assert tokens % 256 == 0 and 2048 <= tokens <= req.model.context_limit
    fits = evaluate(replace(req, max_model_len=tokens), CAT.sizes[size])
    assert fits.feasible and fits.nodes == nodes
    assert not evaluate(replace(req, max_model_len=tokens + 256), CAT.sizes[size]).feasible


def test_kaito_0_6_multi_node_max_model_len_values():
    """The values the plan writes (README's llama examples): 33280 tokens on 2 T4s, 125952 on 4 A100s."""
    assert check_explicit(request("llama-3.1-8b-instruct", V06), CAT, T4).max_model_len == 33280
    assert check_explicit(request("llama-3.3-70b-instruct", V06), CAT, A100).max_model_len == 125952


def test_the_largest_fitting_context_is_the_models_limit_when_everything_fits():
    req = request("phi-3-mini-4k-instruct", V06)
    option = evaluate(req, CAT.sizes[A100])
    assert largest_fitting_context(req, CAT, option) == 4096


def test_the_largest_fitting_context_below_256_tokens_is_returned_unrounded():
    model = hf_model(1.0, context=200)           # a model whose whole context is under 256 tokens
    req = request(model, V012)
    assert largest_fitting_context(req, CAT, evaluate(req, CAT.sizes[A100])) == 200


# ---------------------------------------------------------------------------------------------------------
# KAITO 0.6 placement and fit

def test_kaito_0_6_small_multi_gpu_skus_need_a_max_model_len_below_20_gib_per_gpu():
    preset = V06.presets["phi-3-mini-4k-instruct"]
    assert kaito_v06_placement(preset, KaitoSku("x", 2, 38, "g"), "vllm").max_model_len_required      # 19 GiB each
    assert not kaito_v06_placement(preset, KaitoSku("x", 2, 40, "g"), "vllm").max_model_len_required  # 20 GiB each
    assert not kaito_v06_placement(preset, KaitoSku("x", 1, 16, "g"), "vllm").max_model_len_required  # one GPU


def test_kaito_0_6_per_gpu_memory_requirement_admits_exactly_enough():
    preset = V06.presets["llama-3.3-70b-instruct"]                   # 80 GiB per GPU
    assert kaito_v06_placement(preset, KaitoSku("x", 4, 320, "g"), "vllm").accepted
    refused = kaito_v06_placement(preset, KaitoSku("x", 4, 316, "g"), "vllm")
    assert not refused.accepted
    assert refused.why == "79 GiB per GPU < the 80 GiB per GPU KAITO 0.6 requires for llama-3.3-70b-instruct"


def test_kaito_0_6_a_distributed_model_too_big_for_a_node_needs_vllm():
    preset = V06.presets["llama-3.1-8b-instruct"]                    # distributed, 22 GiB in total
    refused = kaito_v06_placement(preset, V06.kaito_sku(T4), "transformers")
    assert not refused.accepted
    assert refused.why == "too big for one node, and multi-node inference needs the vLLM runtime"
    assert kaito_v06_placement(preset, V06.kaito_sku(A10), "transformers").accepted          # 24 GiB: one node
    multi = kaito_v06_placement(preset, V06.kaito_sku(T4), "vllm")
    assert (multi.accepted, multi.count, multi.pods, multi.multi_node, multi.no_fit) == (True, 2, 2, True, False)


def test_kaito_0_6_independent_replicas_below_the_models_need_are_refused():
    option = evaluate(request("falcon-40b-instruct", V06), CAT.sizes[A100])
    assert refused(option, "model") == ("KAITO would run 2 independent replicas, each on one node with 80 GiB < the 90 GiB "
                          "falcon-40b-instruct needs (not distributed)")


def test_kaito_0_6_an_accepted_size_without_room_says_how_many_nodes_vllm_would_need():
    option = evaluate(request("falcon-40b-instruct", V06), CAT.sizes[H100])
    assert refused(option, "model") == ("KAITO 0.6.0 accepts it, but vLLM can't run it: 77.93 GiB of weights + KV cache for 2048 "
                          "tokens need 2 node(s) of this size at --gpu-memory-utilization 0.95, and KAITO uses 1")


def test_kaito_0_6_idle_nodes_are_paid_for_and_said():
    # falcon-40b (90 GiB) on 94 GiB H100 nodes: the total-memory rule gives count 2, the placement runs 1 pod
    model = resolve("falcon-40b-instruct", V06, CAT)
    idle = evaluate(SizingRequest(model, "vllm", V06, max_model_len=256), CAT.sizes[H100])
    assert idle.feasible
    assert (idle.nodes, idle.pods, idle.kaito_count) == (2, 1, 2)
    assert idle.usd_per_hour == pytest.approx(2 * 6.98)
    assert idle.why == "2 x Standard_NC40ads_H100_v5, TP=1; 1 node(s) idle (KAITO's GPU-count rule)"


def test_kaito_0_6_numbers_of_a_fitting_size():
    option = evaluate(request("llama-3.1-8b-instruct", V06), CAT.sizes[T4])
    assert (option.feasible, option.nodes, option.kaito_count, option.pods, option.gpus_per_node) == (True, 2, 2, 2, 1)
    assert option.parallelism == "TP=1 x PP=2 (Ray)" and option.multi_node and option.max_model_len_required
    assert option.usd_per_hour == pytest.approx(1.052)
    assert option.gpu_memory_available_gib == 32.0
    assert option.gpu_memory_required_gib == 22                    # the preset's own requirement is the larger
    four_gpus = evaluate(request("phi-3-mini-4k-instruct", V06), CAT.sizes[A100_X4])
    assert four_gpus.parallelism == "TP=4" and four_gpus.gpu_memory_available_gib == 320.0
    assert four_gpus.gpu_memory_utilization is None


def test_kaito_0_6_on_an_a10_writes_the_a10s_lower_utilization_for_vllm_only():
    vllm = evaluate(request("phi-3-mini-4k-instruct", V06), CAT.sizes[A10])
    assert vllm.feasible and vllm.gpu_memory_utilization == 0.82
    transformers = evaluate(request("phi-3-mini-4k-instruct", V06, runtime="transformers"), CAT.sizes[A10])
    assert transformers.feasible and transformers.gpu_memory_utilization is None


def test_kaito_0_6_required_memory_is_the_models_need_when_larger_than_the_presets():
    option = evaluate(request("phi-3-mini-4k-instruct", V06, max_model_len=4096), CAT.sizes[A100])
    model = resolve("phi-3-mini-4k-instruct", V06, CAT)
    need = memory_need_gib(model.facts, 1, 1, 4096, V06.memory_model)
    assert option.gpu_memory_required_gib == round(max(need, model.spec.webhook.total_gpu_memory_gib), 2)


# ---------------------------------------------------------------------------------------------------------
# The estimator's placement (KAITO 0.7+)

def test_the_transformers_runtime_runs_a_model_that_fits_one_node():
    decision = choose(request("microsoft/Phi-3-mini-4k-instruct", runtime="transformers"), CAT)
    chosen = decision.chosen
    assert (chosen.instance_type, chosen.nodes, chosen.kaito_count, chosen.multi_node) == (A10, 1, 1, False)
    assert chosen.why == "1 x Standard_NV36ads_A10_v5, TP=1"
    assert chosen.gpu_memory_utilization is None          # the A10's 0.82 is a vLLM flag
    vllm = choose(request("microsoft/Phi-3-mini-4k-instruct"), CAT).chosen
    assert vllm.kaito_count is None and vllm.gpu_memory_utilization == 0.82


def test_the_transformers_runtime_refuses_a_model_bigger_than_one_node():
    req = request(hf_model(36.0), runtime="transformers")
    option = evaluate(req, CAT.sizes[A100])                 # 80 GiB: fits
    assert option.feasible and option.nodes == 1 and option.kaito_count == 1
    small = evaluate(req, CAT.sizes[A10_X2])                # 2 x 24 GiB: 2 nodes' worth
    assert not small.feasible
    assert refused(small, "model") == "too big for one node, and the transformers runtime is single-node"
    assert evaluate(request(hf_model(36.0)), CAT.sizes[A10_X2]).nodes == 2                 # vLLM spans them
    one_gpu_short = evaluate(request(hf_model(25.0), runtime="transformers"), CAT.sizes[A10])   # 25 > 24 GiB
    assert not one_gpu_short.feasible


def test_a_model_under_half_a_gpu_runs_one_copy_per_gpu():
    # NV72ads: 2 x 24 GiB. 11.9 GiB is under half a GPU (DP=2); 12 GiB is exactly half (TP=2)
    assert evaluate(request(hf_model(11.9)), CAT.sizes[A10_X2]).parallelism == "DP=2"
    assert evaluate(request(hf_model(12.0)), CAT.sizes[A10_X2]).parallelism == "TP=2"
    assert evaluate(request(hf_model(11.9)), CAT.sizes[A10]).parallelism == "TP=1"


def test_the_estimators_numbers_of_a_fitting_size():
    option = evaluate(request(hf_model(36.0)), CAT.sizes[A10_X2])
    assert (option.nodes, option.pods, option.gpus_per_node, option.multi_node) == (2, 2, 2, True)
    assert option.parallelism == "TP=2 x PP=2 (Ray)" and option.why == "2 x Standard_NV72ads_A10_v5, TP=2 x PP=2 (Ray)"
    assert option.usd_per_hour == pytest.approx(2 * 6.52)
    assert option.gpu_memory_available_gib == 96.0
    assert option.gpu_memory_required_gib == round(memory_need_gib(
        resolve("example/model", V012, CAT, user_facts=facts(36.0)).facts, 4, 2, 2048, V012.memory_model), 2)
    assert option.gpu_memory_utilization == 0.82 and option.kaito_count is None


def test_a_preset_without_tensor_parallelism_must_fit_one_gpu():
    req = request("falcon-7b-instruct", V094)
    on_t4s = evaluate(req, CAT.sizes["Standard_NC64as_T4_v3"])          # 4 x 16 GiB
    assert refused(on_t4s, "model") == ("falcon-7b-instruct disables tensor parallelism, so one 16 GiB GPU must hold it, "
                          "and it needs 2 GPUs")
    on_a10s = evaluate(req, CAT.sizes[A10_X2])
    assert on_a10s.feasible and on_a10s.parallelism == "TP=1"


def test_a_preset_without_tensor_parallelism_on_a_gpu_too_small_for_the_reserve():
    # 1.6M tokens of falcon-7b's KV cache: 3 GiB per GPU over 4 T4s, but 12.2 GiB on the one GPU that must hold it
    option = evaluate(request("falcon-7b-instruct", V094, max_model_len=1_600_000), CAT.sizes["Standard_NC64as_T4_v3"])
    assert refused(option, "model") == ("falcon-7b-instruct disables tensor parallelism, so one 16 GiB GPU must hold it, and 16 GiB "
                          "per GPU can't hold the 14.5 GiB fixed reserve (CUDA overhead + KV cache for 1600000 tokens)")


def test_node_label_sizing_needs_the_label():
    req = request("microsoft/Phi-3-mini-4k-instruct", memory_source="node-labels")
    unlabelled = replace(CAT.sizes[A100], nvml_memory_mib=None)
    assert refused(evaluate(req, unlabelled), "size") == ("the GPU memory its nodes report (GFD label) is unknown, so KAITO's "
                                              "bring-your-own-nodes sizing can't be predicted")
    assert evaluate(replace(req, memory_source="sku-table"), unlabelled).feasible


def test_node_label_sizing_uses_the_rounded_label_not_the_sku_table():
    # a (hypothetical) A100 whose GPUs report 40 GiB: KAITO sizes by the label, so a model of 40 GiB needs 2 nodes
    req = request(hf_model(40.0), memory_source="node-labels")
    small_label = replace(CAT.sizes[A100], nvml_memory_mib=40 * 1024)
    assert evaluate(req, small_label).nodes == 2
    assert evaluate(replace(req, memory_source="sku-table"), small_label).nodes == 1
    assert evaluate(req, small_label).gpu_memory_available_gib == 80.0


# ---------------------------------------------------------------------------------------------------------
# Rejections before any memory rule

def test_bfloat16_runs_from_compute_capability_8_0():
    req = request("gemma-3-4b-instruct", V094)                # KAITO runs gemma-3 with --dtype bfloat16
    assert req.effective_dtype == "bfloat16"
    a100 = evaluate(req, CAT.sizes[A100])                     # compute capability exactly 8.0
    assert a100.feasible
    t4 = evaluate(req, CAT.sizes[T4])                         # 7.5
    assert not t4.feasible
    assert refused(t4, "model") == ("NVIDIA T4 16GB (compute capability 7.5) has no bfloat16, and KAITO 0.9.4 runs "
                      "gemma-3-4b-instruct with --dtype bfloat16; set dtype: float16 to use it")
    assert evaluate(replace(req, dtype="float16"), CAT.sizes[T4]).feasible
    assert refused(evaluate(replace(req, dtype="bfloat16"), CAT.sizes[T4]), "model") == (
        "NVIDIA T4 16GB (compute capability 7.5) has no bfloat16, and the stack's dtype")


def test_the_stacks_dtype_overrides_kaitos():
    req = request("gemma-3-4b-instruct", V094, dtype="float16")
    assert req.effective_dtype == "float16"
    assert request("phi-3-mini-4k-instruct", V06).effective_dtype == "float16"


def test_the_sizing_context_is_the_stacks_or_the_releases_default():
    assert request("phi-3-mini-4k-instruct", V06).sizing_context == 2048
    assert request("phi-3-mini-4k-instruct", V06, max_model_len=1000).sizing_context == 1000


def test_gpus_below_the_releases_minimum_compute_capability_are_refused():
    option = evaluate(request("phi-3-mini-4k-instruct", V010), CAT.sizes[T4])
    assert not option.feasible
    assert refused(option, "release") == ("NVIDIA T4 16GB (compute capability 7.5) doesn't run KAITO 0.10.0's vLLM (its FlashInfer "
                          "attention crashes below 8: kaito-project/kaito#2114)")


def test_sizes_missing_from_kaitos_table_say_why():
    adms = CAT.sizes["Standard_NV36adms_A10_v5"]
    assert refused(evaluate(request("microsoft/Phi-3-mini-4k-instruct"), adms), "release") == (
        "not in KAITO 0.12.0's SKU table: its Workspace would never get a node count (\"Unsupported SKU\")")
    assert refused(evaluate(request("phi-3-mini-4k-instruct", V06), adms), "release") == (
        "not in KAITO 0.6.0's SKU table: KAITO would skip every resource check for it, so kaito-aks doesn't deploy it")
    assert refused(evaluate(request("microsoft/Phi-3-mini-4k-instruct"), CAT.sizes[T4]), "release") == (
        "not in KAITO 0.12.0's SKU table (compute capability 7.5 < 8.0): its Workspace would never get a node count "
        "(\"Unsupported SKU\")")


def test_spot_prices_and_notes_follow_the_region():
    req = request("microsoft/Phi-3-mini-4k-instruct", spot=True)
    option = evaluate(req, CAT.sizes[A100])
    quote = prices.quote(A100, "eastus", True)
    assert option.feasible and option.usd_per_hour == round(quote.usd_per_hour, 4) < CAT.sizes[A100].usd_per_hour
    assert option.price_note == quote.note
    elsewhere = evaluate(replace(req, region="antarcticanorth"), CAT.sizes[A100])
    assert elsewhere.feasible and "antarcticanorth is not in the price snapshot" in elsewhere.price_note
    refused = evaluate(replace(req, region="antarcticanorth"), CAT.sizes["Standard_NV36adms_A10_v5"])
    assert not refused.feasible and not hasattr(refused, "price_note")    # a refused size has no price to note


def test_spot_is_refused_where_kaitos_pods_do_not_tolerate_it():
    option = evaluate(request("phi-3-mini-4k-instruct", V06, spot=True), CAT.sizes[T4])
    assert not option.feasible
    assert refused(option, "release") == "KAITO 0.6.0's pods don't tolerate AKS's spot taint"


def test_rejected_sizes_sort_after_every_priced_one():
    options = evaluate_all(request("phi-3-mini-4k-instruct", V06), CAT)
    keys = [o.sort_key for o in options]
    assert keys == sorted(keys)
    assert options[-1].usd_per_hour is None and options[-1].sort_key[0] == float("inf")


@pytest.mark.parametrize("size,gate,why", [
    ("Standard_NC6s_v3", "size", "retired by Azure on 2025-09-30: no new capacity"),
    ("Standard_ND96isr_MI300X_v5", "size", "AMD Instinct MI300X 192GB: KAITO's inference pods request nvidia.com/gpu, "
                                           "so they never schedule"),
    ("Standard_ND96asr_v4", "release", "KAITO 0.6.0 spells it Standard_ND96asr_A100_v4; nodes carry "
                                       "Standard_ND96asr_v4, so KAITO never matches them"),
    ("Standard_NCC40ads_H100_v5", "size", "no East US price in the SKU catalog, so its cost can't be planned"),
])
def test_sizes_kaito_aks_never_plans_say_why(size, gate, why):
    assert refused(evaluate(request("phi-3-mini-4k-instruct", V06), CAT.sizes[size]), gate) == why


def test_a_size_not_offered_in_the_region_is_refused_there():
    req = request("phi-3-mini-4k-instruct", V06, region="westcentralus")
    assert refused(evaluate(req, CAT.sizes[T4]), "size").startswith("not offered in westcentralus (not listed there in ")
    assert T4 not in {o.instance_type for o in evaluate_all(req, CAT) if o.feasible}


def test_a_size_of_compute_capability_8_missing_from_the_table_is_not_blamed_on_its_gpu():
    unlisted = replace(CAT.sizes[A100], name="Standard_NC24ads_A100_v9", kaito_name=None)
    assert refused(evaluate(request("microsoft/Phi-3-mini-4k-instruct"), unlisted), "release") == (
        "not in KAITO 0.12.0's SKU table: its Workspace would never get a node count (\"Unsupported SKU\")")


def test_kaito_0_6_a_preset_without_tensor_parallelism_must_fit_one_gpu_of_a_multi_gpu_node():
    # falcon-7b runs with TP=1: on 4 x 16 GiB its 13.4 GiB of weights meet one 16 GiB GPU (at 0.6's 0.90 for 16 GiB)
    req = request("falcon-7b-instruct", V06)
    assert refused(evaluate(req, CAT.sizes["Standard_NC64as_T4_v3"]), "model") == (
        "KAITO 0.6.0 accepts it, but vLLM can't run it: 13.44 GiB of weights + KV cache for 2048 tokens need 2 "
        "node(s) of this size at --gpu-memory-utilization 0.9, and KAITO uses 1")
    on_a100s = evaluate(req, CAT.sizes[A100_X4])
    assert on_a100s.feasible and on_a100s.parallelism == "TP=1"
    model = resolve("falcon-7b-instruct", V06, CAT)
    assert on_a100s.gpu_memory_required_gib == round(max(14, memory_need_gib(model.facts, 1, 1, 2048,
                                                                               V06.memory_model)), 2)


def test_kaito_0_6_multi_node_memory_need_counts_every_gpu_of_every_pod():
    # llama-8b on 2 T4 nodes at 32768 tokens: weights + 2 GPUs' overhead + the KV cache on each node
    model = resolve("llama-3.1-8b-instruct", V06, CAT)
    option = evaluate(SizingRequest(model, "vllm", V06, max_model_len=32768), CAT.sizes[T4])
    assert option.feasible and option.pods == 2
    need = memory_need_gib(model.facts, 2, 1, 32768, V06.memory_model)
    assert need > model.spec.webhook.total_gpu_memory_gib
    assert option.gpu_memory_required_gib == round(need, 2) == 27.86


def test_kaito_0_6_a_distributed_model_exactly_as_big_as_one_node_runs_on_transformers():
    preset = V06.presets["llama-3.1-8b-instruct"]                    # 22 GiB in total
    assert kaito_v06_placement(preset, KaitoSku("x", 1, 22, "g"), "transformers").accepted
    assert not kaito_v06_placement(preset, KaitoSku("x", 1, 21, "g"), "transformers").accepted


def test_kaito_0_6_writes_a_resource_count_of_at_least_one():
    preset = V06.presets["phi-3-mini-4k-instruct"]
    nothing = replace(preset, webhook=replace(preset.webhook, gpus=0, total_gpu_memory_gib=0))
    placement = kaito_v06_placement(nothing, V06.kaito_sku(A100), "vllm")
    assert (placement.accepted, placement.count, placement.pods) == (True, 1, 0)


def test_a_request_sizes_from_the_sku_table_unless_told_node_labels_and_nothing_else():
    req = request("phi-3-mini-4k-instruct")
    assert req.memory_source == "sku-table"
    assert request("phi-3-mini-4k-instruct", memory_source="node-labels").memory_source == "node-labels"
    with pytest.raises(ValueError, match="memory_source 'gfd' is not one of"):
        request("phi-3-mini-4k-instruct", memory_source="gfd")
