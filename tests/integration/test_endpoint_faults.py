"""Fault tests: the check against a real vLLM server that starts late, never starts, dies mid-check, or sits
behind a proxy that injects 503/429 + Retry-After, 500, truncated bodies, malformed JSON, bad streams or hangs.

Every case must end with the right outcome within deadline + one request timeout (+ a small scheduling slack).
"""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import pytest

from infra.endpoint import BACKOFF_CAP_S, EndpointCheckError, EndpointResult, check_endpoint
from tests.servers.fault_proxy import FaultProxy, Rule
from tests.servers.vllm import VllmServer, free_port

MODEL = "tiny-llama"
SLACK_S = 1.0  # thread scheduling, process teardown on 2 busy cores


def timed(fn, *args, **kwargs) -> tuple[EndpointResult | EndpointCheckError, float]:
    started = time.monotonic()
    try:
        out: EndpointResult | EndpointCheckError = fn(*args, **kwargs)
    except EndpointCheckError as e:
        out = e
    return out, time.monotonic() - started


def assert_fails_at_deadline(outcome, elapsed: float, *, deadline: float, request_timeout: float, step: str) -> EndpointCheckError:
    assert isinstance(outcome, EndpointCheckError), f"expected a failure, got {outcome!r}"
    assert outcome.step == step, str(outcome)
    assert deadline - 0.05 <= elapsed <= deadline + request_timeout + SLACK_S, (elapsed, str(outcome))
    assert f"{deadline:g} s deadline" in outcome.reason
    return outcome


# -- server lifetime -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lifecycle_server(vllm_runtime, tiny_model_dir, tmp_path_factory) -> Iterator[VllmServer]:
    """A server these tests start and kill themselves (not started yet); shared so the module pays one start."""
    srv = VllmServer(vllm_runtime, tiny_model_dir, served_name=MODEL,
                     log_path=tmp_path_factory.mktemp("lifecycle") / "vllm.log")
    try:
        yield srv
    finally:
        srv.stop()


def test_server_started_after_the_check_begins_passes_once_up(lifecycle_server):
    srv = lifecycle_server
    srv.stop()  # nothing listens on its port yet
    box: dict[str, object] = {}

    def run() -> None:
        box["outcome"], box["elapsed"] = timed(check_endpoint, srv.base_url, expected_model=MODEL,
                                               timeout_s=240, request_timeout_s=10)
        box["done_at"] = time.monotonic()

    checker = threading.Thread(target=run)
    checker.start()
    time.sleep(2.0)
    assert checker.is_alive()  # still waiting: connection refused so far
    srv.start()
    try:
        srv.wait_ready(timeout_s=200)
    finally:
        checker.join(timeout=260)
    assert not checker.is_alive()
    result = box["outcome"]
    assert isinstance(result, EndpointResult), str(result)
    assert result.model == MODEL and result.ready_after_s >= 2.0
    # noticed promptly: the backoff is capped (2 s), the checks after ready take well under a few seconds
    assert box["done_at"] - srv.ready_at < BACKOFF_CAP_S + 5.0 + SLACK_S


def test_server_killed_mid_check_fails_at_the_deadline(lifecycle_server):
    srv = lifecycle_server
    if not srv.running:
        srv.start().wait_ready()

    def log(message: str) -> None:
        if message.startswith("ready after"):  # /v1/models answered: kill everything before the chat request
            srv.kill()

    outcome, elapsed = timed(check_endpoint, srv.base_url, timeout_s=8, request_timeout_s=3, log=log)
    e = assert_fails_at_deadline(outcome, elapsed, deadline=8, request_timeout=3, step="chat")
    assert "connection refused" in e.reason and e.status is None
    assert not srv.running


def test_server_that_never_starts_fails_at_the_deadline_not_later():
    url = f"http://127.0.0.1:{free_port()}"
    outcome, elapsed = timed(check_endpoint, url, timeout_s=3, request_timeout_s=2)
    e = assert_fails_at_deadline(outcome, elapsed, deadline=3, request_timeout=2, step="ready")
    assert "connection refused" in str(e) and url in str(e) and "no HTTP response" in str(e)


# -- proxy faults in front of the real server ---------------------------------------------------------------
@pytest.fixture
def proxy(vllm_server) -> Iterator[FaultProxy]:
    with FaultProxy(vllm_server.base_url) as p:
        yield p


def test_every_request_of_the_check_names_itself_and_asks_for_json(proxy):
    """Server and gateway logs can tell the post-deploy check from users: every request carries its User-Agent."""
    proxy.set_rules([])
    result = check_endpoint(proxy.url, expected_model=MODEL, timeout_s=60, api_key="sk-check-ua-000001")
    assert isinstance(result, EndpointResult)
    seen = proxy.requests_seen
    assert len(seen) >= 4 and {s.path.split("?")[0] for s in seen} >= {"/v1/models", "/v1/chat/completions"}
    for s in seen:
        headers = {k.lower(): v for k, v in s.headers.items()}
        assert headers["user-agent"] == "kaito-aks-endpoint-check/1", s
        assert headers["accept"].startswith("application/json") or "text/event-stream" in headers["accept"], s
        assert headers["authorization"] == "Bearer sk-check-ua-000001"


def test_the_check_asks_in_openais_request_shape_deterministically(proxy):
    # what vLLM tolerates is not the contract: every chat request is OpenAI's shape, with temperature 0
    proxy.set_rules([])
    result = check_endpoint(proxy.url, expected_model=MODEL, timeout_s=60, concurrency=2)
    assert isinstance(result, EndpointResult)
    chats = [json.loads(s.body) for s in proxy.requests_seen if s.path == "/v1/chat/completions"]
    assert len(chats) == 1 + 1 + 2                 # the sample, the stream, the concurrency probe
    for body in chats:
        assert body["model"] == MODEL and body["temperature"] == 0 and body["max_tokens"] >= 1
        assert body["messages"] == [{"role": "user", "content": body["messages"][0]["content"]}]
        assert isinstance(body["messages"][0]["content"], str) and body["messages"][0]["content"]
    assert sum(1 for b in chats if b.get("stream") is True) == 1
    completions = [json.loads(s.body) for s in proxy.requests_seen if s.path == "/v1/completions"]
    assert len(completions) == 1 and completions[0]["model"] == MODEL and completions[0]["prompt"]


def test_503_with_retry_after_is_honoured_then_passes(proxy):
    proxy.set_rules([Rule("status", path="/v1/models", status=503, times=2, headers={"Retry-After": "1"})])
    result, elapsed = timed(check_endpoint, proxy.url, expected_model=MODEL, timeout_s=30)
    assert isinstance(result, EndpointResult), str(result)
    # two waits of Retry-After: 1 s (the backoff alone would have retried after ~0.1 s and ~0.3 s)
    assert 2.0 <= result.ready_after_s < 2.0 + 2 * SLACK_S
    assert proxy.paths("status") == ["/v1/models", "/v1/models"]


def test_503_forever_fails_at_the_deadline_with_the_last_status(proxy):
    proxy.set_rules([Rule("status", path="/v1/models", status=503, headers={"Retry-After": "1"},
                          body=b"upstream not ready")])
    outcome, elapsed = timed(check_endpoint, proxy.url, timeout_s=4, request_timeout_s=2)
    e = assert_fails_at_deadline(outcome, elapsed, deadline=4, request_timeout=2, step="ready")
    assert e.status == 503 and e.body_excerpt == "upstream not ready"
    assert "last HTTP 503 'upstream not ready'" in str(e)


def test_429_rate_limit_mid_check_is_retried(proxy):
    proxy.set_rules([Rule("status", path="/v1/completions", status=429, times=1, headers={"Retry-After": "1"})])
    result, _ = timed(check_endpoint, proxy.url, timeout_s=30)
    assert isinstance(result, EndpointResult), str(result)
    assert "completions" in result.checks
    assert proxy.paths().count("/v1/completions") == 2


def test_500_fails_at_once_with_status_and_body(proxy):
    proxy.set_rules([Rule("status", path="/v1/chat/completions", status=500, body=b'{"error":"engine dead"}')])
    outcome, elapsed = timed(check_endpoint, proxy.url, timeout_s=30)
    assert isinstance(outcome, EndpointCheckError)
    assert elapsed < 5  # not retried until the 30 s deadline
    assert outcome.step == "chat" and outcome.status == 500
    assert "last HTTP 500 '{\"error\":\"engine dead\"}'" in str(outcome)


def test_an_error_page_that_never_ends_fails_at_once_with_its_first_bytes(proxy):
    # a 500 whose body keeps coming (here: 8 KiB, then a stall mid-body): the check reads a bounded excerpt
    # and reports the error at once, not after the request timeout and not after reading the whole page
    page = b'{"error":"engine dead","trace":"' + b"x" * 8192 + b'"}'
    proxy.set_rules([Rule("status", path="/v1/chat/completions", status=500, body=page, stall=True)])
    outcome, elapsed = timed(check_endpoint, proxy.url, timeout_s=30, request_timeout_s=10)
    assert isinstance(outcome, EndpointCheckError), str(outcome)
    assert elapsed < 5, elapsed  # well under the 10 s request timeout
    assert outcome.step == "chat" and outcome.status == 500
    assert outcome.body_excerpt.startswith('{"error":"engine dead"')


def test_truncated_bodies_are_retried_then_pass(proxy):
    proxy.set_rules([Rule("truncate", path="/v1/models", times=2)])
    result, _ = timed(check_endpoint, proxy.url, expected_model=MODEL, timeout_s=30)
    assert isinstance(result, EndpointResult), str(result)
    assert proxy.paths("truncate") == ["/v1/models", "/v1/models"]


def test_truncated_bodies_forever_fail_at_the_deadline(proxy):
    proxy.set_rules([Rule("truncate", path="/v1/chat/completions")])
    outcome, elapsed = timed(check_endpoint, proxy.url, timeout_s=4, request_timeout_s=2)
    e = assert_fails_at_deadline(outcome, elapsed, deadline=4, request_timeout=2, step="chat")
    assert "truncated" in e.reason and e.status == 200
    assert e.body_excerpt.startswith('{"id":"chatcmpl-')  # the part that did arrive


def test_malformed_json_fails_at_once_naming_the_step(proxy):
    proxy.set_rules([Rule("malformed", path="/v1/completions")])
    outcome, elapsed = timed(check_endpoint, proxy.url, timeout_s=30)
    assert isinstance(outcome, EndpointCheckError)
    assert elapsed < 5
    assert outcome.step == "completions" and "not valid JSON" in outcome.reason
    assert outcome.body_excerpt.startswith('{"id":"cmpl-')


def test_stream_without_done_is_accepted(proxy):
    proxy.set_rules([Rule("drop_done", path="/v1/chat/completions")])
    result, _ = timed(check_endpoint, proxy.url, timeout_s=30)
    assert isinstance(result, EndpointResult), str(result)
    assert "stream" in result.checks and result.ttft_ms is not None
    assert "the stream ended without data: [DONE]" in result.notes


def test_ttft_is_the_time_to_the_first_token_not_to_the_first_chunk(proxy):
    # vLLM's first event carries only the role; a server slow to its first token must show a slow TTFT
    proxy.set_rules([Rule("pause", path="/v1/chat/completions", body_contains=b'"stream": true', pause_s=1.5)])
    result, _ = timed(check_endpoint, proxy.url, timeout_s=30)
    assert isinstance(result, EndpointResult), str(result)
    assert result.ttft_ms is not None and result.ttft_ms >= 1500, result.ttft_ms
    assert "the streamed answer had no content; TTFT is the time to the first chunk" not in result.notes


def test_malformed_stream_event_fails_the_stream_step(proxy):
    proxy.set_rules([Rule("malformed", path="/v1/chat/completions", body_contains=b'"stream": true')])
    outcome, elapsed = timed(check_endpoint, proxy.url, timeout_s=30)
    assert isinstance(outcome, EndpointCheckError), str(outcome)
    assert outcome.step == "stream" and "not JSON" in outcome.reason and elapsed < 5


def test_truncated_stream_is_retried_then_passes(proxy):
    proxy.set_rules([Rule("truncate", path="/v1/chat/completions", body_contains=b'"stream": true', times=1)])
    result, _ = timed(check_endpoint, proxy.url, timeout_s=30)
    assert isinstance(result, EndpointResult), str(result)
    assert len(proxy.paths("truncate")) == 1 and "stream" in result.checks


def test_hanging_upstream_fails_within_deadline_plus_one_request_timeout(proxy):
    proxy.set_rules([Rule("hang", path="/v1/chat/completions")])
    outcome, elapsed = timed(check_endpoint, proxy.url, timeout_s=6, request_timeout_s=2)
    e = assert_fails_at_deadline(outcome, elapsed, deadline=6, request_timeout=2, step="chat")
    assert "timed out" in e.reason


@pytest.mark.parametrize("body_contains, step", [(b'"stream": true', "stream"), (None, "ready")])
def test_body_stalling_mid_response_fails_within_deadline_plus_one_request_timeout(proxy, body_contains, step):
    # headers and part of the real body arrive, then nothing: the read timeout must fire mid-body
    path = "/v1/chat/completions" if step == "stream" else "/v1/models"
    proxy.set_rules([Rule("stall", path=path, body_contains=body_contains)])
    outcome, elapsed = timed(check_endpoint, proxy.url, timeout_s=5, request_timeout_s=2)
    e = assert_fails_at_deadline(outcome, elapsed, deadline=5, request_timeout=2, step=step)
    assert "timed out" in e.reason and e.status == 200


def test_hang_longer_than_the_deadline_is_cut_at_the_deadline(proxy):
    # a request timeout (30 s) longer than the whole deadline (3 s) is cut to the time left
    proxy.set_rules([Rule("hang")])
    outcome, elapsed = timed(check_endpoint, proxy.url, timeout_s=3, request_timeout_s=30)
    assert isinstance(outcome, EndpointCheckError)
    assert outcome.step == "ready" and 3 <= elapsed <= 3 + SLACK_S


def test_gzipped_responses_are_decoded(proxy):
    proxy.set_rules([Rule("gzip")])
    result, _ = timed(check_endpoint, proxy.url, expected_model=MODEL, timeout_s=30)
    assert isinstance(result, EndpointResult), str(result)
    assert "/v1/models" in proxy.paths("gzip") and "/v1/completions" in proxy.paths("gzip")


def test_redirect_is_not_followed_and_is_named(proxy):
    proxy.set_rules([Rule("status", status=308, headers={"Location": "https://gw.example.com/tiny"}, body=b"")])
    outcome, elapsed = timed(check_endpoint, proxy.url, api_key="sk-test-SECRET-123", timeout_s=30)
    assert isinstance(outcome, EndpointCheckError) and elapsed < 5
    assert outcome.status == 308 and "redirected to https://gw.example.com/tiny" in outcome.reason
    assert len(proxy.requests_seen) == 1  # the key was not sent on to the other host


def test_connection_reset_once_is_retried(proxy):
    proxy.set_rules([Rule("reset", path="/v1/chat/completions", times=1)])
    result, _ = timed(check_endpoint, proxy.url, timeout_s=30)
    assert isinstance(result, EndpointResult), str(result)
    assert proxy.paths("reset") == ["/v1/chat/completions"]


def test_upstream_down_behind_a_gateway_is_a_502_until_the_deadline():
    # a gateway whose backend is not up yet answers 502: retried until the deadline, then named in the error
    with FaultProxy(f"http://127.0.0.1:{free_port()}") as gateway:
        outcome, elapsed = timed(check_endpoint, gateway.url, timeout_s=3, request_timeout_s=2)
    e = assert_fails_at_deadline(outcome, elapsed, deadline=3, request_timeout=2, step="ready")
    assert e.status == 502 and "bad gateway" in e.body_excerpt
