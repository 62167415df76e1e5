"""Run the real Pulumi program (__main__.py) under pulumi.runtime.set_mocks (tests and bench/ use this).

``run_program(stack, overrides)`` loads ``Pulumi.<stack>.yaml``, applies overrides to its ``kaito-aks:``
settings, feeds the config to the Pulumi runtime exactly as the CLI would (objects as JSON strings, secret keys
marked secret), runs ``__main__.py`` with ``preview=False`` and returns every registered resource.
"""
from __future__ import annotations

import base64
import json
import pathlib
import runpy
from dataclasses import dataclass, field

import pulumi
import yaml
from pulumi.runtime.mocks import MockMonitor

ROOT = pathlib.Path(__file__).resolve().parents[2]
HF_TOKEN = "hf_TEST_TOKEN_do_not_leak_7f3a"
API_KEYS = ["sk-test-KEY-one-9c1e", "sk-test-KEY-two-44d0"]
KUBECONFIG = "apiVersion: v1\nkind: Config\nusers: [{name: u, user: {token: KUBE-SECRET-TOKEN-5b2}}]\n"


@dataclass
class Registered:
    typ: str
    name: str
    inputs: dict
    provider: str
    outputs: dict = field(default_factory=dict)
    urn: str = ""
    parent: str = ""
    dependencies: set = field(default_factory=set)   # URNs: depends_on plus the resources its inputs came from


class RecordingMonitor(MockMonitor):
    """The mock engine, also keeping each registration's URN, parent and dependencies (the resource graph)."""

    def RegisterResource(self, request):
        response = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            deps = set(request.dependencies)
            for prop in request.propertyDependencies.values():
                deps.update(prop.urns)
            # registrations run concurrently: find this one's record by type and name (unique per stack)
            record = next(r for r in reversed(self.mocks.resources)
                          if r.typ == request.type and r.name == request.name)
            record.urn, record.parent, record.dependencies = response.urn, request.parent, deps
        return response


class Mocks(pulumi.runtime.Mocks):
    def __init__(self):
        self.resources: list[Registered] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        outs = dict(args.inputs)
        t = args.typ
        if t == "azure-native:resources:ResourceGroup":
            outs["name"] = args.inputs.get("resourceGroupName", args.name)
            outs["id"] = f"/subscriptions/0000/resourceGroups/{outs['name']}"
        elif t == "azure-native:containerservice:ManagedCluster":
            outs["name"] = args.inputs["resourceName"]
            outs["nodeResourceGroup"] = f"MC_rg_{outs['name']}_eastus"
            outs["oidcIssuerProfile"] = {"enabled": True, "issuerURL": "https://oidc.example/issuer/"}
        elif t == "azure-native:containerservice:AgentPool":
            outs["name"] = args.inputs["agentPoolName"]
        elif t == "kubernetes:core/v1:Service":
            n = len([r for r in self.resources if r.typ == t]) + 10
            outs["status"] = {"loadBalancer": {"ingress": [{"ip": f"10.0.0.{n}"}]}}
        elif t.startswith("pulumi-python:dynamic"):
            outs.update({"served_model": args.inputs.get("expected_model"), "latency_ms": 12.5, "ttft_ms": 20.0,
                         "tokens_per_s": 42.0, "checked_at": "2026-11-27T00:00:00Z"})
        self.resources.append(Registered(t, args.name, dict(args.inputs), args.provider or "", outs))
        return f"{args.name}-id", outs

    def call(self, args: pulumi.runtime.MockCallArgs):
        if args.token == "azure-native:containerservice:listManagedClusterUserCredentials":
            return {"kubeconfigs": [{"name": "clusterUser", "value": base64.b64encode(KUBECONFIG.encode()).decode()}]}
        if args.token == "azure-native:authorization:getClientConfig":
            return {"subscriptionId": "0000", "tenantId": "t", "clientId": "c", "objectId": "o"}
        if args.token == "azure-native:managedidentity:getUserAssignedIdentity":
            return {"principalId": "p-1", "clientId": "c-1", "tenantId": "t"}
        return {}


@dataclass
class ProgramRun:
    resources: list[Registered]
    outputs: dict
    options: dict          # (type, name) -> the ResourceOptions the program passed

    def opts(self, typ: str, name: str) -> pulumi.ResourceOptions:
        return self.options[(typ, name)]

    def of_type(self, typ: str) -> list[Registered]:
        return [r for r in self.resources if r.typ == typ]

    def named(self, typ: str, name: str) -> Registered:
        matches = [r for r in self.of_type(typ) if r.name == name]
        assert len(matches) == 1, (typ, name, [r.name for r in self.of_type(typ)])
        return matches[0]


def stack_file_config(stack: str, overrides: dict | None = None, secrets: dict | None = None) -> dict:
    """The stack file's `config:` with ``overrides`` applied and ``secrets`` as `{secure: value}` entries."""
    doc = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]
    # the committed secure placeholders are dropped; real values come from `secrets`
    config = {k: v for k, v in doc.items() if not (isinstance(v, dict) and set(v) == {"secure"})}
    config.update({f"kaito-aks:{key}": value for key, value in (overrides or {}).items()})
    if secrets is None:         # apiKeys only where the gateway checks them (the plan refuses keys nothing checks)
        secrets = {"hfToken": HF_TOKEN, "apiKeys": json.dumps(API_KEYS)}
        if not _gateway_on(stack, config):
            del secrets["apiKeys"]
    config.update({f"kaito-aks:{key}": {"secure": value} for key, value in secrets.items()})
    return config


def _gateway_on(stack: str, config: dict) -> bool:
    from infra.errors import UserError
    from infra.settings import settings_from_stack_config

    try:
        return settings_from_stack_config(stack, config).gateway_enabled
    except UserError:
        return True             # a test of a settings error: the keys change nothing


def stack_config(stack: str, overrides: dict | None = None, secrets: dict | None = None) -> tuple[dict, list]:
    """That config as the Pulumi CLI hands it to a program: strings (objects as JSON), secret keys listed."""
    config, as_strings, secret_keys = stack_file_config(stack, overrides, secrets), {}, []
    for key, value in config.items():
        if isinstance(value, dict) and set(value) == {"secure"}:
            value = value["secure"]
            secret_keys.append(key)
        as_strings[key] = value if isinstance(value, str) else json.dumps(value)
    return as_strings, secret_keys


def expected_plan(stack: str, overrides: dict | None = None):
    """The Plan the program should deploy: built offline, by the plan CLI's own reader, from the same config."""
    from infra.plan import build_plan
    from infra.settings import settings_from_stack_config

    config = {key: ({"secure": "v1:" + base64.b64encode(str(value["secure"]).encode()).decode()}
                    if isinstance(value, dict) and set(value) == {"secure"} else value)
              for key, value in stack_file_config(stack, overrides).items()}    # as `pulumi config set --secret` writes
    return build_plan(settings_from_stack_config(stack, config))


def run_program(stack: str, overrides: dict | None = None, secrets: dict | None = None) -> ProgramRun:
    """Run __main__.py for ``stack`` (settings ``overrides`` applied) and return what it registered."""
    mocks = Mocks()
    config, secret_keys = stack_config(stack, overrides, secrets)
    pulumi.runtime.set_all_config(config, secret_keys)
    pulumi.runtime.set_mocks(mocks, project="kaito-aks", stack=stack, preview=False,
                             monitor=RecordingMonitor(mocks))
    exported: dict = {}
    original_export = pulumi.export

    def capture(name, value):
        exported[name] = value
        original_export(name, value)

    pulumi.export = capture
    options: dict = {}
    original_init = pulumi.Resource.__init__

    def recording_init(self, t, name, custom=False, props=None, opts=None, *args, **kwargs):
        options[(t, name)] = opts or pulumi.ResourceOptions()
        return original_init(self, t, name, custom, props, opts, *args, **kwargs)

    pulumi.Resource.__init__ = recording_init

    @pulumi.runtime.test
    def program():
        runpy.run_path(str(ROOT / "__main__.py"), run_name="__main__")
        return pulumi.Output.all(**{k: pulumi.Output.from_input(v) for k, v in exported.items()})

    try:
        program()
    finally:
        pulumi.export = original_export
        pulumi.Resource.__init__ = original_init
    return ProgramRun(mocks.resources, exported, options)
