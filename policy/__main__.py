"""The kaito-aks policy pack: `pulumi preview --policy-pack policy` (see README.md).

Only this file constructs the PolicyPack: the constructor starts the analyzer's gRPC server and never returns.
"""
import pathlib
import sys

# The engine runs the pack from this directory; the project root makes `infra` (KAITO's model catalog,
# for the gated-model policy) importable. Without it that policy falls back to the gated model families.
sys.path.append(str(pathlib.Path(__file__).resolve().parent.parent))

from pulumi_policy import EnforcementLevel, PolicyPack  # noqa: E402

from kaito_policies import POLICIES  # noqa: E402

PolicyPack(
    name="kaito-aks",
    policies=POLICIES,
    enforcement_level=EnforcementLevel.MANDATORY,
    description="kaito-aks guardrails: no public unauthenticated endpoints, gated models have their HF token, "
                "GPU pools tainted, Workspaces waited on and replaced, production clusters hardened.",
)
