"""How long the offline plan takes for stacks of 1, 10 and 100 models (settings -> validated plan -> JSON + table).

    python -m bench.plan_scaling [--repeat 5]      # from the repository root

Each stack cycles through a mix of catalog models on the Helm path (KAITO 0.12) and the add-on (0.6), with
`instanceType: auto` (the expensive case: every Azure size is evaluated for every model). The catalog is
loaded once per process, as in `python -m infra plan`; the first (cold) run includes that load.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

from infra.catalog import load_catalog
from infra.cli_plan import render_table
from infra.plan import build_plan
from infra.settings import settings_from_config

MIX = {
    "helm": ["llama-3.1-8b-instruct", "phi-4-mini-instruct", "mistral-7b-instruct", "qwen2.5-coder-32b-instruct",
             "llama-3.3-70b-instruct", "gemma-3-27b-instruct", "Qwen/Qwen3-8B-AWQ", "gpt-oss-20b"],
    "addon": ["phi-3-mini-4k-instruct", "llama-3.1-8b-instruct", "mistral-7b-instruct", "qwen2.5-coder-32b-instruct",
              "llama-3.3-70b-instruct", "phi-4", "falcon-40b-instruct", "deepseek-r1-distill-qwen-14b"],
}


def stack(mode: str, n: int) -> dict:
    models = [{"name": f"m{i}", "model": MIX[mode][i % len(MIX[mode])]} for i in range(n)]
    # the add-on's mix is KAITO 0.6's presets: the add-on on the catalog's first release (its default is newer)
    kaito = {"mode": mode} if mode == "helm" else {"mode": mode, "version": load_catalog().known_versions[0]}
    return {"kaito": kaito, "models": models, "access": {"sourceRanges": ["203.0.113.0/24"]}}


def once(values: dict) -> float:
    started = time.perf_counter()
    plan = build_plan(settings_from_config("bench", values, {"hfToken"}))
    json.dumps(plan.to_json())
    render_table(plan)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    started = time.perf_counter()
    load_catalog()
    print(f"catalog load (cold, once per process): {1000 * (time.perf_counter() - started):.1f} ms")
    print(f"{'mode':6} {'models':>6} {'median ms':>10} {'min ms':>8} {'max ms':>8}")
    for mode in ("helm", "addon"):
        for n in (1, 10, 100):
            values = stack(mode, n)
            times = [once(values) for _ in range(args.repeat)]
            print(f"{mode:6} {n:6d} {1000 * statistics.median(times):10.1f} {1000 * min(times):8.1f} "
                  f"{1000 * max(times):8.1f}")


if __name__ == "__main__":
    main()
