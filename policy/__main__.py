"""The kaito-aks policy pack: `pulumi preview --policy-pack policy` (see README.md).

Only this file constructs the PolicyPack: the constructor starts the analyzer's gRPC server and never returns.

The engine runs the pack from this directory (``python -m pulumi.policy <engine> .``), so ``kaito_policies`` next to
this file is importable. ``infra`` (KAITO's model catalog, for the gated-model policy) is importable when the project
is installed in the Python that runs the pack, as requirements-dev.txt installs it (``pip install -e .``); without it
that policy falls back to the gated model families.
"""
from kaito_policies import POLICIES
from pulumi_policy import EnforcementLevel, PolicyPack

PolicyPack(
    name="kaito-aks",
    policies=POLICIES,
    enforcement_level=EnforcementLevel.MANDATORY,
    description="kaito-aks guardrails: no public unauthenticated endpoints, gated models have their HF token, "
                "GPU pools tainted, Workspaces waited on and replaced, production clusters hardened.",
)
