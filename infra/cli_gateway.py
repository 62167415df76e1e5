"""`python -m infra gateway-secret` / `first-api-key`: the gateway's API keys outside `pulumi up`.

`plan --manifests` writes every object but the keys Secret (it would hold the keys, and nginx needs them in its own
format). `gateway-secret` renders that Secret from a value in the `kaito-aks:apiKeys` format, validated by the same
rules as `pulumi up`; `first-api-key` gives CI scripts one key to run the endpoint check with.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys

import yaml

from infra import api_keys
from infra.errors import UserError
from infra.plan import build_plan
from infra.render import gateway_objects, nginx
from infra.settings import load_stack_file

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("gateway-secret", help="print the gateway's API-keys Secret (for plan --manifests users)",
                       description="Print the gateway's API-keys Secret as YAML, from keys in the kaito-aks:apiKeys "
                                   "format (a JSON list, or comma/newline-separated) read from an environment "
                                   "variable.")
    p.add_argument("--stack", required=True, help="stack name (reads Pulumi.<stack>.yaml)")
    p.add_argument("--file", help="stack file to read instead of Pulumi.<stack>.yaml")
    p.add_argument("--api-keys-env", required=True, metavar="VAR", help="environment variable holding the keys")
    p.set_defaults(handler=run_secret)
    q = sub.add_parser("first-api-key", help="print the first API key (for CI scripts; mask it)",
                       description="Print the first of the keys in the kaito-aks:apiKeys format held by an environment "
                                   "variable, after validating all of them.")
    q.add_argument("--api-keys-env", required=True, metavar="VAR", help="environment variable holding the keys")
    q.set_defaults(handler=run_first_key)


def read_keys(var: str) -> list[str]:
    """The keys in environment variable ``var``, validated; one line per problem, never a key."""
    # the name is never echoed: a key passed where the name belongs must not reach a log
    if not _ENV_NAME.fullmatch(var):
        raise UserError("--api-keys-env: not an environment variable name (letters, digits, '_'); pass the name of "
                        "the variable that holds the keys, not the keys")
    raw = os.environ.get(var)
    if not raw:
        raise UserError("--api-keys-env: that environment variable is not set or empty")
    return api_keys.parse_api_keys(raw)


def run_secret(args: argparse.Namespace) -> int:
    plan = build_plan(load_stack_file(args.stack, args.file))
    if not plan.settings.gateway_enabled:
        raise UserError(f"gateway-secret: stack {args.stack} has no gateway (gateway.enabled is off), so no keys "
                        "Secret")
    keys = read_keys(args.api_keys_env)
    secret = gateway_objects.keys_secret_from_setting(plan, json.dumps(keys))
    sys.stdout.write(yaml.safe_dump(secret, sort_keys=False))
    patch = json.dumps({"spec": {"template": {"metadata": {
        "annotations": gateway_objects.rollout_annotations(nginx.render_keys_map(keys))}}}})
    print(f"nginx reads the keys at start: after applying a changed Secret, roll the gateway: kubectl -n "
          f"{plan.settings.namespace} patch deployment {gateway_objects.NAME} -p '{patch}'", file=sys.stderr)
    return 0


def run_first_key(args: argparse.Namespace) -> int:
    print(read_keys(args.api_keys_env)[0])
    return 0
