"""`python -m infra gateway-secret` and `first-api-key`: keys in the kaito-aks:apiKeys format, validated by the same
rules as `pulumi up`, one line per problem, never a key in any message."""
from __future__ import annotations

import json
import subprocess
import sys

import yaml

from infra.render.nginx import render_keys_map

KEYS = ["sk-cli-test-key-aaaa-0001", "sk-cli-test-key-bbbb-0002"]


def cli(*args, env=None):
    import os
    return subprocess.run([sys.executable, "-m", "infra", *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


def test_gateway_secret_renders_the_same_map_pulumi_up_mounts():
    for raw in (json.dumps(KEYS), ",".join(KEYS), "\n".join(KEYS)):
        done = cli("gateway-secret", "--stack", "prod", "--api-keys-env", "KEYS_UNDER_TEST", env={"KEYS_UNDER_TEST": raw})
        assert done.returncode == 0, done.stderr
        secret = yaml.safe_load(done.stdout)
        assert secret["kind"] == "Secret" and secret["metadata"]["name"] == "kaito-gateway-keys"
        assert secret["stringData"]["api-keys.map"] == render_keys_map(KEYS)
        assert "kubectl -n llm patch deployment kaito-gateway" in done.stderr and KEYS[0] not in done.stderr


def test_bad_keys_or_a_missing_variable_are_one_line_without_key_text():
    cases = [({"KEYS_UNDER_TEST": json.dumps(["sk-short"])}, "kaito-aks:apiKeys[0]"),
             ({"KEYS_UNDER_TEST": json.dumps([KEYS[0], None])}, "kaito-aks:apiKeys[1]"),
             ({}, "--api-keys-env: that environment variable is not set or empty")]
    for env, phrase in cases:
        done = cli("gateway-secret", "--stack", "prod", "--api-keys-env", "KEYS_UNDER_TEST", env=env)
        assert done.returncode == 2 and done.stdout == "" and "Traceback" not in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and phrase in done.stderr
        assert "sk-short" not in done.stderr and KEYS[0] not in done.stderr


def test_a_key_passed_where_the_variable_name_belongs_is_not_echoed():
    done = cli("first-api-key", "--api-keys-env", "sk-live-oops this-is-a-key")
    assert done.returncode == 2 and "sk-live-oops" not in done.stderr and "Traceback" not in done.stderr


def test_first_api_key_prints_the_first_valid_key_only():
    done = cli("first-api-key", "--api-keys-env", "KEYS_UNDER_TEST", env={"KEYS_UNDER_TEST": json.dumps(KEYS)})
    assert done.returncode == 0 and done.stdout == KEYS[0] + "\n"


def test_a_stack_without_gateway_has_no_keys_secret():
    done = cli("gateway-secret", "--stack", "dev", "--api-keys-env", "KEYS_UNDER_TEST",
               env={"KEYS_UNDER_TEST": json.dumps(KEYS)})
    assert done.returncode == 2 and "has no gateway" in done.stderr
