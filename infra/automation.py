"""`python -m infra.automation`: run this project's Pulumi program through the Automation API (CI and scripts).

    python -m infra.automation {preview,up,destroy,refresh,outputs} --stack NAME
        [--yes] [--confirm NAME] [--config KEY=VALUE ...] [--secret-env KEY=ENVVAR ...] [--json-out FILE]

In order, it:

1. checks the arguments: ``up`` and ``destroy`` need ``--yes``; destroying a production stack (a name starting
   with ``prod``) also needs ``--confirm <that name>``; ``--secret-env`` variables must be set;
2. for ``up``/``preview``: runs the offline plan (``python -m infra plan``) on the stack file with the
   ``--config``/``--secret-env`` changes applied, and refuses with the plan's lines when it fails (bad settings,
   over budget) or when a secret in the stack file is still the ``REPLACE`` placeholder;
3. checks the environment: the Pulumi CLI (the Automation API drives it), a backend (``PULUMI_BACKEND_URL``,
   ``PULUMI_ACCESS_TOKEN`` or ``pulumi login``) and its passphrase, and -- except for ``outputs`` -- Azure
   credentials: ``ARM_USE_OIDC=true`` + ``ARM_CLIENT_ID``/``ARM_TENANT_ID``/``ARM_SUBSCRIPTION_ID`` and an OIDC
   token source (GitHub Actions with ``permissions: id-token: write``), or a client secret/certificate,
   or ``ARM_USE_MSI=true``, or a logged-in Azure CLI (``az account show``). ``KAITO_AKS_SKIP_AZURE_CHECK=1``
   skips the Azure check (e.g. credentials in ``azure-native:*`` config);
4. opens the stack as a *local program* (``work_dir`` = the project root, so the dynamic provider of the
   endpoint check imports its module): created if missing for ``up``/``preview``, selected otherwise;
5. sets ``--config`` (plain; ``KEY`` alone means ``kaito-aks:KEY``; JSON objects/lists are stored as JSON
   strings, path=False) and ``--secret-env`` (``hfToken=HF_TOKEN``: the value of ``$HF_TOKEN`` as the secret
   ``kaito-aks:hfToken``; values are never printed). Like ``pulumi config set``, both are written to
   ``Pulumi.<stack>.yaml`` (secrets encrypted);
6. installs the resource plugins the program needs (azure-native, kubernetes, at the versions of the
   installed SDKs), then runs the operation, streaming the engine's output;
7. prints a one-line result on stderr and, with ``--json-out``, writes the summary below.

``outputs`` prints one line per endpoint for scripts, tab-separated:
``model  url  served_model  runtime  kaito_version`` (runtime comes from the stack file's plan; "vllm" when
it can't be read).

Exit codes: 0 succeeded; 1 the operation failed (engine error, endpoint check failed inside ``up``, stack locked,
or an unexpected error: its traceback, redacted, goes to stderr); 2 refused: bad arguments or settings, the plan
failed, the prod confirm rule, missing CLI/backend/credentials, --json-out not writable. Problems are printed one
line each on stderr, never as a traceback. The summary is written for every outcome except argparse's usage errors.

Redaction: every secret output is replaced by ``"[secret]"``, and any string containing a secret value (a
``--secret-env`` value, a piece of it such as one API key of a list, or a secret output's text or a string
inside it such as a kubeconfig's token) has that value replaced by ``[secret]`` -- in the streamed output, the
error lines, the ``outputs`` lines and the JSON summary. Whole values shorter than 4 characters and pieces
shorter than 8 are not searched for (they would mangle everything); see :class:`Redactor`.

JSON summary (``--json-out FILE``, ``schema_version`` 1; fields are only ever added)::

    {
      "schema_version": 1,
      "stack": "dev", "operation": "up",
      "result": "succeeded" | "failed" | "refused",
      "errors": ["one line per problem"],                  # [] when it succeeded
      "resource_changes": {"create": 12, "same": 3},      # from the engine's summary; {} when nothing ran
      "duration_seconds": 812.4,
      "outputs": {...},                                    # stack outputs, secrets "[secret]" (up, refresh, outputs)
      "endpoints": [{"model", "url", "served_model", "runtime", "kaito_version", "api_key_required"}],
      "endpoint_checks": {"<model>": [{"served_model", "latency_ms", "ttft_ms", "tokens_per_s", "checked_at"}]},
      "plan": {"usd_per_hour", "usd_per_month", "kaito": {"mode", "version"}} | null   # the offline plan, when run
    }
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import time
import traceback
from typing import Any, Callable, Iterable, Mapping, Protocol, Sequence

import yaml

from infra.errors import UserError
from infra.settings import (PROJECT, PROJECT_DIR, SECRET_KEYS, load_stack_file, settings_from_stack_config,
                            stack_file)

OPERATIONS = ("preview", "up", "destroy", "refresh", "outputs")
NEEDS_YES = ("up", "destroy")
RUNS_PLAN = ("up", "preview")
NEEDS_AZURE = ("preview", "up", "destroy", "refresh")
SECRET = "[secret]"
MIN_SECRET_FRAGMENT = 4
MIN_SECRET_PIECE = 8
SCHEMA_VERSION = 1
# Python SDK distribution -> the resource plugin its resources need.
PLUGIN_SDKS = {"pulumi-azure-native": "azure-native", "pulumi-kubernetes": "kubernetes"}
SKIP_AZURE_CHECK = "KAITO_AKS_SKIP_AZURE_CHECK"
PLACEHOLDER_MARK = "REPLACE"
CLI_MISSING = (
    "pulumi: the Pulumi CLI is not installed (the Automation API runs it); install it with "
    "`curl -fsSL https://get.pulumi.com | sh` and put ~/.pulumi/bin on PATH, or in GitHub Actions with "
    "`uses: pulumi/actions@v7` (no `command:` installs the CLI only)"
)

OnLine = Callable[[str], None]


# ---------------------------------------------------------------------------------------------------------
# The Automation API boundary. Tests inject fakes; PulumiAutomation wraps pulumi.automation.

@dataclasses.dataclass(frozen=True)
class StackOutput:
    value: Any
    secret: bool = False


class OperationFailed(Exception):
    """The engine ran and failed. ``str(err)`` is one line (secrets are scrubbed by the caller)."""


class StackApi(Protocol):
    def set_config(self, key: str, value: str, *, secret: bool) -> None: ...
    def install_plugin(self, name: str, version: str) -> None: ...
    def up(self, on_output: OnLine, on_error: OnLine) -> Mapping[str, int]: ...
    def preview(self, on_output: OnLine, on_error: OnLine) -> Mapping[str, int]: ...
    def destroy(self, on_output: OnLine, on_error: OnLine) -> Mapping[str, int]: ...
    def refresh(self, on_output: OnLine, on_error: OnLine) -> Mapping[str, int]: ...
    def outputs(self) -> Mapping[str, StackOutput]: ...


class AutomationApi(Protocol):
    def create_or_select_stack(self, stack_name: str) -> StackApi: ...
    def select_stack(self, stack_name: str) -> StackApi: ...


# ---------------------------------------------------------------------------------------------------------
# Arguments -> a request

@dataclasses.dataclass(frozen=True)
class ConfigChange:
    key: str            # fully qualified, e.g. kaito-aks:budget
    value: str          # what Pulumi stores (a JSON string for objects/lists)
    parsed: Any         # what the program will read (for the offline plan)
    secret: bool = False


@dataclasses.dataclass(frozen=True)
class Request:
    operation: str
    stack: str
    yes: bool = False
    confirm: str | None = None
    changes: tuple[ConfigChange, ...] = ()
    json_out: pathlib.Path | None = None

    @property
    def short_stack(self) -> str:
        """``org/project/dev`` -> ``dev``: the name of the stack file and of the plan."""
        return self.stack.rsplit("/", 1)[-1]

    @property
    def secret_values(self) -> tuple[str, ...]:
        return tuple(c.value for c in self.changes if c.secret)


_STACK_NAME = re.compile(r"^\w[\w.-]*(/\w[\w.-]*){0,2}$")
_KEY_PART = re.compile(r"^[A-Za-z][\w.-]*$")
_ENV_NAME = re.compile(r"^[A-Za-z_]\w*$")


def build_parser() -> argparse.ArgumentParser:
    doc = (__doc__ or "").splitlines()
    p = argparse.ArgumentParser(prog="python -m infra.automation", description=doc[0] if doc else None)
    p.add_argument("operation", choices=OPERATIONS)
    p.add_argument("--stack", required=True, help="stack name (settings in Pulumi.<stack>.yaml)")
    p.add_argument("--yes", action="store_true", help="needed by up and destroy: change real resources")
    p.add_argument("--confirm", metavar="NAME", help="destroy of a production stack: repeat its name")
    p.add_argument("--config", action="append", default=[], metavar="KEY=VALUE",
                   help="set plain config (KEY alone means kaito-aks:KEY; JSON objects/lists allowed)")
    p.add_argument("--secret-env", action="append", default=[], metavar="KEY=ENVVAR",
                   help="set KEY as a secret from environment variable ENVVAR, e.g. hfToken=HF_TOKEN")
    p.add_argument("--json-out", metavar="FILE", type=pathlib.Path, help="write the JSON summary here")
    return p


def config_key(text: str) -> str:
    key = text.strip()
    if ":" not in key:
        key = f"{PROJECT}:{key}"
    namespace, _, name = key.partition(":")
    if not (_KEY_PART.match(namespace) and _KEY_PART.match(name)):
        raise UserError(f"{text!r} is not a config key; write NAME (meaning {PROJECT}:NAME) or namespace:NAME")
    return key


def parse_config(item: str) -> ConfigChange:
    raw_key, sep, text = item.partition("=")
    if not sep or not raw_key.strip():
        raise UserError(f"--config {item.split('=', 1)[0]!r}: write KEY=VALUE")
    key = config_key(raw_key)
    if key.partition(":")[2] in SECRET_KEYS and key.startswith(f"{PROJECT}:"):
        name = key.partition(":")[2]
        raise UserError(f"--config {key}: is a secret; pass it as --secret-env {name}=ENVVAR so it is encrypted")
    try:
        parsed = json.loads(text)
    except ValueError:
        return ConfigChange(key, text, text)
    if isinstance(parsed, (dict, list)):
        return ConfigChange(key, json.dumps(parsed, separators=(",", ":")), parsed)
    return ConfigChange(key, text, parsed)


def parse_secret_env(item: str, env: Mapping[str, str]) -> ConfigChange:
    raw_key, sep, var = item.partition("=")
    if not sep or not raw_key.strip() or not _ENV_NAME.match(var):
        raise UserError(f"--secret-env {item!r}: write KEY=ENVVAR, e.g. hfToken=HF_TOKEN")
    key = config_key(raw_key)
    namespace, _, name = key.partition(":")
    if namespace == PROJECT and name not in SECRET_KEYS:
        raise UserError(f"--secret-env {key}: not a secret setting; {PROJECT}'s secrets are {', '.join(SECRET_KEYS)}")
    value = env.get(var, "")
    if not value:
        raise UserError(f"--secret-env {raw_key}={var}: environment variable {var} is not set or empty")
    return ConfigChange(key, value, value, secret=True)


def make_request(args: argparse.Namespace, env: Mapping[str, str]) -> Request:
    if not _STACK_NAME.match(args.stack):
        raise UserError(f"--stack: {args.stack!r} is not a stack name (letters, digits, '-', '_', '.'; org/stack allowed)")
    changes = [parse_config(c) for c in args.config] + [parse_secret_env(s, env) for s in args.secret_env]
    keys = [c.key for c in changes]
    dupes = sorted({k for k in keys if keys.count(k) > 1})
    if dupes:
        raise UserError(f"--config/--secret-env: {', '.join(dupes)} given more than once")
    if changes and args.operation == "outputs":
        raise UserError("--config/--secret-env: outputs reads the stack; it sets no config")
    request = Request(args.operation, args.stack, args.yes, args.confirm, tuple(changes), args.json_out)
    check_confirmation(request)
    return request


def is_production_name(stack: str) -> bool:
    return stack.rsplit("/", 1)[-1].startswith("prod")


def check_confirmation(request: Request) -> None:
    """``up``/``destroy`` need --yes; destroying a production stack also needs --confirm <its name>."""
    op, stack = request.operation, request.short_stack
    if op == "destroy" and is_production_name(stack):
        if not request.yes or request.confirm != stack:
            got = f"--confirm {request.confirm!r} does not match; " if request.confirm not in (None, stack) else ""
            raise UserError(f"destroy {stack}: {got}destroying a production stack needs --yes --confirm {stack}")
        return
    if op in NEEDS_YES and not request.yes:
        hint = "; run preview to see the changes first" if op == "up" else ""
        raise UserError(f"{op} {stack}: changes real Azure resources; pass --yes{hint}")


# ---------------------------------------------------------------------------------------------------------
# The offline plan, on the stack file plus this run's config changes

def _stack_file_config(stack: str) -> dict | None:
    try:
        doc = yaml.safe_load(stack_file(stack).read_text()) or {}
    except (OSError, yaml.YAMLError):
        return None
    config = doc.get("config", {}) if isinstance(doc, dict) else None
    return config if isinstance(config, dict) else None


def offline_plan(request: Request):
    """The plan ``up``/``preview`` would deploy; UserError (exit 2) with the plan's lines when it fails."""
    from infra.plan import build_plan

    stack = request.short_stack
    config = _stack_file_config(stack)
    if config is None:
        load_stack_file(stack)  # raises the plan's own line (no such file, not YAML, config not a mapping)
        config = {}
    merged = {**config, **{c.key: ({"secure": "(from the environment)"} if c.secret else c.parsed)
                           for c in request.changes}}
    problems = _placeholder_problems(stack, merged)
    try:
        plan = build_plan(settings_from_stack_config(stack, merged))
    except UserError as err:
        problems = err.lines + problems
        plan = None
    if problems:
        raise UserError(problems + [f"{request.operation} {stack} refused: fix the lines above first "
                                    f"(`python -m infra plan --stack {stack}` checks the settings offline)"])
    return plan


def _placeholder_problems(stack: str, config: Mapping[str, Any]) -> list[str]:
    problems = []
    for key in SECRET_KEYS:
        value = config.get(f"{PROJECT}:{key}")
        if isinstance(value, dict) and PLACEHOLDER_MARK in str(value.get("secure", "")):
            problems.append(f"{PROJECT}:{key}: Pulumi.{stack}.yaml still holds the placeholder; pass "
                            f"--secret-env {key}=ENVVAR, or run `pulumi config set --secret {key} ...` first")
    return problems


def plan_summary(plan) -> dict | None:
    if plan is None:
        return None
    return {"usd_per_hour": plan.usd_per_hour, "usd_per_month": plan.usd_per_month,
            "kaito": {"mode": plan.kaito_mode, "version": plan.kaito_version}}


def best_effort_plan(stack: str):
    """For ``outputs``: the runtimes of the models, when the stack file can still be planned."""
    try:
        from infra.plan import build_plan

        return build_plan(load_stack_file(stack))
    except UserError:
        return None


# ---------------------------------------------------------------------------------------------------------
# Preflight: CLI, backend, Azure credentials (cheap, local checks; one line each)

def find_pulumi(env: Mapping[str, str], which: Callable[..., str | None]) -> pathlib.Path | None:
    found = which("pulumi", path=env.get("PATH"))
    if found:
        return pathlib.Path(found)
    candidate = _pulumi_home(env) / "bin" / "pulumi"
    return candidate if candidate.is_file() and os.access(candidate, os.X_OK) else None


def _pulumi_home(env: Mapping[str, str]) -> pathlib.Path:
    return pathlib.Path(env.get("PULUMI_HOME") or pathlib.Path(env.get("HOME", "~")).expanduser() / ".pulumi")


def backend_url(env: Mapping[str, str]) -> str | None:
    """PULUMI_BACKEND_URL, else the backend of `pulumi login`, else Pulumi.yaml's backend.url."""
    if env.get("PULUMI_BACKEND_URL"):
        return env["PULUMI_BACKEND_URL"]
    try:
        current = json.loads((_pulumi_home(env) / "credentials.json").read_text()).get("current")
    except (OSError, ValueError, AttributeError):
        current = None
    if current:
        return str(current)
    try:
        project = yaml.safe_load((PROJECT_DIR / "Pulumi.yaml").read_text()) or {}
        return (project.get("backend") or {}).get("url")
    except (OSError, yaml.YAMLError, AttributeError):
        return None


def backend_problems(env: Mapping[str, str], stack: str) -> list[str]:
    url = backend_url(env)
    if not url and not env.get("PULUMI_ACCESS_TOKEN"):
        return ["pulumi backend: none configured; set PULUMI_BACKEND_URL (e.g. azblob://state?storage_account=NAME "
                "or file://$HOME/.pulumi-state), or PULUMI_ACCESS_TOKEN for Pulumi Cloud, or run `pulumi login`"]
    diy = bool(url) and url.split("://", 1)[0] in ("file", "azblob", "s3", "gs")
    if diy and _uses_passphrase(stack) and not (env.get("PULUMI_CONFIG_PASSPHRASE") or env.get("PULUMI_CONFIG_PASSPHRASE_FILE")):
        return [f"PULUMI_CONFIG_PASSPHRASE: not set; stacks in the DIY backend {url.split('?', 1)[0]} encrypt "
                "their secrets with a passphrase: set it (or PULUMI_CONFIG_PASSPHRASE_FILE)"]
    return []


def _uses_passphrase(stack: str) -> bool:
    config = None
    try:
        doc = yaml.safe_load(stack_file(stack).read_text()) or {}
        config = doc.get("secretsprovider") if isinstance(doc, dict) else None
    except (OSError, yaml.YAMLError):
        pass
    return not config or str(config).startswith("passphrase")


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes")


def azure_problems(env: Mapping[str, str], which: Callable[..., str | None],
                   run: Callable[..., subprocess.CompletedProcess]) -> list[str]:
    """One line when no Azure credentials can be seen; [] when some can (or the check is skipped)."""
    if _truthy(env.get(SKIP_AZURE_CHECK)):
        return []
    ids = ("ARM_CLIENT_ID", "ARM_TENANT_ID", "ARM_SUBSCRIPTION_ID")
    if _truthy(env.get("ARM_USE_OIDC")):
        missing = [k for k in ids if not env.get(k)]
        if missing:
            return [f"Azure OIDC: ARM_USE_OIDC is set but {', '.join(missing)} not; set all of {', '.join(ids)}"]
        sources = ("ARM_OIDC_TOKEN", "ARM_OIDC_TOKEN_FILE_PATH", "ACTIONS_ID_TOKEN_REQUEST_URL", "ARM_OIDC_REQUEST_URL")
        if not any(env.get(k) for k in sources):
            return ["Azure OIDC: no token to exchange (ACTIONS_ID_TOKEN_REQUEST_URL is unset); give the GitHub "
                    "job `permissions: id-token: write`, or set ARM_OIDC_TOKEN"]
        return []
    if env.get("ARM_CLIENT_SECRET") or env.get("ARM_CLIENT_CERTIFICATE_PATH"):
        missing = [k for k in ids if not env.get(k)]
        return [f"Azure service principal: {', '.join(missing)} not set"] if missing else []
    if _truthy(env.get("ARM_USE_MSI")):
        return []
    if _az_logged_in(env, which, run):
        return []
    return ["Azure credentials: none found; run `az login` (local), or set ARM_USE_OIDC=true with ARM_CLIENT_ID, "
            f"ARM_TENANT_ID, ARM_SUBSCRIPTION_ID (CI, OIDC federation); {SKIP_AZURE_CHECK}=1 skips this check"]


def _az_logged_in(env: Mapping[str, str], which: Callable[..., str | None],
                  run: Callable[..., subprocess.CompletedProcess]) -> bool:
    az = which("az", path=env.get("PATH"))
    if not az:
        return False
    try:
        done = run([az, "account", "show", "--output", "none"], capture_output=True, text=True, timeout=60,
                   env=dict(env))
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


def required_plugins() -> list[tuple[str, str]]:
    """(plugin, version) for each provider SDK the program imports, at the installed SDK's version."""
    plugins = []
    for dist, plugin in PLUGIN_SDKS.items():
        try:
            plugins.append((plugin, "v" + importlib.metadata.version(dist)))
        except importlib.metadata.PackageNotFoundError:
            raise UserError(f"{dist}: not installed in this Python; run `pip install -r requirements.txt`") from None
    return plugins


# ---------------------------------------------------------------------------------------------------------
# Redaction

class Redactor:
    """Replaces secret values, and the pieces of them, in any text or JSON-like value.

    A secret's whole text is searched for when it has at least MIN_SECRET_FRAGMENT characters; its pieces (each
    API key of a list, each string inside a JSON/YAML secret such as a kubeconfig's token) when they have at
    least MIN_SECRET_PIECE characters and are not a value the stack exports in plain text (a kubeconfig's
    cluster name is also the ``cluster_name`` output).
    """

    def __init__(self, secrets: Iterable[Any] = ()):
        self._fragments: set[str] = set()
        for s in secrets:
            self.add(s)

    def add(self, value: Any, plain: set[str] = frozenset()) -> None:
        whole = value.strip() if isinstance(value, str) else None
        if whole and len(whole) >= MIN_SECRET_FRAGMENT:
            self._fragments.add(whole)
        for piece in _pieces(value):
            if len(piece) >= MIN_SECRET_PIECE and piece not in plain:
                self._fragments.add(piece)

    def text(self, text: str) -> str:
        for fragment in sorted(self._fragments, key=len, reverse=True):
            if fragment in text:
                text = text.replace(fragment, SECRET)
        return text

    def value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.text(str(k)): self.value(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.value(v) for v in value]
        return value

    def outputs(self, outputs: Mapping[str, StackOutput]) -> dict[str, Any]:
        plain = set().union(*(_leaves(o.value) for o in outputs.values() if not o.secret)) if outputs else set()
        for out in outputs.values():
            if out.secret:
                self.add(out.value, plain)
        return {k: SECRET if out.secret else self.value(out.value) for k, out in outputs.items()}


def _leaves(value: Any) -> set[str]:
    """Every string inside a JSON-like value (keys included)."""
    if isinstance(value, dict):
        return set().union(*(_leaves(k) | _leaves(v) for k, v in value.items())) if value else set()
    if isinstance(value, (list, tuple)):
        return set().union(*(_leaves(v) for v in value)) if value else set()
    return {value.strip()} if isinstance(value, str) and value.strip() else set()


def _pieces(value: Any) -> set[str]:
    """The strings inside a secret: JSON-like leaves, the leaves of a JSON/YAML text, comma/newline parts."""
    if not isinstance(value, str):
        return set().union(*(_pieces(leaf) for leaf in _leaves(value))) if _leaves(value) else set()
    out = {part.strip() for line in value.splitlines() for part in line.split(",")}
    try:
        parsed = yaml.safe_load(value)  # JSON is YAML: API key lists, kubeconfigs
    except yaml.YAMLError:
        parsed = None
    if isinstance(parsed, (dict, list)):
        out |= _leaves(parsed)
    return {p for p in out if p}


# ---------------------------------------------------------------------------------------------------------
# Outputs -> endpoints and checks

def endpoints(outputs: Mapping[str, Any], plan=None) -> list[dict[str, Any]]:
    """One entry per endpoint URL of each model, from the (redacted) stack outputs."""
    models = outputs.get("models") if isinstance(outputs.get("models"), dict) else {}
    kaito = outputs.get("kaito") if isinstance(outputs.get("kaito"), dict) else {}
    kaito_version = kaito.get("version") or (plan.kaito_version if plan else None)
    gateway = bool(outputs.get("gateway_url")) and outputs.get("gateway_url") != SECRET
    entries = []
    for name, model in sorted(models.items()):
        if not isinstance(model, dict):
            continue
        urls = model.get("endpoint")
        urls = [urls] if isinstance(urls, str) else [u for u in (urls or []) if isinstance(u, str)]
        runtime = _runtime_of(plan, name)
        for url in urls:
            entries.append({"model": name, "url": url, "served_model": model.get("served_model"),
                            "runtime": runtime, "kaito_version": kaito_version, "api_key_required": gateway})
    return entries


def _runtime_of(plan, model: str) -> str:
    replicas = plan.replicas_of(model) if plan is not None else ()
    return replicas[0].runtime if replicas else "vllm"


def endpoint_checks(outputs: Mapping[str, Any]) -> dict[str, list]:
    models = outputs.get("models") if isinstance(outputs.get("models"), dict) else {}
    return {name: list(m.get("checks") or []) for name, m in sorted(models.items()) if isinstance(m, dict)}


def endpoint_lines(entries: Sequence[Mapping[str, Any]]) -> list[str]:
    return ["\t".join(str(e.get(k) or "-") for k in ("model", "url", "served_model", "runtime", "kaito_version"))
            for e in entries]


# ---------------------------------------------------------------------------------------------------------
# The run

@dataclasses.dataclass
class Summary:
    stack: str
    operation: str
    result: str = "refused"
    errors: list[str] = dataclasses.field(default_factory=list)
    resource_changes: dict[str, int] = dataclasses.field(default_factory=dict)
    duration_seconds: float = 0.0
    outputs: dict[str, Any] = dataclasses.field(default_factory=dict)
    endpoints: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    endpoint_checks: dict[str, list] = dataclasses.field(default_factory=dict)
    plan: dict | None = None

    def to_json(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, **dataclasses.asdict(self)}


@dataclasses.dataclass
class Deps:
    """Everything the driver touches outside itself; tests replace any of it."""

    api_factory: Callable[[pathlib.Path], AutomationApi] = lambda pulumi: PulumiAutomation(pulumi)
    env: Mapping[str, str] = dataclasses.field(default_factory=lambda: dict(os.environ))
    which: Callable[..., str | None] = shutil.which
    run: Callable[..., subprocess.CompletedProcess] = subprocess.run
    out: Callable[[str], None] = lambda line: print(line, flush=True)
    err: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True)
    clock: Callable[[], float] = time.monotonic


def execute(request: Request, deps: Deps, summary: Summary, redactor: Redactor) -> None:
    """Run ``request``; fills ``summary``. Raises UserError (refused / exit code) or OperationFailed."""
    op = request.operation
    plan = offline_plan(request) if op in RUNS_PLAN else None
    summary.plan = plan_summary(plan)
    stack = open_stack(request, deps)
    if op != "outputs":
        summary.resource_changes = run_operation(stack, op, deps, redactor)
    if op in ("up", "refresh", "outputs"):
        outputs = redactor.outputs(stack.outputs())
        plan = plan if plan is not None else best_effort_plan(request.short_stack)
        summary.outputs = outputs
        summary.endpoints = endpoints(outputs, plan)
        summary.endpoint_checks = endpoint_checks(outputs)
    if op == "outputs":
        for line in endpoint_lines(summary.endpoints):
            deps.out(line)


def open_stack(request: Request, deps: Deps) -> StackApi:
    """Preflight, then the stack (created only for up/preview), with this run's config set."""
    api = deps.api_factory(preflight(request, deps))
    if request.operation in RUNS_PLAN:
        stack = api.create_or_select_stack(request.stack)
    else:
        stack = api.select_stack(request.stack)
    for change in request.changes:
        stack.set_config(change.key, change.value, secret=change.secret)
    return stack


def run_operation(stack: StackApi, op: str, deps: Deps, redactor: Redactor) -> dict[str, int]:
    """Install the plugins, run ``op`` streaming the engine's (redacted) output; the resource changes."""
    for name, version in required_plugins():
        stack.install_plugin(name, version)
    stream_out = lambda line: deps.out(redactor.text(line.rstrip("\n")))
    stream_err = lambda line: deps.err(redactor.text(line.rstrip("\n")))
    changes = getattr(stack, op)(stream_out, stream_err)
    return {str(getattr(k, "value", k)): int(v) for k, v in (changes or {}).items()}


def preflight(request: Request, deps: Deps) -> pathlib.Path:
    pulumi = find_pulumi(deps.env, deps.which)
    if pulumi is None:
        raise UserError(CLI_MISSING)
    problems = backend_problems(deps.env, request.short_stack)
    if request.operation in NEEDS_AZURE:
        problems += azure_problems(deps.env, deps.which, deps.run)
    if problems:
        raise UserError(problems)
    return pulumi


def run(argv: Sequence[str] | None = None, deps: Deps | None = None) -> int:
    deps = deps or Deps()
    args = build_parser().parse_args(argv)  # exits 2 on bad arguments
    summary = Summary(stack=args.stack, operation=args.operation)
    redactor = Redactor()
    started = deps.clock()
    code = 0
    try:
        request = make_request(args, deps.env)
        redactor = Redactor(request.secret_values)
        execute(request, deps, summary, redactor)
        summary.result = "succeeded"
    except UserError as err:
        code = err.exit_code
        summary.result = "refused" if code == 2 else "failed"
        summary.errors = [redactor.text(line) for line in err.lines]
    except OperationFailed as err:
        code = 1
        summary.result = "failed"
        summary.errors = [redactor.text(f"{args.operation} {args.stack} failed: {err}")]
    except KeyboardInterrupt:
        code = 130
        summary.result = "failed"
        summary.errors = ["interrupted"]
    except Exception as err:  # a bug, not a user mistake: its traceback (redacted) helps, and the summary is written
        code = 1
        summary.result = "failed"
        deps.err(redactor.text(traceback.format_exc().rstrip()))
        summary.errors = [redactor.text(f"{args.operation} {args.stack}: unexpected {type(err).__name__}: {err}")]
    summary.duration_seconds = round(deps.clock() - started, 1)
    for line in summary.errors:
        deps.err(line)
    if summary.result == "succeeded" and args.operation != "outputs":
        deps.err(result_line(summary))
    if args.json_out:
        code = write_summary(args.json_out, summary, deps) or code
    return code


def result_line(summary: Summary) -> str:
    changes = ", ".join(f"{k} {v}" for k, v in sorted(summary.resource_changes.items())) or "no changes reported"
    line = f"{summary.operation} {summary.stack}: {summary.result} in {summary.duration_seconds:.1f} s ({changes})"
    if summary.endpoints:
        line += f"; {len(summary.endpoints)} endpoint(s)"
    return line


def write_summary(path: pathlib.Path, summary: Summary, deps: Deps) -> int:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(summary.to_json(), indent=2, default=str) + "\n")
        tmp.replace(path)
    except OSError as e:
        deps.err(f"--json-out {path}: cannot write ({e.strerror or e})")
        return 2
    return 0


# ---------------------------------------------------------------------------------------------------------
# Production boundary: pulumi.automation, local program in the project root

def first_error_line(text: str) -> str:
    """The most useful single line of a failed pulumi command's output."""
    # str(CommandError) is "\n code: N\n stdout: ...\n stderr: ..."
    lines = [re.sub(r"^(stdout|stderr):\s*", "", l.strip()) for l in text.splitlines()]
    lines = [l for l in lines if l and not re.fullmatch(r"code: -?\d+", l)]
    for line in lines:
        if line.startswith("error:"):
            return line.removeprefix("error:").strip()
    return lines[-1] if lines else "the pulumi command failed"


class PulumiAutomation:
    """:class:`AutomationApi` over ``pulumi.automation`` for this project (a local program, never inline)."""

    def __init__(self, pulumi: pathlib.Path, work_dir: pathlib.Path = PROJECT_DIR):
        from pulumi import automation as auto

        self._auto = auto
        self._work_dir = str(work_dir)
        try:
            self._command = auto.PulumiCommand(root=str(pulumi.parent.parent))
        except FileNotFoundError:
            raise UserError(CLI_MISSING) from None
        except auto.errors.InvalidVersionError as e:
            raise UserError(f"pulumi: {e}; install a current CLI (`curl -fsSL https://get.pulumi.com | sh`)") from None

    def _open(self, opener: Callable[..., Any], stack_name: str) -> StackApi:
        opts = self._auto.LocalWorkspaceOptions(work_dir=self._work_dir, pulumi_command=self._command)
        try:
            stack = opener(stack_name=stack_name, work_dir=self._work_dir, opts=opts)
        except self._auto.StackNotFoundError:
            raise UserError(f"stack {stack_name}: not found in the backend; nothing to do "
                            "(check PULUMI_BACKEND_URL / `pulumi stack ls`)") from None
        except self._auto.CommandError as e:
            raise UserError(f"stack {stack_name}: pulumi could not open it: {first_error_line(str(e))}") from None
        return _AutomationStack(stack, self._auto)

    def create_or_select_stack(self, stack_name: str) -> StackApi:
        return self._open(self._auto.create_or_select_stack, stack_name)

    def select_stack(self, stack_name: str) -> StackApi:
        return self._open(self._auto.select_stack, stack_name)


class _AutomationStack:
    def __init__(self, stack: Any, auto: Any):
        self._stack = stack
        self._auto = auto
        self._color = "auto" if sys.stdout.isatty() else "never"

    def set_config(self, key: str, value: str, *, secret: bool) -> None:
        self._call(lambda: self._stack.set_config(key, self._auto.ConfigValue(value=value, secret=secret), path=False))

    def install_plugin(self, name: str, version: str) -> None:
        self._call(lambda: self._stack.workspace.install_plugin(name, version))

    def _operation(self, method: str, on_output: OnLine, on_error: OnLine) -> Mapping[str, int]:
        kwargs = dict(on_output=on_output, on_error=on_error, color=self._color)
        if method != "preview":
            kwargs["show_secrets"] = False  # keep config secrets out of the result summary
        result = self._call(lambda: getattr(self._stack, method)(**kwargs))
        if method == "preview":
            return dict(result.change_summary or {})
        return dict(result.summary.resource_changes or {}) if result.summary else {}

    def up(self, on_output: OnLine, on_error: OnLine) -> Mapping[str, int]:
        return self._operation("up", on_output, on_error)

    def preview(self, on_output: OnLine, on_error: OnLine) -> Mapping[str, int]:
        return self._operation("preview", on_output, on_error)

    def destroy(self, on_output: OnLine, on_error: OnLine) -> Mapping[str, int]:
        return self._operation("destroy", on_output, on_error)

    def refresh(self, on_output: OnLine, on_error: OnLine) -> Mapping[str, int]:
        return self._operation("refresh", on_output, on_error)

    def outputs(self) -> Mapping[str, StackOutput]:
        raw = self._call(self._stack.outputs)
        return {k: StackOutput(v.value, bool(v.secret)) for k, v in raw.items()}

    def _call(self, fn: Callable[[], Any]) -> Any:
        return call_translating_errors(fn, self._auto, self._stack.name)


def call_translating_errors(fn: Callable[[], Any], auto: Any, stack_name: str) -> Any:
    """pulumi.automation errors -> UserError / OperationFailed with one line each."""
    try:
        return fn()
    except auto.ConcurrentUpdateError:
        raise UserError(f"stack {stack_name}: locked by another update; wait for it to finish (a lock left by a "
                        "killed run: `pulumi cancel` on Pulumi Cloud, or delete the stack's entry under "
                        ".pulumi/locks/ in a DIY backend)", exit_code=1) from None
    except auto.CommandError as e:
        raise OperationFailed(first_error_line(str(e))) from None


def main(argv: Sequence[str] | None = None) -> int:
    return run(argv)


if __name__ == "__main__":
    sys.exit(main())
