"""Is the chosen size the cheapest feasible one? For every catalog model under both KAITO versions.

For each model, `infra.sizing.choose` (what the plan uses) is compared with an exhaustive search written
independently here: every Azure size x every node count 1..16, kept when KAITO's own rules would run the model
on exactly that many nodes of that size (0.6: the webhook inequalities, checked count by count, plus the
physical-fit test; 0.12: the estimator), and costed at nodes x $/h. The two must agree on the price. It also
compares against the hand-picked sizes of the manual walkthrough kaito-aks replaces (phi-2 on Standard_NC24ads_A100_v4, the 70B on
Standard_NC96ads_A100_v4).

    python -m bench.sizing_cost            # summary + mismatches + walkthrough comparison (from the repository root)
    python -m bench.sizing_cost --all      # one line per model and version
"""
from __future__ import annotations

import argparse
import math
import sys
import time

from infra.catalog import load_catalog
from infra.models import ResolveError, resolve
from infra.sizing import (
    SizingError,
    SizingRequest,
    TooSmallError,
    byo_per_gpu_gib,
    choose,
    estimator_nodes,
    v06_gpu_memory_utilization,
)

MAX_NODES = 16


def exhaustive_v06(req, catalog) -> float | None:
    preset, best = req.model.spec, None
    need = preset.webhook                 # KAITO 0.6's webhook requirements of the preset
    for size in catalog.sizes.values():
        sku = req.release.kaito_sku(size.name)
        if (sku is None or size.usd_per_hour is None or size.retired or size.vendor != "nvidia"):
            continue
        g, m = sku.gpus, sku.total_gpu_memory_gib
        for count in range(1, MAX_NODES + 1):
            # the webhook: GPU count, per-GPU memory, total memory (A3.3), checked for this count
            if count * g < need.gpus or m // g < need.per_gpu_memory_gib or count * m < need.total_gpu_memory_gib:
                continue
            pods = min(count, math.ceil(need.total_gpu_memory_gib / m))
            if pods > 1 and not preset.distributed:
                break                     # independent replicas that each miss the model's memory
            facts = req.model.facts
            gpus = g if (pods > 1 or preset.tensor_parallel) else 1
            try:
                # vLLM runs at KAITO 0.6's utilization, or at the GPU's own lower one (A10)
                util = size.vllm_gpu_memory_utilization or v06_gpu_memory_utilization(m // g)
                nodes = estimator_nodes(facts, m / g, gpus, req.sizing_context, req.release.memory_model,
                                        gpu_memory_utilization=util)
            except TooSmallError:
                break
            if nodes <= pods:
                cost = count * size.usd_per_hour
                best = cost if best is None else min(best, cost)
            break                         # larger counts only add idle nodes at a higher price
    return best


def exhaustive_v012(req, catalog) -> float | None:
    est, best = req.release.estimator, None
    for size in catalog.sizes.values():
        sku = req.release.kaito_sku(size.name)
        if sku is None or size.usd_per_hour is None or size.retired or size.vendor != "nvidia":
            continue
        per_gpu = (byo_per_gpu_gib(size.nvml_memory_mib) if req.memory_source == "node-labels" and size.nvml_memory_mib
                   else None if req.memory_source == "node-labels" else sku.total_gpu_memory_gib / sku.gpus)
        if per_gpu is None:
            continue
        for nodes in range(1, MAX_NODES + 1):
            try:
                target = estimator_nodes(req.model.facts, per_gpu, sku.gpus, req.sizing_context, est)
                low = size.vllm_gpu_memory_utilization      # the GPU's own lower utilization (A10), for vLLM
                if low is not None and estimator_nodes(req.model.facts, per_gpu, sku.gpus, req.sizing_context, est,
                                                       gpu_memory_utilization=low) > target:
                    break                 # KAITO's node count leaves vLLM too little memory at that utilization
            except TooSmallError:
                break
            if target == nodes:           # KAITO runs exactly `target` nodes; fewer never become ready
                cost = nodes * size.usd_per_hour
                best = cost if best is None else min(best, cost)
    return best


def models_of(release) -> list[str]:
    if release.line == "0.6":
        return sorted(release.presets)
    return sorted(set(release.legacy_names) | {c for c in release.catalog
                                              if not any(h.lower() == c.lower() for h in release.legacy_names.values())})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--all", action="store_true")
    args = parser.parse_args()
    catalog = load_catalog()
    mismatches, rows, no_fit = 0, 0, []
    started = time.perf_counter()
    for version, memory_source in (("0.6.0", "sku-table"), ("0.12.0", "node-labels")):
        release = catalog.release(version)
        for ref in models_of(release):
            model = resolve(ref, release, catalog)
            req = SizingRequest(model, "vllm", release, memory_source=memory_source)
            exhaustive = (exhaustive_v06 if release.line == "0.6" else exhaustive_v012)(req, catalog)
            try:
                chosen = choose(req, catalog).chosen
                price = chosen.usd_per_hour
                what = f"{chosen.nodes} x {chosen.instance_type}"
            except SizingError:
                price, what = None, "nothing fits"
                no_fit.append(f"{version} {ref}")
            rows += 1
            equal = (price is None and exhaustive is None) or (
                price is not None and exhaustive is not None and abs(price - exhaustive) < 1e-6)
            mismatches += not equal
            if args.all or not equal:
                flag = "" if equal else "   <-- MISMATCH"
                ex = f"${exhaustive:.3f}" if exhaustive is not None else "none"
                pr = f"${price:.3f}" if price is not None else "none"
                print(f"{version:7} {ref:48} chosen {pr:>9} ({what}) exhaustive {ex:>9}{flag}")
    elapsed = time.perf_counter() - started
    print(f"\n{rows} model x version cases, {mismatches} mismatches between choose() and exhaustive search "
          f"({elapsed:.2f} s)")
    if no_fit:
        print(f"no priced size fits: {', '.join(no_fit)}")

    print("\nAgainst the hand-picked sizes of the manual walkthrough kaito-aks replaces (East US $/h):")
    for ref, seed_size in (("microsoft/phi-2", "Standard_NC24ads_A100_v4"),
                           ("meta-llama/Meta-Llama-3-70B-Instruct", "Standard_NC96ads_A100_v4")):
        seed_price = catalog.sizes[seed_size].usd_per_hour
        for version in ("0.6.0", "0.12.0"):
            release = catalog.release(version)
            try:
                model = resolve(ref, release, catalog)
            except ResolveError:
                replacement = release.replacements.get(ref.lower())
                print(f"  {ref} @ {version}: not served; KAITO's replacement is {replacement}")
                model = resolve(replacement, release, catalog)
            source = "node-labels" if release.line == "0.12" else "sku-table"
            chosen = choose(SizingRequest(model, "vllm", release, memory_source=source), catalog).chosen
            saving = 1 - chosen.usd_per_hour / seed_price
            print(f"  {ref} @ {version} as {model.preset}: walkthrough 1 x {seed_size} ${seed_price:.3f}/h; kaito-aks "
                  f"{chosen.nodes} x {chosen.instance_type} ${chosen.usd_per_hour:.3f}/h ({saving:.0%} less)")
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
