"""Fast tests of the endpoint check that need no inference server: argument validation, API surface per
runtime/version, SSE parsing, response shapes, backoff/Retry-After, secret scrubbing, result serialisation,
the retry loop's deadline, the CLI's argument errors, and the dynamic provider's check/diff/pickling."""
from __future__ import annotations

import base64
import dataclasses
import email.utils
import http.server
import json
import pathlib
import pickle
import random
import re
import subprocess
import sys
import threading
import time

import pytest
import requests

from infra import endpoint as ep
from infra.endpoint import (
    EndpointCheckError,
    EndpointResult,
    ShapeError,
    SSEError,
    SSEParser,
    consume_chat_stream,
)

REPO = pathlib.Path(__file__).resolve().parents[2]
SECRET = "sk-test-SECRET-123"


# -- API surface per runtime and KAITO version ----------------------------------------------------------------
@pytest.mark.parametrize("runtime, version, name", [
    ("vllm", "0.6.0", "openai"), ("vllm", "0.12.0", "openai"), ("vllm", "v0.12.1", "openai"),
    ("transformers", "0.6.0", "kaito-chat"), ("transformers", "0.6.3", "kaito-chat"),
    ("transformers", "0.7.1", "kaito-chat"), ("transformers", "0.8.0", "kaito-chat"),
    ("transformers", "0.9.0", "openai-chat"), ("transformers", "0.11.0", "openai-chat"),
    ("transformers", "0.12.0", "openai-chat"), ("transformers", "0.13", "openai-chat"),
])
def test_api_surface(runtime, version, name):
    assert ep.api_surface(runtime, version).name == name


def test_transformers_012_has_no_completions_or_stream_and_06_has_no_model_list():
    s012, s06 = ep.api_surface("transformers", "0.12.0"), ep.api_surface("transformers", "0.6.0")
    assert s012.models and s012.chat and not s012.completions and not s012.stream
    assert s06.kaito_chat and not s06.models and not s06.chat


@pytest.mark.parametrize("runtime, version, message", [
    ("tgi", "0.12.0", "runtime 'tgi' is not one of vllm, transformers"),
    ("vllm", "twelve", "KAITO version 'twelve' is not of the form"),
    ("transformers", "0.5.0", "kaito-aks has no rules for KAITO 0.5.0"),
])
def test_api_surface_rejects(runtime, version, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        ep.api_surface(runtime, version)


@pytest.mark.parametrize("kwargs, message", [
    ({"timeout_s": 0}, "timeout 0 must be a positive"),
    ({"timeout_s": float("inf")}, "timeout inf must be"),
    ({"request_timeout_s": -1}, "request timeout -1"),
    ({"concurrency": 0}, "concurrency 0 must be an integer from 1 to 64"),
    ({"concurrency": 65}, "concurrency 65"),
    ({"concurrency": True}, "concurrency True"),
    ({"concurrency": 2.5}, "concurrency 2.5"),
])
def test_bad_arguments_raise_before_any_request(kwargs, message):
    class NoNetwork(requests.Session):
        def request(self, *a, **k):  # pragma: no cover - must not be reached
            raise AssertionError("a request was sent")

    with pytest.raises(ValueError, match=re.escape(message)):
        ep.check_endpoint("http://127.0.0.1:9", session=NoNetwork(), **kwargs)


# -- URLs -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("url, root, noted", [
    ("http://10.0.0.9", "http://10.0.0.9", False),
    ("http://10.0.0.9/", "http://10.0.0.9", False),
    ("https://gw.example.com/llama-8b/", "https://gw.example.com/llama-8b", False),
    ("http://gw/llama-8b/v1", "http://gw/llama-8b", True),
    ("http://gw/v1/", "http://gw", True),
])
def test_normalize_base_url(url, root, noted):
    got, notes = ep.normalize_base_url(url)
    assert got == root and bool(notes) == noted


@pytest.mark.parametrize("url", ["ftp://x", "10.0.0.9", "http://", "http:// space", "http://x/?q=1", "http://x/#f", ""])
def test_normalize_base_url_rejects(url):
    with pytest.raises(ValueError):
        ep.normalize_base_url(url)


def test_redact_url_hides_credentials_only():
    assert ep.redact_url("http://user:pw@gw:8080/p") == "http://***@gw:8080/p"
    assert ep.redact_url("http://gw/p") == "http://gw/p"


def test_credentials_in_url_are_refused_at_once_and_never_echoed():
    started = time.monotonic()
    with pytest.raises(ValueError) as err:
        ep.check_endpoint("http://user:hunter22@127.0.0.1:9", timeout_s=30, request_timeout_s=5)
    assert time.monotonic() - started < 1
    assert "hunter22" not in str(err.value) and "'http://***@127.0.0.1:9'" in str(err.value)
    assert "must not carry credentials" in str(err.value)


# -- backoff and Retry-After -------------------------------------------------------------------------------------
def test_backoff_is_exponential_capped_and_jittered_within_bounds():
    rng = random.Random(1)
    for attempt in range(40):
        d = min(ep.BACKOFF_CAP_S, ep.BACKOFF_BASE_S * 2 ** attempt)
        samples = [ep.backoff_delay(attempt, rng) for _ in range(200)]
        assert all(d / 2 <= s <= d for s in samples)
        assert max(samples) - min(samples) > d / 4  # jitter actually spreads the retries
    assert ep.backoff_delay(1000, rng) <= ep.BACKOFF_CAP_S


def test_backoff_is_reproducible_with_a_seed():
    a, b = random.Random(7), random.Random(7)
    assert [ep.backoff_delay(i, a) for i in range(8)] == [ep.backoff_delay(i, b) for i in range(8)]


@pytest.mark.parametrize("header, expected", [
    (None, None), ("3", 3.0), (" 7 ", 7.0), ("1.5", 1.5), ("0", 0.0), ("100000", ep.RETRY_AFTER_CAP_S),
    ("soon", None), ("-1", None), ("", None),
])
def test_parse_retry_after_seconds(header, expected):
    assert ep.parse_retry_after(header) == expected


def test_parse_retry_after_http_date():
    now = 1_800_000_000.0
    assert ep.parse_retry_after(email.utils.formatdate(now + 12, usegmt=True), now=now) == pytest.approx(12)
    assert ep.parse_retry_after(email.utils.formatdate(now - 50, usegmt=True), now=now) == 0.0
    assert ep.parse_retry_after(email.utils.formatdate(now + 3600, usegmt=True), now=now) == ep.RETRY_AFTER_CAP_S


def test_percentile_nearest_rank():
    assert ep.percentile([30, 10, 20, 40], 50) == 20
    assert ep.percentile([30, 10, 20, 40], 95) == 40
    assert ep.percentile([5.0], 95) == 5.0
    assert ep.percentile(range(1, 101), 95) == 95
    with pytest.raises(ValueError):
        ep.percentile([], 50)


# -- the retry loop, with a transport that always refuses and a fake clock -------------------------------------
class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now += s


class RefusingSession(requests.Session):
    def __init__(self, clock: FakeClock, cost_s: float = 0.0) -> None:
        super().__init__()
        self.clock, self.cost_s, self.timeouts = clock, cost_s, []

    def request(self, method, url, **kwargs):
        self.timeouts.append(kwargs["timeout"])
        self.clock.now += self.cost_s
        raise requests.exceptions.ConnectionError("[Errno 111] Connection refused")


def test_retry_loop_backs_off_and_stops_exactly_at_the_deadline():
    clock = FakeClock()
    session = RefusingSession(clock)
    with pytest.raises(EndpointCheckError) as err:
        ep.check_endpoint("http://gw", timeout_s=60, request_timeout_s=30, session=session, clock=clock,
                          sleep=clock.sleep, seed=3)
    e = err.value
    assert e.step == "ready" and e.elapsed_s == pytest.approx(60) and e.status is None
    assert "connection refused" in e.reason and "60 s deadline" in e.reason
    # capped exponential: grows, never above the cap, and the last sleep is cut to the deadline
    assert clock.sleeps[:5] == sorted(clock.sleeps[:5])
    assert max(clock.sleeps) <= ep.BACKOFF_CAP_S
    assert sum(clock.sleeps) == pytest.approx(60)


def test_request_timeout_is_cut_to_the_time_left():
    clock = FakeClock()
    session = RefusingSession(clock, cost_s=4.0)  # every attempt "takes" 4 s
    with pytest.raises(EndpointCheckError):
        ep.check_endpoint("http://gw", timeout_s=10, request_timeout_s=30, session=session, clock=clock,
                          sleep=clock.sleep, seed=1)
    assert session.timeouts[0] == (10, 10)
    assert all(t[0] <= 10 for t in session.timeouts) and session.timeouts[-1][0] < 10


def test_real_refused_port_fails_at_the_deadline():
    started = time.monotonic()
    with pytest.raises(EndpointCheckError, match="connection refused"):
        ep.check_endpoint("http://127.0.0.1:9", timeout_s=1.0, request_timeout_s=0.5)
    assert 1.0 <= time.monotonic() - started < 1.0 + 0.5 + 3.0  # deadline + one request timeout + slack for a loaded CI machine


# -- secrets ----------------------------------------------------------------------------------------------------
def test_scrubber():
    scrub = ep.Scrubber(SECRET, None, "")
    assert scrub(f"Authorization: Bearer {SECRET} and {SECRET}") == "Authorization: Bearer *** and ***"
    assert ep.Scrubber("abc")("abc") == "abc"  # too short to be a real key: would mangle messages


def test_error_message_is_one_line_and_scrubbed_by_the_checker():
    c = ep._Checker("http://gw", api_key=SECRET, timeout_s=5, request_timeout_s=1, session=None, log=None,
                    clock=time.monotonic, sleep=time.sleep, rng=random.Random(0))
    e = c.error("chat", f"POST /v1/chat/completions: echo {SECRET}\nsecond line", 500,
                '{"detail": "bad key ' + SECRET + '"}\n')
    c.close()
    assert "\n" not in str(e) and SECRET not in str(e) and "***" in str(e)
    assert str(e).startswith("http://gw: step 'chat' failed after ")
    assert e.status == 500 and e.body_excerpt == '{"detail": "bad key ***"}'


def test_log_messages_are_scrubbed():
    lines: list[str] = []
    c = ep._Checker("http://gw", api_key=SECRET, timeout_s=5, request_timeout_s=1, session=None, log=lines.append,
                    clock=time.monotonic, sleep=time.sleep, rng=random.Random(0))
    c.log(f"sending {SECRET}")
    c.close()
    assert lines == ["sending ***"]


def test_error_pickles_and_keeps_its_fields():
    e = EndpointCheckError("http://gw", "stream", "malformed", status=200, body_excerpt="data: x", elapsed_s=1.25)
    back = pickle.loads(pickle.dumps(e))
    assert (back.url, back.step, back.status, back.body_excerpt, back.elapsed_s) == ("http://gw", "stream", 200, "data: x", 1.25)
    assert str(back) == str(e) == "http://gw: step 'stream' failed after 1.2 s: malformed; last HTTP 200 'data: x'"
    assert str(EndpointCheckError("u", "ready", "down")).endswith("down; no HTTP response")


def test_excerpt_is_one_line_and_bounded():
    text = ep.excerpt(b"line one\nline two\t" + b"x" * 500)
    assert "\n" not in text and len(text) == ep.EXCERPT_CHARS and text.endswith("…")
    assert ep.excerpt(b"\xff\xfe ok") == "\ufffd\ufffd ok"
    assert ep.excerpt(b"gz\x8b\x06\x07 x") == "gz\ufffd\\x06\\x07 x"  # control bytes escaped, not raw


# -- SSE ----------------------------------------------------------------------------------------------------------
def chunk(content: str | None = None, finish: str | None = None, obj: str = "chat.completion.chunk") -> str:
    delta = {} if content is None else {"content": content}
    return json.dumps({"object": obj, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})


def sse(*datas: str, sep: str = "\n") -> bytes:
    return "".join(f"data: {d}{sep}{sep}" for d in datas).encode()


VLLM_STREAM = sse(chunk(""), chunk("Par"), chunk("is"), chunk(None, "stop"), "[DONE]")


@pytest.mark.parametrize("sep", ["\n", "\r\n", "\r"])
def test_sse_line_endings(sep):
    s = consume_chat_stream([sse(chunk("Par"), chunk("is", "stop"), "[DONE]", sep=sep)])
    assert (s.text, s.done, s.finish_reason, s.chunks) == ("Paris", True, "stop", 2)


def test_sse_split_at_every_byte_boundary():
    s = consume_chat_stream([bytes([b]) for b in VLLM_STREAM])
    assert s.text == "Paris" and s.done and s.chunks == 4


def test_sse_parser_multiline_data_comments_and_other_fields():
    p = SSEParser()
    events = p.feed(b": keep-alive\nevent: message\nid: 1\ndata: a\ndata: b\nretry: 10\n\ndata:c\n\n")
    assert events == ["a\nb", "c"] and p.close() == []


def test_sse_without_done_is_accepted_when_finished():
    s = consume_chat_stream([sse(chunk("Paris"), chunk(None, "length"))])
    assert not s.done and s.finish_reason == "length"


def test_sse_last_event_without_blank_line_counts():
    s = consume_chat_stream([sse(chunk("Paris", "stop")) + b"data: [DONE]"])
    assert s.done


def test_sse_usage_only_chunk_with_empty_choices_is_fine():
    usage = json.dumps({"object": "chat.completion.chunk", "choices": [], "usage": {"completion_tokens": 1}})
    assert consume_chat_stream([sse(chunk("P", "stop"), usage, "[DONE]")]).chunks == 2


@pytest.mark.parametrize("stream, message", [
    (sse(chunk("P"), "[DONE]", chunk("x")), "event after data: \\[DONE\\]"),
    (sse(chunk("P"), "{not json"), "not JSON"),
    (sse("[1, 2]"), "not a JSON object"),
    (sse(json.dumps({"error": {"message": "engine died"}})), "error mid-stream"),
    (sse(chunk("P", obj="text_completion")), "expected 'chat.completion.chunk'"),
    (sse(json.dumps({"object": "chat.completion.chunk"})), "no 'choices' list"),
    (sse(json.dumps({"object": "chat.completion.chunk", "choices": [{"delta": {"content": 3}}]})), "not a string"),
    (b"", "carried no chat.completion.chunk"),
    (sse("[DONE]"), "carried no chat.completion.chunk"),
    (sse(chunk("P"), chunk("a")), "without a finish_reason or data: \\[DONE\\] \\(truncated\\)"),
    (sse(chunk("P")) + b'data: {"object": "chat.comp', "not JSON"),
    (b"data: \xff\xfe\n\n", "not UTF-8"),
])
def test_sse_malformed(stream, message):
    with pytest.raises(SSEError, match=message):
        consume_chat_stream([stream])


def test_sse_time_to_first_content_not_first_chunk():
    times = iter([0.010, 0.050, 0.060, 0.070])  # one clock reading per event
    s = consume_chat_stream([sse(chunk("")), sse(chunk("Par")), sse(chunk("is", "stop"), "[DONE]")],
                            clock=lambda: next(times), started=0.0)
    assert s.first_chunk_s == pytest.approx(0.010) and s.first_content_s == pytest.approx(0.050)


# -- response shapes --------------------------------------------------------------------------------------------
def chat_obj(**over):
    obj = {"object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assistant", "content": "Paris"},
                                                      "finish_reason": "stop"}],
           "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}}
    obj.update(over)
    return obj


def test_validate_chat_and_completion():
    assert ep.validate_chat(chat_obj(), 8) == ("Paris", 2)
    assert ep.validate_chat(chat_obj(usage=None), 8) == ("Paris", None)
    comp = {"object": "text_completion", "choices": [{"text": " Paris"}], "usage": {"prompt_tokens": 5, "completion_tokens": 1}}
    assert ep.validate_completion(comp, 8) == (" Paris", 1)


@pytest.mark.parametrize("obj, message", [
    ([], "not a JSON object"),
    (chat_obj(object="text_completion"), "'object' is 'text_completion'"),
    (chat_obj(choices=[]), "non-empty list"),
    (chat_obj(choices=[{"message": "x"}]), "message is not an object"),
    (chat_obj(choices=[{"message": {"role": "assistant", "content": None}}]), "content is NoneType"),
    (chat_obj(choices=[{"message": {"role": "user", "content": "x"}}]), "role is 'user'"),
    (chat_obj(usage={"prompt_tokens": 1, "completion_tokens": -1}), "completion_tokens is -1"),
    (chat_obj(usage={"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 9}), "total_tokens 9"),
    (chat_obj(usage={"prompt_tokens": 1, "completion_tokens": 50}), "exceeds max_tokens 8"),
    (chat_obj(usage="lots"), "'usage' is not an object"),
])
def test_validate_chat_rejects(obj, message):
    with pytest.raises(ShapeError, match=message):
        ep.validate_chat(obj, 8)


def test_validate_models_and_kaito_chat():
    assert ep.validate_models({"object": "list", "data": [{"id": "a"}, {"id": "b"}]}) == ("a", "b")
    for bad in ({"data": []}, {"data": [{"name": "a"}]}, {"models": []}, []):
        with pytest.raises(ShapeError):
            ep.validate_models(bad)
    assert ep.validate_kaito_chat({"Result": "Paris"}) == "Paris"
    with pytest.raises(ShapeError):
        ep.validate_kaito_chat({"choices": []})


def test_missing_model_reason_hints_the_served_name():
    assert "use 'phi-4-mini-instruct'" in ep.missing_model_reason("microsoft/Phi-4-mini-instruct", ("phi-4-mini-instruct",))
    assert "use" not in ep.missing_model_reason("x", ("y", "z")) and "served: 'y', 'z'" in ep.missing_model_reason("x", ("y", "z"))


# -- results ------------------------------------------------------------------------------------------------------
def make_result(**over) -> EndpointResult:
    base = dict(url="http://gw", runtime="vllm", kaito_version="0.12.0", api="openai", model="m", models_served=("m",),
                model_verified=True, checks=("ready", "models"), latency_ms=12.3456, ttft_ms=None, tokens_per_s=321.98765,
                p50_ms=10.0, p95_ms=20.0, concurrency=4, sample_text="Paris", ready_after_s=1.23456, elapsed_s=2.5,
                checked_at="2026-11-27T00:00:00+00:00", notes=("n1",))
    base.update(over)
    return EndpointResult(**base)


def test_result_to_dict_is_json_ready_and_rounded():
    d = make_result().to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["checks"] == ["ready", "models"] and d["latency_ms"] == 12.3 and d["ready_after_s"] == 1.235
    assert d["tokens_per_s"] == 321.988 and d["ttft_ms"] is None


def test_result_is_frozen_and_summary_lists_notes():
    r = make_result()
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.model = "x"  # type: ignore[misc]
    text = ep.summarize(r)
    assert text.startswith("OK http://gw: model m (as expected)") and "note: n1" in text and "TTFT n/a" in text


# -- KAITO 0.6 transformers runtime (/health + /chat) ---------------------------------------------------------------
# No KAITO 0.6 transformers server can run here (it needs KAITO's image); this stub speaks that API's documented
# shape only, to check the client side of the protocol (paths, request body, {"Result": ...}).
class _KaitoV06Handler(http.server.BaseHTTPRequestHandler):
    bodies: list[dict] = []
    health_calls = 0
    unhealthy_first = 0          # how many /health calls answer 503 (the model still loading)

    def log_message(self, *a):
        pass

    def _reply(self, status: int, obj: dict) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path != "/health":
            return self._reply(404, {"detail": "Not Found"})
        type(self).health_calls += 1
        if type(self).health_calls <= type(self).unhealthy_first:
            return self._reply(503, {"detail": "loading"})
        self._reply(200, {"status": "Healthy"})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).bodies.append(body)
        if self.path == "/chat" and "prompt" in body:
            self._reply(200, {"Result": "Paris"})
        else:
            self._reply(404, {"detail": "Not Found"})


def test_kaito_06_transformers_protocol():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _KaitoV06Handler)
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        r = ep.check_endpoint(f"http://127.0.0.1:{server.server_address[1]}", runtime="transformers",
                              kaito_version="0.6.0", expected_model="phi-3-mini-4k-instruct", concurrency=3, timeout_s=10)
    finally:
        server.shutdown()
        server.server_close()
    assert r.api == "kaito-chat" and r.model is None and not r.model_verified
    assert r.checks == ("ready", "chat", "concurrency") and r.sample_text == "Paris" and r.tokens_per_s is None
    assert any("'phi-3-mini-4k-instruct' could not be verified" in n for n in r.notes)
    body = _KaitoV06Handler.bodies[0]
    assert body["prompt"] and body["generate_kwargs"] == {"max_new_tokens": ep.MAX_TOKENS, "do_sample": False}
    assert len(_KaitoV06Handler.bodies) == 1 + 3


def test_kaito_06_transformers_waits_for_health_before_chatting(monkeypatch):
    # that runtime lists no models: /health is the only readiness signal, so nothing is sent before it says yes
    monkeypatch.setattr(_KaitoV06Handler, "bodies", [])
    monkeypatch.setattr(_KaitoV06Handler, "health_calls", 0)
    monkeypatch.setattr(_KaitoV06Handler, "unhealthy_first", 2)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _KaitoV06Handler)
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        r = ep.check_endpoint(f"http://127.0.0.1:{server.server_address[1]}", runtime="transformers",
                              kaito_version="0.6.0", concurrency=1, timeout_s=30)
    finally:
        server.shutdown()
        server.server_close()
    assert _KaitoV06Handler.health_calls == 3 and r.checks[0] == "ready"
    assert r.ready_after_s > 0 and len(_KaitoV06Handler.bodies) == 2


# -- CLI argument errors (exit 2) ---------------------------------------------------------------------------------
@pytest.mark.parametrize("argv, message", [
    ([], "the following arguments are required: --url"),
    (["--url", "http://x", "--runtime", "tgi"], "invalid choice: 'tgi'"),
    (["--url", "http://x", "--timeout", "0"], "'0' must be a positive number"),
    (["--url", "http://x", "--timeout", "soon"], "'soon' is not a number"),
    (["--url", "http://x", "--concurrency", "0"], "'0' must be from 1 to 64"),
    (["--url", "http://x", "--api-key-env", "1BAD"], "is not an environment variable name"),
])
def test_cli_argparse_errors_exit_2(argv, message, capsys):
    from infra.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["check-endpoint", *argv])
    assert exc.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("argv, env, message", [
    (["--url", "ftp://x"], {}, "check-endpoint: URL 'ftp://x' must start with http:// or https://"),
    (["--url", "http://x", "--kaito-version", "zero"], {}, "KAITO version 'zero' is not of the form"),
    (["--url", "http://x", "--runtime", "transformers", "--kaito-version", "0.5.0"], {}, "kaito-aks has no rules for KAITO 0.5.0"),
    (["--url", "http://x", "--api-key-env", "KAITO_AKS_UNSET_KEY"], {}, "environment variable KAITO_AKS_UNSET_KEY is not set"),
    (["--url", "http://x", "--api-key-env", "KAITO_AKS_EMPTY_KEY"], {"KAITO_AKS_EMPTY_KEY": ""}, "is not set or empty"),
])
def test_cli_value_errors_exit_2_with_one_line(argv, env, message, capsys, monkeypatch):
    from infra.cli import main

    monkeypatch.delenv("KAITO_AKS_UNSET_KEY", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert main(["check-endpoint", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_cli_exit_2_as_a_subprocess():
    p = subprocess.run([sys.executable, "-m", "infra", "check-endpoint", "--url", "http://x", "--concurrency", "x"],
                       cwd=REPO, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "Traceback" not in p.stderr and "--concurrency" in p.stderr


# -- the dynamic provider: check, diff, pickling, resource options -------------------------------------------------
from components import endpoint_check as ec  # noqa: E402


def news(**over) -> dict:
    return {"__provider": "blob", "base_url": "http://10.0.0.9", **over}


def test_unknown_sentinel_is_pulumis():
    from pulumi.runtime import rpc

    assert ec.UNKNOWN == rpc.UNKNOWN


def test_check_fills_defaults_and_tolerates_preview_unknowns():
    res = ec.EndpointCheckProvider().check({}, news(base_url=ec.UNKNOWN, expected_model=ec.UNKNOWN, api_key=ec.UNKNOWN))
    assert res.failures == []
    assert res.inputs["timeout_s"] == ec.DEFAULT_TIMEOUT_S and res.inputs["runtime"] == "vllm"
    assert res.inputs["base_url"] == ec.UNKNOWN and res.inputs["__provider"] == "blob"
    assert ec.EndpointCheckProvider().check({}, news(concurrency=4.0, timeout_s=1800.0)).failures == []


@pytest.mark.parametrize("over, prop, message", [
    ({"base_url": None}, "base_url", "no endpoint address"),
    ({"base_url": "10.0.0.9"}, "base_url", "must start with http"),
    ({"runtime": "tgi"}, "runtime", "not one of"),
    ({"runtime": "transformers", "kaito_version": "0.5.0"}, "runtime", "no rules for KAITO 0.5.0"),
    ({"timeout_s": 0}, "timeout_s", "number of seconds above 0"),
    ({"timeout_s": float("inf")}, "timeout_s", "at most 86400"),
    ({"timeout_s": float("nan")}, "timeout_s", "number of seconds above 0"),
    ({"timeout_s": 86_401.0}, "timeout_s", "at most 86400"),
    ({"request_timeout_s": "30"}, "request_timeout_s", "number of seconds above 0"),
    ({"request_timeout_s": 3_601.0}, "request_timeout_s", "at most 3600"),
    ({"api_key": "sk-secret\r"}, "api_key", "contains a carriage return (CR) at the end"),
    ({"api_key": "Bearer sk-secret"}, "api_key", "without 'Bearer '"),
    ({"concurrency": 2.5}, "concurrency", "integer from 1 to 64"),
    ({"concurrency": 100}, "concurrency", "integer from 1 to 64"),
])
def test_check_failures_name_the_property(over, prop, message):
    failures = ec.EndpointCheckProvider().check({}, news(**over)).failures
    assert [f.property for f in failures] == [prop] and message in failures[0].reason
    assert "sk-secret" not in failures[0].reason  # a bad key is described, never quoted


def test_diff_rechecks_only_on_watched_inputs():
    p = ec.EndpointCheckProvider()
    olds = {**news(), "runtime": "vllm", "kaito_version": "0.12.0", "expected_model": "m", "api_key": "k",
            "trigger": "t1", "timeout_s": 2400.0, "concurrency": 4.0, "served_model": "m", "latency_ms": 5.0}
    same = {k: v for k, v in olds.items() if k not in ec.OUTPUT_KEYS}
    assert p.diff("id", olds, {**same, "__provider": "other-blob"}).changes is False
    assert p.diff("id", olds, {**same, "timeout_s": 60.0, "request_timeout_s": 5.0, "concurrency": 8.0}).changes is False
    for key, value in (("base_url", "http://10.0.0.10"), ("expected_model", "n"), ("runtime", "transformers"),
                       ("kaito_version", "0.6.0"), ("api_key", "k2"), ("trigger", "t2"), ("base_url", ec.UNKNOWN)):
        d = p.diff("id", olds, {**same, key: value})
        assert d.changes is True and d.replaces == [], key
    # a state written before a key existed compares against the default
    assert p.diff("id", {k: v for k, v in olds.items() if k != "trigger"}, {**same, "trigger": None}).changes is False


def test_provider_pickles_by_reference_and_loads_in_a_fresh_process():
    from pulumi.dynamic.dynamic import serialize_provider

    blob = serialize_provider(ec.EndpointCheckProvider())
    raw = base64.b64decode(blob)
    assert b"components.endpoint_check" in raw and len(raw) < 200  # by reference, not by value
    code = ("import base64, dill, sys; p = dill.loads(base64.b64decode(sys.argv[1])); "
            "print(type(p).__module__, type(p).__name__, p.serialize_as_secret_always)")
    out = subprocess.run([sys.executable, "-c", code, blob], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["components.endpoint_check", "EndpointCheckProvider", "False"]


def test_resource_options_always_mark_secret_outputs():
    import pulumi

    opts = ec.resource_options(pulumi.ResourceOptions(additional_secret_outputs=["x"], protect=True))
    assert set(opts.additional_secret_outputs) == {"x", "api_key", "sample_text", "kubeconfig"} and opts.protect
    assert set(ec.resource_options(None).additional_secret_outputs) == {"api_key", "sample_text", "kubeconfig"}


def test_resource_registers_with_a_secret_api_key_under_mocks():
    import pulumi

    seen = []

    class Mocks(pulumi.runtime.Mocks):
        def new_resource(self, args):
            seen.append(args)
            return f"{args.name}-id", dict(args.inputs)

        def call(self, args):
            return {}

    pulumi.runtime.set_mocks(Mocks(), project="kaito-aks", stack="unit", preview=False)

    @pulumi.runtime.test
    def run():
        check = ec.EndpointCheck("m-0-check", base_url="http://10.0.0.9", api_key=SECRET, expected_model="m",
                                 timeout_s=1800, trigger="t")
        return check.urn.apply(lambda _: None)

    run()
    (args,) = seen
    assert args.typ == "pulumi-python:dynamic/kaito:EndpointCheck"
    assert args.inputs["api_key"] != SECRET and args.inputs["api_key"]["value"] == SECRET  # a secret-wrapped value
    assert isinstance(args.inputs["__provider"], str)  # not secret: serialize_as_secret_always = False
    assert args.inputs["timeout_s"] == 1800 and args.inputs["base_url"] == "http://10.0.0.9"


# -- the pre-switch check of a surge rollout: one pod through a port-forward -----------------------------------
POD_TARGET = {"namespace": "llm", "selector": {"kaito.sh/workspace": "m-abc123"}, "pod": None, "port": 5000,
              "label": "m-abc123"}


def test_a_port_forward_check_needs_the_kubeconfig():
    p = ec.EndpointCheckProvider()
    failures = p.check({}, news(pod_target=POD_TARGET)).failures
    assert [f.property for f in failures] == ["kubeconfig"]
    assert p.check({}, news(pod_target=POD_TARGET, kubeconfig="apiVersion: v1")).failures == []


def test_a_rotated_kubeconfig_is_no_reason_to_check_again_but_a_new_pod_target_is():
    p = ec.EndpointCheckProvider()
    olds = {**news(pod_target=POD_TARGET, kubeconfig="token-1"), "served_model": "m"}
    same = {k: v for k, v in olds.items() if k not in ec.OUTPUT_KEYS}
    assert p.diff("id", olds, {**same, "kubeconfig": "token-2"}).changes is False
    moved = {**POD_TARGET, "selector": {"kaito.sh/workspace": "m-def456"}}
    assert p.diff("id", olds, {**same, "pod_target": moved}).changes is True
    assert "kubeconfig" in ec.SECRET_OUTPUTS


# ---------------------------------------------------------------------------------------------------------
# Small rules the messages rely on (each found by mutation testing: no test stated them)

def test_del_and_the_c1_controls_are_control_characters():
    assert [ep._char_name(c) for c in ("\x01", "\x1b", "\x80", "\x9f")] == ["a control character"] * 4
    assert ep._char_name("\x7f") == "a DEL character"
    assert ep._char_name("\xa0") == "a whitespace character" and ep._char_name("é") == "a non-ASCII character"


def test_a_text_exactly_at_the_limit_is_kept_whole_and_one_more_is_cut():
    assert ep._printable("x" * 20, 20) == "x" * 20
    assert ep._printable("x" * 21, 20) == "x" * 19 + "…"
    assert ep._printable("\x01" * 3, 20) == "\\x01" * 3          # escaped, not printed raw


@pytest.mark.parametrize("opener,closer,sibling", [("[", "]", ",[2]"), ('{"a":', "}", ',"b":{"c":2}')])
def test_json_exactly_at_the_depth_limit_is_accepted_and_one_deeper_is_not(opener, closer, sibling):
    # more brackets than the limit in all, but never deeper than it: the sibling sits at the deepest level too
    at_limit = opener * ep.MAX_JSON_DEPTH + "1" + closer * (ep.MAX_JSON_DEPTH - 1) + sibling + closer
    assert not ep.json_nesting_exceeds(at_limit) and ep.loads_bounded(at_limit) is not None
    deeper = opener * (ep.MAX_JSON_DEPTH + 1) + "1" + closer * (ep.MAX_JSON_DEPTH + 1)
    assert ep.json_nesting_exceeds(deeper)
    with pytest.raises(ep.JsonTooDeepError):
        ep.loads_bounded(deeper)


def test_a_key_quoted_twice_in_json_is_still_a_form_of_the_key():
    key = 'sk-a"b\\c'
    once = json.dumps(key)[1:-1]
    assert json.dumps(once)[1:-1] in ep.secret_text_forms(key)


def test_a_completion_whose_text_is_not_a_string_is_malformed():
    with pytest.raises(ep.ShapeError, match=r"choices\[0\].text is int, expected a string"):
        ep.validate_completion({"object": "text_completion", "choices": [{"text": 7, "finish_reason": "length"}],
                                "usage": {"completion_tokens": 1}}, 8)


@pytest.mark.parametrize("message,short", [
    ("HTTPConnectionPool: Max retries exceeded (Caused by NameResolutionError: Name or service not known)",
     "DNS lookup failed"),
    ("Failed to resolve: nodename nor servname provided, or not known", "DNS lookup failed"),
    ("('Connection aborted.', ConnectionResetError(104, 'Connection reset by peer'))", "connection reset"),
    ("x " + ep.FORWARD_FAILURE + "no Ready pod of workspace phi3'))", "no Ready pod of workspace phi3"),
    ("('Connection aborted.', RemoteDisconnected('Remote end closed connection without response'))",
     "server closed the connection"),
    ("[Errno 113] No route to host", "no route to host"),
    ("HTTPConnectionPool(host='10.0.0.1', port=80): Read timed out. (read timeout=5)", "read timed out"),
    ("something nobody anticipated", "ConnectionError: something nobody anticipated"),
])
def test_connection_errors_are_named_in_a_few_words(message, short):
    assert ep._describe_exception(requests.exceptions.ConnectionError(message)) == short


def test_a_long_port_forward_reason_is_cut_to_160_characters():
    reason = ep._describe_exception(requests.exceptions.ConnectionError(ep.FORWARD_FAILURE + "w" * 400 + "'))"))
    assert len(reason) == 160 and reason == "w" * 159 + "…"


@pytest.mark.parametrize("error", [requests.exceptions.InvalidHeader("Invalid leading whitespace: 'Bearer  sk'"),
                                   UnicodeEncodeError("latin-1", "ü", 0, 1, "ordinal not in range")])
def test_a_header_that_cannot_be_sent_is_blamed_on_the_key_without_quoting_it(error):
    assert ep._unsendable_reason(error) == "a request header is not a valid HTTP header value (check the API key)"


@pytest.mark.parametrize("choice", ["Paris", 7, None, {"delta": "Paris"}, {"delta": ["Paris"]}])
def test_a_stream_choice_without_a_delta_object_is_a_malformed_stream(choice):
    event = json.dumps({"object": "chat.completion.chunk", "choices": [choice]})
    with pytest.raises(ep.SSEError, match="stream choice has no 'delta' object"):
        consume_chat_stream([sse(event, chunk("is", "stop"), "[DONE]")])
