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

from infra.plan import build_plan
from infra.render import model_objects
from infra.settings import settings_from_config

CRDS = pathlib.Path(__file__).resolve().parents[1] / "data" / "kaito-crds"
K8S_VERSION = "1.33"
STACKS = {
    "dev": ("dev", None),
    "prod": ("prod", None),
    "dev-helm": ("dev", "  kaito-aks:kaito: {mode: helm}\n  kaito-aks:budget: {maxUsdPerHour: 5}\n"),
    "prod-addon": ("prod", "  kaito-aks:kaito: {mode: addon}\n  kaito-aks:budget: {maxUsdPerHour: 40}\n"),
    # every KAITO line the add-on may run, against that line's own CRD
    **{f"prod-addon-{v}": ("prod", f"  kaito-aks:kaito: {{mode: addon, version: {v}}}\n  kaito-aks:budget: {{maxUsdPerHour: 40}}\n")
       for v in ("0.6.2", "0.7.2", "0.8.1", "0.9.4", "0.10.0", "0.12.0")},
    "prod-helm-0.10.0": ("prod", "  kaito-aks:kaito: {mode: helm, version: 0.10.0}\n  kaito-aks:budget: {maxUsdPerHour: 40}\n"),
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
    line = ".".join(version.split(".")[:2])        # one CRD per release line (patches don't change it)
    crd = yaml.safe_load((CRDS / f"v{line}.0" / "kaito.sh_workspaces.yaml").read_text())
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
        elif obj["apiVersion"] == "azmonitoring.coreos.com/v1":     # Azure managed Prometheus' own CRDs
            from tests.unit.test_monitoring import crd_schema
            jsonschema.validate(obj, crd_schema(obj["kind"]))
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


def test_secrets_are_placeholders_in_files_and_the_keys_secret_is_not_written(tmp_path):
    files, _ = write(tmp_path, "prod")
    secrets = [yaml.safe_load(f.read_text()) for f in files if "-secret-" in f.name]
    assert [s["metadata"]["name"] for s in secrets] == ["hf-token"]
    assert secrets[0]["stringData"] == {"HF_TOKEN": "${HF_TOKEN}"}
    assert not any("${API_KEYS}" in f.read_text() for f in files)   # no placeholder for nginx's internal format


def test_v0_6_multi_node_workspace_needs_and_gets_its_config_map():
    values = {"models": [{"name": "big", "model": "llama-3.3-70b-instruct", "instanceType": "Standard_NC48ads_A100_v4"}],
              "access": {"sourceRanges": ["10.1.0.0/16"]}, "kaito": {"mode": "addon", "version": "0.6.0"}}
    plan = build_plan(settings_from_config("dev", values, {"hfToken"}))
    (r,) = plan.replicas
    ws = model_objects.workspace(r)
    assert ws["resource"]["count"] == 2 and ws["inference"]["config"] == f"big-inference-{r.config_hash}"
    cm = model_objects.inference_config_map(r)
    assert cm["metadata"]["name"] == ws["inference"]["config"]
    config = yaml.safe_load(cm["data"]["inference_config.yaml"])
    vllm = config["vllm"]
    assert vllm["max-model-len"] == r.max_model_len > 2048
    # KAITO 0.6's own template keys survive (a Workspace's ConfigMap replaces the template whole)
    assert config["max_probe_steps"] == 6 and vllm["swap-space"] == 4 and vllm["cpu-offload-gb"] == 0
    svc = model_objects.endpoint_service(r, plan)
    assert svc["spec"]["selector"] == {"kaito.sh/workspace": "big", "statefulset.kubernetes.io/pod-name": "big-0"}


# --- the inference config and the Workspace's identity (what KAITO can't change in place) ---------------------

def prod_plan(**model_overrides):
    model = {"name": "llama-8b", "model": "llama-3.1-8b-instruct", "maxModelLen": 8192, **model_overrides}
    values = {"models": [model], "kaito": {"mode": "helm"}, "access": {"sourceRanges": ["203.0.113.0/24"]},
              "cluster": {"apiServerAuthorizedIpRanges": ["203.0.113.0/24"]}}
    return build_plan(settings_from_config("prod", values, {"hfToken", "apiKeys"}))


def test_the_inference_config_is_kaitos_template_for_the_version_with_the_plans_flags():
    (r,) = prod_plan().replicas
    config = yaml.safe_load(model_objects.inference_config_map(r)["data"]["inference_config.yaml"])
    # KAITO v0.12.0's template keys, plus max-model-len and A10's gpu-memory-utilization (KAITO's own A10 value)
    assert config == {"kv_cache_cpu_memory_utilization": 0.5,
                      "vllm": {"cpu-offload-gb": 0, "max-model-len": 8192, "gpu-memory-utilization": 0.82}}


def test_plan_json_shows_the_gfd_labels_the_config_map_and_its_keys():
    plan = prod_plan()
    (entry,) = plan.to_json()["models"]
    (r,) = plan.replicas
    assert entry["node_labels"]["nvidia.com/gpu.product"] == "NVIDIA-A10-24Q"
    assert entry["node_labels"]["nvidia.com/gpu.memory"] == "24512"
    assert entry["node_labels"]["nvidia.com/gpu.count"] == "1"
    assert entry["inference_config_map"] == f"{r.workspace}-inference-{r.config_hash}" and len(r.config_hash) == 8
    assert entry["inference_config"]["kv_cache_cpu_memory_utilization"] == 0.5
    assert entry["identity"] == r.identity


def test_a_gpu_without_headroom_and_no_flags_gets_no_config_map():
    (r,) = prod_plan(maxModelLen=None, instanceType="Standard_NC24ads_A100_v4").replicas
    assert r.inference_config is None and model_objects.inference_config_map(r) is None
    assert "config" not in model_objects.workspace(r)["inference"]


def test_a_changed_context_renames_the_config_map_and_changes_the_workspace():
    (a,), (b,) = prod_plan().replicas, prod_plan(maxModelLen=4096).replicas
    assert a.config_hash != b.config_hash and a.identity != b.identity
    wa, wb = model_objects.workspace(a), model_objects.workspace(b)
    assert wa["inference"]["config"] != wb["inference"]["config"]          # `inference` changes: replaced
    assert wa["metadata"]["annotations"]["kaito-aks/identity"] != wb["metadata"]["annotations"]["kaito-aks/identity"]


def test_a_changed_size_and_node_count_change_the_identity_though_the_workspace_names_neither():
    # KAITO 0.12 under byo: no count, no instanceType in the Workspace; the pool goes from 1 to 2 nodes
    # rollout: recreate keeps the Workspace's name, so only the identity annotation can force its replacement
    (one,) = prod_plan(model="llama-3.3-70b-instruct", name="big", maxModelLen=4096, rollout="recreate",
                       instanceType="Standard_NC80adis_H100_v5").replicas
    (two,) = prod_plan(model="llama-3.3-70b-instruct", name="big", maxModelLen=4096, rollout="recreate",
                       instanceType="Standard_NC40ads_H100_v5").replicas
    assert one.workspace == two.workspace == "big"
    assert (one.nodes, two.nodes) == (1, 2)
    assert model_objects.workspace(one)["resource"] == model_objects.workspace(two)["resource"]
    assert one.identity != two.identity
