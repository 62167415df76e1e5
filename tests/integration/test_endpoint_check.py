"""infra.endpoint.check_endpoint against a real vLLM OpenAI server (the shared session server).

A FaultProxy in pass-through mode sits in front where a test needs to see what the check sent.
"""
from __future__ import annotations

import json
import logging
import time

import pytest

from infra.endpoint import EndpointCheckError, EndpointResult, check_endpoint, summarize
from tests.servers.fault_proxy import FaultProxy, Rule

MODEL = "tiny-llama"
SECRET = "sk-test-SECRET-123"
FULL_CHECKS = ("ready", "models", "chat", "completions", "stream", "concurrency")


def chat_posts(proxy: FaultProxy) -> int:
    return sum(1 for s in proxy.requests_seen if s.method == "POST" and s.path.endswith("/v1/chat/completions"))


def test_vllm_endpoint_passes_with_every_check(vllm_server):
    progress: list[str] = []
    result = check_endpoint(vllm_server.base_url, expected_model=MODEL, timeout_s=60, log=progress.append)

    assert isinstance(result, EndpointResult)
    assert result.model == MODEL and result.model_verified
    assert result.models_served == (MODEL,)
    assert result.checks == FULL_CHECKS
    assert result.api == "openai"
    assert 0 < result.latency_ms < 30_000
    assert result.ttft_ms is not None and 0 < result.ttft_ms < 30_000
    assert result.tokens_per_s is not None and result.tokens_per_s > 0
    assert 0 < result.p50_ms <= result.p95_ms
    assert result.sample_text  # the tiny model answers 8 tokens of noise to the prompt at temperature 0
    assert result.ready_after_s < 5 and result.elapsed_s < 60
    assert result.checked_at.endswith("+00:00")
    assert json.loads(json.dumps(result.to_dict()))["checks"] == list(FULL_CHECKS)
    assert result.notes == ()  # a clean vLLM endpoint leaves nothing to remark on
    assert any(line.startswith("ready after ") and line.endswith(f"; model {MODEL}") for line in progress), progress


def _without_usage(body: bytes) -> bytes:
    answer = json.loads(body)
    answer.pop("usage", None)
    return json.dumps(answer).encode()


def test_a_server_reporting_no_token_usage_passes_with_tokens_per_s_unknown(vllm_server):
    # OpenAI makes `usage` optional in practice (some gateways drop it): the check passes and says why
    # tokens/s is missing instead of inventing a number
    rules = [Rule("rewrite", path=p, transform=_without_usage) for p in ("/v1/chat/completions", "/v1/completions")]
    with FaultProxy(vllm_server.base_url, [Rule("pass", body_contains=b'"stream": true'), *rules]) as proxy:
        result = check_endpoint(proxy.url, expected_model=MODEL, timeout_s=60)
    assert result.checks == FULL_CHECKS
    assert result.tokens_per_s is None
    assert result.notes == ("the server reports no token usage: tokens/s unknown",)
    assert "n/a" in summarize(result)


def test_served_model_is_discovered_when_not_given(vllm_server):
    result = check_endpoint(vllm_server.base_url, timeout_s=60)
    assert result.model == MODEL
    assert not result.model_verified


def test_sample_text_is_deterministic(vllm_server):
    a = check_endpoint(vllm_server.base_url, concurrency=1, timeout_s=60)
    b = check_endpoint(vllm_server.base_url, concurrency=1, timeout_s=60)
    assert a.sample_text == b.sample_text


def test_wrong_expected_model_fails_fast_naming_what_is_served(vllm_server):
    started = time.monotonic()
    with pytest.raises(EndpointCheckError) as err:
        check_endpoint(vllm_server.base_url, expected_model="phi-3-mini-4k-instruct", timeout_s=60)
    e = err.value
    assert time.monotonic() - started < 5  # not a retry-until-deadline case
    assert e.step == "models" and e.status == 200
    assert "'phi-3-mini-4k-instruct' is not served" in str(e) and f"served: '{MODEL}'" in str(e)
    assert vllm_server.base_url in str(e) and "\n" not in str(e)


def test_hf_id_as_expected_model_gets_the_served_name_hint(vllm_server):
    with pytest.raises(EndpointCheckError, match=f"use '{MODEL}'"):
        check_endpoint(vllm_server.base_url, expected_model=f"example-org/{MODEL.title()}", timeout_s=60)


def test_concurrency_probe_sends_n_parallel_requests(vllm_server):
    with FaultProxy(vllm_server.base_url) as proxy:
        result = check_endpoint(proxy.url, concurrency=6, timeout_s=60)
    assert result.concurrency == 6
    assert chat_posts(proxy) == 1 + 1 + 6  # single chat, streamed chat, probe
    assert proxy.max_in_flight >= 2  # they overlapped (6 threads released together)


def test_transformers_012_surface_uses_openai_chat_only(vllm_server):
    # vLLM serves a superset of KAITO 0.12's transformers runtime; the check must only use what that runtime has.
    with FaultProxy(vllm_server.base_url) as proxy:
        result = check_endpoint(proxy.url, runtime="transformers", kaito_version="0.12.0",
                                expected_model=MODEL, concurrency=2, timeout_s=60)
    assert result.checks == ("ready", "models", "chat", "concurrency")
    assert result.api == "openai-chat" and result.ttft_ms is None
    assert not [p for p in proxy.paths() if p.endswith("/v1/completions")]
    assert chat_posts(proxy) == 1 + 2  # no streamed request


def test_gateway_prefix_and_trailing_v1_are_handled(vllm_server):
    with FaultProxy(vllm_server.base_url, strip_prefix="/gw/tiny") as proxy:
        result = check_endpoint(f"{proxy.url}/gw/tiny/v1/", expected_model=MODEL, timeout_s=60)
        assert result.url == f"{proxy.url}/gw/tiny"
        assert any("ended with /v1" in n for n in result.notes)
        assert all(p.startswith("/gw/tiny/v1/") for p in proxy.paths())
        with pytest.raises(EndpointCheckError) as err:  # a wrong prefix is a 404: fail at once with a hint
            check_endpoint(f"{proxy.url}/gw/other", timeout_s=30)
    assert err.value.status == 404 and "gateway prefix" in str(err.value)


def test_api_key_is_sent_but_never_leaks_from_a_passing_check(vllm_server, caplog):
    caplog.set_level(logging.DEBUG)  # urllib3/requests debug logs included
    lines: list[str] = []
    with FaultProxy(vllm_server.base_url) as proxy:
        result = check_endpoint(proxy.url, api_key=SECRET, expected_model=MODEL, timeout_s=60, log=lines.append)
    # it was sent (so the assertions below are meaningful)...
    assert {s.headers.get("Authorization") for s in proxy.requests_seen} == {f"Bearer {SECRET}"}
    # ...and appears nowhere we produce
    produced = [repr(result), json.dumps(result.to_dict()), summarize(result), *lines, caplog.text]
    assert lines and all(SECRET not in text for text in produced)


def test_api_key_echoed_by_a_server_is_scrubbed_from_the_error(vllm_server, caplog):
    caplog.set_level(logging.DEBUG)
    lines: list[str] = []
    rules = [Rule("status", path="/v1/chat", status=500, echo_headers=True)]
    with FaultProxy(vllm_server.base_url, rules) as proxy, pytest.raises(EndpointCheckError) as err:
        check_endpoint(proxy.url, api_key=SECRET, timeout_s=30, log=lines.append)
    e = err.value
    assert e.step == "chat" and e.status == 500
    assert "Bearer ***" in e.body_excerpt  # the echo is there, the key is not
    for text in (str(e), repr(e), e.body_excerpt, e.reason, *lines, caplog.text):
        assert SECRET not in text
