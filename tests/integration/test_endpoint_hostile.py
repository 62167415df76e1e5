"""The endpoint check against a real vLLM server behind a FaultProxy that reflects the API key back, in other
cases and cut, or answers with hostile JSON -- the library, the CLI as a user runs it, and the dynamic provider.

Everything that leaves (result, summary, --json, error line, -v log lines, provider outputs) must carry no
6-character piece of the key in any letter case; every error is one bounded line, never a traceback.
"""
from __future__ import annotations

import json
import logging
import os
import pathlib
import subprocess
import sys
import time

import pytest

from infra.endpoint import EndpointCheckError, check_endpoint, summarize
from tests.servers.fault_proxy import FaultProxy, Rule

REPO = pathlib.Path(__file__).resolve().parents[2]
MODEL = "tiny-llama"
KEY = "sk-Zq7Vx2Lw9Rt4Np8Kc3Hy"
MAX_LINE = 400


def leaked(text: str, secret: str = KEY, n: int = 6) -> list[str]:
    low, s = text.lower(), secret.lower()
    return sorted({s[i:i + n] for i in range(len(s) - n + 1) if s[i:i + n] in low})


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "infra", "check-endpoint", *args], cwd=REPO, text=True,
                          capture_output=True, timeout=timeout, env={**os.environ, **(env or {})})


def models_also_listing(*extra: str):
    """A /v1/models rewrite: the real list plus ``extra`` ids (a gateway that lists what it shouldn't)."""
    def transform(body: bytes) -> bytes:
        obj = json.loads(body)
        obj["data"] += [{**obj["data"][0], "id": e} for e in extra]
        return json.dumps(obj).encode()
    return transform


def first_model_renamed(name: str):
    def transform(body: bytes) -> bytes:
        obj = json.loads(body)
        obj["data"][0]["id"] = name
        return json.dumps(obj).encode()
    return transform


def answer_replaced(content: str):
    def transform(body: bytes) -> bytes:
        obj = json.loads(body)
        obj["choices"][0]["message"]["content"] = content
        return json.dumps(obj).encode()
    return transform


def test_a_models_list_and_an_answer_quoting_the_key_leave_no_trace(vllm_server, caplog):
    caplog.set_level(logging.DEBUG)
    lines: list[str] = []
    rules = [Rule("rewrite", path="/v1/models", transform=models_also_listing(KEY.upper(), f"ft:{KEY.lower()}")),
             Rule("rewrite", path="/v1/chat/completions", times=1, transform=answer_replaced("x" * 193 + KEY))]
    with FaultProxy(vllm_server.base_url, rules) as proxy:
        result = check_endpoint(proxy.url, api_key=KEY, expected_model=MODEL, timeout_s=60, concurrency=2,
                                log=lines.append)
    assert result.model == MODEL and len(result.models_served) == 3 and result.models_served[1:] == ("***", "ft:***")
    produced = "\n".join([repr(result), json.dumps(result.to_dict()), summarize(result), *lines, caplog.text])
    assert not leaked(produced), leaked(produced)
    assert {s.headers.get("Authorization") for s in proxy.requests_seen} == {f"Bearer {KEY}"}  # the key was sent


def test_a_served_name_that_is_the_key_and_vllms_own_404_quoting_it(vllm_server, caplog):
    # /v1/models says the model is named like the key (lower-cased); vLLM answers the chat with a 404 naming it
    caplog.set_level(logging.DEBUG)
    rules = [Rule("rewrite", path="/v1/models", transform=first_model_renamed(KEY.lower()))]
    with FaultProxy(vllm_server.base_url, rules) as proxy, pytest.raises(EndpointCheckError) as err:
        check_endpoint(proxy.url, api_key=KEY, timeout_s=60)
    e = err.value
    assert e.step == "chat" and e.status == 404 and "***" in e.body_excerpt
    assert not leaked(str(e) + e.body_excerpt + e.reason + caplog.text), str(e)


def test_cli_error_echoing_the_key_upper_cased_is_scrubbed(vllm_server):
    env = {"KAITO_TEST_KEY": KEY}
    with FaultProxy(vllm_server.base_url, [Rule("status", path="/v1/chat", status=400, echo_headers=True,
                                                transform=bytes.upper)]) as proxy:
        p = cli("--url", proxy.url, "--api-key-env", "KAITO_TEST_KEY", "-v", "--timeout", "60", env=env)
    assert p.returncode == 1 and "HTTP 400" in p.stderr and "BEARER ***" in p.stderr
    assert not leaked(p.stdout + p.stderr), p.stderr
    assert "Traceback" not in p.stderr and all(len(line) <= MAX_LINE for line in p.stderr.splitlines())


def test_cli_json_of_a_gateway_listing_the_key_is_scrubbed(vllm_server):
    with FaultProxy(vllm_server.base_url, [Rule("rewrite", path="/v1/models",
                                                transform=models_also_listing(KEY.swapcase()))]) as proxy:
        p = cli("--url", proxy.url, "--api-key-env", "KAITO_TEST_KEY", "--json", "--concurrency", "1",
                env={"KAITO_TEST_KEY": KEY})
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["models_served"] == [MODEL, "***"] and not leaked(p.stdout + p.stderr)


def test_cli_windows_key_file_is_refused_before_any_request(vllm_server):
    with FaultProxy(vllm_server.base_url) as proxy:
        started = time.monotonic()
        p = cli("--url", proxy.url, "--api-key-env", "KAITO_TEST_KEY", env={"KAITO_TEST_KEY": KEY + "\r\n"})
        elapsed = time.monotonic() - started
        assert proxy.requests_seen == []
    assert p.returncode == 2 and elapsed < 20 and len(p.stderr.splitlines()) == 1
    assert "carriage return" in p.stderr and not leaked(p.stdout + p.stderr)


@pytest.mark.parametrize("body, why", [
    (b"[" * 100_000, "nested deeper than 64 levels"),
    (b'{"object": "list", "data": ' + b"[" * 5000 + b"]" * 5000 + b"}", "nested deeper than 64 levels"),
    (json.dumps({"object": "list", "data": [{"id": "m" * 5_000_000}, {"id": "n" * 100}]}).encode(), "is not served"),
])
def test_cli_hostile_models_answers_are_one_bounded_line(vllm_server, body, why):
    with FaultProxy(vllm_server.base_url, [Rule("status", path="/v1/models", status=200, body=body)]) as proxy:
        p = cli("--url", proxy.url, "--model", MODEL, "--timeout", "30")
    assert p.returncode == 1 and p.stdout == ""
    assert "Traceback" not in p.stderr and len(p.stderr.splitlines()) == 1, p.stderr[:2000]
    assert len(p.stderr.splitlines()[0]) <= MAX_LINE and why in p.stderr


def test_cli_absurd_timeouts_exit_2_at_once(vllm_server):
    for args in (["--timeout", "1e300"], ["--request-timeout", "1e300"], ["--timeout", "nan"]):
        p = cli("--url", vllm_server.base_url, *args, timeout=30)
        assert p.returncode == 2 and len(p.stderr.splitlines()) == 1 and "Traceback" not in p.stderr, p.stderr


def test_the_providers_outputs_carry_no_reflected_key(vllm_server):
    from components.endpoint_check import EndpointCheckProvider

    rules = [Rule("rewrite", path="/v1/models", transform=models_also_listing(KEY.upper())),
             Rule("rewrite", path="/v1/chat/completions", times=1, transform=answer_replaced("y" * 196 + KEY))]
    with FaultProxy(vllm_server.base_url, rules) as proxy:
        outs = EndpointCheckProvider().create({"base_url": proxy.url, "api_key": KEY, "expected_model": MODEL,
                                               "timeout_s": 60.0, "request_timeout_s": 10.0,
                                               "concurrency": 2.0}).outs
    assert outs.pop("api_key") == KEY  # the secret output that refresh needs (marked secret)
    assert outs["served_model"] == MODEL and not leaked(json.dumps(outs)), leaked(json.dumps(outs))
