"""infra.names and the plan's name checks: every name KAITO or kaito-aks derives fits its Kubernetes limit."""
from __future__ import annotations

import string
import subprocess
import sys

import pytest

from infra import names
from infra.errors import UserError
from infra.plan import build_plan
from infra.settings import settings_from_config

ACCESS = {"sourceRanges": ["203.0.113.0/24"]}


def plan_for(name: str, replicas: int = 1, rollout: str = "recreate", **extra):
    model = {"name": name, "model": "phi-3-mini-4k-instruct", "replicas": replicas, "rollout": rollout}
    return build_plan(settings_from_config("dev", {"models": [model], "access": {**ACCESS, **extra}}, set()))


def test_a_53_character_workspace_is_refused_with_exit_2_naming_the_setting_and_the_maximum(tmp_path):
    stack = tmp_path / "Pulumi.t.yaml"
    stack.write_text("config:\n  kaito-aks:access: {sourceRanges: [203.0.113.0/24]}\n"
                     f"  kaito-aks:models: [{{name: {'a' * 53}, model: phi-3-mini-4k-instruct}}]\n")
    result = subprocess.run([sys.executable, "-m", "infra", "plan", "--stack", "t", "--file", str(stack)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"kaito-aks:models[0].name: '{'a' * 53}' is 53 characters; at most 52:")
    assert "controller-revision-hash" in line


def test_52_characters_is_the_longest_single_replica_name():
    plan = plan_for("a" * 52)
    assert plan.replicas[0].workspace == "a" * 52


@pytest.mark.parametrize("replicas,longest", [(2, 49), (10, 49), (11, 48), (16, 48)])
def test_replicas_shorten_the_longest_name_by_their_suffix(replicas, longest):
    assert names.max_model_name_length(replicas) == longest
    plan = plan_for("b" * longest, replicas=replicas)
    assert max(len(r.workspace) for r in plan.replicas) == names.WORKSPACE_MAX
    with pytest.raises(UserError) as err:
        plan_for("b" * (longest + 1), replicas=replicas)
    assert err.value.lines[0].startswith(f"kaito-aks:models[0].name: '{'b' * (longest + 1)}' is {longest + 1} "
                                         f"characters; at most {longest} with replicas: {replicas}")


def test_the_workspace_limit_is_the_one_that_binds():
    """The plan checks only the Workspace's length: at its maximum every name derived from it still fits."""
    for what, derived, limit in names.derived_names("w" * names.WORKSPACE_MAX):
        assert len(derived) <= limit, what
    (what, _, limit), *_ = [d for d in names.derived_names("w" * (names.WORKSPACE_MAX + 1)) if len(d[1]) > d[2]]
    assert what.startswith("the Workspace") and limit == names.WORKSPACE_MAX


@pytest.mark.parametrize("replicas,extra", [(1, " with rollout: surge (a 6-character hash)"),
                                            (3, " with replicas: 3 and rollout: surge (a 6-character hash)")])
def test_a_surge_hash_shortens_the_longest_name_and_the_refusal_says_so(replicas, extra):
    longest = names.max_model_name_length(replicas, surge=True)
    assert longest == names.WORKSPACE_MAX - 7 - (3 if replicas > 1 else 0)
    ok = plan_for("s" * longest, replicas=replicas, rollout="surge")
    assert max(len(r.workspace) for r in ok.replicas) == names.WORKSPACE_MAX
    with pytest.raises(UserError) as err:
        plan_for("s" * (longest + 1), replicas=replicas, rollout="surge")
    (line,) = err.value.lines
    workspace = "s" * (longest + 1) + (f"-r{replicas - 1}" if replicas > 1 else "") + "-000000"
    assert line.startswith(f"kaito-aks:models[0].name: '{'s' * (longest + 1)}' is {longest + 1} characters; at most "
                           f"{longest}{extra}: the Workspace '{workspace}' must be at most 52 characters")


ACCEPTED = [(name, replicas) for name in ["a", "a" * 52, "x-" * 25 + "yz", "m0" * 26, "q" * 49, "r" * 48]
            for replicas in (1, 2, 11) if len(name) <= names.max_model_name_length(replicas)]


@pytest.mark.parametrize("name,replicas", ACCEPTED)
def test_every_derived_name_of_every_accepted_plan_fits_its_limit(name, replicas):
    plan = plan_for(name, replicas=replicas)
    for r in plan.replicas:
        for what, derived, limit in names.derived_names(r.workspace):
            assert len(derived) <= limit, (what, derived)
            assert set(derived) <= set(string.ascii_lowercase + string.digits + "-"), derived


def test_a_dns_label_that_would_overflow_with_the_workspace_name_is_refused_not_truncated():
    # two replicas truncated to the same 63 characters would fight over one Azure DNS name
    with pytest.raises(UserError) as err:
        plan_for("model-with-a-long-name-" + "x" * 20, replicas=2, dnsLabel="team-inference-endpoints")
    assert any(line.startswith("kaito-aks:access.dnsLabel: the DNS label of models[0]'s endpoint would be")
               for line in err.value.lines)
    ok = plan_for("short", replicas=2, dnsLabel="team-inference-endpoints")
    assert len(ok.replicas) == 2
