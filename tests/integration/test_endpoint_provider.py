"""EndpointCheckProvider's create/update/read/diff called directly (as the dynamic provider host does),
against the real vLLM server. Pulumi's mocks never run a dynamic provider, so this is where it is tested."""
from __future__ import annotations

import datetime as dt
import logging

import pytest

from components.endpoint_check import OUTPUT_KEYS, UNKNOWN, EndpointCheckProvider
from tests.servers.fault_proxy import FaultProxy, Rule
from tests.servers.vllm import free_port

MODEL = "tiny-llama"
SECRET = "sk-test-SECRET-123"


def props(url: str, **over) -> dict:
    # numbers arrive as floats from the engine (protobuf Struct): the provider must cope
    return {"__provider": "opaque", "base_url": url, "runtime": "vllm", "kaito_version": "0.12.0",
            "expected_model": MODEL, "api_key": SECRET, "timeout_s": 60.0, "request_timeout_s": 10.0,
            "concurrency": 2.0, "trigger": "phi|NC24|1", **over}


def test_create_returns_inputs_and_measurements(vllm_server):
    created = EndpointCheckProvider().create(props(vllm_server.base_url))
    outs = created.outs
    assert created.id.startswith("endpointcheck-")
    assert set(OUTPUT_KEYS) <= set(outs)
    assert outs["served_model"] == MODEL and outs["model_verified"] is True
    assert outs["checks"] == ["ready", "models", "chat", "completions", "stream", "concurrency"]
    assert outs["latency_ms"] > 0 and outs["ttft_ms"] > 0 and outs["tokens_per_s"] > 0
    assert dt.datetime.fromisoformat(outs["checked_at"]).tzinfo is not None
    assert outs["base_url"] == vllm_server.base_url and outs["trigger"] == "phi|NC24|1"
    assert outs["api_key"] == SECRET  # kept (as a secret output) so that refresh can authenticate
    assert "__provider" not in outs  # the host adds it back itself


def test_update_rechecks_and_returns_outputs(vllm_server):
    p = EndpointCheckProvider()
    with FaultProxy(vllm_server.base_url) as proxy:
        old = p.create(props(proxy.url)).outs
        before = len(proxy.requests_seen)
        updated = p.update("id", old, props(proxy.url, trigger="phi|NC48|1"))
        assert len(proxy.requests_seen) > before  # it really checked again
    assert updated.outs is not None and updated.outs["served_model"] == MODEL  # outputs not wiped
    assert updated.outs["trigger"] == "phi|NC48|1"


def test_read_rechecks_so_refresh_sees_the_endpoint_now(vllm_server):
    p = EndpointCheckProvider()
    with FaultProxy(vllm_server.base_url) as proxy:
        state = p.create(props(proxy.url)).outs
        before = len(proxy.requests_seen)
        read = p.read("endpointcheck-1", state)
        assert len(proxy.requests_seen) > before
        assert read.id == "endpointcheck-1" and read.outs["served_model"] == MODEL
        # the endpoint breaks: refresh fails loudly with the check's reason, not a stale pass
        proxy.set_rules([Rule("status", path="/v1/chat/completions", status=500, body=b"boom")])
        with pytest.raises(Exception) as err:
            p.read("endpointcheck-1", state)
    msg = str(err.value)
    assert msg.startswith(f"endpoint check failed: {proxy.url}: step 'chat'") and "last HTTP 500 'boom'" in msg


def test_create_fails_with_one_line_reason_and_no_secret(vllm_server, caplog):
    caplog.set_level(logging.DEBUG)
    with pytest.raises(Exception) as err:
        EndpointCheckProvider().create(props(vllm_server.base_url, expected_model="mistral-7b-instruct-v0.3"))
    msg = str(err.value)
    assert "step 'models'" in msg and "mistral-7b-instruct-v0.3" in msg and "\n" not in msg
    assert err.value.__cause__ is None and err.value.__suppress_context__
    assert SECRET not in msg and SECRET not in caplog.text


def test_create_against_a_dead_endpoint_honours_the_deadline():
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(Exception, match=r"step 'ready' failed after 2\.\d s"):
        EndpointCheckProvider().create(props(url, timeout_s=2.0, request_timeout_s=1.0))


def test_diff_after_create_ignores_provider_and_tuning_inputs(vllm_server):
    p = EndpointCheckProvider()
    state = p.create(props(vllm_server.base_url)).outs  # olds are the state (outputs) in a real diff
    same = props(vllm_server.base_url, __provider="re-pickled", timeout_s=99.0, concurrency=8.0)
    assert p.diff("id", state, same).changes is False
    assert p.diff("id", state, props(vllm_server.base_url, expected_model="other")).changes is True
    assert p.diff("id", state, props(UNKNOWN)).changes is True
