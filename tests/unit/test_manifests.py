"""`plan --manifests`: every Workspace validates strictly against the real KAITO CRD of its version, every other
object against Kubernetes' own schema (kubernetes-validate), and the files apply in a sensible order."""
import copy
import pathlib
import subprocess
import sys

import jsonschema
import kubernetes_validate
import pytest
import yaml

from infra import manifests
from infra.plan import build_plan
from infra.settings import settings_from_config

CRDS = pathlib.Path(__file__).resolve().parents[1] / "data" / "kaito-crds"
K8S_VERSION = "1.33"
STACKS = {
    "dev": ("dev", None),
    "prod": ("prod", None),
    "dev-helm": ("dev", "  kaito-aks:kaito: {mode: helm}\n  kaito-aks:budget: {maxUsdPerHour: 5}\n"),
    "prod-addon": ("prod", "  kaito-aks:kaito: {mode: addon}\n  kaito-aks:budget: {maxUsdPerHour: 40}\n"),
}


def strict(schema):
    """Forbid fields the CRD doesn't declare: the API server would prune them silently."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if (node.get("type") == "object" and "properties" in node and "additionalProperties" not in node
                    and not node.get("x-kubernetes-preserve-unknown-fields")):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    schema["properties"]["metadata"] = {"type": "object"}
    return schema


def workspace_schema(version: str) -> dict:
    crd = yaml.safe_load((CRDS / f"v{version}" / "kaito.sh_workspaces.yaml").read_text())
    (v1beta1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1beta1"]
    assert v1beta1["served"] and v1beta1["storage"]
    return strict(v1beta1["schema"]["openAPIV3Schema"])


def write(tmp_path, variant) -> tuple[list[pathlib.Path], str]:
    stack, extra = STACKS[variant]
    file = None
    if extra:
        doc = (pathlib.Path(__file__).resolve().parents[2] / f"Pulumi.{stack}.yaml").read_text()
        doc = "\n".join(line for line in doc.splitlines() if not line.startswith(("  kaito-aks:kaito:", "  kaito-aks:budget:"))
                        and not line.startswith(("    mode:", "    version:", "    maxUsdPerHour:")))
        file = tmp_path / f"Pulumi.{stack}.yaml"
        file.write_text(doc + "\n" + extra)
    out = tmp_path / "manifests"
    args = [sys.executable, "-m", "infra", "plan", "--stack", stack, "--manifests", str(out), "--format", "json"]
    result = subprocess.run(args + (["--file", str(file)] if file else []), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    version = yaml.safe_load(result.stdout)["kaito"]["version"]
    return sorted(out.glob("*.yaml")), version


@pytest.mark.parametrize("variant", STACKS)
def test_every_object_is_valid(tmp_path, variant):
    files, version = write(tmp_path, variant)
    schema = workspace_schema(version)
    kinds = []
    for f in files:
        obj = yaml.safe_load(f.read_text())
        kinds.append(obj["kind"])
        if obj["apiVersion"].startswith("kaito.sh/"):
            assert obj["apiVersion"] == "kaito.sh/v1beta1"
            jsonschema.validate(obj, schema)
            assert "spec" not in obj
        else:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    assert kinds[0] == "Namespace" and "Workspace" in kinds
    # ConfigMaps and Secrets a Workspace references come before it (kubectl apply -f DIR applies in file order)
    for i, f in enumerate(files):
        obj = yaml.safe_load(f.read_text())
        if obj["kind"] == "Workspace" and "config" in obj["inference"]:
            earlier = [yaml.safe_load(g.read_text())["metadata"]["name"] for g in files[:i]]
            assert obj["inference"]["config"] in earlier


def test_the_checks_can_fail():
    """The validators really reject a misplaced spec and an unknown Service field."""
    schema = workspace_schema("0.12.0")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace", "metadata": {"name": "x"},
                             "spec": {"resource": {}}}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace", "metadata": {"name": "x"},
                             "resource": {"labelSelector": {}, "gpuCount": 2}}, schema)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"},
                                      "spec": {"ports": [{"port": 80}], "sourceRanges": []}}, K8S_VERSION, strict=True)


def test_secrets_are_placeholders_in_files(tmp_path):
    files, _ = write(tmp_path, "prod")
    secrets = [yaml.safe_load(f.read_text()) for f in files if "-secret-" in f.name]
    assert {s["metadata"]["name"] for s in secrets} == {"hf-token", "kaito-gateway-keys"}
    assert secrets[0]["stringData"] in ({"HF_TOKEN": "${HF_TOKEN}"}, {"api-keys.map": "${API_KEYS}"})


def test_v0_6_multi_node_workspace_needs_and_gets_its_config_map():
    values = {"models": [{"name": "big", "model": "llama-3.3-70b-instruct", "instanceType": "Standard_NC48ads_A100_v4"}],
              "access": {"sourceRanges": ["10.1.0.0/16"]}}
    plan = build_plan(settings_from_config("dev", values, {"hfToken"}))
    (r,) = plan.replicas
    ws = manifests.workspace(r)
    assert ws["resource"]["count"] == 2 and ws["inference"]["config"] == "big-inference"
    cm = manifests.inference_config_map(r)
    vllm = yaml.safe_load(cm["data"]["inference_config.yaml"])["vllm"]
    assert vllm["max-model-len"] == r.max_model_len > 2048
    svc = manifests.endpoint_service(r, plan)
    assert svc["spec"]["selector"] == {"kaito.sh/workspace": "big", "statefulset.kubernetes.io/pod-name": "big-0"}
