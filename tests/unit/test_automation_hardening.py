"""infra.automation against hostile input (fakes for the Automation API, as in test_automation.py).

14. Config: on EVERY operation (refresh/destroy skip the plan gate, not this), --config takes only the known plain
    keys; secret-looking keys (a known secret in any case, secret/token/password/key/credential in the name, also
    inside a JSON value) are refused pointing to --secret-env; values are never echoed, not even through argparse
    (abbreviations, unrecognized arguments).
15. Redaction: every encoded form (case, repr/JSON/HTML escaping, percent-encoding, base64 alone and inside
    wrappers, hex), a secret split across two streamed lines or two lines of an engine error, a piece left at a
    cut; secrets under 4 characters refused at input, 4+ character pieces of input secrets redacted.
16. No traceback: deeply nested --config JSON, a list-shaped stack file, a non-mapping ``config:``, non-UTF-8,
    alias bombs, an unexpected exception -- one bounded line each (exit 2, or 1 for a bug), for any input.
"""
from __future__ import annotations

import base64
import html
import json
import os
import pathlib
import subprocess
import sys
import urllib.parse

import pytest

from infra import automation
from infra.automation import Deps, OperationFailedError, StackOutput
from infra.errors import UserError
from infra.settings import PROJECT_DIR

HF = "hf_FAKE0token0for0tests0only0xyz"
KEYS = '["sk-alpha-0001","sk-beta-0002"]'
MAX_LINE = 400
OPERATIONS = {"up": ("--yes",), "preview": (), "refresh": (), "destroy": ("--yes",), "outputs": ()}


class FakeStack:
    def __init__(self, lines=("Updating (dev)",), err_lines=(), outputs=None, fail: Exception | None = None):
        self.calls: list[tuple] = []
        self.lines, self.err_lines, self.fail = lines, err_lines, fail
        self._outputs = outputs if outputs is not None else {"cluster_name": StackOutput("kaito-dev")}

    def set_config(self, key, value, *, secret):
        self.calls.append(("set_config", key, value, secret))

    def install_plugin(self, name, version):
        self.calls.append(("install_plugin", name, version))

    def _op(self, name, on_output, on_error):
        self.calls.append((name,))
        for line in self.lines:
            on_output(line + "\n")
        for line in self.err_lines:
            on_error(line + "\n")
        if self.fail is not None:
            raise self.fail
        return {"same": 1}

    up = lambda self, o, e: self._op("up", o, e)            # noqa: E731
    preview = lambda self, o, e: self._op("preview", o, e)  # noqa: E731
    destroy = lambda self, o, e: self._op("destroy", o, e)  # noqa: E731
    refresh = lambda self, o, e: self._op("refresh", o, e)  # noqa: E731

    def outputs(self):
        self.calls.append(("outputs",))
        return self._outputs


class Harness:
    def __init__(self, tmp_path: pathlib.Path, stack: FakeStack | None = None, **env: str):
        self.stack = stack or FakeStack()
        self.factory_calls = 0
        self.out: list[str] = []
        self.err: list[str] = []
        self.tmp = tmp_path
        self.env = {"PATH": "/usr/bin", "HOME": str(tmp_path), "PULUMI_BACKEND_URL": "file:///tmp/state",
                    "PULUMI_CONFIG_PASSPHRASE": "pass-phrase-1", "KAITO_AKS_SKIP_AZURE_CHECK": "1",
                    "HF_TOKEN": HF, "API_KEYS": KEYS, **env}

        harness = self

        class Api:
            def create_or_select_stack(self, name):
                return harness.stack

            select_stack = create_or_select_stack

        def factory(pulumi):
            self.factory_calls += 1
            return Api()

        self.deps = Deps(api_factory=factory, env=self.env, which=lambda name, path=None: "/opt/pulumi/bin/pulumi",
                         run=lambda *a, **k: None, out=self.out.append, err=self.err.append, clock=lambda: 0.0)

    def __call__(self, *argv: str) -> tuple[int, dict]:
        path = self.tmp / "summary.json"
        path.unlink(missing_ok=True)
        code = automation.run([*argv, "--json-out", str(path)], self.deps)
        return code, json.loads(path.read_text())

    @property
    def printed(self) -> str:
        return "\n".join(self.out + self.err)

    def set_calls(self) -> list[tuple]:
        return [c for c in self.stack.calls if c[0] == "set_config"]


@pytest.fixture
def h(tmp_path) -> Harness:
    return Harness(tmp_path)


def assert_one_line_refusal(h: Harness, code: int, summary: dict, *needles: str) -> str:
    assert code == 2 and summary["result"] == "refused", summary
    assert len(summary["errors"]) == 1 and h.err == summary["errors"], (summary["errors"], h.err)
    line = summary["errors"][0]
    assert len(line) <= MAX_LINE and "Traceback" not in h.printed
    for needle in needles:
        assert needle in line, line
    return line


# =================================================================================================================
# 14. Config keys: an allow-list, secret-looking keys refused, on every operation
# =================================================================================================================
SECRETISH = ["azure-native:clientSecret=s3cr3t-VALUE-42", "HfToken=s3cr3t-VALUE-42", "hftoken=s3cr3t-VALUE-42",
             "HFTOKEN=s3cr3t-VALUE-42", "kaito-aks:ApiKeys=s3cr3t-VALUE-42", "apikeys=s3cr3t-VALUE-42",
             "azure-native:ClientSecret=s3cr3t-VALUE-42", "kaito-aks:adminPassword=s3cr3t-VALUE-42",
             "sshKey=s3cr3t-VALUE-42", "aws:secretKey=s3cr3t-VALUE-42", "azure-native:oidcToken=s3cr3t-VALUE-42",
             "kaito-aks:credentials=s3cr3t-VALUE-42", "azure-native:clientCertificatePassword=s3cr3t-VALUE-42"]


@pytest.mark.parametrize("op", ["refresh", "destroy", "preview", "up"])  # (outputs sets no config at all)
@pytest.mark.parametrize("item", SECRETISH)
def test_secret_looking_config_is_refused_on_every_operation_and_never_stored(tmp_path, op, item):
    h = Harness(tmp_path)
    code, summary = h(op, "--stack", "dev", *OPERATIONS[op], "--config", item)
    line = assert_one_line_refusal(h, code, summary, "--secret-env", "not used or echoed")
    assert h.set_calls() == [] and h.factory_calls == 0
    assert "s3cr3t-VALUE-42" not in h.printed + json.dumps(summary), line


def test_a_case_typo_of_a_secret_names_the_right_key(h):
    code, summary = h("destroy", "--stack", "dev", "--yes", "--config", f"HfToken={HF}")
    line = assert_one_line_refusal(h, code, summary, "did you mean hfToken?", "--secret-env hfToken=ENVVAR")
    assert HF not in line and h.set_calls() == []


UNKNOWN = ["Budget=3", "kaito-aks:Models=[]", "nosuch=1", "azure-native:foo=bar", "pulumi:template=x",
           "kubernetes:context=admin", "Kaito-aks:budget=1"]


@pytest.mark.parametrize("op", ["refresh", "destroy", "preview", "up"])
@pytest.mark.parametrize("item", UNKNOWN)
def test_unknown_config_keys_are_refused_on_every_operation(tmp_path, op, item):
    h = Harness(tmp_path)
    code, summary = h(op, "--stack", "dev", *OPERATIONS[op], "--config", item)
    assert_one_line_refusal(h, code, summary, "not a key this driver sets")
    assert h.set_calls() == []


@pytest.mark.parametrize("value", ['{"servicePrincipalSecret": "x"}', '[{"name": "a", "hfToken": "hf_zz"}]',
                                   '{"systemPool": {"adminPassword": "p"}}'])
def test_a_secret_inside_a_config_value_is_refused(h, value):
    code, summary = h("refresh", "--stack", "dev", "--config", f"cluster={value}")
    assert_one_line_refusal(h, code, summary, "named like a secret", "--secret-env")
    assert h.set_calls() == []


def test_known_plain_keys_and_provider_secrets_still_work(h):
    code, summary = h("refresh", "--stack", "dev", "--config", "azure-native:location=westus3",
                      "--config", "azure-native:subscriptionId=0000-1111", "--config", "namespace=llm",
                      "--secret-env", "azure-native:clientSecret=HF_TOKEN")
    assert code == 0, summary["errors"]
    assert h.set_calls() == [("set_config", "azure-native:location", "westus3", False),
                             ("set_config", "azure-native:subscriptionId", "0000-1111", False),
                             ("set_config", "kaito-aks:namespace", "llm", False),
                             ("set_config", "azure-native:clientSecret", HF, True)]
    assert HF not in h.printed


@pytest.mark.parametrize("argv, not_echoed", [
    (["--config", HF], HF),                                  # the value without its key
    (["--config", f"={HF}"], HF),
    (["--secret-env", HF], HF),                              # the secret itself instead of KEY=ENVVAR
    (["--secret-env", f"hfToken={HF}"], HF),                 # the secret instead of the variable's name
    (["--secret", HF], HF),                                  # an abbreviation of --secret-env
    (["--conf", f"hfToken={HF}"], HF),                       # an abbreviation of --config
    (["--api-key", HF], HF),                                 # an unrecognized option
    (["--config", f"sk-{HF}=1"], HF),                        # a value where the key goes
    (["--stack2", HF], HF),
])
def test_values_are_never_echoed_whatever_the_mistake(tmp_path, argv, not_echoed, capsys):
    h = Harness(tmp_path)
    path = tmp_path / "s.json"
    try:
        code = automation.run(["refresh", "--stack", "dev", *argv, "--json-out", str(path)], h.deps)
    except SystemExit as exc:  # argparse
        code = exc.code
    captured = capsys.readouterr()
    text = h.printed + captured.out + captured.err + (path.read_text() if path.exists() else "")
    assert code == 2 and not_echoed not in text and "Traceback" not in text, text
    assert len((captured.err + "\n".join(h.err)).strip().splitlines()) == 1


# =================================================================================================================
# 15. Redaction: encoded forms, short secrets, lines split, cuts
# =================================================================================================================
ODD = 'hf_Ab"c\\d/e+f=g&h<i>j\'k-0123456789'   # quotes, backslash, slash, +, =, &, <, >: every escaping differs


def forms(secret: str) -> dict[str, str]:
    raw = secret.encode()
    return {
        "as is": secret, "upper": secret.upper(), "lower": secret.lower(), "swapcase": secret.swapcase(),
        "repr": repr(secret)[1:-1], "repr in a list": repr([secret]), "ascii": ascii(secret),
        "json": json.dumps(secret), "json in an object": json.dumps({"token": secret}),
        "json slash-escaped": json.dumps(secret).replace("/", "\\/"), "html": html.escape(secret),
        "quote": urllib.parse.quote(secret, safe=""), "quote /": urllib.parse.quote(secret),
        "quote_plus": urllib.parse.quote_plus(secret), "quote lower-case hex": urllib.parse.quote(secret, safe="").lower(),
        "base64": base64.b64encode(raw).decode(), "urlsafe base64": base64.urlsafe_b64encode(raw).decode(),
        "base64 Basic user:secret": base64.b64encode(b"user:" + raw).decode(),
        "base64 Basic secret:": base64.b64encode(raw + b":").decode(),
        "base64 'Bearer secret'": base64.b64encode(b"Bearer " + raw).decode(),
        "base64 in JSON": base64.b64encode(json.dumps({"auths": {"x": {"auth": secret}}}).encode()).decode(),
        "hex": raw.hex(), "HEX": raw.hex().upper(),
    }


def core_pieces(form: str, secret: str) -> list[str]:
    """What must not survive of ``form``: for base64 forms the characters encoding only the secret."""
    return [form] if len(form) < 12 else [form[len(form) // 4: len(form) * 3 // 4]]


ENCODED = [(secret, name) for secret in (HF, ODD) for name, form in forms(secret).items() if secret not in form]


@pytest.mark.parametrize("secret, name", ENCODED,
                         ids=[f"{name}-{'hf token' if s == HF else 'odd characters'}" for s, name in ENCODED])
def test_every_encoded_form_is_redacted_in_stream_errors_and_outputs(tmp_path, secret, name):
    form = forms(secret)[name]
    stack = FakeStack(lines=(f"diag: sending {form} now",), err_lines=(f"warning: {form}",),
                      outputs={"note": StackOutput(f"x {form} y"), "cluster_name": StackOutput("kaito-dev")},
                      fail=None)
    h = Harness(tmp_path, stack, HF_TOKEN=secret)
    code, summary = h("up", "--stack", "dev", "--yes", "--secret-env", "hfToken=HF_TOKEN")
    assert code == 0, summary["errors"]
    text = h.printed + json.dumps(summary)
    for piece in core_pieces(form, secret):
        assert piece not in text, (name, piece, text)
    assert "diag: sending " in text and "[secret]" in h.out[0]


def test_an_engine_error_with_an_encoded_secret_is_redacted(tmp_path):
    stack = FakeStack(fail=OperationFailedError(f"provider said: bad token {HF.upper()} / {urllib.parse.quote_plus(HF)}"))
    h = Harness(tmp_path, stack)
    code, summary = h("up", "--stack", "dev", "--yes", "--secret-env", "hfToken=HF_TOKEN")
    assert code == 1 and summary["errors"] == ["up dev failed: provider said: bad token [secret] / [secret]"]
    assert HF.upper() not in h.printed


@pytest.mark.parametrize("value", ["a", "ab", "abc", " ab ", "\tx\n"])
def test_secrets_under_four_characters_are_refused_at_input(h, value):
    h.env["SHORT"] = value
    code, summary = h("refresh", "--stack", "dev", "--secret-env", "hfToken=SHORT")
    assert_one_line_refusal(h, code, summary, "fewer than 4 characters")
    assert h.set_calls() == []


@pytest.mark.parametrize("keys", ['["sk-long-key-1","ab"]', "sk-long-key-1,xyz", "sk-long-key-1\nk"])
def test_an_api_key_list_with_a_tiny_key_is_refused(h, keys):
    h.env["K"] = keys
    code, summary = h("refresh", "--stack", "dev", "--secret-env", "apiKeys=K")
    assert_one_line_refusal(h, code, summary, "1 of the API keys", "fewer than 4 characters")


def test_short_secrets_are_redacted_whole_and_api_keys_as_list_items(tmp_path):
    # API keys are 16+ characters wherever they are used (only the gateway uses them); a token can be short
    one, two = "sk-0123456789abcdef", "sk-fedcba9876543210"
    stack = FakeStack(lines=(f"keys {one} and {two} and {one.upper()} seen", "token hf9x"))
    h = Harness(tmp_path, stack, HF_TOKEN="hf9x", API_KEYS=f'["{one}","{two}"]')
    code, summary = h("up", "--stack", "dev", "--yes", "--config", 'gateway={"enabled": true}',
                      "--secret-env", "hfToken=HF_TOKEN", "--secret-env", "apiKeys=API_KEYS")
    assert code == 0, summary["errors"]
    assert h.out[:2] == ["keys [secret] and [secret] and [secret] seen", "token [secret]"]


@pytest.mark.parametrize("cut", range(1, len(HF)))
def test_a_secret_split_across_two_streamed_lines_is_caught(tmp_path, cut):
    stack = FakeStack(lines=("Updating (dev)", f"  token: {HF[:cut]}", f"      {HF[cut:]} (wrapped)", "done"),
                      err_lines=(f"error: {HF[:cut]}", f"{HF[cut:]}"))
    h = Harness(tmp_path, stack)
    code, summary = h("up", "--stack", "dev", "--yes", "--secret-env", "hfToken=HF_TOKEN")
    assert code == 0, summary["errors"]
    assert h.out[:4] == ["Updating (dev)", "  token: [secret]", "      [secret] (wrapped)", "done"]
    assert h.err[:2] == ["error: [secret]", "[secret]"]


def test_a_secret_split_across_two_lines_of_an_engine_error_is_caught(tmp_path):
    from pulumi import automation as auto
    from pulumi.automation._cmd import CommandResult

    def failing():
        raise auto.CommandError(CommandResult(stdout="Updating (dev)\n", code=255,
                                              stderr=f"error: update failed: token {HF[:12]}\n{HF[12:]} rejected\n"))

    try:
        automation.call_translating_errors(failing, auto, "dev")
    except OperationFailedError as e:
        failure = e
    h = Harness(tmp_path, FakeStack(fail=failure))
    code, summary = h("up", "--stack", "dev", "--yes", "--secret-env", "hfToken=HF_TOKEN")
    assert code == 1 and summary["errors"] == ["up dev failed: update failed: token [secret]"]
    assert HF[:12] not in h.printed and HF[12:] not in h.printed


@pytest.mark.parametrize("at", range(262, 282))  # the cut falls inside the secret, 4+ characters before it
def test_a_secret_cut_by_the_bounded_error_line_leaves_no_piece(tmp_path, at):
    # UserError bounds a line by eliding its middle (" ... "): the secret may straddle the cut
    stack = FakeStack(fail=UserError(f"stack dev: {'x' * at}{HF}{'y' * 900}", exit_code=1))
    h = Harness(tmp_path, stack)
    code, summary = h("up", "--stack", "dev", "--yes", "--secret-env", "hfToken=HF_TOKEN")
    assert code == 1
    line = summary["errors"][0]
    assert len(line) <= MAX_LINE
    assert not any(HF[i:i + 4] in line for i in range(len(HF) - 3)), line


# =================================================================================================================
# 16. No traceback: nested JSON, stack files that can't be used, unexpected errors
# =================================================================================================================
@pytest.mark.parametrize("op", ["refresh", "destroy", "preview", "up"])
@pytest.mark.parametrize("value", ["[" * 100_000, '{"a":' * 100_000, "[" * 33 + "]" * 33,
                                   '[{"name": "x", "model": ' + "[" * 5000 + "]" * 5000 + "}]"])
def test_deeply_nested_config_json_is_one_line_exit_2(tmp_path, op, value):
    h = Harness(tmp_path)
    code, summary = h(op, "--stack", "dev", *OPERATIONS[op], "--config", f"models={value}")
    assert_one_line_refusal(h, code, summary, "nested")


STACK_FILES = {
    "list-shaped": (b"- config\n- a\n", "top level must be a mapping"),
    "scalar": (b"just text\n", "top level must be a mapping"),
    "config a list": (b"config:\n  - kaito-aks:budget\n", "`config:` must be a mapping"),
    "config a number": (b"config: 3\n", "`config:` must be a mapping"),
    "config a string": (b"config: hello\n", "`config:` must be a mapping"),
    "not UTF-8": (b"config:\n  kaito-aks:namespace: \xff\xfe\n", "not UTF-8"),
    "Latin-1": ("config:\n  kaito-aks:namespace: caf\xe9\n".encode("latin-1"), "not UTF-8"),
    "not YAML": (b"config: [unclosed\n", "not valid YAML"),
    "deep": (b"config:\n  kaito-aks:models: " + b"[" * 5000 + b"]" * 5000 + b"\n", "nested"),
    "alias bomb": (b"a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
                   b"c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
                   b"e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: [*e, *e, *e, *e, *e, *e, *e, *e, *e]\n", "expands"),
    "duplicate keys": (b"config:\n  kaito-aks:budget: {maxUsdPerHour: 1}\n  kaito-aks:budget: {maxUsdPerHour: 9}\n",
                       "duplicate key"),
}


@pytest.mark.parametrize("op", OPERATIONS)
@pytest.mark.parametrize("content, needle", STACK_FILES.values(), ids=STACK_FILES.keys())
def test_a_stack_file_that_cannot_be_used_is_one_line_exit_2_for_every_operation(tmp_path, monkeypatch, op,
                                                                                   content, needle):
    file = tmp_path / "Pulumi.hostile.yaml"
    file.write_bytes(content)
    monkeypatch.setattr(automation, "stack_file", lambda stack, path=None: tmp_path / f"Pulumi.{stack}.yaml")
    h = Harness(tmp_path)
    code, summary = h(op, "--stack", "hostile", *OPERATIONS[op])
    line = assert_one_line_refusal(h, code, summary, needle)
    assert h.factory_calls == 0 and str(file) in line


def test_a_stack_file_that_is_a_directory_is_one_line(tmp_path, monkeypatch):
    (tmp_path / "Pulumi.hostile.yaml").mkdir()
    monkeypatch.setattr(automation, "stack_file", lambda stack, path=None: tmp_path / f"Pulumi.{stack}.yaml")
    h = Harness(tmp_path)
    code, summary = h("destroy", "--stack", "hostile", "--yes")
    assert_one_line_refusal(h, code, summary, "is a directory")


def test_an_unexpected_error_is_one_bounded_redacted_line_without_traceback(tmp_path):
    stack = FakeStack(fail=RuntimeError(f"boom {HF}\n" + "detail " * 100_000 + HF.upper()))
    h = Harness(tmp_path, stack)
    code, summary = h("up", "--stack", "dev", "--yes", "--secret-env", "hfToken=HF_TOKEN")
    assert code == 1 and summary["result"] == "failed"
    (line,) = summary["errors"]
    assert h.err == [line] and len(line) <= MAX_LINE and "Traceback" not in h.printed
    assert line.startswith("up dev: unexpected RuntimeError at ") and HF not in line and HF.upper() not in line


def test_outputs_nested_too_deeply_or_unserialisable_are_one_line(tmp_path):
    deep: list = []
    node = deep
    for _ in range(100_000):
        node.append([])
        node = node[0]
    h = Harness(tmp_path, FakeStack(outputs={"deep": StackOutput(deep)}))
    path = tmp_path / "s.json"
    code = automation.run(["outputs", "--stack", "dev", "--json-out", str(path)], h.deps)
    assert code == 1 and len(h.err) == 1 and "unexpected RecursionError" in h.err[0] and "Traceback" not in h.printed
    summary = automation.Summary(stack="dev", operation="outputs", outputs={"deep": deep})
    err: list[str] = []
    assert automation.write_summary(path, summary, Deps(err=err.append)) == 1
    assert len(err) == 1 and err[0].startswith(f"--json-out {path}: cannot write the summary")


def test_main_is_a_last_resort_for_bugs_in_run(monkeypatch, capsys):
    def broken(argv=None, deps=None, prog=None):
        raise RecursionError(f"deep {HF}")

    monkeypatch.setattr(automation, "run", broken)
    assert automation.main(["preview", "--stack", "dev"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error (RecursionError at " in err and HF not in err


HOSTILE_ARGV = [
    ["refresh", "--stack", "dev", "--config", "models=" + "[" * 100_000],
    ["refresh", "--stack", "dev", "--config", "x" * 100_000 + "=1"],
    ["refresh", "--stack", "d" * 100_000],
    ["upp" * 10_000, "--stack", "dev"],
    ["refresh", "--stack", "dev", "--config", b"namespace=\xff\xfe".decode("utf-8", "surrogateescape")],
    ["refresh", "--stack", b"d\xffv".decode("utf-8", "surrogateescape")],
    ["refresh", "--stack", "dev", "--secret-env", "hfToken=BAD_UTF8"],
    ["refresh", "--stack", "dev", "--json-out", "/proc/no/such/dir/s.json"],
    ["refresh", "--stack", "dev", "--api-key", HF],
]


@pytest.mark.parametrize("argv", HOSTILE_ARGV, ids=range(len(HOSTILE_ARGV)))
def test_the_real_module_never_prints_a_traceback(tmp_path, argv):
    env = {"PATH": os.path.dirname(sys.executable), "HOME": str(tmp_path), "PYTHONPATH": str(PROJECT_DIR)}
    env_bytes = {k.encode(): v.encode() for k, v in env.items()}
    env_bytes[b"BAD_UTF8"] = b"hf_\xff\xfe_secret_value"
    args = [a.encode("utf-8", "surrogateescape") for a in argv]
    p = subprocess.run([sys.executable.encode(), b"-m", b"infra.automation", *args], cwd=PROJECT_DIR,
                       env=env_bytes, capture_output=True, timeout=120)
    err = p.stderr.decode("utf-8", "replace")
    assert p.returncode == 2, err
    assert "Traceback" not in err and HF not in err and "secret_value" not in err
    assert all(len(line) <= MAX_LINE for line in err.splitlines()) and 1 <= len(err.splitlines()) <= 2, err
