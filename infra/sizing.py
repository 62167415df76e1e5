"""GPU sizing by KAITO's own rules, at the lowest price.

For one model replica and a KAITO release line, :func:`evaluate` says for any Azure size whether KAITO
*accepts* it (the validating webhook), can *schedule* it (the controller / node estimator), and whether vLLM
can physically *run* the model there, and if so with how many nodes and at what cost. :func:`choose` picks
the cheapest feasible size; :func:`check_explicit` validates a size the stack names.

The rules are transcribed from KAITO's Go code (docs/kaito-sizing.md has them with their upstream lines); the
release says which apply (``release.sizing``):

- ``kaito-0.6-webhook`` (KAITO 0.6): the webhook's GPU-count / per-GPU / total-memory checks against the preset's
  requirements, the number of pods ``min(count, ceil(Treq / M))``, multi-node only for distributed presets under
  vLLM, ``max-model-len`` required for ``count > 1`` or small multi-GPU SKUs. KAITO 0.6 accepts sizes that leave vLLM
  no room (mistral-7b on one 16 GiB T4), so the estimator's memory model, with 0.6's own
  ``--gpu-memory-utilization``, is applied as the physical-fit test.
- ``estimator`` (KAITO 0.7+): the node estimator decides the node count from weights, KV cache bytes per token and
  max-model-len; ``resource.count`` is ignored. Its constants are the release's (the /1.05 weight overhead arrives
  in 0.11; before 0.11 a non-distributed preset may not span nodes). Under bring-your-own nodes KAITO reads per-GPU
  memory from GPU Feature Discovery's node label (MiB, rounded half-up to GiB) instead of the SKU table;
  ``memory_source`` selects which.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import ClassVar, Literal, get_args

from infra import prices
from infra.catalog import (
    AzureGpuSize,
    Catalog,
    Dtype,
    EstimatorConstants,
    KaitoRelease,
    KaitoSku,
    ModelFacts,
    Preset,
    Runtime,
)
from infra.models import ResolvedModel

GIB = 1024**3
MAX_NODES = 16                 # pools larger than this are not a sensible single replica
V06_SMALL_GPU_GIB = 20         # KAITO 0.6: multi-GPU SKUs below this per-GPU memory need an explicit max-model-len

# Where KAITO reads a node's per-GPU memory: its SKU table (0.6, 0.12 node auto-provisioning), or GPU Feature
# Discovery's node labels (0.12 bring-your-own nodes)
MemorySource = Literal["sku-table", "node-labels"]
# The gates a size passes, in order: the size itself (Azure sells it, kaito-aks can price it and read its GPUs),
# then this KAITO release (its SKU table, spot taint, vLLM's GPU floor), then this model on it (dtype, memory,
# nodes, parallelism). A rejection names the gate that stopped it.
Gate = Literal["size", "release", "model"]
GATES: tuple[Gate, ...] = get_args(Gate)


class SizingError(ValueError):
    """No size works, or the named one doesn't; the message says why and what to do."""


@dataclass(frozen=True)
class SizingRequest:
    model: ResolvedModel
    runtime: Runtime
    release: KaitoRelease
    max_model_len: int | None = None      # explicit (settings); None: KAITO's default
    dtype: Dtype | None = None
    memory_source: MemorySource = "sku-table"
    spot: bool = False
    region: str = prices.DEFAULT_REGION   # prices (and what is offered) are this region's, on spot when ``spot``

    def __post_init__(self) -> None:
        if self.memory_source not in get_args(MemorySource):    # else a typo sizes silently one way
            raise ValueError(f"memory_source {self.memory_source!r} is not one of {get_args(MemorySource)}")

    @property
    def effective_dtype(self) -> Dtype:
        """The --dtype vLLM will run with: the stack's, else KAITO's for this model."""
        return self.dtype or self.model.kaito_dtype

    @property
    def sizing_context(self) -> int:
        """The context length the memory rules are evaluated at."""
        return self.max_model_len or self.release.memory_model.default_max_model_len


@dataclass(frozen=True)
class Option:
    """One Azure size, evaluated for one replica of one model: rejected (``why`` says why), unless it is a
    :class:`FeasibleOption`. A rejected size has only what orders it: its price and shape if it got that far."""

    instance_type: str
    why: str                                # why it was rejected, or how it runs
    usd_per_hour: float | None = None       # a size rejected before it was priced has none
    nodes: int = 0                          # nodes in the replica's pool (and what you pay for)
    gpus_per_node: int = 0
    gate: Gate = field(kw_only=True)        # the gate that rejected it (a feasible size passed them all)

    feasible: ClassVar[bool] = False

    @property
    def sort_key(self) -> tuple[float, int, int, str]:
        return (self.usd_per_hour if self.usd_per_hour is not None else math.inf, self.nodes,
                self.nodes * self.gpus_per_node, self.instance_type)


@dataclass(frozen=True, kw_only=True)
class FeasibleOption(Option):
    """A size KAITO accepts and schedules and that runs the replica: it always has a price (the replica's, per hour)
    and every number the plan shows."""

    usd_per_hour: float = field()            # field(): required here, though a rejected Option defaults it
    nodes: int = field()
    gpus_per_node: int = field()
    gate: Gate = field(default="model", init=False)
    kaito_count: int | None       # resource.count to write (0.6 only; 0.12 ignores it)
    pods: int                     # nodes that run inference pods
    gpu_memory_required_gib: float
    gpu_memory_available_gib: float
    max_model_len_required: bool  # the version's webhook demands an explicit max-model-len
    multi_node: bool
    parallelism: str
    gpu_memory_utilization: float | None  # for the inference config; None: KAITO's own
    price_note: str               # when the price isn't the region's own (PriceQuote.note)

    feasible: ClassVar[bool] = True

    def rejected(self, why: str) -> Option:
        """The same evaluation, rejected for ``why`` (a later rule refused what the first ones accepted)."""
        return Option(self.instance_type, why, self.usd_per_hour, self.nodes, self.gpus_per_node, gate="model")


@dataclass(frozen=True)
class Decision:
    chosen: FeasibleOption
    reason: str
    alternatives: tuple[FeasibleOption, ...]   # the other feasible sizes, cheapest first
    max_model_len: int | None               # value for the inference ConfigMap; None: don't set one
    sizing_context: int
    max_model_len_source: str               # "settings" | "largest that fits (required by KAITO 0.6)" | ""


# ---------------------------------------------------------------------------------------------------------
# KAITO's node estimator (0.7+: pkg/workspace/estimator/.../estimator.go; docs/kaito-sizing.md)

class TooSmallError(ValueError):
    """One GPU can't hold the estimator's fixed reserve."""


def estimator_nodes(
    facts: ModelFacts,
    per_gpu_gib: float,
    gpus_per_node: int,
    max_model_len: int,
    est: EstimatorConstants,
    gpu_memory_utilization: float | None = None,
) -> int:
    """Nodes KAITO's estimator targets for ``facts`` on nodes of ``gpus_per_node`` GPUs of ``per_gpu_gib`` each.

    ``gpu_memory_utilization`` replaces the estimator's own (for the physical fit at another value).
    Raises :class:`TooSmallError` when one GPU can't even hold the fixed reserve (KAITO errors the same way).
    """
    util = est.gpu_memory_utilization if gpu_memory_utilization is None else gpu_memory_utilization
    model_size = facts.weights_gib * GIB * est.weight_expansion_factor
    avail = per_gpu_gib * GIB * util
    fixed = est.base_overhead_gib * GIB + (max_model_len * facts.kv_cache_bytes_per_token) / gpus_per_node
    if avail <= fixed:
        raise TooSmallError(
            f"{per_gpu_gib:g} GiB per GPU can't hold the {fixed / GIB:.1f} GiB fixed reserve "
            f"(CUDA overhead + KV cache for {max_model_len} tokens)"
        )
    avail_per_gpu = (avail - fixed) / (1 + est.overhead_weight_factor)
    min_gpus = int(model_size / avail_per_gpu) + 1   # floor + 1, as KAITO does (not ceil)
    return math.ceil(min_gpus / gpus_per_node)


def memory_need_gib(facts: ModelFacts, gpus: int, gpus_per_node: int, max_model_len: int,
                    est: EstimatorConstants) -> float:
    """GPU memory a deployment needs, for display: loaded weights + per-GPU overhead + KV cache."""
    kv = max_model_len * facts.kv_cache_bytes_per_token / GIB
    return facts.weights_gib * est.weight_expansion_factor + gpus * est.base_overhead_gib + kv * (gpus / gpus_per_node)


def v06_gpu_memory_utilization(per_gpu_gib: int) -> float:
    """KAITO 0.6's --gpu-memory-utilization: min(0.95, floor((1 - 1.5 GiB / per-GPU) * 100) / 100) (A5)."""
    return min(0.95, math.floor((1 - 1.5 / per_gpu_gib) * 100) / 100)


def byo_per_gpu_gib(nvml_memory_mib: int) -> int:
    """KAITO 0.12 GetGPUConfigFromNodeLabels: int(MiB / 1024 + 0.5), i.e. rounded half-up (B1)."""
    return int(nvml_memory_mib / 1024 + 0.5)


# ---------------------------------------------------------------------------------------------------------
# Evaluating one size

def evaluate(req: SizingRequest, size: AzureGpuSize) -> Option:
    """Is ``size`` accepted, schedulable and physically big enough? With how many nodes, at what cost?"""
    name = size.name
    release = req.release
    if size.retired:
        return Option(name, f"retired by Azure on {size.retired.isoformat()}: no new capacity", gate="size")
    kaito_sku = release.kaito_sku(size.name)   # nodes carry Azure's VM size name: KAITO must find *that* string
    if size.vendor != "nvidia":
        return Option(name, f"{size.gpu_model}: KAITO's inference pods request nvidia.com/gpu, so they never schedule",
                      gate="size")
    if kaito_sku is None:
        if size.kaito_name and release.kaito_sku(size.kaito_name):
            return Option(name, f"KAITO {release.version} spells it {size.kaito_name}; nodes carry "
                                f"{name}, so KAITO never matches them", gate="release")
        return Option(name, _not_in_table(size, release), gate="release")
    if size.usd_per_hour is None:       # the catalog's gate: sizes kaito-aks never plans (azure_gpu_skus.yaml)
        return Option(name, "no East US price in the SKU catalog, so its cost can't be planned", gate="size")
    quote = prices.quote(size.name, req.region, req.spot)
    if isinstance(quote, prices.Unpriced):
        return Option(name, quote.reason, gate="size")
    if req.spot and not release.spot_toleration:
        return Option(name, f"KAITO {release.version}'s pods don't tolerate AKS's spot taint", gate="release")
    if (size.compute_capability or 0) < release.min_compute_capability:
        return Option(name, f"{size.gpu_model} (compute capability {size.compute_capability}) doesn't run "
                            f"KAITO {release.version}'s vLLM (its FlashInfer attention crashes below "
                            f"{release.min_compute_capability:g}: kaito-project/kaito#2114)", gate="release")
    if req.effective_dtype == "bfloat16" and (size.compute_capability or 0) < 8.0:
        who = ("the stack's dtype" if req.dtype
               else f"KAITO {release.version} runs {req.model.preset} with --dtype bfloat16")
        return Option(name, f"{size.gpu_model} (compute capability {size.compute_capability}) has no bfloat16, "
                            f"and {who}" + ("" if req.dtype else "; set dtype: float16 to use it"), gate="model")
    if release.sizing == "kaito-0.6-webhook":
        return _evaluate_v06(req, size, kaito_sku, quote)
    return _evaluate_estimator(req, size, kaito_sku, quote)


def _not_in_table(size: AzureGpuSize, release: KaitoRelease) -> str:
    if release.has_estimator:
        cc = size.compute_capability
        why = f" (compute capability {cc} < 8.0)" if cc is not None and cc < 8.0 else ""
        return (f"not in KAITO {release.version}'s SKU table{why}: its Workspace would never get a node count "
                "(\"Unsupported SKU\")")
    return (f"not in KAITO {release.version}'s SKU table: KAITO would skip every resource check for it, "
            "so kaito-aks doesn't deploy it")


@dataclass(frozen=True)
class V06Placement:
    """What KAITO 0.6 itself does with a preset on a SKU (webhook checks and placement), before physics."""

    count: int                   # smallest resource.count the webhook accepts
    pods: int                    # numNodes = min(count, ceil(Treq / M))
    multi_node: bool             # StatefulSet + Ray (distributed preset, vLLM, pods > 1)
    no_fit: bool                 # accepted, but independent replicas each below the preset's memory need
    max_model_len_required: bool

    accepted: ClassVar[bool] = True


@dataclass(frozen=True)
class V06Refusal:
    """KAITO 0.6's webhook refuses the preset on the SKU, for ``why``."""

    why: str

    accepted: ClassVar[bool] = False


def kaito_v06_placement(preset: Preset, sku: KaitoSku, runtime: Runtime) -> V06Placement | V06Refusal:
    g, m = sku.gpus, sku.total_gpu_memory_gib
    per_gpu = m // g
    need = preset.webhook
    assert need is not None, "KAITO 0.6 placement needs the preset's webhook requirements"
    if per_gpu < need.per_gpu_memory_gib:
        return V06Refusal(f"{per_gpu} GiB per GPU < the {need.per_gpu_memory_gib:g} GiB per GPU "
                                 f"KAITO 0.6 requires for {preset.name}")
    if preset.distributed and need.total_gpu_memory_gib > m and runtime == "transformers":
        return V06Refusal("too big for one node, and multi-node inference needs the vLLM runtime")
    # the smallest resource.count that passes checks 1 (GPU count) and 3 (total memory)
    count = max(1, math.ceil(need.gpus / g), math.ceil(need.total_gpu_memory_gib / m))
    pods = min(count, math.ceil(need.total_gpu_memory_gib / m))
    multi = preset.distributed and runtime == "vllm" and pods > 1
    return V06Placement(
        count=count, pods=pods, multi_node=multi, no_fit=pods > 1 and not multi,
        max_model_len_required=count > 1 or (g > 1 and per_gpu < V06_SMALL_GPU_GIB),
    )


def _evaluate_v06(req: SizingRequest, size: AzureGpuSize, sku: KaitoSku, quote: prices.PriceQuote) -> Option:
    preset = req.model.spec
    assert preset is not None and preset.webhook is not None, "KAITO 0.6 sizing needs a 0.6 preset"
    webhook = preset.webhook
    name, g, m = size.name, sku.gpus, sku.total_gpu_memory_gib
    placement = kaito_v06_placement(preset, sku, req.runtime)
    if isinstance(placement, V06Refusal):
        return Option(name, placement.why, gate="model")
    count, pods, multi = placement.count, placement.pods, placement.multi_node
    if count > MAX_NODES:
        return Option(name, f"would need {count} nodes (more than {MAX_NODES})", gate="model")
    if placement.no_fit:
        return Option(name, f"KAITO would run {pods} independent replicas, each on one node with "
                            f"{m} GiB < the {webhook.total_gpu_memory_gib:g} GiB {preset.name} needs (not distributed)",
                      gate="model")
    tp = g if preset.tensor_parallel else 1
    price = quote.usd_per_hour * count      # the region's (spot) price, per node
    override = _headroom(size, req)
    base = FeasibleOption(
        name, "", nodes=count, kaito_count=count, pods=pods, gpus_per_node=g, usd_per_hour=round(price, 4),
        gpu_memory_required_gib=float(webhook.total_gpu_memory_gib), gpu_memory_available_gib=float(count * m),
        max_model_len_required=placement.max_model_len_required, multi_node=multi,
        parallelism=f"TP={tp} x PP={pods} (Ray)" if multi else f"TP={tp}", gpu_memory_utilization=override,
        price_note=quote.note,
    )
    facts = req.model.facts
    if facts is not None:
        gpus_used = tp if not multi else g
        util = override if override is not None else v06_gpu_memory_utilization(m // g)
        try:
            need = estimator_nodes(facts, m / g, gpus_used, req.sizing_context, req.release.memory_model,
                                   gpu_memory_utilization=util)
        except TooSmallError as err:
            return base.rejected(f"KAITO {req.release.version} accepts it, but {err}")
        if need > pods:
            return base.rejected(
                f"KAITO {req.release.version} accepts it, but vLLM can't run it: {facts.weights_gib:g} GiB of weights "
                f"+ KV cache for {req.sizing_context} tokens need {need} node(s) of this size at "
                f"--gpu-memory-utilization {util}, and KAITO uses {pods}")
        base = replace(base, gpu_memory_required_gib=round(max(
            webhook.total_gpu_memory_gib,
            memory_need_gib(facts, gpus_used * pods, gpus_used, req.sizing_context, req.release.memory_model)), 2))
    idle = f"; {count - pods} node(s) idle (KAITO's GPU-count rule)" if count > pods else ""
    return replace(base, why=f"{count} x {name}, {base.parallelism}{idle}")


def _evaluate_estimator(req: SizingRequest, size: AzureGpuSize, sku: KaitoSku, quote: prices.PriceQuote) -> Option:
    facts = req.model.facts
    assert facts is not None, "estimator sizing needs the model's facts"
    release = req.release
    est = release.memory_model
    name, g = size.name, sku.gpus
    if req.memory_source == "sku-table":
        per_gpu = sku.total_gpu_memory_gib / g
    else:
        if size.nvml_memory_mib is None:
            return Option(name, "the GPU memory its nodes report (GFD label) is unknown, so KAITO's "
                                "bring-your-own-nodes sizing can't be predicted", gate="size")
        per_gpu = float(byo_per_gpu_gib(size.nvml_memory_mib))
    try:
        nodes = estimator_nodes(facts, per_gpu, g, req.sizing_context, est)
    except TooSmallError as err:
        return Option(name, f"KAITO's estimator rejects it: {err}", gate="model")
    if nodes > MAX_NODES:
        return Option(name, f"KAITO's estimator targets {nodes} nodes (more than {MAX_NODES})", gate="model")
    preset = req.model.preset
    if nodes > 1 and est.multi_node_needs_distributed_preset and not req.model.distributed:
        return Option(name, f"KAITO's estimator needs {nodes} nodes of it, and KAITO {release.version} "
                            f"refuses to spread {preset} over nodes (not a distributed preset)", gate="model")
    if not req.model.tensor_parallel:
        # the preset disables tensor parallelism: one GPU must hold it (the estimator's single-GPU error)
        try:
            one_gpu = estimator_nodes(facts, per_gpu, 1, req.sizing_context, est)
        except TooSmallError as err:
            one_gpu, why = 2, str(err)
        else:
            why = f"it needs {one_gpu} GPUs"
        if one_gpu > 1:
            return Option(name, f"{preset} disables tensor parallelism, so one {per_gpu:g} GiB GPU must "
                                f"hold it, and {why}", gate="model")
    override = _headroom(size, req)
    if override is not None:
        # KAITO places the model by its own utilization; vLLM must then also fit at the GPU's lower one
        try:
            need = estimator_nodes(facts, per_gpu, g, req.sizing_context, est, gpu_memory_utilization=override)
        except TooSmallError as err:
            return Option(name, f"KAITO's estimator accepts it at {est.gpu_memory_utilization}, but "
                                f"{size.gpu_model} needs --gpu-memory-utilization {override}, where {err}",
                          gate="model")
        if need > nodes:
            return Option(name, (
                f"KAITO's estimator places it on {nodes} node(s) at --gpu-memory-utilization "
                f"{est.gpu_memory_utilization}, but {size.gpu_model} needs {override} (KAITO's own A10 rule), "
                f"where it needs {need}"), gate="model")
    node_gib = per_gpu * g
    if req.runtime == "transformers" and (nodes > 1 or node_gib < facts.weights_gib):
        return Option(name, "too big for one node, and the transformers runtime is single-node", gate="model")
    multi = nodes > 1
    if multi:
        parallelism = f"TP={g} x PP={nodes} (Ray)"
    elif g > 1 and not req.model.tensor_parallel:
        parallelism = "TP=1"
    elif g > 1 and facts.weights_gib * g * 2 < node_gib:
        parallelism = f"DP={g}"          # model under half a GPU: one copy per GPU (configureParallelism)
    else:
        parallelism = f"TP={g}"
    price = quote.usd_per_hour * nodes      # the region's (spot) price, per node
    return FeasibleOption(
        name, f"{nodes} x {name}, {parallelism}", nodes=nodes,
        kaito_count=1 if req.runtime == "transformers" else None,   # non-vLLM runtimes take resource.count
        pods=nodes, gpus_per_node=g, usd_per_hour=round(price, 4),
        gpu_memory_required_gib=round(memory_need_gib(facts, nodes * g, g, req.sizing_context, est), 2),
        gpu_memory_available_gib=round(nodes * node_gib, 2), max_model_len_required=False, multi_node=multi,
        parallelism=parallelism, gpu_memory_utilization=override, price_note=quote.note,
    )


def _headroom(size: AzureGpuSize, req: SizingRequest) -> float | None:
    """The --gpu-memory-utilization a GPU needs below KAITO's value (A10: 0.82), for vLLM only; else None."""
    if req.runtime != "vllm":
        return None
    return size.vllm_gpu_memory_utilization


# ---------------------------------------------------------------------------------------------------------
# Choosing

def _feasible(options: Iterable[Option]) -> tuple[FeasibleOption, ...]:
    return tuple(o for o in options if isinstance(o, FeasibleOption))


def evaluate_all(req: SizingRequest, catalog: Catalog) -> list[Option]:
    return sorted((evaluate(req, s) for s in catalog.sizes.values()), key=lambda o: o.sort_key)


def choose(req: SizingRequest, catalog: Catalog) -> Decision:
    """The cheapest size KAITO accepts, schedules and that fits; ties go to fewer nodes, then fewer GPUs."""
    options = evaluate_all(req, catalog)
    feasible = _feasible(options)
    if not feasible:
        raise SizingError(_nothing_fits(req, catalog, options))
    chosen, others = feasible[0], feasible[1:]
    reason = f"cheapest that KAITO {req.release.version} accepts and that fits: {chosen.why}"
    if others:
        runner_up = others[0]
        reason += f" (next: {runner_up.nodes} x {runner_up.instance_type} ${runner_up.usd_per_hour:.3f}/h)"
    return _with_context(req, catalog, chosen, reason, others)


def check_explicit(req: SizingRequest, catalog: Catalog, instance_type: str) -> Decision:
    """Validate a size the stack names, by the same rules; it gets the node count KAITO will use."""
    size = catalog.size(instance_type)
    if size is None:
        other_case = catalog.size_ignoring_case(instance_type)
        if other_case:
            raise SizingError("Azure size names are matched exactly by KAITO's node selection; "
                              f"write '{other_case.name}'")
        raise SizingError(f"'{instance_type}' is not an Azure GPU size kaito-aks knows "
                          f"(infra/catalog/azure_gpu_skus.yaml){_cheapest_hint(req, catalog)}")
    option = evaluate(req, size)
    others = _feasible(o for o in evaluate_all(req, catalog) if o.instance_type != option.instance_type)
    if not isinstance(option, FeasibleOption):
        raise SizingError(f"{size.name}: {option.why}{_cheapest_hint(req, catalog)}")
    reason = f"set in the stack: {option.why}"
    cheaper = [o for o in others if o.sort_key < option.sort_key]
    if cheaper and cheaper[0].usd_per_hour < option.usd_per_hour:
        best = cheaper[0]
        reason += (f" (${option.usd_per_hour - best.usd_per_hour:.3f}/h more than auto's "
                   f"{best.nodes} x {best.instance_type})")
    return _with_context(req, catalog, option, reason, others)


def _with_context(req: SizingRequest, catalog: Catalog, chosen: FeasibleOption, reason: str,
                  others: tuple[FeasibleOption, ...]) -> Decision:
    """Decide the max-model-len to write: the stack's, or, where 0.6 demands one, the largest that fits."""
    if req.max_model_len:
        return Decision(chosen, reason, others, req.max_model_len, req.sizing_context, "settings")
    if chosen.max_model_len_required:
        fit = largest_fitting_context(req, catalog, chosen)
        return Decision(chosen, reason, others, fit, req.sizing_context,
                        f"largest that fits; KAITO {req.release.version} requires one for this size")
    return Decision(chosen, reason, others, None, req.sizing_context, "")


def largest_fitting_context(req: SizingRequest, catalog: Catalog, option: Option) -> int:
    """Largest max-model-len (multiple of 256, <= the model's context) that still fits ``option``'s nodes."""
    assert req.model.facts is not None, "KAITO 0.6's presets all have model facts (test_catalog_integrity)"
    limit = req.model.context_limit or req.sizing_context
    lo, hi = req.sizing_context, limit      # the option fits the sizing context: search above it
    best = min(lo, hi)

    def fits(tokens: int) -> bool:
        probe = replace(req, max_model_len=tokens)
        again = evaluate(probe, catalog.sizes[option.instance_type])
        return again.feasible and again.nodes == option.nodes

    while lo <= hi:
        mid = (lo + hi) // 2
        if fits(mid):
            best, lo = mid, mid + 1
        else:
            hi = mid - 1
    return max(256, best - best % 256) if best >= 256 else best


def _cheapest_hint(req: SizingRequest, catalog: Catalog) -> str:
    feasible = _feasible(evaluate_all(req, catalog))
    if not feasible:
        return ""
    best = feasible[0]
    return f"; use instanceType: auto (cheapest: {best.nodes} x {best.instance_type}, ${best.usd_per_hour:.3f}/h)"


def _nothing_fits(req: SizingRequest, catalog: Catalog, rejected: list[Option]) -> str:
    """One line: the two sizes that came closest, i.e. that passed the most gates, the biggest GPUs first."""
    furthest = max(GATES.index(o.gate) for o in rejected)
    nearest = sorted((o for o in rejected if GATES.index(o.gate) == furthest),
                     key=lambda o: (-catalog.sizes[o.instance_type].node_gpu_memory_gib, o.instance_type))
    closest = "; ".join(f"{o.instance_type}: {o.why}" for o in nearest[:2])
    return (f"no Azure GPU size in the catalog runs {req.model.preset} on KAITO {req.release.version} with "
            f"runtime {req.runtime} at {req.sizing_context} tokens ({closest})")

