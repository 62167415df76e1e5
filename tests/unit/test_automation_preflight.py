"""infra.automation's Azure preflight before preview/up, and its offline apiKeys check.

The decisions are the real ones (infra.cli_preflight.preflight -> infra.preflight.decide); only the Azure side is
injected through Deps: the credential, and the read of usages/SKUs/scale sets (tests/unit/azure_facts.py, the SDK's
model classes built from the REST API's examples). The Pulumi side is test_automation.py's fake.
"""
from __future__ import annotations

import json
import pathlib

import pytest
from azure.core.exceptions import ClientAuthenticationError, ServiceRequestError
from azure.identity import CredentialUnavailableError

from infra import automation, cli_preflight
from infra.automation import Deps
from infra.preflight import read_azure
from infra.settings import PROJECT_DIR
from tests.unit.azure_facts import A10, A100, DDS, SUB, FakeAzure
from tests.unit.test_automation import CREDENTIAL, HF, KUBECONFIG, FakeStack, Harness

# dev's A10 family has 10 vCPUs of quota; its phi3 pool needs 36 (the A100 family has room for the alternative)
SHORT_A10 = {A10: (0, 10), A100: (0, 100), DDS: (0, 100)}
QUOTA_PROBLEM = (
    f"quota: {A10} in eastus has 10 of 10 vCPUs free, the plan needs 36: request 26 more vCPUs for {A10} in eastus "
    "(a new limit of 36; Azure portal > Quotas > Compute), or set kaito-aks:models[0].instanceType: "
    "Standard_NC24ads_A100_v4 (1 x, $3.673/h, the plan's next alternative with quota free)")
PROD_KEYS = '["sk-prod-key-alpha-0001","sk-prod-key-beta-0002"]'
RAN_OK = {"ran": True, "skipped_because": None, "problems": []}


@pytest.fixture
def h(tmp_path: pathlib.Path) -> Harness:
    return Harness(tmp_path)


def short_quota(h: Harness) -> Harness:
    h.azure = FakeAzure(SHORT_A10)
    h.deps.azure_read = h.azure
    return h


def nothing_of_pulumi_ran(h: Harness) -> bool:
    return h.factory_calls == [] and h.api.opened == [] and h.stack.calls == []


# ---------------------------------------------------------------------------------------------------------
# When it runs

@pytest.mark.parametrize("op, extra", [("up", ("--yes",)), ("preview", ())])
def test_preflight_asks_azure_before_up_and_preview(h, op, extra):
    code, summary = h(op, "--stack", "dev", *extra)
    assert code == 0, summary["errors"]
    assert h.azure.calls == [("eastus", SUB, CREDENTIAL)]   # the stack's region, ARM_SUBSCRIPTION_ID
    assert summary["preflight"] == RAN_OK
    # what was checked is on stdout, before the engine's first line
    done = h.out.index("preflight: preflight of dev in eastus: Azure will accept every pool of the plan")
    assert f"preflight: quota {A10} in eastus: the plan needs 36 vCPUs, 200 of 200 free" in h.out[:done]
    assert done < h.out.index("Updating (dev)")
    assert op in h.stack.names()


@pytest.mark.parametrize("op, extra", [("destroy", ("--yes",)), ("refresh", ()), ("outputs", ())])
def test_preflight_does_not_run_for_destroy_refresh_or_outputs(op, extra, tmp_path):
    h = short_quota(Harness(tmp_path))       # a quota problem that would refuse up: these don't ask
    code, summary = h(op, "--stack", "dev", *extra)
    assert code == 0, summary["errors"]
    assert h.azure.calls == []
    assert summary["preflight"] == {"ran": False, "skipped_because": f"{op}: only preview and up run it",
                                    "problems": []}


def test_the_summary_says_it_was_not_reached_when_the_plan_refused_first(h):
    code, summary = h("up", "--stack", "dev", "--yes", "--config", 'budget={"maxUsdPerHour": 0.01}')
    assert code == 2 and h.azure.calls == []
    assert summary["preflight"] == {"ran": False, "skipped_because": None, "problems": []}


# ---------------------------------------------------------------------------------------------------------
# A problem refuses the operation before anything of Pulumi runs

@pytest.mark.parametrize("op, extra", [("up", ("--yes",)), ("preview", ())])
def test_a_quota_problem_refuses_before_any_pulumi_operation(tmp_path, op, extra):
    h = short_quota(Harness(tmp_path))
    code, summary = h(op, "--stack", "dev", *extra)
    assert (code, summary["result"]) == (2, "refused")
    assert nothing_of_pulumi_ran(h)          # no stack opened, no config set, no plugin, no up/preview
    assert summary["preflight"] == {"ran": True, "skipped_because": None, "problems": [QUOTA_PROBLEM]}
    assert summary["errors"] == [
        QUOTA_PROBLEM,
        f"{op} dev refused before creating anything: Azure would reject the node pools above; fix them (or pass "
        "--skip-preflight to try anyway)"]
    assert h.err == summary["errors"]        # the same lines on stderr, one per problem
    assert h.out == []                       # nothing "checked ok" printed for a refused run


def test_a_size_azure_does_not_offer_is_a_problem_naming_the_alternative(tmp_path):
    h = Harness(tmp_path)
    h.azure = FakeAzure(skus=[s for s in FakeAzure().skus if s.name != "Standard_NV36ads_A10_v5"])
    h.deps.azure_read = h.azure
    code, summary = h("up", "--stack", "dev", "--yes")
    assert code == 2 and nothing_of_pulumi_ran(h)
    (problem,) = summary["preflight"]["problems"]
    assert problem.startswith("size: Standard_NV36ads_A10_v5 (phi3) is not offered in eastus (the resource SKUs API "
                              "doesn't list it there): set kaito-aks:models[0].instanceType: Standard_NC24ads_A100_v4")


@pytest.mark.parametrize("skip, env, reason", [
    (("--skip-preflight",), {}, "--skip-preflight"),
    ((), {"KAITO_AKS_SKIP_AZURE_CHECK": "1"}, "KAITO_AKS_SKIP_AZURE_CHECK=1"),
])
def test_the_flag_and_the_env_var_skip_it_and_the_summary_says_so(tmp_path, skip, env, reason):
    h = short_quota(Harness(tmp_path))
    h.env.update(env)
    code, summary = h("up", "--stack", "dev", "--yes", *skip)
    assert code == 0, summary["errors"]
    assert h.azure.calls == [] and "up" in h.stack.names()
    assert summary["preflight"] == {"ran": False, "skipped_because": reason, "problems": []}
    assert not any(line.startswith("preflight: ") for line in h.out)


# ---------------------------------------------------------------------------------------------------------
# Azure can't be asked: one line with the fix, exit 2

class NoToken:
    """A credential that can't get a token, as azure-identity's chain raises it when nothing is signed in."""

    def __init__(self, error: Exception):
        self.error = error

    def get_token(self, *scopes, **kwargs):
        raise self.error


@pytest.mark.parametrize("error, what", [
    (CredentialUnavailableError("DefaultAzureCredential failed to retrieve a token from the included credentials"),
     "Azure credentials: none usable (no credential of the chain could get a token)"),
    (ClientAuthenticationError("AzureCliCredential: AADSTS700082: The refresh token has expired due to inactivity. "
                               "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.sig"),
     "Azure credentials: expired (AADSTS700082)"),
])
def test_no_usable_credentials_is_one_line_naming_the_fixes(tmp_path, error, what):
    """The real read_azure and SDK client: the credential fails before any request is sent."""
    h = Harness(tmp_path)
    h.deps.azure_read = read_azure
    h.deps.azure_credential = lambda env: NoToken(error)
    code, summary = h("up", "--stack", "dev", "--yes")
    assert (code, summary["result"]) == (2, "refused")
    (line,) = summary["errors"]
    assert line == (f"{what}; run `az login` (local), or in CI set ARM_USE_OIDC=true with ARM_CLIENT_ID, "
                    "ARM_TENANT_ID, ARM_SUBSCRIPTION_ID and give the job `permissions: id-token: write`; or pass "
                    "--skip-preflight to deploy without the quota check")
    assert h.err == [line] and "eyJ" not in h.printed and "Traceback" not in h.printed
    assert nothing_of_pulumi_ran(h)
    assert summary["preflight"] == {"ran": False, "skipped_because": None, "problems": []}


def test_azure_unreachable_is_one_line(tmp_path):
    h = Harness(tmp_path)

    def unreachable(*args, **kwargs):
        raise ServiceRequestError("Connection refused")

    h.deps.azure_read = unreachable
    code, summary = h("preview", "--stack", "dev")
    assert code == 2 and nothing_of_pulumi_ran(h)
    assert summary["errors"] == [
        "Azure Resource Manager (https://management.azure.com) can't be reached (ServiceRequestError); check the "
        "network or proxy (HTTPS_PROXY), then run preflight again (--skip-preflight skips the Azure preflight)"]


def test_the_subscription_comes_from_the_environment_the_config_or_az(tmp_path):
    h = Harness(tmp_path, az_ok=False)
    for name in ("ARM_USE_OIDC", "ARM_CLIENT_ID", "ARM_TENANT_ID", "ARM_SUBSCRIPTION_ID"):
        del h.env[name]
    h.env["ARM_USE_MSI"] = "true"            # credentials without a subscription id
    code, summary = h("preview", "--stack", "dev")
    assert code == 2 and h.azure.calls == [] and nothing_of_pulumi_ran(h)
    assert summary["errors"] == [
        "Azure subscription: not known; pass --config azure-native:subscriptionId=ID, set AZURE_SUBSCRIPTION_ID, or "
        "run `az login` (preflight then uses the Azure CLI's default subscription, as Pulumi's azure-native provider "
        "does) (--skip-preflight skips the Azure preflight)"]
    other = "11111111-2222-3333-4444-555555555555"
    assert h("preview", "--stack", "dev", "--config", f"azure-native:subscriptionId={other}")[0] == 0
    assert h.azure.calls[-1][1] == other
    h.az_ok = True                           # `az login`: the Azure CLI's default subscription
    assert h("preview", "--stack", "dev")[0] == 0
    assert h.azure.calls[-1][1] == SUB


def test_the_production_deps_are_the_real_azure_side():
    deps = Deps()
    assert deps.azure_read is read_azure and deps.azure_credential is cli_preflight.default_credential


# ---------------------------------------------------------------------------------------------------------
# kaito-aks:apiKeys, offline, when the plan has the gateway

def prod(h: Harness, keys: str, *extra: str) -> tuple[int, dict]:
    h.env["GATEWAY_KEYS"] = keys
    return h("preview", "--stack", "prod", "--secret-env", "hfToken=HF_TOKEN", "--secret-env",
             "apiKeys=GATEWAY_KEYS", *extra)


def test_good_api_keys_pass(h):
    code, summary = prod(h, PROD_KEYS)
    assert code == 0, summary["errors"]
    assert summary["preflight"] == RAN_OK


@pytest.mark.parametrize("keys, expected", [
    ('["short-key-1", "sk-long-enough-key-0002"]',
     "kaito-aks:apiKeys[0]: is shorter than 16 characters: too easy to guess; use a random key, e.g. python3 -c "
     "'import secrets; print(\"sk-\" + secrets.token_urlsafe(32))' (in --secret-env apiKeys; not echoed)"),
    ('{"key": "sk-secret-value-00000001"}',
     "kaito-aks:apiKeys: JSON an object, not a list of strings; write a JSON list of strings, e.g. "
     "'[\"sk-...\",\"sk-...\"]', or the keys separated by commas or newlines (in --secret-env apiKeys; not echoed)"),
    ("sk-first-key-000000001,sk-first-key-000000001",
     "kaito-aks:apiKeys[1]: the same key as kaito-aks:apiKeys[0]; remove the duplicate (in --secret-env apiKeys; "
     "not echoed)"),
])
def test_bad_api_keys_from_the_environment_are_refused_without_echoing(h, keys, expected):
    code, summary = prod(h, keys)
    assert (code, summary["result"]) == (2, "refused")
    assert summary["errors"] == [expected] and h.err == [expected]
    assert h.azure.calls == [] and nothing_of_pulumi_ran(h)   # offline, before Azure and Pulumi
    printed = json.dumps(summary) + h.printed
    for secret in ("short-key-1", "sk-long-enough-key-0002", "sk-secret-value-00000001", "sk-first-key-000000001"):
        assert secret not in printed


def test_the_gateway_without_any_api_keys_is_one_line(h):
    code, summary = h("preview", "--stack", "dev", "--config", 'gateway={"enabled": true}')
    assert code == 2 and nothing_of_pulumi_ran(h)
    # the offline plan refuses it, as `python -m infra plan` does
    assert summary["errors"][0].startswith(
        "kaito-aks:apiKeys: the gateway (on for production stacks, or gateway.enabled) needs API keys; "
        "`pulumi config set --secret apiKeys")
    assert len(summary["errors"]) == 2 and summary["errors"][1].startswith("preview dev refused: fix the lines above")


def test_api_keys_without_the_gateway_are_refused_as_unused_not_parsed(h):
    # dev has no gateway: keys would be checked by nothing, so clients would get in without one
    h.env["SHORT_KEYS"] = "k-12,zq-4567"
    code, summary = h("preview", "--stack", "dev", "--secret-env", "apiKeys=SHORT_KEYS")
    assert code == 2
    assert summary["errors"][0].startswith("kaito-aks:apiKeys: set, but nothing checks them: the gateway is off")
    assert "k-12" not in json.dumps(summary) and "k-12" not in h.printed


def test_an_encrypted_api_keys_in_the_stack_file_is_not_a_problem(h, tmp_path, monkeypatch):
    """Offline, a `secure:` value can't be decrypted: left to the program, which validates it during `up`."""
    text = (PROJECT_DIR / "Pulumi.prod.yaml").read_text()
    text = text.replace("v1:REPLACE-WITH-pulumi-config-set-secret-hfToken", "v1:ZXhhbXBsZQ==:AAAAhfEncrypted")
    text = text.replace("v1:REPLACE-WITH-pulumi-config-set-secret-apiKeys", "v1:ZXhhbXBsZQ==:AAAAkeysEncrypted")
    assert "REPLACE" not in text and "secure: v1:" in text
    (tmp_path / "Pulumi.prod.yaml").write_text(text)
    monkeypatch.setattr(automation, "stack_file", lambda stack, path=None: tmp_path / f"Pulumi.{stack}.yaml")
    code, summary = h("up", "--stack", "prod", "--yes")
    assert code == 0, summary["errors"]
    assert summary["preflight"] == RAN_OK and "up" in h.stack.names()
    assert HF not in h.printed


# ---------------------------------------------------------------------------------------------------------
# preview against an existing cluster: the KAITO release it runs (issue 11: the version gate's line, before `up`)

def test_preview_checks_the_release_an_existing_cluster_runs(h):
    code, summary = h("preview", "--stack", "dev")
    assert code == 0, summary["errors"]
    planned = summary["plan"]["kaito"]["version"]
    assert h.kaito_reads == [(KUBECONFIG, "addon")]
    assert summary["kaito_version"] == {"checked": True, "running": planned, "planned": planned,
                                        "note": f"image mcr.microsoft.com/aks/kaito/workspace:{planned} in kube-system"}


def test_preview_refuses_when_the_cluster_runs_another_release(h):
    h.running["addon"] = "0.12.1"
    code, summary = h("preview", "--stack", "dev")
    planned = summary["plan"]["kaito"]["version"]
    assert (code, summary["result"]) == (2, "refused")
    (line,) = summary["errors"]
    assert "0.12.1" in line and planned in line and "kaito.version" in line   # the gate's line: what runs, the fix
    assert "preview" not in h.stack.names()                                   # no preview of a plan it can't run
    assert "kube-secret-token-42" not in json.dumps(summary) + h.printed


def test_a_new_stack_has_no_cluster_to_check(tmp_path):
    h = Harness(tmp_path, stack=FakeStack(outputs={}))
    code, summary = h("preview", "--stack", "dev")
    assert code == 0 and h.kaito_reads == []
    assert summary["kaito_version"]["checked"] is False
    assert summary["kaito_version"]["note"].startswith("no cluster yet")


def test_a_cluster_that_cannot_be_read_is_a_note_not_a_refusal(h):
    h.running["addon"] = ConnectionRefusedError("kube-secret-token-42 refused")
    code, summary = h("preview", "--stack", "dev")
    assert code == 0 and summary["kaito_version"]["checked"] is False
    assert "could not be read (ConnectionRefusedError)" in summary["kaito_version"]["note"]
    assert any("could not be read" in line for line in h.err) and "kube-secret-token-42" not in h.printed


def test_up_leaves_the_check_to_its_own_version_gate(h):
    h.running["addon"] = "0.12.1"
    code, _ = h("up", "--stack", "dev", "--yes")
    assert code == 0 and h.kaito_reads == []


def test_a_webhook_from_the_environment_is_checked_offline_without_echoing(h):
    h.env["HOOK"] = "http://hooks.example.com/x?sig=SECRET-SIG-7"
    code, summary = h("preview", "--stack", "dev", "--secret-env", "alertWebhookUrl=HOOK")
    assert (code, summary["result"]) == (2, "refused") and nothing_of_pulumi_ran(h)
    assert summary["errors"] == ["kaito-aks:alertWebhookUrl: must be an https URL with a host (Azure Monitor calls it "
                                 "over TLS) (in --secret-env alertWebhookUrl; not echoed)"]
    assert "SECRET-SIG-7" not in json.dumps(summary) + h.printed
