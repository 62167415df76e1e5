"""The plan CLI on the project's own stacks: the table, and the documented JSON shape."""
import json
import pathlib
import re
import subprocess
import sys

import pytest

from infra.plan import build_plan, pool_name
from infra.settings import load_stack_file

REPLICA_KEYS = {"name", "replica", "model", "preset", "runtime", "instance_type", "nodes", "gpus_per_node",
                "max_model_len", "gpu_memory_required_gib", "gpu_memory_available_gib", "usd_per_hour", "reason",
                "alternatives", "pool_owner", "node_labels", "inference_config_map", "inference_config", "identity"}


def cli(*args):
    return subprocess.run([sys.executable, "-m", "infra", "plan", *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_json_has_the_documented_shape(stack):
    result = cli("--stack", stack, "--format", "json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert {"stack", "kaito", "models", "usd_per_hour", "usd_per_month", "quota_vcpus", "upgrades",
            "price_source"} <= set(doc)
    assert set(doc["kaito"]) == {"mode", "version", "version_source"}
    assert doc["models"], "at least one replica"
    for replica in doc["models"]:
        assert set(replica) >= REPLICA_KEYS
        for alt in replica["alternatives"]:
            assert set(alt) == {"instance_type", "nodes", "usd_per_hour"}
    assert doc["usd_per_hour"] == pytest.approx(sum(r["usd_per_hour"] for r in doc["models"]))
    assert doc["usd_per_month"] == pytest.approx(doc["usd_per_hour"] * 730, abs=0.01)


def test_prod_plan_is_what_the_stack_says():
    plan = build_plan(load_stack_file("prod"))
    assert (plan.kaito_mode, plan.kaito_version) == ("helm", "0.12.0")
    assert [r.slot for r in plan.replicas] == ["llama-8b", "llama-8b-r1", "llama-70b"]
    # production rolls out by surge: each Workspace carries the hash of what KAITO can't change in place
    assert all(r.rollout == "surge" and r.workspace == f"{r.slot}-{r.identity[:6]}" for r in plan.replicas)
    assert all(r.gated and r.reference_hf_token for r in plan.replicas)
    assert plan.usd_per_hour <= plan.settings.budget.max_usd_per_hour
    assert plan.replicas[2].instance_type == "Standard_NC80adis_H100_v5" and plan.replicas[2].nodes == 1


def test_dev_plan_is_small_ungated_and_on_the_addon_at_the_assumed_version_with_its_source():
    plan = build_plan(load_stack_file("dev"))
    assert (plan.kaito_mode, plan.kaito_version) == ("addon", "0.11.0")
    assert plan.kaito_version_source.startswith("assumed: KAITO maintainers: the add-on runs about one release behind "
                                                "upstream (MicrosoftDocs/azure-aks-docs PR #448")
    assert len(plan.replicas) == 1 and not plan.replicas[0].gated
    # the T4 is out on 0.11 (its vLLM's FlashInfer attention crashes there): the A10 is the cheapest that runs
    assert plan.replicas[0].instance_type == "Standard_NV36ads_A10_v5"
    assert plan.usd_per_hour <= plan.settings.budget.max_usd_per_hour
    doc = json.loads(cli("--stack", "dev", "--format", "json").stdout)
    assert doc["kaito"]["version_source"] == plan.kaito_version_source
    assert "KAITO version 0.11.0 is assumed: KAITO maintainers" in cli("--stack", "dev").stdout


def test_table_lists_every_replica_total_reasons_and_quota():
    result = cli("--stack", "prod")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for needle in ("llama-8b ", "llama-8b-r1", "llama-70b", "Standard_NC80adis_H100_v5", "Total: $20.360/hour",
                   "$14,862.80/month", "Why:", "GPU quota needed in eastus", "NCads_H100_v5: 80 vCPUs"):
        assert needle in out, needle


def test_pool_names_are_valid_stable_and_distinct():
    names = {pool_name(f"model-{i}") for i in range(500)} | {pool_name("llama-8b"), pool_name("llama-8b-r1")}
    assert len(names) == 502
    for name in names:
        assert len(name) <= 12 and name[0].isalpha() and name.isalnum() and name == name.lower()
    assert pool_name("llama-8b") == pool_name("llama-8b")


def _json_keys(doc: dict) -> set[str]:
    models = doc["models"]
    return (set(doc) | set(doc["kaito"]) | set(doc["upgrades"]) | set(doc["surge"]) | {k for m in models for k in m}
            | {k for m in models for a in m["alternatives"] for k in a})


def test_the_readme_documents_exactly_the_plan_json_fields():
    """README "Plan JSON (stable)" is the contract: every field the plan prints is documented there, and every
    field documented there is printed (values the table names, such as `addon`, are not fields)."""
    readme = (pathlib.Path(__file__).resolve().parents[2] / "README.md").read_text()
    table = readme[readme.index("### Plan JSON (stable)"):readme.index("### How sizes are chosen")]
    documented = {tail or head for head, tail in re.findall(r"`([a-z_]+)(?:\.([a-z_]+))?(?:\[\])?`", table)}
    values = {"addon", "helm", "eastus", "recreate", "location"}      # `cluster.location`: a setting, not a field
    for stack in ("dev", "prod"):
        keys = _json_keys(build_plan(load_stack_file(stack)).to_json())
        assert keys <= documented, keys - documented
    assert documented - values == _json_keys(build_plan(load_stack_file("prod")).to_json())
