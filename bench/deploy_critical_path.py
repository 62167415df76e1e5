"""Time to a serving endpoint: the program's dependency graph vs the manual walkthrough's sequential flow.

The real __main__.py runs under Pulumi mocks (tests/program/harness.py) and the engine's view of the resource
graph is recorded: every resource with the URNs it depends on (explicit depends_on, and the resources its inputs
come from), plus its Kubernetes provider. Each resource gets a typical duration from DURATIONS below; the
critical path (longest chain) is what `pulumi up` takes with its default parallelism, the sum of all steps is what
a person following the manual walkthrough's numbered steps one after another takes.

    python -m bench.deploy_critical_path            # dev and prod (from the repository root)
"""
from __future__ import annotations

import functools

from tests.program import harness

# Typical minutes per step, and where the number comes from. Components and providers take no time themselves.
DURATIONS: dict[str, tuple[float, str]] = {
    "azure-native:resources:ResourceGroup": (0.1, "ARM resource group PUT: seconds"),
    "azure-native:containerservice:ManagedCluster": (
        8.0, "AKS create with a small system pool: 5-10 min (MS Learn AKS quickstarts: 'a few minutes'); "
             "KAITO add-on enabled in the same PUT"),
    "azure-native:containerservice:AgentPool": (
        10.0, "GPU node pool: up to 10 min (MS Learn KAITO doc: 'node provisioning can take up to 10 minutes'; "
              "KAITO e2e allows 15 min for ResourceReady)"),
    "kubernetes:helm.sh/v3:Release": (3.0, "KAITO chart: controller, webhook, NFD/GFD images pulled and ready (estimate)"),
    "kubernetes:core/v1:Service": (1.0, "Azure load balancer public IP allocation: ~1 min (estimate); ClusterIP: instant"),
    "kubernetes:apps/v1:Deployment": (0.5, "2 nginx pods pulled and ready (estimate)"),
    "pulumi-python:dynamic/kaito:EndpointCheck": (0.5, "endpoint check: readiness + chat/completions/stream/probe"),
}
WORKSPACE = "kubernetes:kaito.sh/v1beta1:Workspace"
K8S_OBJECT = 0.05   # namespaces, config maps, secrets, policies: one API call


def workspace_minutes(weights_gib: float) -> float:
    """Model download at ~1 GB/s effective (8.6 s per GiB, estimate) + 5 min image pull, load, warm-up and KAITO's
    post-load benchmark (KAITO e2e allows 12 min for WorkspaceSucceeded after the nodes are ready)."""
    return 5.0 + weights_gib * 8.6 / 60


def durations(run, plan) -> dict[str, float]:
    weights = {r.workspace: r.weights_gib or 0 for r in plan.replicas}
    out = {}
    for r in run.resources:
        if r.typ.startswith(("kaito-aks:index:", "pulumi:providers:")):
            out[r.urn] = 0.0
        elif r.typ == WORKSPACE:
            out[r.urn] = workspace_minutes(weights[r.inputs["metadata"]["name"]])
        elif r.typ == "kubernetes:core/v1:Service" and r.inputs["spec"].get("type") != "LoadBalancer":
            out[r.urn] = K8S_OBJECT
        elif r.typ in DURATIONS:
            out[r.urn] = DURATIONS[r.typ][0]
        elif r.typ.startswith("kubernetes:"):
            out[r.urn] = K8S_OBJECT
        else:
            out[r.urn] = 0.1
    return out


def critical_path(run, minutes: dict[str, float]) -> tuple[float, list]:
    by_urn = {r.urn: r for r in run.resources}
    deps = {}
    for r in run.resources:
        d = {u for u in r.dependencies if u in by_urn}
        if r.provider:
            d.add(r.provider.split("::", 1)[0] if r.provider.count("::") > 3 else r.provider)
            d = {u for u in d if u in by_urn} | {u for u in by_urn if r.provider.startswith(u + "::")}
        deps[r.urn] = d

    @functools.cache
    def finish(urn: str) -> tuple[float, tuple]:
        start, chain = 0.0, ()
        for dep in deps[urn]:
            t, c = finish(dep)
            if t > start:
                start, chain = t, c
        return start + minutes[urn], chain + (urn,)

    best = max((finish(u) for u in by_urn), key=lambda x: x[0])
    return best[0], [by_urn[u] for u in best[1] if minutes[u] > 0]


def main() -> None:
    print("step durations (minutes):")
    for typ, (m, source) in DURATIONS.items():
        print(f"  {typ.split(':')[-1]:16} {m:5.1f}  {source}")
    print(f"  {'Workspace':16}  5 + 0.14/GiB  {workspace_minutes.__doc__.split(chr(10))[0]}")
    for stack in ("dev", "prod"):
        run, plan = harness.run_program(stack), harness.expected_plan(stack)
        minutes = durations(run, plan)
        total, chain = critical_path(run, minutes)
        sequential = sum(minutes.values())
        print(f"\n{stack}: {len(run.resources)} resources, {len(plan.replicas)} replica(s)")
        print(f"  critical path to a checked endpoint: {total:6.1f} min")
        print(f"  sum of all steps (manual, sequential): {sequential:6.1f} min  ({sequential / total:.1f}x longer)")
        print("  path: " + " -> ".join(f"{r.name} ({minutes[r.urn]:.1f})" for r in chain))


if __name__ == "__main__":
    main()
