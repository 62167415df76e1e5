"""`python -m infra check-endpoint` as a user runs it (a subprocess with the project's python), against real vLLM."""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import time

from tests.servers.fault_proxy import FaultProxy, Rule
from tests.servers.vllm import free_port

REPO = pathlib.Path(__file__).resolve().parents[2]
MODEL = "tiny-llama"
SECRET = "sk-test-SECRET-123"


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "infra", "check-endpoint", *args], cwd=REPO, text=True,
                          capture_output=True, timeout=timeout, env={**os.environ, **(env or {})})


def test_passing_endpoint_exits_0_with_a_summary(vllm_server):
    p = cli("--url", vllm_server.base_url, "--model", MODEL, "--timeout", "60")
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith(f"OK {vllm_server.base_url}: model {MODEL} (as expected), runtime vllm")
    assert "checks: ready, models, chat, completions, stream, concurrency" in p.stdout
    assert p.stderr == ""


def test_json_output_is_the_result(vllm_server):
    p = cli("--url", vllm_server.base_url, "--json", "--concurrency", "2", "--runtime", "transformers",
            "--kaito-version", "0.12.0")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["model"] == MODEL and out["concurrency"] == 2 and out["api"] == "openai-chat"
    assert out["checks"] == ["ready", "models", "chat", "concurrency"]
    assert isinstance(out["p95_ms"], float) and out["ttft_ms"] is None


def test_wrong_model_exits_1_with_one_line_and_no_traceback(vllm_server):
    p = cli("--url", vllm_server.base_url, "--model", "llama-3.1-8b-instruct", "--timeout", "30")
    assert p.returncode == 1
    assert p.stdout == ""
    lines = p.stderr.splitlines()
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith(f"endpoint check failed: {vllm_server.base_url}: step 'models' failed after ")
    assert f"served: '{MODEL}'" in lines[0] and "Traceback" not in p.stderr


def test_unreachable_endpoint_exits_1_at_the_deadline():
    url = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    p = cli("--url", url, "--timeout", "2", "--request-timeout", "1")
    elapsed = time.monotonic() - started
    assert p.returncode == 1
    assert len(p.stderr.splitlines()) == 1 and "step 'ready'" in p.stderr and "connection refused" in p.stderr
    assert 2 <= elapsed < 2 + 1 + 5  # deadline + one request timeout + interpreter start-up


def test_verbose_prints_progress_on_stderr(vllm_server):
    with FaultProxy(vllm_server.base_url, [Rule("status", path="/v1/models", times=1, headers={"Retry-After": "0"})]) as proxy:
        p = cli("--url", proxy.url, "-v", "--timeout", "30")
    assert p.returncode == 0, p.stderr
    assert "ready: GET" in p.stderr and "HTTP 503" in p.stderr and "passed:" in p.stderr


def test_api_key_from_env_is_sent_and_never_printed(vllm_server):
    env = {"KAITO_TEST_KEY": SECRET}
    with FaultProxy(vllm_server.base_url) as proxy:
        ok = cli("--url", proxy.url, "--api-key-env", "KAITO_TEST_KEY", "--json", "-v", env=env)
        assert ok.returncode == 0, ok.stderr
        assert proxy.requests_seen and all(s.headers.get("Authorization") == f"Bearer {SECRET}"
                                           for s in proxy.requests_seen)
        # a server that echoes the header in an error body
        proxy.set_rules([Rule("status", status=401, echo_headers=True)])
        bad = cli("--url", proxy.url, "--api-key-env", "KAITO_TEST_KEY", "-v", env=env)
    assert bad.returncode == 1 and "HTTP 401" in bad.stderr and "Bearer ***" in bad.stderr
    for text in (ok.stdout, ok.stderr, bad.stdout, bad.stderr):
        assert SECRET not in text
