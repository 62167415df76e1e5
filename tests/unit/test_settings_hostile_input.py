"""Hostile and careless stack files: every class of input ends in one bounded line per problem and exit 2.

Each test names the class it guards; the cases are examples of the class, not the whole of it (the validators
check whole strings, what ranges cover, and bounded sizes, not these spellings).
"""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

from infra.errors import MAX_LINE_CHARS, UserError
from infra.ip_ranges import breadth_problem
from infra.settings import load_stack_file, settings_from_config

MODEL = "  kaito-aks:models: [{name: a, model: phi-3-mini-4k-instruct}]\n"
ACCESS = "  kaito-aks:access: {sourceRanges: [203.0.113.0/24]}\n"


def plan(tmp_path, text: str | bytes, stack: str = "t", extra: tuple[str, ...] = ()):
    path = tmp_path / "Pulumi.t.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "infra", "plan", "--stack", stack, "--file", str(path), *extra],
                            capture_output=True, text=True, timeout=60)
    result.seconds = time.monotonic() - started
    return result


def assert_one_line_refusal(result, *phrases: str, lines: int = 1) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    got = result.stderr.strip().splitlines()
    assert len(got) == lines, got
    assert all(len(line) <= MAX_LINE_CHARS for line in got)
    for phrase in phrases:
        assert phrase in result.stderr, (phrase, result.stderr)
    return result.stderr


# --- 7. What the ranges cover, not how they are spelled ---------------------------------------------------

@pytest.mark.parametrize("ranges", [
    ["0.0.0.0/0"],
    ["0.0.0.0/1", "128.0.0.0/1"],
    ["0.0.0.0/2", "64.0.0.0/2", "128.0.0.0/2", "192.0.0.0/2"],
    ["::ffff:0:0/96"],                 # IPv4-mapped IPv6: every IPv4 address
    ["64:ff9b::/96"],                  # NAT64 well-known prefix
    ["2002::/16"],                     # 6to4
    ["::/0"],
    ["::/1", "8000::/1"],
    ["1.0.0.0/7"],                     # 33 million public addresses: not a client list
    ["::ffff:0.0.0.0/97"],             # half of IPv4, spelled as IPv6
])
def test_ranges_that_admit_most_of_the_internet_are_refused_without_allow_any_source(tmp_path, ranges):
    body = f"config:\n  kaito-aks:access: {{sourceRanges: {ranges}}}\n" + MODEL
    assert_one_line_refusal(plan(tmp_path, body), "kaito-aks:access.sourceRanges:", "allowAnySource")
    allowed = f"config:\n  kaito-aks:access: {{sourceRanges: {ranges}, allowAnySource: true}}\n" + MODEL
    assert plan(tmp_path, allowed).returncode == 0


@pytest.mark.parametrize("ranges", [
    ["203.0.113.0/24", "198.51.100.7/32"],
    ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"],   # private space is not the internet
    ["20.0.0.0/8"],                                       # one whole /8 is still a bounded (if large) set
    ["2001:db8::/48"],
])
def test_bounded_client_ranges_are_accepted(ranges):
    assert breadth_problem(ranges) is None


def test_api_server_ranges_are_judged_the_same_way(tmp_path):
    body = ("config:\n  kaito-aks:cluster: {apiServerAuthorizedIpRanges: [0.0.0.0/1, 128.0.0.0/1]}\n"
            + ACCESS + MODEL)
    assert_one_line_refusal(plan(tmp_path, body), "kaito-aks:cluster.apiServerAuthorizedIpRanges:", "every IPv4")


# --- 8. Whole strings, everywhere a name is checked ----------------------------------------------------

@pytest.mark.parametrize("setting,path", [
    ('kaito-aks:models: [{name: "phi3\\n", model: phi-3-mini-4k-instruct}]', "models[0].name"),
    ('kaito-aks:models: [{name: a, model: "phi-3-mini-4k-instruct\\n"}]', "models[0].model"),
    ('kaito-aks:models: [{name: a, model: " phi-3-mini-4k-instruct"}]', "models[0].model"),
    ('kaito-aks:namespace: "llm\\n"', "namespace"),
    ('kaito-aks:access: {sourceRanges: [203.0.113.0/24], dnsLabel: "demo\\n"}', "access.dnsLabel"),
    ('kaito-aks:cluster: {location: "eastus\\n"}', "cluster.location"),
    ('kaito-aks:cluster: {name: "kaito\\tprod"}', "cluster.name"),
    ('kaito-aks:cluster: {resourceGroup: "rg-x\\n"}', "cluster.resourceGroup"),
    ('kaito-aks:access: {sourceRanges: ["203.0.113.0/24\\n"]}', "access.sourceRanges"),
    ('kaito-aks:models: [{name: a, model: phi-3-mini-4k-instruct, instanceType: "Standard_NC24ads_A100_v4\\n"}]',
     "models[0].instanceType"),
])
def test_a_stray_newline_or_edge_whitespace_is_an_error_not_part_of_a_name(tmp_path, setting, path):
    body = "config:\n" + (ACCESS if "access" not in setting else "")
    body += ("" if "models" in setting else MODEL) + "  " + setting + "\n"
    assert_one_line_refusal(plan(tmp_path, body), f"kaito-aks:{path}:")


@pytest.mark.parametrize("stack", ["a.b", "..", "dév", "ab-"])
def test_names_derived_from_the_stack_name_are_validated_like_given_ones(tmp_path, stack):
    body = "config:\n" + ACCESS + MODEL
    result = plan(tmp_path, body, stack=stack)
    assert_one_line_refusal(result)
    assert "cluster.name" in result.stderr or "--stack" in result.stderr


def test_a_valid_stack_name_that_makes_an_invalid_cluster_name_names_cluster_name():
    with pytest.raises(UserError) as err:
        settings_from_config("a.b", {"models": [{"name": "a", "model": "phi-2"}],
                                     "access": {"sourceRanges": ["203.0.113.0/24"]}}, set())
    assert err.value.lines == [
        "kaito-aks:cluster.name: the default, 'kaito-a.b' (from the stack name), is not a valid AKS name (ASCII "
        "letters, digits, '-', '_'); set cluster.name explicitly"]
    fixed = settings_from_config("a.b", {"models": [{"name": "a", "model": "phi-2"}], "cluster": {"name": "kaito-ab"},
                                         "access": {"sourceRanges": ["203.0.113.0/24"]}}, set())
    assert fixed.cluster_name == "kaito-ab"


@pytest.mark.parametrize("model", ["org/..", "org/.hidden", "org/a--b", "ørg/model", "org/modèl", "a/b/c", "/x",
                                   "org/" + "m" * 97, "phi-3-mini\u200b"])
def test_hugging_face_ids_follow_the_hubs_rules(tmp_path, model):
    # Helm mode with facts: the generic Hugging Face path, where only the id's own validity can refuse it
    facts = "facts: {weightsGiB: 5, layers: 32, kvHeads: 8, headDim: 128}"
    body = "config:\n" + ACCESS + "  kaito-aks:kaito: {mode: helm}\n"
    good = body + f"  kaito-aks:models: [{{name: a, model: 'acme/tiny-7b', {facts}}}]\n"
    assert plan(tmp_path, good).returncode == 0
    bad = body + f"  kaito-aks:models: [{{name: a, model: '{model}', {facts}}}]\n"
    assert_one_line_refusal(plan(tmp_path, bad), "kaito-aks:models[0].model:")


# --- 9. Bounded work and bounded output ------------------------------------------------------------------

BOMB = "\n".join(["a: &a [x, x, x, x, x, x, x, x, x]"]
                 + [f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
                    f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]" for i in range(8)]
                 + ["config:", "  kaito-aks:models: *i"]) + "\n"


def test_a_yaml_alias_bomb_is_refused_quickly_in_one_short_line(tmp_path):
    assert len(BOMB) < 600
    result = plan(tmp_path, BOMB)
    assert_one_line_refusal(result, "expands to more than")
    assert result.seconds < 10


def test_every_error_line_is_bounded_whatever_the_value(tmp_path):
    body = "config:\n" + ACCESS + f"  kaito-aks:models: [{{name: {'a' * 100_000}, model: phi-2}}]\n"
    assert_one_line_refusal(plan(tmp_path, body), "kaito-aks:models[0].name:")


def test_a_flood_of_problems_is_reported_as_a_bounded_list():
    err = UserError([f"problem {i}" for i in range(10_000)])
    assert len(err.lines) == 51 and err.lines[-1] == "... and 9950 more problems"


# --- 10. One line, never a traceback, for inputs of every shape -----------------------------------------

@pytest.mark.parametrize("text,phrase", [
    ("- a\n- b\n", "the top level must be a mapping"),
    ("just a string\n", "the top level must be a mapping"),
    (b"config:\n  kaito-aks:namespace: \xff\xfe\n", "not UTF-8"),
    ("config: " + "[" * 5000 + "]" * 5000 + "\n", "nested"),
    ("config:\n" + ACCESS + MODEL + "  kaito-aks:budget: {maxUsdPerHour: " + "9" * 5000 + "}\n", "digits"),
    ("config:\n" + ACCESS + MODEL + "  kaito-aks:budget: {maxUsdPerHour: .inf}\n", "kaito-aks:budget.maxUsdPerHour:"),
    ("config:\n" + ACCESS + MODEL + "  kaito-aks:budget: {maxUsdPerHour: .nan}\n", "kaito-aks:budget.maxUsdPerHour:"),
    ("config:\n" + ACCESS + MODEL + "  kaito-aks:endpointCheck: {url: 'http://a b/'}\n", "kaito-aks:endpointCheck.url:"),
    ("config:\n" + ACCESS + MODEL + "  kaito-aks:endpointCheck: {url: 'http://host:99999'}\n", "port"),
    ("config:\n" + ACCESS + MODEL + "  kaito-aks:endpointCheck: {url: 'http://u:p@host'}\n", "credentials"),
    ("config:\n" + ACCESS + MODEL + "  kaito-aks:namespace: a\n  kaito-aks:namespace: b\n", "duplicate key"),
    ("config:\n" + ACCESS + "  kaito-aks:models: [{name: a, model: phi-2, name: b}]\n", "duplicate key"),
    ("config:\n" + ACCESS + MODEL + "  kaito-aks:models: [{name: a, model: phi-2, maxModelLen: 1e400}]\n",
     "kaito-aks:models"),
    ("config:\n  ? [a, b]\n  : 1\n", "mapping key"),
    ("config: !!python/object:os.system {}\n", "not valid YAML"),
    ("config:\n" + ACCESS + MODEL + "  kaito-aks:cluster: {adminGroupObjectIds: [not-a-guid]}\n", "GUID"),
])
def test_malformed_stack_files_are_one_line_each(tmp_path, text, phrase):
    assert_one_line_refusal(plan(tmp_path, text), phrase)


def test_a_directory_as_stack_file_is_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "infra", "plan", "--stack", "t", "--file", str(tmp_path)],
                            capture_output=True, text=True, timeout=60)
    assert_one_line_refusal(result, "is a directory")


@pytest.mark.parametrize("kind", ["file", "uncreatable"])
def test_a_manifests_path_that_cannot_be_a_directory_is_one_line(tmp_path, kind):
    target = tmp_path / "out"
    if kind == "file":
        target.write_text("not a directory")
    else:
        (tmp_path / "blocker").write_text("")
        target = tmp_path / "blocker" / "sub"
    result = plan(tmp_path, "config:\n" + ACCESS + MODEL, extra=("--manifests", str(target)))
    assert_one_line_refusal(result, "--manifests")


def test_load_stack_file_in_process_raises_user_errors_only(tmp_path):
    path = tmp_path / "Pulumi.t.yaml"
    path.write_text(BOMB)
    with pytest.raises(UserError):
        load_stack_file("t", path)


# --- Careless command lines ----------------------------------------------------------------------------------

def run_plan(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "infra", "plan", *args], capture_output=True, text=True, timeout=60)


def test_an_empty_file_or_manifests_flag_is_refused_not_ignored():
    assert_one_line_refusal(run_plan("--stack", "dev", "--file", ""), "--file is empty")
    assert_one_line_refusal(run_plan("--stack", "dev", "--manifests", ""), "--manifests is empty")


def test_a_missing_file_named_by_file_is_not_a_missing_stack(tmp_path):
    missing = tmp_path / "nope" / "Pulumi.x.yaml"
    out = assert_one_line_refusal(run_plan("--stack", "dev", "--file", str(missing)), "no such file")
    assert "pulumi stack init" not in out


def test_a_fifo_as_the_stack_file_is_refused_at_once(tmp_path):
    fifo = tmp_path / "fifo"
    import os
    os.mkfifo(fifo)
    result = run_plan("--stack", "dev", "--file", str(fifo))    # opening it would block until a writer came
    assert_one_line_refusal(result, "is not a regular file")


@pytest.mark.parametrize("stack,says", [
    ("prod", "Production: yes (the stack name starts with 'prod'); clients reach the models through the nginx "
             "gateway, with API keys"),
    ("dev", "Production: no (the stack name does not start with 'prod'); clients reach the models directly on each "
            "model's LoadBalancer, without API keys (gateway.enabled: true adds them)"),
])
def test_the_table_says_whether_the_stack_is_hardened_and_how_clients_get_in(stack, says):
    result = run_plan("--stack", stack)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1] == says
