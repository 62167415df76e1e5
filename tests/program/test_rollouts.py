"""Surge rollouts under mocks: the program run twice, before and after a change (issue 12's three changes: a new
Azure size, a new maxModelLen, a new model), on the gateway stack (prod) and on a direct-LoadBalancer stack.

What a real `pulumi up` does with two runs' registrations follows from the URNs and options compared here: a
resource whose (type, name) is new is created, one that is gone is deleted at the end of the update (after every
create and update), one with the same (type, name) is updated in place unless its options ask for a replacement.
"""
from __future__ import annotations

import copy

import pytest
import yaml
from harness import ROOT, expected_plan, run_program

WS = "kubernetes:kaito.sh/v1beta1:Workspace"
SVC = "kubernetes:core/v1:Service"
POOL = "azure-native:containerservice:AgentPool"
CHECK = "pulumi-python:dynamic/kaito:EndpointCheck"
GATEWAY_CONF = "kubernetes:core/v1:ConfigMap"
GATEWAY = "kubernetes:apps/v1:Deployment"

PROD_MODELS = yaml.safe_load((ROOT / "Pulumi.prod.yaml").read_text())["config"]["kaito-aks:models"]
DIRECT = {"gateway": {"enabled": False}, "models": [
    {"name": "phi3", "model": "microsoft/phi-3-mini-4k-instruct", "rollout": "surge", "maxModelLen": 4096}]}


def changed(models: list[dict], name: str, **fields) -> list[dict]:
    out = copy.deepcopy(models)
    next(m for m in out if m["name"] == name).update(fields)
    return out


# (stack, settings before, settings after, the model that changes)
CHANGES = {
    "prod-size": ("prod", {}, {"models": changed(PROD_MODELS, "llama-8b", instanceType="Standard_NC24ads_A100_v4")},
                  "llama-8b"),
    "prod-max-model-len": ("prod", {}, {"models": changed(PROD_MODELS, "llama-8b", maxModelLen=4096)}, "llama-8b"),
    "prod-model": ("prod", {}, {"models": changed(PROD_MODELS, "llama-8b", model="microsoft/Phi-4-mini-instruct")},
                   "llama-8b"),
    "direct-size": ("dev", DIRECT, {**DIRECT, "models": changed(DIRECT["models"], "phi3",
                                                                   instanceType="Standard_NC24ads_A100_v4")}, "phi3"),
    "direct-max-model-len": ("dev", DIRECT, {**DIRECT, "models": changed(DIRECT["models"], "phi3", maxModelLen=2048)},
                             "phi3"),
    "direct-model": ("dev", DIRECT, {**DIRECT, "models": changed(DIRECT["models"], "phi3",
                                                                    model="microsoft/Phi-3.5-mini-instruct")}, "phi3"),
}


def run_change(name: str):
    stack, before, after, model = CHANGES[name]
    return [(run_program(stack, overrides), expected_plan(stack, overrides)) for overrides in (before, after)], model


@pytest.fixture(scope="module", params=sorted(CHANGES))
def rollout(request):
    return run_change(request.param)


@pytest.fixture(scope="module", params=sorted(k for k in CHANGES if CHANGES[k][0] == "prod"))
def gateway_rollout(request):
    """The changes on the stack with the gateway (prod)."""
    return run_change(request.param)


def keys(run) -> set[tuple[str, str]]:
    return {(r.typ, r.name) for r in run.resources}


def deps_of(run, typ: str, name: str) -> set[str]:
    return {d._name for d in run.opts(typ, name).depends_on or []}


def test_the_changed_replicas_get_new_names_and_the_others_keep_theirs(rollout):
    ((old, old_plan), (new, new_plan)), model = rollout
    for a, b in zip(old_plan.replicas, new_plan.replicas, strict=True):
        assert a.rollout == b.rollout == "surge" and a.slot == b.slot
        if a.model_name == model:
            assert a.workspace != b.workspace and a.identity != b.identity
            assert (WS, f"{b.workspace}-workspace") in keys(new) - keys(old)     # created beside...
            assert (WS, f"{a.workspace}-workspace") in keys(old) - keys(new)     # ...the old one, deleted at the end
            assert new.named(WS, f"{b.workspace}-workspace").inputs["metadata"]["name"] == b.workspace
            if b.pool_owner == "kaito-aks":
                assert a.pool_name != b.pool_name
                assert (POOL, f"{b.pool_name}-pool") in keys(new) - keys(old)
        else:
            assert a.workspace == b.workspace and (WS, f"{a.workspace}-workspace") in keys(old) & keys(new)


def test_nothing_is_replaced_delete_first(rollout):
    ((_, _), (new, new_plan)), _ = rollout
    for (typ, name), opts in new.options.items():
        assert opts.delete_before_replace is not True, (typ, name)
    assert all(r.rollout == "surge" for r in new_plan.replicas)


def test_traffic_moves_only_after_the_new_replicas_check(rollout):
    ((old, _), (new, new_plan)), model = rollout
    for r in new_plan.replicas_of(model):
        ready = f"{r.workspace}-ready"
        check = new.named(CHECK, ready).inputs
        # the full check of the new Workspace's pod, through a port-forward with the stack's kubeconfig (a secret)
        assert check["pod_target"]["selector"] == {"kaito.sh/workspace": r.workspace}
        assert check["pod_target"]["port"] == 5000 and check["expected_model"] == r.served_model
        assert check["kubeconfig"].get("4dabf18193072939515e22adb298388d")
        assert f"{r.workspace}-workspace" in deps_of(new, CHECK, ready)
        # the slot's Service (the gateway's upstream, or the public LoadBalancer) moves only after that check
        service = f"{r.slot}-endpoint"
        assert ready in deps_of(new, SVC, service)
        assert new.named(SVC, service).inputs["spec"]["selector"]["kaito.sh/workspace"] == r.workspace
        assert old.named(SVC, service).inputs["spec"]["selector"]["kaito.sh/workspace"] != r.workspace
        # the public check runs after the switch, through the same slot
        assert service in deps_of(new, CHECK, f"{r.slot}-check")


def test_the_endpoint_service_is_updated_in_place(rollout):
    ((old, old_plan), (new, _)), model = rollout
    for r in old_plan.replicas_of(model):
        name = f"{r.slot}-endpoint"
        before, after = old.named(SVC, name).inputs, new.named(SVC, name).inputs
        assert before["metadata"]["name"] == after["metadata"]["name"] == name       # same object, same URN
        opts = new.opts(SVC, name)
        assert not opts.replace_on_changes and opts.delete_before_replace is not True
        # only fields Kubernetes changes in place differ: the selector and the labels saying which Workspace
        spec_before, spec_after = dict(before["spec"]), dict(after["spec"])
        assert spec_before.pop("selector") != spec_after.pop("selector")
        assert spec_before == spec_after             # type, ports, source ranges: the address is kept
        annotations = lambda s: s["metadata"].get("annotations")
        assert annotations(before) == annotations(after)   # the DNS label and LB settings too
        assert {k: v for k, v in before["metadata"]["labels"].items() if k != "kaito-aks/workspace"} == \
            {k: v for k, v in after["metadata"]["labels"].items() if k != "kaito-aks/workspace"}


def test_the_gateway_follows_the_checked_replica(gateway_rollout):
    ((_, _), (new, new_plan)), model = gateway_rollout
    assert new_plan.settings.gateway_enabled
    services = {f"{r.slot}-endpoint" for r in new_plan.replicas_of(model)}
    # the gateway's configuration and pods wait for the slot Services, which wait for the new replicas' checks
    assert services <= deps_of(new, GATEWAY_CONF, "gateway-conf")
    assert services <= deps_of(new, GATEWAY, "gateway")
    conf = new.named(GATEWAY_CONF, "gateway-conf").inputs["data"]["nginx.conf"]
    for r in new_plan.replicas_of(model):
        assert f"{r.slot}-endpoint." in conf and r.workspace not in conf   # routes name the slot, never a Workspace
