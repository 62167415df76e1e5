"""infra.automation without the Pulumi CLI: the Automation API boundary is a fake injected through Deps.

Covers the plan refusal, config/secret mapping, redaction, the prod confirm rule, the environment checks (CLI,
backend, Azure credentials), exit codes and the JSON summary's shape (the Azure preflight: test_automation_preflight.py;
here Azure is a fake with ample quota); one test runs the real module in a subprocess to show
the missing-CLI line (this machine has no Pulumi CLI).
"""
from __future__ import annotations

import importlib.metadata
import json
import os
import pathlib
import re
import subprocess
import sys
from typing import Any

import pytest

from infra import automation
from infra.automation import CLI_MISSING, Deps, OperationFailedError, StackOutput
from infra.catalog import load_catalog
from infra.errors import UserError
from infra.settings import PROJECT_DIR
from infra.version_gate import RunningKaito
from tests.unit.azure_facts import SUB, FakeAzure

HF = "hf_FAKE0token0for0tests0only0xyz"
KEYS = '["sk-alpha-0001-key","sk-beta-0002-key"]'
KUBECONFIG = "apiVersion: v1\nusers:\n- name: admin\n  user: {token: kube-secret-token-42}\n"
SUMMARY_KEYS = {"schema_version", "stack", "operation", "result", "errors", "resource_changes", "duration_seconds",
                "outputs", "endpoints", "endpoint_checks", "plan", "preflight", "kaito_version"}
CREDENTIAL = object()   # what the fake Azure credential factory returns
CHECK = {"served_model": "phi-3-mini-4k-instruct", "latency_ms": 812.0, "ttft_ms": 95.5, "tokens_per_s": 41.2,
         "checked_at": "2026-11-27T03:00:00Z"}


def dev_outputs(**extra: StackOutput) -> dict[str, StackOutput]:
    """What components/platform.py exports for dev: no gateway, one URL per replica."""
    return {
        "models": StackOutput({"phi3": {"endpoint": ["http://20.1.2.3/v1"], "served_model": "phi-3-mini-4k-instruct",
                                        "preset": "phi-3-mini-4k-instruct", "instance_type": "Standard_NC6s_v3",
                                        "nodes_per_replica": 1, "replicas": 1, "usd_per_hour": 1.2,
                                        "checks": [CHECK]}}),
        "cluster_name": StackOutput("kaito-dev"),
        "resource_group": StackOutput("rg-kaito-dev"),
        "gateway_url": StackOutput(None),
        "kaito": StackOutput({"mode": "addon", "version": "0.6.0"}),
        "usd_per_hour": StackOutput(1.2),
        "kubeconfig": StackOutput(KUBECONFIG, secret=True),
        **extra,
    }


class FakeStack:
    def __init__(self, outputs: dict[str, StackOutput] | None = None, changes: dict | None = None,
                 lines: tuple[str, ...] = ("Updating (dev)", "+ kaito-aks:index:KaitoPlatform kaito create"),
                 fail: Exception | None = None):
        self.calls: list[tuple] = []
        self._outputs = outputs if outputs is not None else dev_outputs()
        self._changes = changes if changes is not None else {"create": 12, "same": 3}
        self._lines = lines
        self._fail = fail

    def set_config(self, key: str, value: str, *, secret: bool) -> None:
        self.calls.append(("set_config", key, value, secret))

    def install_plugin(self, name: str, version: str) -> None:
        self.calls.append(("install_plugin", name, version))

    def _op(self, name: str, on_output, on_error) -> dict:
        self.calls.append((name,))
        for line in self._lines:
            on_output(line + "\n")
        if self._fail is not None:
            on_error("error: something broke\n")
            raise self._fail
        return self._changes

    def up(self, on_output, on_error):
        return self._op("up", on_output, on_error)

    def preview(self, on_output, on_error):
        return self._op("preview", on_output, on_error)

    def destroy(self, on_output, on_error):
        return self._op("destroy", on_output, on_error)

    def refresh(self, on_output, on_error):
        return self._op("refresh", on_output, on_error)

    def outputs(self):
        self.calls.append(("outputs",))
        return self._outputs

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]


class FakeApi:
    def __init__(self, stack: FakeStack):
        self.stack = stack
        self.opened: list[tuple[str, str]] = []

    def create_or_select_stack(self, stack_name: str) -> FakeStack:
        self.opened.append(("create_or_select", stack_name))
        return self.stack

    def select_stack(self, stack_name: str) -> FakeStack:
        self.opened.append(("select", stack_name))
        return self.stack


class Harness:
    """Runs the driver with fakes; records stdout/stderr lines and whether the API was built."""

    def __init__(self, tmp_path: pathlib.Path, stack: FakeStack | None = None, env: dict[str, str] | None = None,
                 pulumi: str | None = "/opt/pulumi/bin/pulumi", az_ok: bool = False):
        self.stack = stack or FakeStack()
        self.api = FakeApi(self.stack)
        self.factory_calls: list[pathlib.Path] = []
        self.out: list[str] = []
        self.err: list[str] = []
        self.az_calls: list[list[str]] = []
        self.env = {"PATH": "/usr/bin", "HOME": str(tmp_path), "PULUMI_BACKEND_URL": "file:///tmp/state",
                    "PULUMI_CONFIG_PASSPHRASE": "pass-phrase-1", "ARM_USE_OIDC": "true", "ARM_CLIENT_ID": "cid",
                    "ARM_TENANT_ID": "tid", "ARM_SUBSCRIPTION_ID": SUB,
                    "ACTIONS_ID_TOKEN_REQUEST_URL": "https://token.invalid", "HF_TOKEN": HF, "API_KEYS": KEYS}
        if env is not None:
            self.env = env
        self.pulumi = pulumi
        self.az_ok = az_ok
        self.tmp = tmp_path
        self.azure = FakeAzure()
        ticks = iter(range(0, 10_000, 7))
        # the KAITO release an existing cluster runs (preview reads it): by default what each mode's plan assumes
        catalog = load_catalog()
        assert catalog.addon_default is not None
        self.running = {"addon": catalog.addon_default.version, "helm": catalog.default_helm_version}
        self.kaito_reads: list[tuple[str, str]] = []
        self.deps = Deps(api_factory=self._factory, env=self.env, which=self._which, run=self._run,
                         out=self.out.append, err=self.err.append, clock=lambda: float(next(ticks)),
                         azure_credential=lambda env: CREDENTIAL, azure_read=self.azure, read_kaito=self._read_kaito)

    def _read_kaito(self, kubeconfig: str, mode: str) -> RunningKaito:
        self.kaito_reads.append((kubeconfig, mode))
        version = self.running[mode]
        if isinstance(version, Exception):
            raise version
        return RunningKaito(version, ".".join(version.split(".")[:2]),
                            f"image mcr.microsoft.com/aks/kaito/workspace:{version} in kube-system")

    def _factory(self, pulumi: pathlib.Path) -> FakeApi:
        self.factory_calls.append(pulumi)
        return self.api

    def _which(self, name: str, path: str | None = None) -> str | None:
        if name == "pulumi":
            return self.pulumi
        if name == "az":
            return "/usr/bin/az" if self.az_ok is not None else None
        return None

    def _run(self, cmd, **kwargs) -> subprocess.CompletedProcess:
        self.az_calls.append(list(cmd))
        default_subscription = f"{SUB}\n" if "--query" in cmd else ""   # `az account show --query id -o tsv`
        return subprocess.CompletedProcess(cmd, 0 if self.az_ok else 1, default_subscription if self.az_ok else "",
                                           "" if self.az_ok else "Please run 'az login'")

    def __call__(self, *argv: str) -> tuple[int, dict[str, Any]]:
        out = self.tmp / "summary.json"
        code = automation.run([*argv, "--json-out", str(out)], self.deps)
        return code, json.loads(out.read_text())

    @property
    def printed(self) -> str:
        return "\n".join(self.out + self.err)

    @property
    def engine_out(self) -> list[str]:
        """stdout without the preflight's lines (what was checked, printed before the operation runs)."""
        return [line for line in self.out if not line.startswith("preflight: ")]


@pytest.fixture
def h(tmp_path: pathlib.Path) -> Harness:
    return Harness(tmp_path)


# ---------------------------------------------------------------------------------------------------------
# The offline plan gate

def test_over_budget_is_refused_with_the_plans_line_before_the_api_is_touched(h):
    code, summary = h("up", "--stack", "dev", "--yes", "--config", 'budget={"maxUsdPerHour": 0.01}')
    assert code == 2
    assert summary["result"] == "refused"
    assert summary["errors"][0].startswith("kaito-aks:budget.maxUsdPerHour: the plan costs $")
    assert "over the budget of $0.01/h" in summary["errors"][0]
    assert summary["errors"][-1].startswith("up dev refused: fix the lines above first")
    assert h.factory_calls == [] and h.stack.calls == []
    assert h.err == summary["errors"]  # the same lines on stderr, one per problem


def test_bad_settings_are_refused_for_preview_too(h):
    code, summary = h("preview", "--stack", "dev", "--config", 'models=[{"name": "Bad_Name", "model": "phi-2"}]')
    assert code == 2 and summary["result"] == "refused"
    assert any(e.startswith("kaito-aks:models[0].name: 'Bad_Name' must be a DNS label") for e in summary["errors"])
    assert h.factory_calls == []


def test_missing_stack_file_is_refused_with_the_plans_line(h):
    code, summary = h("up", "--stack", "nosuchstack", "--yes")
    assert code == 2
    assert "no such stack file" in summary["errors"][0]


def test_destroy_and_refresh_do_not_need_a_valid_plan(h, monkeypatch):
    monkeypatch.setattr(automation, "offline_plan", lambda request: pytest.fail("plan must not run"))
    assert h("destroy", "--stack", "dev", "--yes")[0] == 0
    assert h("refresh", "--stack", "dev")[0] == 0


def test_prod_placeholders_are_refused_unless_the_secrets_come_from_the_environment(h):
    code, summary = h("preview", "--stack", "prod")
    assert code == 2
    assert [e.split(":")[1] for e in summary["errors"][:2]] == ["hfToken", "apiKeys"]
    assert "still holds the placeholder; pass --secret-env hfToken=ENVVAR" in summary["errors"][0]
    h.env["PROD_KEYS"] = '["sk-prod-key-alpha-0001","sk-prod-key-beta-0002"]'   # the gateway's: 16+ characters
    code, summary = h("preview", "--stack", "prod", "--secret-env", "hfToken=HF_TOKEN",
                      "--secret-env", "apiKeys=PROD_KEYS")
    assert code == 0, summary["errors"]
    assert summary["plan"]["kaito"] == {"mode": "helm", "version": "0.12.0"}


def test_config_changes_are_what_the_plan_sees(h):
    """A --config that fixes the budget is applied before the plan: the same stack passes."""
    assert h("preview", "--stack", "dev", "--config", 'budget={"maxUsdPerHour": 0.01}')[0] == 2
    code, summary = h("preview", "--stack", "dev", "--config", 'budget={"maxUsdPerHour": 50}')
    assert code == 0 and summary["plan"]["usd_per_hour"] > 0


# ---------------------------------------------------------------------------------------------------------
# Config and secrets

def test_config_and_secret_mapping(h):
    code, _ = h("up", "--stack", "dev", "--yes",
                "--config", 'budget={"maxUsdPerHour": 50}',
                "--config", "azure-native:location=eastus",
                "--config", "namespace=llm-two",
                "--config", "production=false",
                "--config", 'gateway={"enabled": true}',
                "--secret-env", "hfToken=HF_TOKEN",
                "--secret-env", "kaito-aks:apiKeys=API_KEYS")
    assert code == 0
    sets = [c[1:] for c in h.stack.calls if c[0] == "set_config"]
    assert sets == [
        ("kaito-aks:budget", '{"maxUsdPerHour":50}', False),     # structured: a JSON string, path=False
        ("azure-native:location", "eastus", False),             # namespaced keys are kept
        ("kaito-aks:namespace", "llm-two", False),              # bare keys mean kaito-aks:KEY
        ("kaito-aks:production", "false", False),               # scalars stay as written
        ("kaito-aks:gateway", '{"enabled":true}', False),
        ("kaito-aks:hfToken", HF, True),
        ("kaito-aks:apiKeys", KEYS, True),
    ]
    assert h.api.opened == [("create_or_select", "dev")]
    assert HF not in h.printed and "sk-alpha-0001" not in h.printed


@pytest.mark.parametrize("args, expected", [
    (("--config", "hfToken=hf_plain"), "--config kaito-aks:hfToken: is a secret; pass it as --secret-env hfToken=ENVVAR"),
    (("--secret-env", "models=HF_TOKEN"), "--secret-env kaito-aks:models: not a secret setting"),
    (("--secret-env", "hfToken=NOT_SET_ANYWHERE"), "--secret-env hfToken=NOT_SET_ANYWHERE: environment variable NOT_SET_ANYWHERE is not set or empty"),
    (("--secret-env", "hfToken"), "--secret-env hfToken: write KEY=ENVVAR"),
    (("--config", "novalue"), "--config #1 (not echoed): write KEY=VALUE"),   # it may be a value
    (("--config", "budget"), "--config budget: write KEY=VALUE"),                     # a known key: echoed
    (("--config", "bad key=1"), "--config #1 (not echoed): not a config key"),
    (("--config", "namespace=a", "--config", "namespace=b"), "--config/--secret-env: kaito-aks:namespace given more than once"),
])
def test_bad_config_arguments_are_refused_with_one_line(h, args, expected):
    code, summary = h("preview", "--stack", "dev", *args)
    assert code == 2 and summary["result"] == "refused"
    assert len(summary["errors"]) == 1 and summary["errors"][0].startswith(expected), summary["errors"]
    assert h.factory_calls == []


def test_outputs_sets_no_config(h):
    code, summary = h("outputs", "--stack", "dev", "--config", "namespace=x")
    assert code == 2 and "outputs reads the stack" in summary["errors"][0]


# ---------------------------------------------------------------------------------------------------------
# Redaction

def test_secrets_are_redacted_everywhere(h):
    leaky = dev_outputs(
        note=StackOutput(f"token={HF} key=sk-beta-0002-key kube=kube-secret-token-42"),
        nested=StackOutput({"list": [f"x{HF}x"], HF: 1}),
        apiKeys=StackOutput(["sk-gamma-0003"], secret=True),
        echo=StackOutput("sk-gamma-0003 leaked"),
    )
    h.stack = FakeStack(outputs=leaky, lines=(f"diag: using {HF}", "sk-alpha-0001-key in a log line"))
    h.api.stack = h.stack
    code, summary = h("up", "--stack", "dev", "--yes", "--config", 'gateway={"enabled": true}',
                      "--secret-env", "hfToken=HF_TOKEN", "--secret-env", "apiKeys=API_KEYS")
    assert code == 0, summary["errors"]
    text = json.dumps(summary) + h.printed
    for secret in (HF, "sk-alpha-0001", "sk-beta-0002", "kube-secret-token-42", "sk-gamma-0003", KUBECONFIG):
        assert secret not in text, secret
    assert summary["outputs"]["kubeconfig"] == "[secret]"
    assert summary["outputs"]["apiKeys"] == "[secret]"
    assert summary["outputs"]["note"] == "token=[secret] key=[secret] kube=[secret]"
    assert summary["outputs"]["nested"] == {"list": ["x[secret]x"], "[secret]": 1}
    assert summary["outputs"]["echo"] == "[secret] leaked"
    assert h.engine_out[:2] == ["diag: using [secret]", "[secret] in a log line"]


def test_errors_are_redacted(h):
    h.stack = FakeStack(fail=OperationFailedError(f"provider said: bad token {HF}"))
    h.api.stack = h.stack
    code, summary = h("up", "--stack", "dev", "--yes", "--secret-env", "hfToken=HF_TOKEN")
    assert code == 1
    assert summary["errors"] == ["up dev failed: provider said: bad token [secret]"]
    assert HF not in h.printed


def test_redactor_ignores_tiny_pieces_and_splits_key_lists():
    r = automation.Redactor(["ab,longer-key-1,short1", '{"k": ["json-leaf-1"]}'])
    # pieces of --secret-env values from 4 characters (MIN_INPUT_PIECE); "ab" is too short to search for
    assert r.text("ab longer-key-1 json-leaf-1 short1") == "ab [secret] [secret] [secret]"
    # pieces of secret *outputs* (not chosen by us) only from 8, and never a mapping key ("k", "apiVersion")
    out = automation.Redactor()
    out.add('{"apiVersion": ["json-leaf-1", "short1"]}')
    assert out.text("apiVersion json-leaf-1 short1") == "apiVersion [secret] short1"


# ---------------------------------------------------------------------------------------------------------
# The prod confirm rule and --yes

@pytest.mark.parametrize("stack", ["prod", "prod-eu", "acme/prod"])
@pytest.mark.parametrize("extra, why", [
    ((), "needs --yes --confirm"),
    (("--yes",), "needs --yes --confirm"),
    (("--confirm", "PROD"), "does not match"),
    (("--yes", "--confirm", "dev"), "does not match"),
])
def test_destroying_prod_needs_yes_and_confirm(h, stack, extra, why):
    code, summary = h("destroy", "--stack", stack, *extra)
    assert code == 2 and summary["result"] == "refused"
    assert why in summary["errors"][0]
    assert summary["errors"][0].endswith(f"needs --yes --confirm {stack.rsplit('/', 1)[-1]}")
    assert h.factory_calls == []


def test_destroying_prod_with_yes_and_confirm_runs(h):
    code, summary = h("destroy", "--stack", "prod", "--yes", "--confirm", "prod")
    assert code == 0, summary["errors"]
    assert h.api.opened == [("select", "prod")]
    assert "destroy" in h.stack.names()
    assert summary["plan"] is None and summary["outputs"] == {}


@pytest.mark.parametrize("op", ["up", "destroy"])
def test_up_and_destroy_need_yes(h, op):
    code, summary = h(op, "--stack", "dev")
    assert code == 2 and "pass --yes" in summary["errors"][0]
    assert h.factory_calls == []


# ---------------------------------------------------------------------------------------------------------
# Preflight: CLI, backend, Azure credentials

def test_missing_cli_is_one_line_and_exit_2(tmp_path):
    h = Harness(tmp_path, pulumi=None)
    code, summary = h("preview", "--stack", "dev")
    assert code == 2 and summary["result"] == "refused"
    assert summary["errors"] == [CLI_MISSING]
    assert "curl -fsSL https://get.pulumi.com | sh" in CLI_MISSING and "pulumi/actions@v7" in CLI_MISSING
    assert h.factory_calls == []


def test_cli_in_pulumi_home_is_found_without_path(tmp_path):
    binary = tmp_path / ".pulumi" / "bin" / "pulumi"
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    h = Harness(tmp_path, pulumi=None)
    assert h("preview", "--stack", "dev")[0] == 0
    assert h.factory_calls == [binary]


def test_missing_cli_end_to_end_without_traceback(tmp_path):
    """The real module, in a subprocess, on this machine (no Pulumi CLI): the documented line, exit 2."""
    env = {"PATH": os.path.dirname(sys.executable), "HOME": str(tmp_path), "PYTHONPATH": str(PROJECT_DIR)}
    done = subprocess.run([sys.executable, "-m", "infra.automation", "preview", "--stack", "dev"], cwd=PROJECT_DIR,
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [CLI_MISSING]
    assert "Traceback" not in done.stderr


def test_production_boundary_reports_missing_cli(tmp_path):
    """PulumiAutomation itself turns pulumi.automation's FileNotFoundError into the same line."""
    with pytest.raises(UserError) as err:
        automation.PulumiAutomation(tmp_path / "bin" / "pulumi")
    assert err.value.lines == [CLI_MISSING] and err.value.exit_code == 2


def test_no_backend_and_no_passphrase(tmp_path):
    h = Harness(tmp_path)
    del h.env["PULUMI_BACKEND_URL"]
    code, summary = h("preview", "--stack", "dev")
    assert code == 2 and summary["errors"][0].startswith("pulumi backend: none configured; set PULUMI_BACKEND_URL")
    h.env["PULUMI_BACKEND_URL"] = "azblob://state?storage_account=acct"
    del h.env["PULUMI_CONFIG_PASSPHRASE"]
    code, summary = h("outputs", "--stack", "dev")
    assert code == 2 and summary["errors"][0].startswith("PULUMI_CONFIG_PASSPHRASE: not set")
    h.env["PULUMI_CONFIG_PASSPHRASE_FILE"] = "/run/secrets/pp"
    assert h("outputs", "--stack", "dev")[0] == 0


def test_pulumi_login_counts_as_a_backend(tmp_path):
    h = Harness(tmp_path)
    del h.env["PULUMI_BACKEND_URL"]
    (tmp_path / ".pulumi").mkdir()
    (tmp_path / ".pulumi" / "credentials.json").write_text(json.dumps({"current": "https://api.pulumi.com"}))
    assert h("preview", "--stack", "dev")[0] == 0


AZURE_VARS = ("ARM_USE_OIDC", "ARM_CLIENT_ID", "ARM_TENANT_ID", "ARM_SUBSCRIPTION_ID", "ACTIONS_ID_TOKEN_REQUEST_URL")


def no_azure(h: Harness) -> Harness:
    for k in AZURE_VARS:
        h.env.pop(k, None)
    return h


def test_no_azure_credentials_is_one_line(tmp_path):
    h = no_azure(Harness(tmp_path, az_ok=False))
    code, summary = h("preview", "--stack", "dev")
    assert code == 2
    assert summary["errors"] == [summary["errors"][0]] and summary["errors"][0].startswith(
        "Azure credentials: none found; run `az login`")
    assert h.az_calls == [["/usr/bin/az", "account", "show", "--output", "none"]]
    assert h.factory_calls == []


def test_logged_in_azure_cli_is_enough(tmp_path):
    assert no_azure(Harness(tmp_path, az_ok=True))("preview", "--stack", "dev")[0] == 0


def test_outputs_needs_no_azure_credentials(tmp_path):
    assert no_azure(Harness(tmp_path, az_ok=False))("outputs", "--stack", "dev")[0] == 0


def test_skip_azure_check(tmp_path):
    h = no_azure(Harness(tmp_path, az_ok=False))
    h.env["KAITO_AKS_SKIP_AZURE_CHECK"] = "1"
    assert h("preview", "--stack", "dev")[0] == 0 and h.az_calls == []


@pytest.mark.parametrize("drop, expected", [
    ("ARM_TENANT_ID", "Azure OIDC: ARM_USE_OIDC is set but ARM_TENANT_ID not"),
    ("ACTIONS_ID_TOKEN_REQUEST_URL", "Azure OIDC: no token to exchange"),
])
def test_incomplete_oidc(tmp_path, drop, expected):
    h = Harness(tmp_path)
    del h.env[drop]
    code, summary = h("up", "--stack", "dev", "--yes")
    assert code == 2 and summary["errors"][0].startswith(expected)


def test_client_secret_credentials(tmp_path):
    h = no_azure(Harness(tmp_path))
    h.env.update(ARM_CLIENT_SECRET="s3cr3t-value", ARM_CLIENT_ID="c", ARM_TENANT_ID="t")
    code, summary = h("refresh", "--stack", "dev")
    assert code == 2 and summary["errors"] == ["Azure service principal: ARM_SUBSCRIPTION_ID not set"]
    h.env["ARM_SUBSCRIPTION_ID"] = "s"
    assert h("refresh", "--stack", "dev")[0] == 0


# ---------------------------------------------------------------------------------------------------------
# Operations, streaming, exit codes, the summary

def test_up_streams_installs_plugins_and_summarises(h):
    code, summary = h("up", "--stack", "dev", "--yes")
    assert code == 0
    assert h.engine_out[:2] == ["Updating (dev)", "+ kaito-aks:index:KaitoPlatform kaito create"]
    plugins = [c[1:] for c in h.stack.calls if c[0] == "install_plugin"]
    assert plugins == [("azure-native", "v" + importlib.metadata.version("pulumi-azure-native")),
                       ("kubernetes", "v" + importlib.metadata.version("pulumi-kubernetes"))]
    assert h.stack.names()[-2:] == ["up", "outputs"]
    assert set(summary) == SUMMARY_KEYS
    assert summary["schema_version"] == 1
    assert (summary["stack"], summary["operation"], summary["result"], summary["errors"]) == ("dev", "up", "succeeded", [])
    assert summary["resource_changes"] == {"create": 12, "same": 3}
    assert summary["duration_seconds"] == 7.0
    assert summary["plan"] == {"usd_per_hour": summary["plan"]["usd_per_hour"], "usd_per_month": summary["plan"]["usd_per_month"],
                               "kaito": {"mode": "addon", "version": summary["plan"]["kaito"]["version"]}}
    assert re.fullmatch(r"\d+\.\d+\.\d+", summary["plan"]["kaito"]["version"])  # the add-on's, from the catalog
    assert summary["endpoints"] == [{"model": "phi3", "url": "http://20.1.2.3/v1", "served_model": "phi-3-mini-4k-instruct",
                                     "runtime": "vllm", "kaito_version": "0.6.0", "api_key_required": False}]
    assert summary["endpoint_checks"] == {"phi3": [CHECK]}
    assert summary["outputs"]["cluster_name"] == "kaito-dev" and summary["outputs"]["kubeconfig"] == "[secret]"
    assert h.err[-1].startswith("up dev: succeeded in 7.0 s (create 12, same 3); 1 endpoint(s)")


def test_preview_summary(h):
    code, summary = h("preview", "--stack", "dev")
    assert code == 0
    assert summary["resource_changes"] == {"create": 12, "same": 3}
    assert summary["outputs"] == {} and summary["endpoints"] == [] and summary["plan"]["usd_per_hour"] > 0
    # the stack's outputs are read only for the cluster's kubeconfig (the KAITO version check), before the preview
    assert h.stack.names()[0] == "outputs" and h.stack.names().count("outputs") == 1


def test_engine_failure_is_exit_1_with_a_failed_summary(h):
    h.stack = FakeStack(fail=OperationFailedError("azure-native:containerservice:AgentPool gphi3: QuotaExceeded"))
    h.api.stack = h.stack
    code, summary = h("up", "--stack", "dev", "--yes")
    assert code == 1
    assert summary["result"] == "failed"
    assert summary["errors"] == ["up dev failed: azure-native:containerservice:AgentPool gphi3: QuotaExceeded"]
    assert set(summary) == SUMMARY_KEYS
    assert "error: something broke" in h.err  # the engine's stderr is streamed too


def test_locked_stack_is_a_failure_not_a_refusal(h):
    h.stack = FakeStack(fail=UserError("stack dev: locked by another update", exit_code=1))
    h.api.stack = h.stack
    code, summary = h("up", "--stack", "dev", "--yes")
    assert (code, summary["result"]) == (1, "failed")


def test_outputs_prints_endpoints_for_scripts(h):
    gw = dev_outputs(
        gateway_url=StackOutput("https://gw.example"),
        kaito=StackOutput({"mode": "helm", "version": "0.12.0"}),
        models=StackOutput({
            "llama-8b": {"endpoint": "https://gw.example/llama-8b/v1", "served_model": "llama-3.1-8b-instruct", "checks": []},
            "a-small": {"endpoint": ["http://10.0.0.1/v1", "http://10.0.0.2/v1"], "served_model": "phi-4", "checks": [CHECK]},
        }))
    h.stack = FakeStack(outputs=gw)
    h.api.stack = h.stack
    code, summary = h("outputs", "--stack", "dev")
    assert code == 0
    assert h.out == ["a-small\thttp://10.0.0.1/v1\tphi-4\tvllm\t0.12.0",
                     "a-small\thttp://10.0.0.2/v1\tphi-4\tvllm\t0.12.0",
                     "llama-8b\thttps://gw.example/llama-8b/v1\tllama-3.1-8b-instruct\tvllm\t0.12.0"]
    assert h.api.opened == [("select", "dev")]
    assert h.stack.names() == ["outputs"]  # no plugins, no engine run
    assert all(e["api_key_required"] for e in summary["endpoints"])
    assert summary["endpoint_checks"] == {"a-small": [CHECK], "llama-8b": []}
    assert h.err == []  # stdout is only the endpoint lines


def test_json_out_unwritable_is_exit_2(h, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    code = automation.run(["preview", "--stack", "dev", "--json-out", str(blocker / "x" / "s.json")], h.deps)
    assert code == 2 and h.err[-1].startswith(f"--json-out {blocker / 'x' / 's.json'}: cannot write")


def test_bad_stack_name(h):
    code, summary = h("preview", "--stack", "../etc")
    assert code == 2 and summary["errors"][0].startswith("--stack: '../etc' is not a stack name")


# ---------------------------------------------------------------------------------------------------------
# The production boundary's error translation, with pulumi.automation's real error classes

def test_command_errors_become_one_line_failures():
    from pulumi import automation as auto
    from pulumi.automation._cmd import CommandResult

    def boom(cls):
        def fn():
            raise cls(CommandResult(stdout="Updating (dev)\n", stderr="warning: x\nerror: update failed: quota\n", code=255))
        return fn

    with pytest.raises(OperationFailedError) as failed:
        automation.call_translating_errors(boom(auto.CommandError), auto, "dev")
    assert str(failed.value) == "update failed: quota"
    with pytest.raises(UserError) as locked:
        automation.call_translating_errors(boom(auto.ConcurrentUpdateError), auto, "dev")
    assert locked.value.exit_code == 1 and locked.value.lines[0].startswith("stack dev: locked by another update")


def test_first_error_line_fallbacks():
    assert automation.first_error_line("\n code: 1\n stdout: \n stderr: boom happened\n") == "boom happened"
    assert automation.first_error_line("") == "the pulumi command failed"


def test_an_unexpected_error_is_exit_1_with_one_redacted_line_and_a_summary(h):
    class Broken(FakeStack):
        def up(self, on_output, on_error):
            raise RuntimeError(f"summary event never found near {HF}")

    h.stack = Broken()
    h.api.stack = h.stack
    code, summary = h("up", "--stack", "dev", "--yes", "--secret-env", "hfToken=HF_TOKEN")
    assert code == 1 and summary["result"] == "failed"
    (line,) = summary["errors"]
    assert line.startswith("up dev: unexpected RuntimeError at tests/unit/test_automation.py:")
    assert line.endswith("(a bug in kaito-aks; please report it): summary event never found near [secret]")
    assert h.err == [line] and "Traceback" not in h.printed and HF not in h.printed


# ---------------------------------------------------------------------------------------------------------
# The production boundary (PulumiAutomation over the real pulumi.automation SDK) against a fake `pulumi`
# executable: proves the SDK calls, their arguments and the result/error mapping, without the real CLI.
# The fake says it is 3.200.0 so that the SDK uses its file event log (newer CLIs stream events over gRPC).

FAKE_PULUMI = r'''#!__PYTHON__
import json, os, sys
args = [a for a in sys.argv[1:] if a != "--non-interactive"]  # a global flag, wherever the SDK puts it
with open(os.environ["FAKE_PULUMI_LOG"], "a") as f:
    f.write(json.dumps(args) + "\n")
last = os.path.join(os.environ["FAKE_PULUMI_STATE"], "last-op")
stack = args[args.index("--stack") + 1] if "--stack" in args else None
if args[:1] == ["version"]:
    print("v3.200.0")
elif args[:2] == ["stack", "select"]:
    if stack in ("missing", "new"):
        sys.stderr.write(f"error: no stack named '{stack}' found\n")
        sys.exit(255)
elif args[:2] == ["stack", "init"]:
    pass
elif args[:1] in (["up"], ["preview"], ["destroy"], ["refresh"]):
    print(f"Updating ({stack})")
    print("    + kaito-aks:index:KaitoPlatform kaito create")
    if "--event-log" in args:
        with open(args[args.index("--event-log") + 1], "a") as log:
            log.write(json.dumps({"sequence": 1, "timestamp": 1, "summaryEvent": {
                "maybeCorrupt": False, "durationSeconds": 3, "resourceChanges": {"create": 2, "same": 1},
                "policyPacks": {}}}) + "\n")
            log.write(json.dumps({"sequence": 2, "timestamp": 2, "cancelEvent": {}}) + "\n")
    open(last, "w").write(args[0])
    if os.environ.get("FAKE_PULUMI_FAIL") == args[0]:
        sys.stderr.write("error: update failed: azure-native:containerservice:AgentPool gphi3: QuotaExceeded\n")
        sys.exit(255)
    if os.environ.get("FAKE_PULUMI_LOCKED") == args[0]:
        sys.stderr.write("error: the stack is currently locked by 1 lock(s)\n")
        sys.exit(255)
elif args[:3] == ["stack", "output", "--json"]:
    secret = "--show-secrets" in args
    print(json.dumps({"cluster_name": "kaito-dev",
                      "kubeconfig": "apiVersion: v1\nusers: [{user: {token: tok-0123456789}}]" if secret else "[secret]"}))
elif args[:3] == ["stack", "history", "--json"]:
    kind = open(last).read()
    print(json.dumps([{"kind": kind, "startTime": "2026-11-27T03:00:00.000Z", "endTime": "2026-11-27T03:10:00.000Z",
                       "message": "", "environment": {}, "config": {}, "result": "succeeded", "version": 7,
                       "resourceChanges": {"create": 2, "same": 1}}]))
elif args[:2] in (["config", "set"], ["plugin", "install"]):
    pass
else:
    sys.stderr.write(f"fake pulumi: unexpected {args}\n")
    sys.exit(2)
'''


@pytest.fixture
def fake_pulumi(tmp_path, monkeypatch) -> tuple[pathlib.Path, pathlib.Path]:
    """(pulumi executable, work dir); the calls it got are in fake_calls(tmp_path)."""
    binary = tmp_path / "pulumi-home" / "bin" / "pulumi"
    binary.parent.mkdir(parents=True)
    binary.write_text(FAKE_PULUMI.replace("__PYTHON__", sys.executable))
    binary.chmod(0o755)
    work = tmp_path / "project"
    work.mkdir()
    (work / "Pulumi.yaml").write_text((PROJECT_DIR / "Pulumi.yaml").read_text())
    monkeypatch.setenv("FAKE_PULUMI_LOG", str(tmp_path / "calls.jsonl"))
    monkeypatch.setenv("FAKE_PULUMI_STATE", str(tmp_path))
    monkeypatch.delenv("PULUMI_AUTOMATION_API_SKIP_VERSION_CHECK", raising=False)
    return binary, work


def fake_calls(tmp_path) -> list[list[str]]:
    return [json.loads(line) for line in (tmp_path / "calls.jsonl").read_text().splitlines()]


def test_production_boundary_drives_the_sdk(fake_pulumi, tmp_path):
    binary, work = fake_pulumi
    api = automation.PulumiAutomation(binary, work_dir=work)
    api.create_or_select_stack("new")
    stack = api.create_or_select_stack("dev")
    stack.set_config("kaito-aks:hfToken", "hf_value", secret=True)
    stack.set_config("kaito-aks:budget", '{"maxUsdPerHour":3}', secret=False)
    stack.install_plugin("azure-native", "v3.29.0")
    lines: list[str] = []
    assert stack.up(lines.append, lines.append) == {"create": 2, "same": 1}
    assert any("KaitoPlatform" in line for line in lines)  # streamed
    assert stack.preview(lines.append, lines.append) == {"create": 2, "same": 1}
    assert stack.refresh(lines.append, lines.append) == {"create": 2, "same": 1}
    assert stack.destroy(lines.append, lines.append) == {"create": 2, "same": 1}
    outputs = stack.outputs()
    assert outputs["cluster_name"] == StackOutput("kaito-dev", False)
    assert outputs["kubeconfig"].secret and "tok-0123456789" in outputs["kubeconfig"].value
    calls = fake_calls(tmp_path)
    assert calls[:4] == [["version"], ["stack", "select", "--stack", "new"], ["stack", "init", "new"],
                         ["stack", "select", "--stack", "dev"]]  # created when missing, selected otherwise
    assert ["config", "set", "kaito-aks:hfToken", "--secret", "--stack", "dev", "--", "hf_value"] in calls
    assert ["config", "set", "kaito-aks:budget", "--plaintext", "--stack", "dev", "--",
            '{"maxUsdPerHour":3}'] in calls
    assert ["plugin", "install", "resource", "azure-native", "v3.29.0"] in calls
    up = next(c for c in calls if c[0] == "up")
    assert "--yes" in up and "--color" in up and up[up.index("--color") + 1] == "never"
    history = [c for c in calls if c[:2] == ["stack", "history"]]
    assert history and all("--show-secrets" not in c for c in history)  # config secrets stay out of summaries


def test_production_boundary_maps_errors(fake_pulumi, tmp_path, monkeypatch):
    binary, work = fake_pulumi
    api = automation.PulumiAutomation(binary, work_dir=work)
    with pytest.raises(UserError) as missing:
        api.select_stack("missing")
    assert missing.value.exit_code == 2 and missing.value.lines[0].startswith("stack missing: not found in the backend")
    stack = api.select_stack("dev")
    monkeypatch.setenv("FAKE_PULUMI_FAIL", "up")
    with pytest.raises(OperationFailedError) as failed:
        stack.up(print, print)
    assert str(failed.value) == "update failed: azure-native:containerservice:AgentPool gphi3: QuotaExceeded"
    monkeypatch.setenv("FAKE_PULUMI_LOCKED", "destroy")
    with pytest.raises(UserError) as locked:
        stack.destroy(print, print)
    assert locked.value.exit_code == 1 and "locked by another update" in locked.value.lines[0]


def test_the_whole_driver_over_the_fake_cli(fake_pulumi, tmp_path):
    """run() with the production api_factory: the JSON summary of an `up`, secrets redacted."""
    binary, work = fake_pulumi
    h = Harness(tmp_path, pulumi=str(binary))
    h.deps.api_factory = lambda pulumi: automation.PulumiAutomation(pulumi, work_dir=work)
    code, summary = h("up", "--stack", "dev", "--yes", "--secret-env", "hfToken=HF_TOKEN")
    assert code == 0, summary["errors"]
    assert summary["resource_changes"] == {"create": 2, "same": 1}
    assert summary["outputs"] == {"cluster_name": "kaito-dev", "kubeconfig": "[secret]"}
    assert "tok-0123456789" not in json.dumps(summary) + h.printed
    assert [c[:3] for c in fake_calls(tmp_path) if c[0] == "plugin"] == [["plugin", "install", "resource"]] * 2
