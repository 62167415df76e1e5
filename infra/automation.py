"""`python -m infra.automation`: run this project's Pulumi program through the Automation API (CI and scripts).

    python -m infra.automation {preview,up,destroy,refresh,outputs} --stack NAME
        [--yes] [--confirm NAME] [--config KEY=VALUE ...] [--secret-env KEY=ENVVAR ...] [--json-out FILE]
        [--skip-preflight]

In order, it:

1. checks the arguments: ``up`` and ``destroy`` need ``--yes``; destroying a production stack (a name starting
   with ``prod``) also needs ``--confirm <that name>``; ``--secret-env`` variables must be set. On every
   operation (``refresh``/``destroy`` skip the plan, not this), ``--config`` takes only the known plain keys --
   kaito-aks's settings without its secrets (``KNOWN_KEYS`` minus ``SECRET_KEYS``) and ``PLAIN_PROVIDER_KEYS``
   (``azure-native:location`` ...) --, and refuses, with a line pointing to ``--secret-env``, every key that looks
   secret (a known secret in any letter case, or a name containing secret/token/password/key/credential/...,
   also as a key inside a JSON value). Only ``--secret-env`` sets secrets: kaito-aks's ``SECRET_KEYS`` and
   ``SECRET_PROVIDER_KEYS``, with values of at least ``MIN_SECRET_CHARS`` characters (each API key of
   ``apiKeys`` too). Values are never echoed (an argument without ``=`` is not echoed either: it may be one);
   the stack file is read once, within bounds (UTF-8, a mapping, ``config:`` a mapping, no alias bombs or deep
   nesting), and a bad one is refused with one line;
2. for ``up``/``preview``: runs the offline plan (``python -m infra plan``) on the stack file with the
   ``--config``/``--secret-env`` changes applied, and refuses with the plan's lines when it fails (bad settings,
   over budget) or when a secret in the stack file is still the ``REPLACE`` placeholder; then, when the plan has
   the gateway, checks ``kaito-aks:apiKeys`` offline: a ``--secret-env apiKeys=ENV`` value must parse as the
   gateway parses it (:func:`infra.api_keys.parse_api_keys`: a JSON list or comma/newline separated keys of 16+
   characters; lines name the entry by index, never a key), and a stack without any apiKeys is refused; an
   encrypted (``secure:``) value in the stack file can't be read offline and is left to the program;
3. checks the environment: the Pulumi CLI (the Automation API drives it), a backend (``PULUMI_BACKEND_URL``,
   ``PULUMI_ACCESS_TOKEN`` or ``pulumi login``) and its passphrase, and -- except for ``outputs`` -- Azure
   credentials: ``ARM_USE_OIDC=true`` + ``ARM_CLIENT_ID``/``ARM_TENANT_ID``/``ARM_SUBSCRIPTION_ID`` and an OIDC
   token source (GitHub Actions with ``permissions: id-token: write``), or a client secret/certificate,
   or ``ARM_USE_MSI=true``, or a logged-in Azure CLI (``az account show``). ``KAITO_AKS_SKIP_AZURE_CHECK=1``
   skips the Azure check and step 4 (e.g. credentials in ``azure-native:*`` config, which only Pulumi reads);
4. for ``up``/``preview``: the Azure preflight, the checks of ``python -m infra preflight`` (the same function,
   :func:`infra.cli_preflight.preflight`): vCPU quota per VM family and region (plus upgrade surge), sizes offered
   to the subscription in the region, the KAITO add-on's region. What was checked is printed on stdout
   (``preflight: ...``); each problem is one line on stderr with its fix (the quota to request, or the plan's next
   alternative), and the operation is refused (exit 2) before the stack is opened or anything is created. The
   subscription is ``ARM_SUBSCRIPTION_ID``/``AZURE_SUBSCRIPTION_ID``, else the stack's
   ``azure-native:subscriptionId`` (``--config`` included), else the Azure CLI's default; the credential is the
   one Pulumi's provider uses (``ARM_*`` OIDC/secret/MSI, else azure-identity's chain: environment, workload
   identity, managed identity, ``az login``). No usable credential, no permission or no network: one line with the
   fix, exit 2. ``--skip-preflight`` (or ``KAITO_AKS_SKIP_AZURE_CHECK=1``) skips it, and the summary says so;
5. opens the stack as a *local program* (``work_dir`` = the project root, so the dynamic provider of the
   endpoint check imports its module): created if missing for ``up``/``preview``, selected otherwise;
6. sets ``--config`` (plain; ``KEY`` alone means ``kaito-aks:KEY``; JSON objects/lists are stored as JSON
   strings, path=False) and ``--secret-env`` (``hfToken=HF_TOKEN``: the value of ``$HF_TOKEN`` as the secret
   ``kaito-aks:hfToken``; values are never printed). Like ``pulumi config set``, both are written to
   ``Pulumi.<stack>.yaml`` (secrets encrypted);
7. for ``preview`` of a stack whose cluster exists (its ``kubeconfig`` output is set): reads the KAITO release the
   cluster runs, as ``pulumi up``'s version gate does (:func:`infra.version_gate.read_running`), and refuses with
   the gate's line when it is not the release the plan was sized for -- the preview would show a plan the cluster
   can't run. A cluster that can't be read is a note, not a refusal (``up`` checks again);
8. installs the resource plugins the program needs (azure-native, kubernetes, at the versions of the
   installed SDKs), then runs the operation, streaming the engine's output;
9. prints a one-line result on stderr and, with ``--json-out``, writes the summary below.

``outputs`` prints one line per endpoint for scripts, tab-separated:
``model  url  served_model  runtime  kaito_version`` (runtime comes from the stack file's plan; "vllm" when
it can't be read).

Exit codes: 0 succeeded; 1 the operation failed (engine error, endpoint check failed inside ``up``, stack locked,
or an unexpected error: one redacted line naming the exception and where it happened); 2 refused: bad arguments
or settings (apiKeys included), the plan failed, the prod confirm rule, missing CLI/backend/credentials, the Azure
preflight found a problem or could not ask Azure, --json-out not writable. (``python -m infra preflight`` exits 1
on a problem it found; here a problem refuses the operation before anything is created, hence 2.)
Problems are printed one bounded line each on stderr (argparse's errors too, without echoing unrecognized
arguments: they may be secrets), never as a traceback, for any input. The summary is written for every outcome
except argparse's usage errors.

Redaction: every secret output is replaced by ``"[secret]"``, and any string containing a secret value (a
``--secret-env`` value, a piece of it such as one API key of a list, or a secret output's text or a string
inside it such as a kubeconfig's token) has that value replaced by ``[secret]`` -- in the streamed output, the
error lines, the ``outputs`` lines and the JSON summary. Each value is searched for in every encoded form
(:func:`secret_forms`): any letter case; ``repr``/``ascii``/``unicode_escape``, JSON and HTML escaped;
percent-encoded (``quote``, ``quote_plus``); hex; each of those once more inside a JSON string; and base64 -- of
the value and of those forms, alone and inside any wrapper (``Basic base64(user:secret)``,
``base64("Bearer " + secret)``), at each of the three byte alignments, in the standard and URL-safe alphabets.
Each output stream of the engine (stdout, stderr) is held back one line -- a line appears when the next one
arrives or the operation ends -- so a secret split across two consecutive lines of one stream is caught (also
across two lines of a failed command's error output); and where a text was visibly cut (either side of
``...``/``…``, as a bounded error line is elided in the middle) a piece of a secret of at least 4 characters at
the cut is redacted too.

Rule for short secrets: a ``--secret-env`` value (and each API key of ``apiKeys``) shorter than
``MIN_SECRET_CHARS`` (4) is refused at input -- redacting a 1-3 character string would destroy all output.
Input secrets of 4+ characters are redacted whole and by pieces of 4+; secret *outputs* (which we don't choose,
e.g. a kubeconfig) whole from 4 and by pieces of ``MIN_SECRET_PIECE`` (8)+ that the stack doesn't also export in
plain text. Base64 forms shorter than 8 characters (secrets under ~7) are not searched (they match words).

What cannot be closed: a secret printed under a transformation not listed above (reversed, encrypted, hashed,
compressed, encoded twice other than inside JSON, interleaved with other text or colour codes); split over three
or more lines, one character per line, or between stdout and stderr; a fragment of a secret in the middle of a
text or at an unmarked cut; a secret a *secret output* holds (a kubeconfig's token) printed by the engine during
the run, since outputs are known only when it ends (Pulumi masks secret values in its own output); a secret
pasted as the *value* of an allowed plain ``--config`` key. Those need the engine, the providers and the
operator not to print or misplace secrets, which this module cannot enforce.

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
      "plan": {"usd_per_hour", "usd_per_month", "kaito": {"mode", "version"}} | null,  # the offline plan, when run
      "preflight": {                                       # the Azure preflight (step 4)
        "ran": true,                                       # Azure answered and the plan was checked against it
        "skipped_because": "--skip-preflight" | "KAITO_AKS_SKIP_AZURE_CHECK=1" | "destroy: only preview and up run it"
                           | null,                         # null: it ran, or the run stopped before it
        "problems": ["one line per problem, with the fix"] # [] when Azure will accept every pool (or not run)
      },
      "kaito_version": {                                   # preview against an existing cluster (step 7)
        "checked": true, "running": "0.11.2" | null, "planned": "0.11.0",
        "note": "why it wasn't checked, or how it was read" | null
      }
    }
"""
from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import difflib
import html
import importlib.metadata
import itertools
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import time
import traceback
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal, NoReturn, Protocol, get_args

from infra import cli_preflight
from infra.api_keys import ApiKeysError, parse_api_keys
from infra.catalog import KaitoMode
from infra.errors import MAX_LINE_CHARS, UserError, bounded_line
from infra.plan import Plan, build_plan
from infra.preflight import Report, read_azure
from infra.settings import (
    KNOWN_KEYS,
    PROJECT,
    PROJECT_DIR,
    SECRET_FROM_ENVIRONMENT,
    SECRET_KEYS,
    settings_from_stack_config,
    stack_file,
    webhook_url_problem,
)
from infra.stack_yaml import load_yaml_mapping, parse_yaml_text
from infra.version_gate import RunningKaito, gate_problem, read_running

Operation = Literal["preview", "up", "destroy", "refresh", "outputs"]
RunResult = Literal["succeeded", "failed", "refused"]       # the summary's "result"
OPERATIONS: tuple[Operation, ...] = get_args(Operation)
NEEDS_YES = ("up", "destroy")
RUNS_PLAN = ("up", "preview")
NEEDS_AZURE = ("preview", "up", "destroy", "refresh")
SECRET = "[secret]"
MIN_SECRET_CHARS = 4        # shorter --secret-env values (and API keys of a list) are refused: see the docstring
MIN_SECRET_FRAGMENT = 4     # whole secret values this long are redacted
MIN_INPUT_PIECE = 4         # pieces of --secret-env values (one API key of a list)
MIN_SECRET_PIECE = 8        # pieces of secret outputs (a kubeconfig's token), unless exported in plain text
MIN_CUT_PIECE = 4           # a piece of a secret this long left at a cut is redacted
MIN_BASE64_FORM = 8
MAX_CONFIG_DEPTH = 32       # a --config JSON value nested deeper is refused (settings nest 4 levels)
MAX_SECRET_CHARS = 65_536   # a longer --secret-env value is refused (an HF token or key list is far shorter)
SCHEMA_VERSION = 1
# --config may set only these (plain) keys: kaito-aks's settings that are not secrets, and a few provider keys.
PLAIN_SETTINGS = tuple(k for k in KNOWN_KEYS if k not in SECRET_KEYS)
PLAIN_PROVIDER_KEYS = ("azure-native:location", "azure-native:subscriptionId", "azure-native:tenantId",
                       "azure-native:clientId", "azure-native:environment", "azure-native:useMsi",
                       "azure-native:useOidc")
# --secret-env may set only these: kaito-aks's secrets, and the provider's.
SECRET_PROVIDER_KEYS = ("azure-native:clientSecret", "azure-native:clientCertificatePassword",
                        "azure-native:oidcToken")
# A config key whose name contains one of these (any case) is a secret: never plain config.
SECRET_WORDS = ("secret", "token", "password", "passwd", "passphrase", "key", "credential", "private", "auth",
                "cert")
# Python SDK distribution -> the resource plugin its resources need.
PLUGIN_SDKS = {"pulumi-azure-native": "azure-native", "pulumi-kubernetes": "kubernetes"}
SKIP_AZURE_CHECK = "KAITO_AKS_SKIP_AZURE_CHECK"
SKIP_PREFLIGHT = "--skip-preflight"
RUNS_AZURE_PREFLIGHT = RUNS_PLAN   # the operations that can create node pools
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


class OperationFailedError(Exception):
    """The engine ran and failed. ``str(err)`` is one line (secrets are scrubbed by the caller); ``detail`` is
    the command's whole output when there is one (redacted line by line, then its first error line is shown)."""

    def __init__(self, message: str, detail: str | None = None):
        super().__init__(message)
        self.detail = detail


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
    operation: Operation
    stack: str
    yes: bool = False
    confirm: str | None = None
    changes: tuple[ConfigChange, ...] = ()
    json_out: pathlib.Path | None = None
    skip_preflight: bool = False

    @property
    def short_stack(self) -> str:
        """``org/project/dev`` -> ``dev``: the name of the stack file and of the plan."""
        return self.stack.rsplit("/", 1)[-1]

    @property
    def secret_values(self) -> tuple[str, ...]:
        return tuple(c.value for c in self.changes if c.secret)


_STACK_NAME = re.compile(r"^\w[\w.-]{0,99}(/\w[\w.-]{0,99}){0,2}$", re.ASCII)
_KEY_PART = re.compile(r"^[A-Za-z][\w.-]{0,99}$", re.ASCII)
_ENV_NAME = re.compile(r"^[A-Za-z_]\w{0,254}$", re.ASCII)


class _Parser(argparse.ArgumentParser):
    """argparse with one bounded error line (no usage block), never echoing what it didn't recognise."""

    def error(self, message: str) -> NoReturn:
        if message.startswith("unrecognized arguments"):
            message = "unrecognized arguments (not echoed: they may hold secrets; secrets go in --secret-env)"
        self.exit(2, bounded_line(f"{self.prog}: error: {message} (see --help)") + "\n")


PROG = "python -m infra.automation"    # also `kaito-aks stack` / `python -m infra stack` (infra.cli)


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    doc = (__doc__ or "").splitlines()
    # allow_abbrev=False: `--secret hf_...` must not be taken for `--secret-env hf_...` (and echoed back)
    p = _Parser(prog=prog, description=doc[0] if doc else None, allow_abbrev=False)
    p.add_argument("operation", choices=OPERATIONS)
    p.add_argument("--stack", required=True, help="stack name (settings in Pulumi.<stack>.yaml)")
    p.add_argument("--yes", action="store_true", help="needed by up and destroy: change real resources")
    p.add_argument("--confirm", metavar="NAME", help="destroy of a production stack: repeat its name")
    p.add_argument("--config", action="append", default=[], metavar="KEY=VALUE",
                   help="set plain config (KEY alone means kaito-aks:KEY; JSON objects/lists allowed); "
                        f"known keys only: {', '.join(PLAIN_SETTINGS)}, {', '.join(PLAIN_PROVIDER_KEYS)}")
    p.add_argument("--secret-env", action="append", default=[], metavar="KEY=ENVVAR",
                   help="set KEY as a secret from environment variable ENVVAR, e.g. hfToken=HF_TOKEN "
                        f"(keys: {', '.join(SECRET_KEYS)}, {', '.join(SECRET_PROVIDER_KEYS)})")
    p.add_argument("--json-out", metavar="FILE", type=pathlib.Path, help="write the JSON summary here")
    p.add_argument(SKIP_PREFLIGHT, action="store_true",
                   help="preview/up: don't ask Azure for quota and size availability first (as "
                        f"{SKIP_AZURE_CHECK}=1 does)")
    return p


def _all_keys() -> list[str]:
    return [f"{PROJECT}:{k}" for k in KNOWN_KEYS] + list(PLAIN_PROVIDER_KEYS) + list(SECRET_PROVIDER_KEYS)


def _shown(text: str, index: int | None = None) -> str:
    """A config key quoted back in an error -- only when it resembles (any case) a key this driver knows: anything
    else may be a value pasted where the key goes (``--config hf_...``), so it is named by position instead."""
    t = text.strip()
    namespace, _, name = (t if ":" in t else f"{PROJECT}:{t}").lower().partition(":")
    names = [k.partition(":")[2].lower() for k in _all_keys() if k.partition(":")[0].lower() == namespace]
    if len(t) <= 100 and t.isprintable() and difflib.get_close_matches(name, names, n=1, cutoff=0.75):
        return t
    return f"#{index} (not echoed)" if index else "(not echoed)"


def config_key(text: str, option: str = "--config", index: int | None = None) -> str:
    key = text.strip()
    if ":" not in key:
        key = f"{PROJECT}:{key}"
    namespace, _, name = key.partition(":")
    if not (_KEY_PART.match(namespace) and _KEY_PART.match(name)):
        raise UserError(f"{option} {_shown(text, index)}: not a config key; write NAME (meaning {PROJECT}:NAME) "
                        "or namespace:NAME")
    return key


def looks_secret(key: str) -> bool:
    """A config key that names a secret: a known secret in any case, or a name with a secret-ish word in it."""
    name = key.rpartition(":")[2].lower()
    known = {k.lower() for k in SECRET_KEYS} | {k.rpartition(":")[2].lower() for k in SECRET_PROVIDER_KEYS}
    return name in known or any(word in name for word in SECRET_WORDS)


def _secret_key_for(key: str) -> str | None:
    """The --secret-env key a (mis-cased) secret-looking key most likely means, or None."""
    namespace, _, name = key.partition(":")
    candidates = ([k for k in SECRET_KEYS] if namespace.lower() == PROJECT else
                  [k.partition(":")[2] for k in SECRET_PROVIDER_KEYS if k.partition(":")[0] == namespace])
    exact = [c for c in candidates if c.lower() == name.lower()]
    close = exact or difflib.get_close_matches(name.lower(), [c.lower() for c in candidates], n=1, cutoff=0.75)
    if not close:
        return None
    match = next(c for c in candidates if c.lower() == close[0].lower())
    return match if namespace == PROJECT else f"{namespace}:{match}"


def _refuse_secret_config(key: str, index: int | None = None) -> NoReturn:
    suggestion = _secret_key_for(key)
    shown = _shown(key, index)
    if suggestion:
        hint = f"pass it as --secret-env {suggestion}=ENVVAR"
        same = suggestion == key.partition(":")[2] or suggestion == key
        what = "is a secret" if same else f"looks like a secret (did you mean {suggestion}?)"
    else:
        hint, what = "pass secrets with --secret-env KEY=ENVVAR", "looks like a secret"
    raise UserError(f"--config {shown}: {what}; {hint} so it is encrypted (the value was not used or echoed)")


def _known_plain(key: str) -> bool:
    namespace, _, name = key.partition(":")
    return (namespace == PROJECT and name in PLAIN_SETTINGS) or key in PLAIN_PROVIDER_KEYS


def _unknown_key(key: str, option: str, known: Sequence[str], index: int | None = None) -> NoReturn:
    close = difflib.get_close_matches(key.lower(), [k.lower() for k in known], n=1, cutoff=0.8)
    hint = f"; did you mean {next(k for k in known if k.lower() == close[0])}?" if close else ""
    listed = "" if hint else f" (known: {', '.join(known)})"
    raise UserError(f"{option} {_shown(key, index)}: not a key this driver sets{hint}{listed}")


def _has_surrogates(text: str) -> bool:
    return any("\ud800" <= ch <= "\udfff" for ch in text)


_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_BRACKET_STEPS = str.maketrans({"[": "\x02", "{": "\x02", "]": "\x00", "}": "\x00"})


def json_nesting_exceeds(text: str, limit: int = MAX_CONFIG_DEPTH) -> bool:
    """Whether JSON text nests deeper than ``limit`` (brackets outside strings; unclosed ones count)."""
    if text.count("[") + text.count("{") <= limit:
        return False
    steps = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text)).translate(_BRACKET_STEPS).encode("latin-1")
    return any(depth > limit for depth in itertools.accumulate(steps, lambda d, x: d + x - 1, initial=0))


def _secret_looking_keys(value: Any) -> list[str]:
    """Keys inside a (bounded-depth) JSON value that name secrets."""
    found, todo = [], [value]
    while todo:
        v = todo.pop()
        if isinstance(v, dict):
            found += [str(k) for k in v if looks_secret(str(k))]
            todo += list(v.values())
        elif isinstance(v, list):
            todo += v
    return found


def parse_config(item: str, index: int = 1) -> ConfigChange:
    raw_key, sep, text = item.partition("=")
    if not sep or not raw_key.strip():
        raise UserError(f"--config {_shown(raw_key, index)}: write KEY=VALUE")
    key = config_key(raw_key, "--config", index)
    if looks_secret(key):
        _refuse_secret_config(key, index)
    if not _known_plain(key):
        _unknown_key(key, "--config", [f"{PROJECT}:{k}" for k in PLAIN_SETTINGS] + list(PLAIN_PROVIDER_KEYS), index)
    if _has_surrogates(text):
        raise UserError(f"--config {key}: the value is not valid UTF-8 (not echoed)")
    if json_nesting_exceeds(text):
        raise UserError(f"--config {key}: the JSON value is nested deeper than {MAX_CONFIG_DEPTH} levels "
                        "(settings nest 4)")
    try:
        parsed = json.loads(text)
    except RecursionError:
        raise UserError(f"--config {key}: the JSON value is nested too deeply") from None
    except ValueError:
        return ConfigChange(key, text, text)
    if isinstance(parsed, (dict, list)):
        secretish = _secret_looking_keys(parsed)
        if secretish:
            raise UserError(f"--config {key}: the value holds a key named like a secret ({len(secretish)} of them); "
                            "secrets go in --secret-env KEY=ENVVAR (the value was not used or echoed)")
        return ConfigChange(key, json.dumps(parsed, separators=(",", ":")), parsed)
    return ConfigChange(key, text, parsed)


def _api_key_list(value: str) -> list[str]:
    """The keys of an apiKeys value, as the gateway reads it (a JSON/YAML list, or comma/newline separated)."""
    try:  # bounded: no alias bombs, no deep nesting
        parsed = parse_yaml_text(value, "apiKeys") if len(value) <= 1024 * 1024 else None
    except Exception:  # noqa: BLE001 -- not YAML (or hostile YAML): comma/newline separated then
        parsed = None
    if isinstance(parsed, list):
        keys = [str(k).strip() if isinstance(k, (str, int, float)) else "" for k in parsed]  # as the gateway reads
        return [k for k in keys if k] + [""] * sum(1 for k in parsed if isinstance(k, (list, dict)))
    return [part.strip() for line in value.splitlines() for part in line.split(",") if part.strip()]


def parse_secret_env(item: str, env: Mapping[str, str], index: int = 1) -> ConfigChange:
    raw_key, sep, var = item.partition("=")
    if not sep or not raw_key.strip() or not _ENV_NAME.match(var):
        raise UserError(f"--secret-env {_shown(raw_key, index)}: write KEY=ENVVAR, e.g. hfToken=HF_TOKEN (ENVVAR is "
                        "the NAME of a variable holding the secret, never the secret itself)")
    key = config_key(raw_key, "--secret-env", index)
    namespace, _, name = key.partition(":")
    allowed = [f"{PROJECT}:{k}" for k in SECRET_KEYS] + list(SECRET_PROVIDER_KEYS)
    if key not in allowed:
        if namespace == PROJECT and not looks_secret(key):
            raise UserError(f"--secret-env {key}: not a secret setting; {PROJECT}'s secrets are "
                            f"{', '.join(SECRET_KEYS)} (plain settings go in --config)")
        _unknown_key(key, "--secret-env", allowed, index)
    value = env.get(var, "")
    if not value:
        # the name is echoed only when it looks like one (UPPER_CASE): else it may be the secret itself
        if re.fullmatch(r"[A-Z_][A-Z0-9_]{0,63}", var):
            raise UserError(f"--secret-env {key.partition(':')[2] if namespace == PROJECT else key}={var}: "
                            f"environment variable {var} is not set or empty")
        raise UserError(f"--secret-env #{index} {key}: the environment variable it names is not set or empty (the "
                        "name is not echoed: it is not UPPER_CASE, is it the secret itself? give the NAME of a "
                        "variable holding it)")
    if _has_surrogates(value):
        raise UserError(f"--secret-env {key}: ${var} is not valid UTF-8 (not echoed)")
    if len(value) > MAX_SECRET_CHARS:
        raise UserError(f"--secret-env {key}: ${var} has {len(value)} characters; at most {MAX_SECRET_CHARS} "
                        "(not a secret this driver sets)")
    if len(value.strip()) < MIN_SECRET_CHARS:
        raise UserError(f"--secret-env {key}: ${var} has fewer than {MIN_SECRET_CHARS} characters; a secret that "
                        "short could not be kept out of the output (refused)")
    if name == "apiKeys":
        keys = _api_key_list(value)
        short = sum(1 for k in keys if len(k) < MIN_SECRET_CHARS)
        if short:
            raise UserError(f"--secret-env {key}: {short} of the API keys in ${var} have fewer than "
                            f"{MIN_SECRET_CHARS} characters; such keys could not be kept out of the output (refused)")
    return ConfigChange(key, value, value, secret=True)


def make_request(args: argparse.Namespace, env: Mapping[str, str]) -> Request:
    if not _STACK_NAME.match(args.stack):
        raise UserError(f"--stack: {bounded_line(repr(args.stack), 60)} is not a stack name (letters, digits, '-', "
                        "'_', '.'; org/stack allowed)")
    changes = ([parse_config(c, i) for i, c in enumerate(args.config, 1)]
               + [parse_secret_env(s, env, i) for i, s in enumerate(args.secret_env, 1)])
    keys = [c.key for c in changes]
    dupes = sorted({k for k in keys if keys.count(k) > 1})
    if dupes:
        raise UserError(f"--config/--secret-env: {', '.join(dupes)} given more than once")
    if changes and args.operation == "outputs":
        raise UserError("--config/--secret-env: outputs reads the stack; it sets no config")
    request = Request(args.operation, args.stack, args.yes, args.confirm, tuple(changes), args.json_out,
                      args.skip_preflight)
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
# The stack file (read once, within bounds) and the offline plan on it plus this run's config changes

def read_stack_file(stack: str) -> dict[str, Any] | None:
    """The stack file's top-level mapping, or None when there is no stack file. A file that can't be used (not
    UTF-8, not YAML, not a mapping, ``config:`` not a mapping, alias bombs, deep nesting, too big) is a UserError
    with one line, for every operation: Pulumi would fail on it too, later and less clearly."""
    file = stack_file(stack)
    try:
        doc = load_yaml_mapping(file)
    except FileNotFoundError:
        return None
    config = doc.get("config")
    if config is not None and not isinstance(config, dict):
        raise UserError(f"{file}: `config:` must be a mapping of settings, not a {type(config).__name__}")
    return doc


def _config_of(doc: Mapping[str, Any] | None) -> dict[str, Any]:
    return {str(k): v for k, v in ((doc or {}).get("config") or {}).items()}


def offline_plan(request: Request, doc: Mapping[str, Any] | None = None) -> Plan:
    """The plan ``up``/``preview`` would deploy; UserError (exit 2) with the plan's lines when it fails."""

    stack = request.short_stack
    if doc is None:
        doc = read_stack_file(stack)
    if doc is None:
        stacks = sorted(p.name.removeprefix("Pulumi.").removesuffix(".yaml") for p in PROJECT_DIR.glob("Pulumi.*.yaml"))
        raise UserError(f"{stack_file(stack)}: no such stack file; create it with `pulumi stack init {stack}`, or use "
                        f"one of: {', '.join(stacks) or 'none'}")
    merged = merged_config(request, doc)
    problems = _placeholder_problems(stack, merged)
    refused = (f"{request.operation} {stack} refused: fix the lines above first "
               f"(`python -m infra plan --stack {stack}` checks the settings offline)")
    try:
        plan = build_plan(settings_from_stack_config(stack, merged))
    except UserError as err:
        raise UserError([*err.lines, *problems, refused]) from None
    if problems:
        raise UserError([*problems, refused])
    return plan


def merged_config(request: Request, doc: Mapping[str, Any] | None) -> dict[str, Any]:
    """The stack file's config with this run's --config/--secret-env applied, as the program will read it (a secret
    is only known to be set: its value stays in the request)."""
    return {**_config_of(doc), **{c.key: ({"secure": SECRET_FROM_ENVIRONMENT} if c.secret else c.parsed)
                                  for c in request.changes}}


def api_key_problems(request: Request, doc: Mapping[str, Any] | None, plan: Plan) -> list[str]:
    """``kaito-aks:apiKeys`` checked offline when the plan has the gateway, so a bad key list is refused before
    anything is created rather than when the gateway's turn comes in `pulumi up`. The value of ``--secret-env
    apiKeys=ENV`` is validated as the gateway parses it (lines never quote a key); a ``secure:`` value in the stack
    file can't be decrypted offline and is left to the program (the placeholder is refused by the plan gate)."""

    if not plan.settings.gateway_enabled:
        return []
    key = f"{PROJECT}:apiKeys"
    given = next((c for c in request.changes if c.key == key), None)
    if given is not None:
        try:
            parse_api_keys(given.value)
        except ApiKeysError as err:
            return [f"{line} (in --secret-env apiKeys; not echoed)" for line in err.lines]
        return []
    return []   # not given here: set in the stack (encrypted: the program checks it), or the plan already refused


def webhook_problems(request: Request) -> list[str]:
    """The value of ``--secret-env alertWebhookUrl=ENV`` checked as `pulumi up` will (never quoted)."""
    given = next((c for c in request.changes if c.key == f"{PROJECT}:alertWebhookUrl"), None)
    problem = webhook_url_problem(given.value) if given is not None else None
    return [f"{PROJECT}:alertWebhookUrl: {problem} (in --secret-env alertWebhookUrl; not echoed)"] if problem else []


def check_api_keys(request: Request, doc: Mapping[str, Any] | None, plan: Plan) -> None:
    problems = api_key_problems(request, doc, plan) + webhook_problems(request)
    if problems:
        raise UserError(problems)


def _placeholder_problems(stack: str, config: Mapping[str, Any]) -> list[str]:
    problems = []
    for key in SECRET_KEYS:
        value = config.get(f"{PROJECT}:{key}")
        if isinstance(value, dict) and PLACEHOLDER_MARK in str(value.get("secure", "")):
            problems.append(f"{PROJECT}:{key}: Pulumi.{stack}.yaml still holds the placeholder; pass "
                            f"--secret-env {key}=ENVVAR, or run `pulumi config set --secret {key} ...` first")
    return problems


def plan_summary(plan: Plan | None) -> dict[str, Any] | None:
    if plan is None:
        return None
    return {"usd_per_hour": plan.usd_per_hour, "usd_per_month": plan.usd_per_month,
            "kaito": {"mode": plan.kaito_mode, "version": plan.kaito_version}}


def best_effort_plan(stack: str, doc: Mapping[str, Any] | None = None) -> Plan | None:
    """For ``outputs``: the runtimes of the models, when the stack file can still be planned (else None)."""
    try:

        doc = doc if doc is not None else read_stack_file(stack)
        return build_plan(settings_from_stack_config(stack, _config_of(doc))) if doc is not None else None
    except Exception:  # noqa: BLE001 -- best effort: the runtimes default to vllm
        return None


# ---------------------------------------------------------------------------------------------------------
# The environment: CLI, backend, Azure credentials (cheap, local checks; one line each)

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
    except (OSError, ValueError, AttributeError, RecursionError):  # unreadable, not UTF-8/JSON, not an object
        current = None
    if current:
        return str(current)
    try:
        project = load_yaml_mapping(PROJECT_DIR / "Pulumi.yaml", "project file")
        return (project.get("backend") or {}).get("url")
    except (OSError, UserError, AttributeError):
        return None


def backend_problems(env: Mapping[str, str], stack: str, doc: Mapping[str, Any] | None = None) -> list[str]:
    url = backend_url(env) or ""
    if not url and not env.get("PULUMI_ACCESS_TOKEN"):
        return ["pulumi backend: none configured; set PULUMI_BACKEND_URL (e.g. azblob://state?storage_account=NAME "
                "or file://$HOME/.pulumi-state), or PULUMI_ACCESS_TOKEN for Pulumi Cloud, or run `pulumi login`"]
    diy = bool(url) and url.split("://", 1)[0] in ("file", "azblob", "s3", "gs")
    passphrase = env.get("PULUMI_CONFIG_PASSPHRASE") or env.get("PULUMI_CONFIG_PASSPHRASE_FILE")
    if diy and _uses_passphrase(stack, doc) and not passphrase:
        return [f"PULUMI_CONFIG_PASSPHRASE: not set; stacks in the DIY backend {url.split('?', 1)[0]} encrypt "
                "their secrets with a passphrase: set it (or PULUMI_CONFIG_PASSPHRASE_FILE)"]
    return []


def _uses_passphrase(stack: str, doc: Mapping[str, Any] | None = None) -> bool:
    if doc is None:
        try:
            doc = read_stack_file(stack)
        except UserError:
            doc = None
    provider = (doc or {}).get("secretsprovider")
    return not provider or str(provider).startswith("passphrase")


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
    """Replaces secret values, and the pieces of them, in any text or JSON-like value (see the module docstring).

    A secret's whole text is searched for when it has at least MIN_SECRET_FRAGMENT characters; its pieces (each
    API key of a list, each string inside a JSON/YAML secret such as a kubeconfig's token) when they have at
    least ``min_piece`` characters (MIN_INPUT_PIECE for --secret-env values, MIN_SECRET_PIECE for secret outputs)
    and are not a value the stack exports in plain text (a kubeconfig's cluster name is also the
    ``cluster_name`` output). Each is searched for in every form of :func:`secret_forms`; a piece of 4+
    characters left at a cut (start/end of the text, either side of ``…``/``...``) is redacted too.
    """

    def __init__(self, secrets: Iterable[Any] = ()):
        self._fragments: set[str] = set()
        self._text_re: re.Pattern[str] | None = None
        self._b64_re: re.Pattern[str] | None = None
        self._cut_forms: list[str] = []
        self._longest = 0
        for s in secrets:
            self.add(s, min_piece=MIN_INPUT_PIECE)

    def add(self, value: Any, plain: set[str] | frozenset[str] = frozenset(),
            min_piece: int = MIN_SECRET_PIECE, recompile: bool = True) -> None:
        whole = value.strip() if isinstance(value, str) else None
        if whole and len(whole) >= MIN_SECRET_FRAGMENT:
            self._fragments.add(whole)
        for piece in _pieces(value):
            if len(piece) >= max(min_piece, MIN_SECRET_FRAGMENT) and piece not in plain:
                self._fragments.add(piece)
        if recompile:
            self._compile()

    def _compile(self) -> None:
        texts: set[str] = set()
        b64: set[str] = set()
        for fragment in self._fragments:
            t, b = secret_forms(fragment)
            texts |= {f for f in t if len(f) >= MIN_SECRET_FRAGMENT}
            b64 |= b
        ordered = sorted(texts, key=len, reverse=True)
        self._text_re = re.compile("|".join(map(re.escape, ordered)), re.IGNORECASE) if ordered else None
        self._b64_re = re.compile("|".join(map(re.escape, sorted(b64, key=len, reverse=True)))) if b64 else None
        self._cut_forms = [f.translate(_ASCII_LOWER) for f in ordered if len(f) > MIN_CUT_PIECE and "\n" not in f]
        self._longest = max((len(f) for f in [*ordered, *b64]), default=0)

    def text(self, text: str) -> str:
        text = str(text)
        if self._text_re is None:
            return text
        text = self._text_re.sub(SECRET, text)
        if self._b64_re is not None:
            text = self._b64_re.sub(SECRET, text)
        parts = _CUT.split(text)
        if len(parts) == 1:
            return text
        # a piece is redacted only where a text was cut (the start and end of any text would match too much:
        # every line starting with "version" is the end of a kubeconfig's "apiVersion")
        last = len(parts) - 1
        return "".join(part if i % 2 else self._cut_pieces(part, tail=i < last, head=i > 0)
                       for i, part in enumerate(parts))

    def _cut_pieces(self, seg: str, *, tail: bool, head: bool) -> str:
        """``seg`` is followed (``tail``) / preceded (``head``) by a cut: its last/first characters may be the
        start/end of a secret."""
        for form in self._cut_forms:
            core = seg.rstrip() if tail else ""
            low = core.translate(_ASCII_LOWER)
            p = low.find(form[:MIN_CUT_PIECE], max(0, len(low) - len(form) + 1))
            while p != -1:                      # the end of seg is the start of the form
                if form.startswith(low[p:]):
                    seg = core[:p] + SECRET + seg[len(core):]
                    break
                p = low.find(form[:MIN_CUT_PIECE], p + 1)
            lead = len(seg) - len(seg.lstrip())
            low = seg[lead:].translate(_ASCII_LOWER) if head else ""
            q = low.rfind(form[-MIN_CUT_PIECE:], 0, len(form) - 1)
            while q != -1:                      # the start of seg is the end of the form
                if form.endswith(low[: q + MIN_CUT_PIECE]):
                    seg = seg[:lead] + SECRET + seg[lead + q + MIN_CUT_PIECE:]
                    break
                q = low.rfind(form[-MIN_CUT_PIECE:], 0, q + MIN_CUT_PIECE - 1)
        return seg

    def split_secret(self, prev: str, cur: str) -> tuple[str, str]:
        """``prev`` and ``cur`` are consecutive output lines: a secret that starts at the end of ``prev`` and goes
        on at the start of ``cur`` (a wrapped or split line, its indent ignored) is redacted in both."""
        for start in dict.fromkeys((len(cur) - len(cur.lstrip()), 0)):
            joined = prev + cur[start:]
            for rx in (self._text_re, self._b64_re):
                if rx is None:
                    continue
                for m in rx.finditer(joined, max(0, len(prev) - self._longest)):
                    if m.start() >= len(prev):
                        break
                    if m.end() > len(prev):
                        return prev[: m.start()] + SECRET, cur[:start] + SECRET + cur[start + m.end() - len(prev):]
        return prev, cur

    def lines(self, text: str) -> str:
        """Multi-line text redacted line by line, a secret split across two consecutive lines included."""
        out: list[str] = []
        held: str | None = None
        for line in str(text).splitlines():
            if held is not None:
                prev, line = self.split_secret(held, line)
                out.append(self.text(prev))
            held = line
        if held is not None:
            out.append(self.text(held))
        return "\n".join(out)

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
                self.add(out.value, plain, recompile=False)
        self._compile()
        return {k: SECRET if out.secret else self.value(out.value) for k, out in outputs.items()}


class LineStream:
    """One output callback's lines through the redactor, held back one line so that a secret split across two
    consecutive lines is caught (:meth:`Redactor.split_secret`). ``flush()`` emits the last line."""

    def __init__(self, redactor: Redactor, emit: Callable[[str], None]):
        self._redactor, self._emit = redactor, emit
        self._held: str | None = None

    def __call__(self, line: str) -> None:
        line = str(line).rstrip("\r\n")
        if self._held is not None:
            prev, line = self._redactor.split_secret(self._held, line)
            self._emit(_printable_text(self._redactor.text(prev)))
        self._held = line

    def flush(self) -> None:
        if self._held is not None:
            held, self._held = self._held, None
            self._emit(_printable_text(self._redactor.text(held)))


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_CUT = re.compile(r"(…|\.\.\.)")


def secret_forms(secret: str) -> tuple[set[str], set[str]]:
    """The ways a secret gets printed: (text forms, matched in any letter case; base64 forms, matched exactly).

    Text: as is; ``repr``/``ascii``/``unicode_escape`` (either quote), JSON (ASCII or not, ``\\/``) and HTML
    escaped; percent-encoded (``quote`` with and without ``/`` safe, ``quote_plus``); hex of its UTF-8; each of those
    inside a JSON string once more. Base64 (of the secret and of those forms): the
    characters that encode only the secret's bytes at each of the 3 alignments it can have inside a longer base64
    text (``base64(user:secret)``, ``base64("Bearer " + secret)``), standard and URL-safe alphabets; those shorter
    than MIN_BASE64_FORM are left out (they match ordinary words).
    """
    s = secret
    raw = s.encode("utf-8", "surrogatepass")
    texts = {s, json.dumps(s)[1:-1], json.dumps(s, ensure_ascii=False)[1:-1], json.dumps(s)[1:-1].replace("/", "\\/"),
             repr(s)[1:-1], ascii(s)[1:-1], s.encode("unicode_escape").decode("ascii"),
             s.replace("\\", "\\\\").replace("'", "\\'"), s.replace("\\", "\\\\").replace('"', '\\"'),
             html.escape(s), html.escape(s, quote=False), urllib.parse.quote(raw, safe=""), urllib.parse.quote(raw),
             urllib.parse.quote_plus(raw), raw.hex()}
    texts |= {json.dumps(t)[1:-1] for t in texts}  # each of them inside a JSON string (one more layer)
    texts = {t for t in texts if t}
    b64 = set()
    for text in {s, *(t for t in texts if t.lower() != s.lower())}:  # base64 of the escaped forms too (JSON...)
        data = text.encode("utf-8", "surrogatepass")
        for k in range(3):
            start, end = (8 * k + 5) // 6, (8 * (k + len(data))) // 6
            for enc in (base64.b64encode, base64.urlsafe_b64encode):
                core = enc(b"\0" * k + data).decode("ascii")[start:end]
                if len(core) >= MIN_BASE64_FORM:
                    b64.add(core)
    return texts, b64


def _printable_text(text: str) -> str:
    """``text`` as printable on any stdout: lone surrogates (undecodable bytes) escaped, nothing else touched."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


MAX_LEAVES = 100_000


def _leaves(value: Any, keys: bool = True) -> set[str]:
    """Every string inside a JSON-like value (mapping keys too, unless ``keys`` is False); iterative, at most
    MAX_LEAVES nodes visited."""
    out: set[str] = set()
    todo, seen = [value], 0
    while todo and seen < MAX_LEAVES:
        v = todo.pop()
        seen += 1
        if isinstance(v, dict):
            todo += [*v.keys(), *v.values()] if keys else list(v.values())
        elif isinstance(v, (list, tuple)):
            todo += list(v)
        elif isinstance(v, str) and v.strip():
            out.add(v.strip())
    return out


def _pieces(value: Any) -> set[str]:
    """The strings inside a secret: JSON-like leaves, the leaves of a JSON/YAML text, comma/newline parts.
    Mapping keys are structure (a kubeconfig's ``apiVersion``, ``token``), not secret material: left out."""
    if not isinstance(value, str):
        out: set[str] = set()
        for leaf in _leaves(value, keys=False):
            out |= _pieces(leaf)
        return out
    out = {part.strip() for line in value.splitlines() for part in line.split(",")}
    parsed = None
    if len(value) <= 1024 * 1024:
        try:  # JSON is YAML: API key lists, kubeconfigs (bounded: no alias bombs, no deep nesting)
            parsed = parse_yaml_text(value, "secret")
        except Exception:  # noqa: BLE001 -- not YAML, or a hostile one: the comma/newline parts remain
            parsed = None
    if isinstance(parsed, (dict, list)):
        out |= _leaves(parsed, keys=False)
    return {p for p in out if p}


# ---------------------------------------------------------------------------------------------------------
# Outputs -> endpoints and checks

def endpoints(outputs: Mapping[str, Any], plan: Plan | None = None) -> list[dict[str, Any]]:
    """One entry per endpoint URL of each model, from the (redacted) stack outputs."""
    models: dict = outputs["models"] if isinstance(outputs.get("models"), dict) else {}
    kaito: dict = outputs["kaito"] if isinstance(outputs.get("kaito"), dict) else {}
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
    models: dict = outputs["models"] if isinstance(outputs.get("models"), dict) else {}
    return {name: list(m.get("checks") or []) for name, m in sorted(models.items()) if isinstance(m, dict)}


def endpoint_lines(entries: Sequence[Mapping[str, Any]]) -> list[str]:
    return ["\t".join(str(e.get(k) or "-") for k in ("model", "url", "served_model", "runtime", "kaito_version"))
            for e in entries]


# ---------------------------------------------------------------------------------------------------------
# The run

@dataclasses.dataclass
class Summary:
    stack: str
    operation: Operation
    result: RunResult = "refused"
    errors: list[str] = dataclasses.field(default_factory=list)
    resource_changes: dict[str, int] = dataclasses.field(default_factory=dict)
    duration_seconds: float = 0.0
    outputs: dict[str, Any] = dataclasses.field(default_factory=dict)
    endpoints: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    endpoint_checks: dict[str, list] = dataclasses.field(default_factory=dict)
    plan: dict | None = None
    preflight: dict[str, Any] = dataclasses.field(
        default_factory=lambda: {"ran": False, "skipped_because": None, "problems": []})
    kaito_version: dict[str, Any] = dataclasses.field(
        default_factory=lambda: {"checked": False, "running": None, "planned": None, "note": None})

    def to_json(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, **dataclasses.asdict(self)}


@dataclasses.dataclass
class Deps:
    """Everything the driver touches outside itself; tests replace any of it."""

    api_factory: Callable[[pathlib.Path], AutomationApi] = lambda pulumi: PulumiAutomation(pulumi)
    env: Mapping[str, str] = dataclasses.field(default_factory=lambda: dict(os.environ))
    which: Callable[..., str | None] = shutil.which
    run: Callable[..., subprocess.CompletedProcess] = subprocess.run
    out: Callable[[str], None] = lambda line: print(_printable_text(line), flush=True)
    err: Callable[[str], None] = lambda line: print(_printable_text(line), file=sys.stderr, flush=True)
    clock: Callable[[], float] = time.monotonic
    # the Azure side of the preflight: the credential (from the environment) and the read of usages/SKUs/scale sets
    azure_credential: Callable[[Mapping[str, str]], Any] = cli_preflight.default_credential
    azure_read: cli_preflight.ReadAzure = read_azure
    # preview against an existing cluster: the KAITO release it runs (kubeconfig, mode) -> what the gate reads
    read_kaito: Callable[[str, KaitoMode], RunningKaito] = read_running


def execute(request: Request, deps: Deps, summary: Summary, redactor: Redactor) -> None:
    """Run ``request``; fills ``summary``. Raises UserError (refused / exit code) or OperationFailedError."""
    op = request.operation
    doc = read_stack_file(request.short_stack)  # every operation: a stack file that can't be used is one line
    plan = offline_plan(request, doc) if op in RUNS_PLAN else None
    summary.plan = plan_summary(plan)
    if plan is not None:
        check_api_keys(request, doc, plan)
    pulumi = check_environment(request, deps, doc)
    if op in RUNS_AZURE_PREFLIGHT:
        assert plan is not None, "the operations that run the Azure preflight are planned first (RUNS_PLAN)"
        azure_preflight(request, deps, doc, plan, summary, redactor)
    else:
        summary.preflight["skipped_because"] = f"{op}: only preview and up run it"
    stack = open_stack(request, deps, doc, pulumi)
    if op == "preview":
        assert plan is not None, "preview is planned first (RUNS_PLAN)"
        check_running_kaito(stack, plan, deps, summary, redactor)
    if op != "outputs":
        summary.resource_changes = run_operation(stack, op, deps, redactor)
    if op in ("up", "refresh", "outputs"):
        outputs = redactor.outputs(stack.outputs())
        plan = plan if plan is not None else best_effort_plan(request.short_stack, doc)
        summary.outputs = outputs
        summary.endpoints = endpoints(outputs, plan)
        summary.endpoint_checks = endpoint_checks(outputs)
    if op == "outputs":
        for line in endpoint_lines(summary.endpoints):
            deps.out(_printable_text(line))


def check_running_kaito(stack: StackApi, plan: Plan, deps: Deps, summary: Summary, redactor: Redactor) -> None:
    """Preview of a stack whose cluster exists: refuse when it runs another KAITO release than the plan's."""
    state = summary.kaito_version
    state["planned"] = plan.kaito_version
    kubeconfig = stack.outputs().get("kubeconfig")
    if kubeconfig is None or not isinstance(kubeconfig.value, str) or not kubeconfig.value:
        state["note"] = "no cluster yet: `pulumi up` checks the version once the cluster exists"
        return
    redactor.add(kubeconfig.value)
    try:
        running = deps.read_kaito(kubeconfig.value, plan.kaito_mode)
    except Exception as err:  # noqa: BLE001 -- any failure to read is a note: `up`'s gate reads it again
        state["note"] = f"the cluster's KAITO version could not be read ({type(err).__name__}); `pulumi up` checks it"
        deps.err(redactor.text(f"note: {state['note']}"))
        return
    state["checked"], state["running"], state["note"] = True, running.shown, running.evidence
    problem = gate_problem(running, plan.kaito_version, plan.kaito_mode)
    if problem is not None:
        raise UserError([redactor.text(problem)])


def open_stack(request: Request, deps: Deps, doc: Mapping[str, Any] | None = None,
               pulumi: pathlib.Path | None = None) -> StackApi:
    """The stack (created only for up/preview), with this run's config set; the environment is checked first unless
    ``pulumi`` (:func:`check_environment`'s result) is given."""
    api = deps.api_factory(pulumi if pulumi is not None else check_environment(request, deps, doc))
    if request.operation in RUNS_PLAN:
        stack = api.create_or_select_stack(request.stack)
    else:
        stack = api.select_stack(request.stack)
    for change in request.changes:
        stack.set_config(change.key, change.value, secret=change.secret)
    return stack


def run_operation(stack: StackApi, op: Operation, deps: Deps, redactor: Redactor) -> dict[str, int]:
    """Install the plugins, run ``op`` streaming the engine's (redacted) output; the resource changes."""
    for name, version in required_plugins():
        stack.install_plugin(name, version)
    stream_out, stream_err = LineStream(redactor, deps.out), LineStream(redactor, deps.err)
    try:
        changes = getattr(stack, op)(stream_out, stream_err)
    finally:
        stream_out.flush()
        stream_err.flush()
    return {str(getattr(k, "value", k)): int(v) for k, v in (changes or {}).items()}


def check_environment(request: Request, deps: Deps, doc: Mapping[str, Any] | None = None) -> pathlib.Path:
    """The Pulumi CLI (its path is returned), a backend, and (not for outputs) visible Azure credentials."""
    pulumi = find_pulumi(deps.env, deps.which)
    if pulumi is None:
        raise UserError(CLI_MISSING)
    problems = backend_problems(deps.env, request.short_stack, doc)
    if request.operation in NEEDS_AZURE:
        problems += azure_problems(deps.env, deps.which, deps.run)
    if problems:
        raise UserError(problems)
    return pulumi


# ---------------------------------------------------------------------------------------------------------
# The Azure preflight (quota, size availability, the KAITO add-on's region) before preview/up

AZURE_CREDENTIALS_FIX = (
    "run `az login` (local), or in CI set ARM_USE_OIDC=true with ARM_CLIENT_ID, ARM_TENANT_ID, ARM_SUBSCRIPTION_ID "
    f"and give the job `permissions: id-token: write`; or pass {SKIP_PREFLIGHT} to deploy without the quota check")


def preflight_skip_reason(request: Request, env: Mapping[str, str]) -> str | None:
    if request.skip_preflight:
        return SKIP_PREFLIGHT
    if _truthy(env.get(SKIP_AZURE_CHECK)):
        return f"{SKIP_AZURE_CHECK}=1"
    return None


def azure_preflight(request: Request, deps: Deps, doc: Mapping[str, Any] | None, plan: Plan, summary: Summary,
                    redactor: Redactor) -> None:
    """Ask Azure whether the plan's node pools can be created (``python -m infra preflight``'s checks), before the
    stack is opened: a missing GPU quota otherwise fails ten or more minutes into ``up``. Records the outcome in
    ``summary.preflight``; prints what was checked on stdout; UserError (exit 2, refused) with one line per problem,
    or one line when Azure can't be asked."""
    record = summary.preflight
    record["skipped_because"] = preflight_skip_reason(request, deps.env)
    if record["skipped_because"]:
        return
    report = _ask_azure(plan, preflight_subscription(request, deps, doc), deps)
    record["ran"] = True
    record["problems"] = [redactor.text(bounded_line(line, MAX_LINE_CHARS)) for line in report.problems]
    if report.problems:
        op, stack = request.operation, request.short_stack
        raise UserError(record["problems"] + [
            f"{op} {stack} refused before creating anything: Azure would reject the node pools above; fix them (or "
            f"pass {SKIP_PREFLIGHT} to try anyway)"])
    for line in report.lines:
        deps.out(redactor.text(bounded_line(f"preflight: {line}", MAX_LINE_CHARS)))


def preflight_subscription(request: Request, deps: Deps, doc: Mapping[str, Any] | None) -> str:
    """The subscription the pools go to, found as ``python -m infra preflight`` finds it (the environment, the
    stack's ``azure-native:subscriptionId`` with this run's --config, the Azure CLI's default)."""
    try:
        return cli_preflight.resolve_subscription(
            None, deps.env, merged_config(request, doc), option="--config azure-native:subscriptionId=ID",
            az=lambda: cli_preflight.az_default_subscription(deps.which, deps.run))
    except UserError as err:
        raise UserError([f"{line} ({SKIP_PREFLIGHT} skips the Azure preflight)" for line in err.lines]) from None


def _ask_azure(plan: Plan, subscription: str, deps: Deps) -> Report:
    """The preflight's Report; UserError (exit 2) with one line naming the fix when Azure can't be asked."""
    try:
        return cli_preflight.preflight(plan, subscription, deps.azure_credential(deps.env), read=deps.azure_read)
    except cli_preflight.AzureCredentialsError as err:
        # the CLI's line says what is wrong, then fixes for azure-identity's variables; the driver runs where
        # Pulumi's ARM_* variables (CI) or `az login` are the way, and has a flag to go on without the check
        what = err.lines[0].split("; ", 1)[0]
        raise UserError(f"{what}; {AZURE_CREDENTIALS_FIX}") from None
    except UserError as err:
        raise UserError([f"{line} ({SKIP_PREFLIGHT} skips the Azure preflight)" for line in err.lines]) from None


def _where(err: BaseException) -> str:
    """``file:line`` of the innermost frame of ``err`` (relative to the project): where a bug happened."""
    frames = traceback.extract_tb(err.__traceback__)
    if not frames:
        return "?"
    path = pathlib.Path(frames[-1].filename)
    try:
        path = path.resolve().relative_to(PROJECT_DIR)
    except (ValueError, OSError):
        path = pathlib.Path(path.name)
    return f"{path}:{frames[-1].lineno}"


def run(argv: Sequence[str] | None = None, deps: Deps | None = None, prog: str = PROG) -> int:
    deps = deps or Deps()
    args = build_parser(prog).parse_args(argv)  # exits 2 on bad arguments (one line)
    summary = Summary(stack=bounded_line(args.stack, 200), operation=args.operation)
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
    except OperationFailedError as err:
        code = 1
        summary.result = "failed"
        shown = first_error_line_redacted(err.detail, redactor) if err.detail else str(err)
        summary.errors = [redactor.text(f"{args.operation} {summary.stack} failed: {shown}")]
    except KeyboardInterrupt:
        code = 130
        summary.result = "failed"
        summary.errors = ["interrupted"]
    except Exception as err:  # noqa: BLE001 -- a bug, not a user mistake: one redacted line, never a traceback
        code = 1
        summary.result = "failed"
        summary.errors = [redactor.text(f"{args.operation} {summary.stack}: unexpected {type(err).__name__} at "
                                        f"{_where(err)} (a bug in kaito-aks; please report it): {err}")]
    summary.errors = [redactor.text(bounded_line(line, MAX_LINE_CHARS)) for line in summary.errors]
    summary.duration_seconds = round(deps.clock() - started, 1)
    for line in summary.errors:
        deps.err(line)
    if summary.result == "succeeded" and args.operation != "outputs":
        deps.err(bounded_line(result_line(summary), MAX_LINE_CHARS))
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
        text = json.dumps(summary.to_json(), indent=2, default=str) + "\n"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(path)
    except OSError as e:
        deps.err(bounded_line(f"--json-out {path}: cannot write ({e.strerror or e})", MAX_LINE_CHARS))
        return 2
    except Exception as e:  # noqa: BLE001 -- e.g. an output nobody can serialise: still one line
        deps.err(bounded_line(f"--json-out {path}: cannot write the summary ({type(e).__name__})", MAX_LINE_CHARS))
        return 1
    return 0


# ---------------------------------------------------------------------------------------------------------
# Production boundary: pulumi.automation, local program in the project root

def first_error_line(text: str) -> str:
    """The most useful single line of a failed pulumi command's output."""
    # str(CommandError) is "\n code: N\n stdout: ...\n stderr: ..."
    lines = [re.sub(r"^(stdout|stderr):\s*", "", raw.strip()) for raw in text.splitlines()]
    lines = [line for line in lines if line and not re.fullmatch(r"code: -?\d+", line)]
    for line in lines:
        if line.startswith("error:"):
            return line.removeprefix("error:").strip()
    return lines[-1] if lines else "the pulumi command failed"


def first_error_line_redacted(text: str, redactor: Redactor) -> str:
    """:func:`first_error_line` of a command's whole output, redacted with the lines around it (a secret may
    continue from the line before or onto the line after) -- without redacting megabytes of engine output."""
    lines = text.splitlines()
    pick = next((i for i, line in enumerate(lines) if re.sub(r"^(stdout|stderr):\s*", "", line.strip())
                 .startswith("error:")), None)
    if pick is None:
        window = lines[-2:]
    else:
        window = lines[max(0, pick - 1): pick + 2]
    redacted = redactor.lines("\n".join(window)).splitlines()
    if pick is None:
        return first_error_line("\n".join(redacted))
    return first_error_line(redacted[min(pick, 1)])  # the picked line, now redacted


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
    """pulumi.automation errors -> UserError / OperationFailedError with one line each."""
    try:
        return fn()
    except auto.ConcurrentUpdateError:
        raise UserError(f"stack {stack_name}: locked by another update; wait for it to finish (a lock left by a "
                        "killed run: `pulumi cancel` on Pulumi Cloud, or delete the stack's entry under "
                        ".pulumi/locks/ in a DIY backend)", exit_code=1) from None
    except auto.CommandError as e:
        raise OperationFailedError(first_error_line(str(e)), detail=str(e)) from None


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    """The last resort around :func:`run`: whatever happens, one line and a non-zero exit, never a traceback
    (the exception's message is left out here: no redactor is known at this level)."""
    try:
        return run(argv, prog=prog)
    except KeyboardInterrupt:
        return 130
    except Exception as err:  # noqa: BLE001
        with contextlib.suppress(Exception):  # stderr itself may be gone
            print(bounded_line(f"{prog}: internal error ({type(err).__name__} at {_where(err)}); "
                               "a bug in kaito-aks: please report it"), file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
