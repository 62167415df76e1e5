"""`python -m infra preflight`: before `pulumi up`, ask Azure whether the plan's pools can be created (quota per VM
family and region, sizes offered to the subscription in the region, the KAITO add-on's region).

Exit 0: Azure will accept every pool; 1: a problem was found (one line each on stderr, with the fix); 2: a usage or
settings mistake, no (or expired) Azure credentials, or Azure couldn't be asked (one line, with the fix).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Mapping
from typing import Any

from infra.errors import UserError, bounded_repr
from infra.plan import build_plan
from infra.preflight import PUBLIC_ARM, AzureFacts, Report, azure_error_line, decide, needs_from_plan, read_azure
from infra.settings import load_stack_file, stack_file
from infra.stack_yaml import load_yaml_mapping

GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
SUBSCRIPTION_ENV = ("AZURE_SUBSCRIPTION_ID", "ARM_SUBSCRIPTION_ID")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "preflight", help="check Azure quota and size availability for a stack (needs Azure credentials)",
        description="Ask Azure, before `pulumi up`, whether the plan's node pools can be created: vCPU quota per VM "
                    "family and region (steady state plus upgrade surge), sizes offered to the subscription in the "
                    "region, and the KAITO add-on's region. Credentials: the azure-identity chain (environment, "
                    "workload identity, managed identity, `az login`). Exit 0 = ok, 1 = a problem (one line each, "
                    "with the fix), 2 = usage, settings or credentials.")
    p.add_argument("--stack", required=True, help="stack name (reads Pulumi.<stack>.yaml)")
    p.add_argument("--file", help="stack file to read instead of Pulumi.<stack>.yaml")
    p.add_argument("--subscription", metavar="ID",
                   help="Azure subscription id (default: AZURE_SUBSCRIPTION_ID, ARM_SUBSCRIPTION_ID, the stack's "
                        "azure-native:subscriptionId, else the Azure CLI's default subscription)")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:

    plan = build_plan(load_stack_file(args.stack, args.file))
    subscription = resolve_subscription(args.subscription, os.environ, _stack_config(args.stack, args.file))
    report = preflight(plan, subscription)
    if args.format == "json":
        print(json.dumps({"stack": plan.stack, "region": plan.settings.cluster.location, "subscription": subscription,
                          "ok": report.ok, "checked": report.lines, "problems": report.problems}, indent=2))
    else:
        for line in report.lines:
            print(line)
    if report.problems:
        raise UserError(report.problems, exit_code=1)
    return 0


class AzureCredentialsError(UserError):
    """Azure can't be asked because no credential got a token (none, expired, refused): one line, exit 2. Its own
    class so that a caller (the Automation driver) can name the fixes that apply to it."""


ReadAzure = Callable[..., AzureFacts]


def preflight(plan, subscription_id: str, credential: Any = None, *, base_url: str | None = None,
              read: ReadAzure = read_azure, **request_options: Any) -> Report:
    """The preflight of ``plan`` in ``subscription_id``: what this CLI and the Automation driver (before preview/up)
    both run.

    Returns the :class:`Report` (``report.problems`` empty: Azure will accept the pools). Raises :class:`UserError`
    (exit 2, one line) when Azure can't be asked: no permission, no network; :class:`AzureCredentialsError` for no
    or expired credentials. ``credential`` defaults to azure-identity's DefaultAzureCredential; ``read`` (the Azure
    side, :func:`~infra.preflight.read_azure`), ``base_url`` and ``request_options`` are for tests.
    """
    from azure.core.exceptions import AzureError, ClientAuthenticationError

    needs = needs_from_plan(plan)
    if credential is None:
        try:
            credential = default_credential()
        except ValueError:      # azure-identity refuses e.g. a tenant id that can't be one (it never echoes secrets)
            raise AzureCredentialsError(
                "Azure credentials: the service principal settings in the environment are not valid (a tenant id is "
                "a GUID or a domain like contoso.onmicrosoft.com); check ARM_TENANT_ID / AZURE_TENANT_ID and "
                "ARM_CLIENT_ID / AZURE_CLIENT_ID") from None
    try:
        facts = read(needs, subscription_id, credential, base_url=base_url, **request_options)
    except ClientAuthenticationError as err:
        raise AzureCredentialsError(azure_error_line(err, subscription_id, base_url or PUBLIC_ARM)) from None
    except AzureError as err:
        raise UserError(azure_error_line(err, subscription_id, base_url or PUBLIC_ARM), exit_code=2) from None
    return decide(needs, facts.usages, facts.skus, facts.scale_sets, arm_endpoint=base_url or PUBLIC_ARM)


def default_credential(env: Mapping[str, str] | None = None):
    """The credential preflight signs in with, never interactive (a CI job or a driver must not open a browser).

    Pulumi's azure-native provider reads ``ARM_*`` variables, azure-identity ``AZURE_*`` ones: where only Pulumi's are
    set, the same identity is used (a service principal secret, OIDC federation with ``ARM_USE_OIDC``, a managed
    identity with ``ARM_USE_MSI``); otherwise azure-identity's standard chain, DefaultAzureCredential (environment,
    workload identity, managed identity, Azure CLI, ...).
    """
    env = os.environ if env is None else env
    if not env.get("KAITO_AKS_DEBUG"):
        # azure-identity logs each failed credential of the chain as a warning (to stderr through logging's last
        # resort); preflight prints its own one line instead
        logging.getLogger("azure").addHandler(logging.NullHandler())
    try:
        from azure import identity
    except ImportError:
        raise UserError("azure-identity is not installed in this Python; run `pip install -r requirements.txt`") \
            from None
    tenant, client = env.get("ARM_TENANT_ID"), env.get("ARM_CLIENT_ID")
    if not env.get("AZURE_CLIENT_ID") and tenant and client:
        if env.get("ARM_CLIENT_SECRET"):
            return identity.ClientSecretCredential(tenant, client, env["ARM_CLIENT_SECRET"])
        if _truthy(env.get("ARM_USE_OIDC")):
            assertion = _oidc_assertion(env)
            if assertion is not None:
                return identity.ClientAssertionCredential(tenant, client, assertion)
    if _truthy(env.get("ARM_USE_MSI")) and not env.get("AZURE_CLIENT_ID"):
        return identity.ManagedIdentityCredential(client_id=client or None)
    return identity.DefaultAzureCredential(exclude_interactive_browser_credential=True)


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes")


def _oidc_assertion(env: Mapping[str, str]) -> Callable[[], str] | None:
    """The federated token Pulumi would exchange: ARM_OIDC_TOKEN, ARM_OIDC_TOKEN_FILE_PATH, or GitHub Actions' own."""
    if env.get("ARM_OIDC_TOKEN"):
        token = env["ARM_OIDC_TOKEN"]
        return lambda: token
    if env.get("ARM_OIDC_TOKEN_FILE_PATH"):
        path = env["ARM_OIDC_TOKEN_FILE_PATH"]

        def token_file() -> str:
            try:
                with open(path, encoding="utf-8") as handle:
                    return handle.read(1 << 20).strip()
            except (OSError, UnicodeDecodeError) as err:
                reason = getattr(err, "strerror", None) or type(err).__name__
                raise AzureCredentialsError(
                    f"Azure credentials: ARM_OIDC_TOKEN_FILE_PATH {bounded_repr(path, 120)} can't be read ({reason}); "
                    "point it at the federated token file of the CI job") from None
        return token_file
    url = env.get("ARM_OIDC_REQUEST_URL") or env.get("ACTIONS_ID_TOKEN_REQUEST_URL")
    bearer = env.get("ARM_OIDC_REQUEST_TOKEN") or env.get("ACTIONS_ID_TOKEN_REQUEST_TOKEN")
    if url and bearer:
        def github_token() -> str:
            import requests
            from azure.core.exceptions import ClientAuthenticationError

            try:
                reply = requests.get(url, params={"audience": "api://AzureADTokenExchange"},
                                     headers={"Authorization": f"Bearer {bearer}"}, timeout=30)
                reply.raise_for_status()
                return str(reply.json()["value"])
            except (requests.RequestException, ValueError, KeyError) as err:
                raise ClientAuthenticationError(
                    f"the CI's OIDC token could not be read ({type(err).__name__})") from None
        return github_token
    return None


def _stack_config(stack: str, path: str | None) -> Mapping[str, Any]:

    try:
        doc = load_yaml_mapping(stack_file(stack, path))
    except Exception:  # noqa: BLE001 -- build_plan has already read and validated it
        return {}
    config = doc.get("config") or {}
    return config if isinstance(config, dict) else {}


AzRunner = Callable[[], Any]


def az_default_subscription(which: Callable[..., str | None] = shutil.which,
                            run: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> str | None:
    """The Azure CLI's default subscription id (what Pulumi's azure-native provider uses after `az login`)."""
    az = which("az")
    if not az:
        return None
    try:
        done = run([az, "account", "show", "--query", "id", "--output", "tsv"], capture_output=True, text=True,
                   timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    value = (done.stdout or "").strip()
    return value if done.returncode == 0 and value else None


def resolve_subscription(arg: str | None, env: Mapping[str, str], stack_config: Mapping[str, Any],
                         az: AzRunner = az_default_subscription, option: str = "--subscription ID") -> str:
    """The subscription to check: --subscription, the environment, the stack's azure-native:subscriptionId, else
    the Azure CLI's default. UserError (exit 2) when none is known or it isn't a subscription id. ``option``: how
    the caller's user passes one (the driver has no --subscription)."""
    candidates = [("--subscription", arg)]
    candidates += [(name, env.get(name)) for name in SUBSCRIPTION_ENV]
    candidates.append(("azure-native:subscriptionId", stack_config.get("azure-native:subscriptionId")))
    for where, value in candidates:
        if value:
            value = str(value).strip()
            if not GUID.match(value):
                raise UserError(f"{where}: {bounded_repr(value)} is not an Azure subscription id (a GUID); "
                                "`az account list -o table` lists yours")
            return value
    value = az()
    if value and GUID.match(value):
        return value
    raise UserError(f"Azure subscription: not known; pass {option}, set AZURE_SUBSCRIPTION_ID, or run "
                    "`az login` (preflight then uses the Azure CLI's default subscription, as Pulumi's azure-native "
                    "provider does)")
