"""Every settings error path: exit 2, one line per problem naming the key and the fix, never a traceback."""
import subprocess
import sys

import pytest

from infra.errors import UserError
from infra.settings import load_stack_file, settings_from_config

OK_ACCESS = "  kaito-aks:access: {sourceRanges: [203.0.113.0/24]}\n"

# (stack file body under `config:`, expected lines, in order; each a prefix of the actual line)
CASES = {
    "unknown-top-key": ("  kaito-aks:modles: []\n", ["kaito-aks:modles: unknown setting; did you mean 'models'?",
                                                    "kaito-aks:models: no models; add at least one"]),
    "no-models": (OK_ACCESS, ["kaito-aks:models: no models"]),
    "plain-text-secret": (OK_ACCESS + "  kaito-aks:models: [{name: a, model: phi-3-mini-4k-instruct}]\n  kaito-aks:hfToken: hf_abc\n",
                          ["kaito-aks:hfToken: is stored in plain text; remove it and run `pulumi config set --secret hfToken"]),
    "bad-name": (OK_ACCESS + "  kaito-aks:models: [{name: My_Model, model: phi-3-mini-4k-instruct}]\n",
                 ["kaito-aks:models[0].name: 'My_Model' must be a DNS label"]),
    "duplicate-name": (OK_ACCESS + "  kaito-aks:models: [{name: a, model: phi-3-mini-4k-instruct}, {name: a, model: phi-3-mini-4k-instruct}]\n",
                       ["kaito-aks:models[1].name: 'a' is already used by models[0]"]),
    "bad-runtime": (OK_ACCESS + "  kaito-aks:models: [{name: a, model: phi-3-mini-4k-instruct, runtime: huggingface}]\n",
                    ["kaito-aks:models[0].runtime: Input should be 'vllm' or 'transformers' (got 'huggingface')"]),
    "bad-replicas": (OK_ACCESS + "  kaito-aks:models: [{name: a, model: phi-3-mini-4k-instruct, replicas: 0}]\n",
                     ["kaito-aks:models[0].replicas: Input should be greater than or equal to 1 (got 0)"]),
    "bad-instance-type": (OK_ACCESS + "  kaito-aks:models: [{name: a, model: phi-3-mini-4k-instruct, instanceType: big}]\n",
                          ["kaito-aks:models[0].instanceType: 'big' is neither 'auto' nor an Azure VM size"]),
    "bad-dtype": (OK_ACCESS + "  kaito-aks:models: [{name: a, model: phi-3-mini-4k-instruct, dtype: fp8}]\n",
                  ["kaito-aks:models[0].dtype: Input should be 'auto', 'float16', 'bfloat16' or 'float32'"]),
    "bad-hf-id": (OK_ACCESS + "  kaito-aks:models: [{name: a, model: 'org/'}]\n",
                  ["kaito-aks:models[0].model: 'org/' is not a Hugging Face id"]),
    "typo-in-model": (OK_ACCESS + "  kaito-aks:models: [{name: a, model: phi-3-mini-4k-instruct, instancetype: x}]\n",
                      ["kaito-aks:models[0].instancetype: unknown setting; did you mean 'instanceType'?"]),
    "deprecated-preset": (OK_ACCESS + "  kaito-aks:kaito: {mode: helm}\n  kaito-aks:models: [{name: a, model: phi-3-mini-4k-instruct}, {name: b, model: phi-2}]\n",
                          ["kaito-aks:models[1].model: 'phi-2' is deprecated in KAITO 0.12.0; use phi-4-mini-instruct, or KAITO 0.7.2 or older (kaito.version)"]),
    "bad-mode": (OK_ACCESS + "  kaito-aks:kaito: {mode: operator}\n  kaito-aks:models: [{name: a, model: phi-3-mini-4k-instruct}]\n",
                 ["kaito-aks:kaito.mode: Input should be 'addon' or 'helm' (got 'operator')"]),
    "unknown-version": (OK_ACCESS + "  kaito-aks:kaito: {version: 0.99.0}\n  kaito-aks:models: [{name: a, model: phi-3-mini-4k-instruct}]\n",
                        ["kaito-aks:kaito.version: kaito-aks has no rules for KAITO 0.99.0; it knows 0.6.0, 0.6.1, 0.6.2, 0.7.0"]),
    "helm-version": (OK_ACCESS + "  kaito-aks:kaito: {mode: helm, version: 0.9.0}\n  kaito-aks:models: [{name: a, model: phi-3-mini-4k-instruct}]\n",
                     ["kaito-aks:kaito.version: kaito.mode=helm installs KAITO with bring-your-own nodes sized from GPU "
                      "Feature Discovery labels, which KAITO 0.9.0 doesn't support correctly; use one of 0.10.0, 0.11.0, 0.12.0"]),
    "bad-cidr": ("  kaito-aks:access: {sourceRanges: [10.0.0.300/8]}\n  kaito-aks:models: [{name: a, model: phi-3-mini-4k-instruct}]\n",
                 ["kaito-aks:access.sourceRanges: '10.0.0.300/8' is not an IP range"]),
    "world-open": ("  kaito-aks:access: {sourceRanges: [0.0.0.0/0]}\n  kaito-aks:models: [{name: a, model: phi-3-mini-4k-instruct}]\n",
                   ["kaito-aks:access.sourceRanges: together the ranges admit every IPv4 address (the same as 0.0.0.0/0)"]),
    "no-access": ("  kaito-aks:models: [{name: a, model: phi-3-mini-4k-instruct}]\n",
                  ["kaito-aks:access.sourceRanges: not set, so the endpoints would be open to the internet"]),
    "prod-needs-ranges": (OK_ACCESS + "  kaito-aks:production: true\n  kaito-aks:gateway: {enabled: false}\n"
                          "  kaito-aks:models: [{name: a, model: phi-3-mini-4k-instruct}]\n",
                          ["kaito-aks:cluster.apiServerAuthorizedIpRanges: required for a production stack"]),
    "gateway-without-api-keys": (OK_ACCESS + "  kaito-aks:gateway: {enabled: true}\n"
                                 "  kaito-aks:models: [{name: a, model: phi-3-mini-4k-instruct}]\n",
                                 ["kaito-aks:apiKeys: the gateway (on for production stacks, or gateway.enabled) "
                                  "needs API keys"]),
    "gated-without-token": (OK_ACCESS + "  kaito-aks:models: [{name: a, model: llama-3.1-8b-instruct}]\n",
                            ["kaito-aks:hfToken: meta-llama/Llama-3.1-8B-Instruct (kaito-aks:models[0]) is gated"]),
    "bad-budget": (OK_ACCESS + "  kaito-aks:budget: {maxUsdPerHour: -3}\n  kaito-aks:models: [{name: a, model: phi-3-mini-4k-instruct}]\n",
                   ["kaito-aks:budget.maxUsdPerHour: Input should be greater than 0 (got -3)"]),
    "over-budget": (OK_ACCESS + "  kaito-aks:budget: {maxUsdPerHour: 0.5}\n  kaito-aks:models: [{name: a, model: phi-3-mini-4k-instruct}]\n",
                    ["kaito-aks:budget.maxUsdPerHour: the plan costs $3.20/h"]),
    "unknown-model": (OK_ACCESS + "  kaito-aks:models: [{name: a, model: gpt-5}]\n",
                      ["kaito-aks:models[0].model: 'gpt-5' is not a KAITO 0.11.0 preset; or give a Hugging Face id (org/model)"]),
    "missing-facts": (OK_ACCESS + "  kaito-aks:kaito: {mode: helm}\n  kaito-aks:models: [{name: a, model: acme/x-7b}]\n",
                      ["kaito-aks:models[0].model: 'acme/x-7b' is not among KAITO 0.12.0's presets, so kaito-aks needs its facts"]),
    "models-not-a-list": (OK_ACCESS + "  kaito-aks:models: phi-2\n", ["kaito-aks:models: must be a list, e.g. [a, b] (or one `- item` line each)"]),
    "internal-unreachable-check": ("  kaito-aks:access: {internal: true}\n  kaito-aks:models: [{name: a, model: phi-3-mini-4k-instruct}]\n",
                                   ["kaito-aks:endpointCheck.url: the endpoints are internal"]),
    "azure-rbac-no-admins": (OK_ACCESS + "  kaito-aks:cluster: {azureRbac: true}\n  kaito-aks:models: [{name: a, model: phi-3-mini-4k-instruct}]\n",
                             ["kaito-aks:cluster.adminGroupObjectIds: required with azureRbac"]),
}


def run_plan(tmp_path, body: str):
    path = tmp_path / "Pulumi.t.yaml"
    path.write_text("config:\n" + body)
    return subprocess.run([sys.executable, "-m", "infra", "plan", "--stack", "t", "--file", str(path)],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("name", CASES)
def test_settings_error_path(tmp_path, name):
    body, expected = CASES[name]
    result = run_plan(tmp_path, body)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == len(expected), lines
    for line, prefix in zip(lines, expected, strict=True):
        assert line.startswith(prefix), (line, prefix)


@pytest.mark.parametrize("body,message", [
    ("config: [1, 2\n", "not valid YAML"),
    ("config: just-a-string\n", "`config:` must be a mapping"),
])
def test_unreadable_stack_file(tmp_path, body, message):
    path = tmp_path / "Pulumi.t.yaml"
    path.write_text(body)
    result = subprocess.run([sys.executable, "-m", "infra", "plan", "--stack", "t", "--file", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_missing_stack_file_lists_the_stacks():
    result = subprocess.run([sys.executable, "-m", "infra", "plan", "--stack", "nope"], capture_output=True, text=True)
    assert result.returncode == 2
    assert "no such stack file" in result.stderr and "dev, prod" in result.stderr and "Traceback" not in result.stderr


def test_bad_cli_arguments_exit_2():
    result = subprocess.run([sys.executable, "-m", "infra", "plan", "--format", "xml", "--stack", "dev"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "invalid choice" in result.stderr


def test_secret_values_are_never_needed_offline():
    """A `secure:` value counts as set; its ciphertext is not read or echoed."""
    settings = settings_from_config("dev", {"models": [{"name": "a", "model": "phi-2"}], "hfToken": "[secret]"},
                                    secret_keys={"hfToken"})
    assert settings.secrets_set == {"hfToken"}
    assert "[secret]" not in settings.model_dump_json()


def test_location_falls_back_to_azure_native_location(tmp_path):
    path = tmp_path / "Pulumi.t.yaml"
    path.write_text("config:\n  azure-native:location: westus3\n" + OK_ACCESS + "  kaito-aks:models: [{name: a, model: phi-2}]\n")
    assert load_stack_file("t", path).cluster.location == "westus3"


def test_in_process_errors_are_user_errors():
    with pytest.raises(UserError) as err:
        settings_from_config("dev", {"models": "x"}, set())
    assert all(line.startswith("kaito-aks:") for line in err.value.lines)
