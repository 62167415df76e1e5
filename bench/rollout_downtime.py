"""Downtime of a model change: rollout surge against recreate, from the deploy benchmark's sourced step durations.

For the production stack's critical-path model (the one whose replica takes longest to become ready), three changes:
a new GPU size (new pool), a new max-model-len (same pool, new Workspace), a new model on the same size. Each is
planned twice, with `rollout: surge` and `rollout: recreate`; the steps each rollout takes follow from what the plan
changes (the Workspace's identity, the pool's name):

- recreate: the Workspace is deleted first; a new size also replaces the pool delete-first; then pool, readiness
  gate, model load and endpoint check run while the model serves nothing.
- surge: the new pool, gate, Workspace and check run beside the old replica; the endpoint Service's selector moves
  after the check (one API call); the old Workspace and pool are deleted at the end. The overlap is paid twice.

    python -m bench.rollout_downtime      # from the repository root
"""
from __future__ import annotations

from bench.deploy_critical_path import DURATIONS, K8S_OBJECT, workspace_minutes
from infra.plan import build_plan
from infra.settings import load_stack_file

POOL_CREATE = DURATIONS["azure-native:containerservice:AgentPool"][0]
POOL_DELETE = (5.0, "AKS agent pool delete: VMSS scale-in and delete, ~5 min (estimate)")
WORKSPACE_DELETE = (1.0, "Workspace delete: KAITO finalizer, StatefulSet pods terminate (~1 min, estimate)")
GATE = (1.0, "node readiness gate: GPU Feature Discovery labels the new nodes (~1 min after Ready, estimate)")
CHECK = DURATIONS["pulumi-python:dynamic/kaito:EndpointCheck"][0]


def change_steps(old, new, rollout: str) -> tuple[float, float, list[str]]:
    """(downtime, duration of the change, steps) for replacing replica ``old`` by ``new``."""
    new_pool = old.pool_name != new.pool_name or old.instance_type != new.instance_type
    load = workspace_minutes(new.weights_gib or 0)
    build = (POOL_CREATE + GATE[0] if new_pool else 0.0) + load + CHECK
    if rollout == "recreate":
        teardown = WORKSPACE_DELETE[0] + (POOL_DELETE[0] if new_pool else 0.0)
        steps = ["delete Workspace"] + (["delete pool", "create pool", "gate"] if new_pool else []) + \
                ["load model", "check"]
        return teardown + build, teardown + build, steps
    switch = K8S_OBJECT
    cleanup = WORKSPACE_DELETE[0] + (POOL_DELETE[0] if new_pool else 0.0)
    steps = (["create pool", "gate"] if new_pool else []) + ["load model", "check", "move selector",
                                                             "delete old Workspace"] + (["delete old pool"] if new_pool else [])
    return switch, build + switch + cleanup, steps


def main() -> None:
    base = load_stack_file("prod")
    plan = build_plan(base)
    critical = max(plan.replicas, key=lambda r: workspace_minutes(r.weights_gib or 0))
    index = critical.model_index
    model = base.models[index]
    changes = {
        "new GPU size": {"instance_type": "Standard_NC24ads_A100_v4"},
        "new max-model-len": {"max_model_len": 8192},
        "new model, same size": {"model": "qwen2.5-coder-32b-instruct"},
    }
    print(f"critical-path model: {critical.model_name} ({critical.preset}, {critical.weights_gib:g} GiB, "
          f"{critical.nodes} x {critical.instance_type}, ${critical.usd_per_hour:.3f}/h)")
    print(f"step minutes: pool create {POOL_CREATE:.1f}, pool delete {POOL_DELETE[0]:.1f}, Workspace delete "
          f"{WORKSPACE_DELETE[0]:.1f}, gate {GATE[0]:.1f}, check {CHECK:.1f}, model load 5 + 0.14/GiB")
    print(f"\n{'change':24} {'rollout':9} {'downtime min':>12} {'change min':>10} {'overlap $':>9}  steps")
    for label, update in changes.items():
        for rollout in ("recreate", "surge"):
            models = list(base.models)
            models[index] = model.model_copy(update={**update, "rollout": rollout})
            old_models = list(base.models)
            old_models[index] = model.model_copy(update={"rollout": rollout})
            old = build_plan(base.model_copy(update={"models": tuple(old_models)})).replicas_of(model.name)[0]
            new = build_plan(base.model_copy(update={"models": tuple(models)})).replicas_of(model.name)[0]
            downtime, duration, steps = change_steps(old, new, rollout)
            overlap = (duration / 60) * old.usd_per_hour if rollout == "surge" else 0.0
            print(f"{label:24} {rollout:9} {downtime:12.1f} {duration:10.1f} {overlap:9.2f}  {' -> '.join(steps)}")


if __name__ == "__main__":
    main()
