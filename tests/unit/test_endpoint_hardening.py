"""check-endpoint against hostile input, without an inference server (a tiny local stub speaks the OpenAI shapes
where a test needs a server that says something a real one wouldn't).

11. Fail fast: an API key that is not a valid HTTP header value (the CR/LF of a key file with Windows line endings,
    whitespace, control or non-ASCII characters, too short or long) and URLs no retry can fix (bad ports, spaces,
    no host, other schemes, credentials, queries) are refused at once -- ValueError from the library, exit 2 with
    one line from the CLI -- and never quote the key; a request the HTTP library refuses is fatal, not retried.
12. Secrets reflected by a server are scrubbed from every field that leaves: the result (/v1/models ids, the
    sample text, notes), summary/JSON, error lines, log lines, the dynamic provider's outputs -- in any case or
    common encoding, and when a cut (``…``, a truncated body) leaves a piece of the key; URLs are echoed only
    with their query and user:password@ redacted.
13. Every line is bounded: deeply nested JSON, huge model ids, huge numbers; timeouts are bounded; an unexpected
    exception is one scrubbed line, never a traceback.
"""
from __future__ import annotations

import base64
import html
import http.server
import json
import logging
import os
import pathlib
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from infra import endpoint as ep
from infra.endpoint import EndpointCheckError

REPO = pathlib.Path(__file__).resolve().parents[2]
KEY = "sk-Zq7Vx2Lw9Rt4Np8Kc3Hy"      # random-looking: any 6+ characters of it in the output is a leak
MAX_LINE = 400


def fragments(secret: str, n: int = 6) -> set[str]:
    """Every piece of ``secret`` of ``n`` characters, lower-cased (the output is compared lower-cased)."""
    s = secret.lower()
    return {s[i:i + n] for i in range(len(s) - n + 1)}


def leaked(text: str, secret: str = KEY) -> list[str]:
    """What of ``secret`` shows in ``text``: a 6+ character piece in any case, or a common encoding of it."""
    low = text.lower()
    found = sorted(f for f in fragments(secret) if f in low)
    raw = secret.encode("utf-8", "surrogatepass")
    encoded = {"json": json.dumps(secret)[1:-1], "quote": urllib.parse.quote(raw, safe=""),
               "b64": base64.b64encode(raw).decode()[:-4], "hex": raw.hex()}
    found += [name for name, form in encoded.items() if form.lower() in low]
    return found


class NoNetwork(requests.Session):
    def request(self, *a, **k):  # pragma: no cover - must not be reached
        raise AssertionError("a request was sent")


# -- a small OpenAI-shaped stub ----------------------------------------------------------------------------------
Reply = tuple[int, dict[str, str], bytes]


def chat_reply(content: str, usage: bool = True) -> bytes:
    obj: dict[str, Any] = {"object": "chat.completion",
                           "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                                        "finish_reason": "stop"}]}
    if usage:
        obj["usage"] = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    return json.dumps(obj).encode()


def stream_reply(content: str = "Paris") -> bytes:
    chunk = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": content},
                                                             "finish_reason": "stop"}]}
    return f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n".encode()


DEFAULT_ROUTES: dict[str, Callable[[dict], Reply]] = {
    "/v1/models": lambda body: (200, {}, json.dumps({"object": "list", "data": [{"id": "tiny"}]}).encode()),
    "/v1/chat/completions": lambda body: ((200, {"Content-Type": "text/event-stream"}, stream_reply())
                                          if body.get("stream") else (200, {}, chat_reply("Paris"))),
    "/v1/completions": lambda body: (200, {}, json.dumps({"object": "text_completion", "choices": [{"text": " Paris"}],
                                                          "usage": {"prompt_tokens": 5, "completion_tokens": 1}}).encode()),
}


class Stub:
    def __init__(self, **routes: Callable[[dict], Reply]) -> None:
        table = {**DEFAULT_ROUTES, **{k.replace("_", "/").replace("//", "_"): v for k, v in routes.items()}}
        self.seen: list[tuple[str, str, dict[str, str]]] = []
        stub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else {}
                stub.seen.append((self.command, self.path, dict(self.headers)))
                route = table.get(self.path.split("?", 1)[0])
                status, headers, payload = route(body) if route else (404, {}, b'{"detail":"Not Found"}')
                self.send_response(status)
                headers = {"Content-Type": "application/json", **headers}
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self) -> None:
                self._handle()

            def do_POST(self) -> None:
                self._handle()

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stub_factory() -> Iterator[Callable[..., Stub]]:
    made: list[Stub] = []

    def make(**routes) -> Stub:
        made.append(Stub(**routes))
        return made[-1]

    yield make
    for s in made:
        s.close()


def routes(models: list[str] | None = None, chat: str | None = None, **over) -> dict[str, Callable]:
    out: dict[str, Callable] = {}
    if models is not None:
        out["_v1_models"] = lambda body: (200, {}, json.dumps({"object": "list",
                                                               "data": [{"id": m} for m in models]}).encode())
    if chat is not None:
        out["_v1_chat_completions"] = lambda body: ((200, {"Content-Type": "text/event-stream"}, stream_reply())
                                                    if body.get("stream") else (200, {}, chat_reply(chat)))
    out.update(over)
    return out


def everything_produced(result: ep.EndpointResult, lines: list[str], caplog) -> str:
    return "\n".join([repr(result), json.dumps(result.to_dict()), ep.summarize(result), *lines, caplog.text])


def check_error(fn: Callable[[], Any]) -> EndpointCheckError:
    with pytest.raises(EndpointCheckError) as err:
        fn()
    return err.value


# =================================================================================================================
# 11. Fail fast: the key as an HTTP header value, URLs, unsendable requests
# =================================================================================================================
BAD_KEYS = {
    "trailing CR (Windows key file)": KEY + "\r",
    "trailing LF": KEY + "\n",
    "trailing CRLF": KEY + "\r\n",
    "leading space": " " + KEY,
    "trailing space": KEY + " ",
    "tab inside": KEY[:8] + "\t" + KEY[8:],
    "NUL inside": KEY[:8] + "\x00" + KEY[8:],
    "DEL": KEY + "\x7f",
    "non-ASCII": KEY[:8] + "é" + KEY[8:],
    "non-UTF-8 from the environment": KEY + "\udcff",
    "too long": KEY * 300,
    "too short": "sk1",
}


@pytest.mark.parametrize("key", BAD_KEYS.values(), ids=BAD_KEYS.keys())
def test_a_key_that_is_no_header_value_is_refused_before_any_request(key):
    started = time.monotonic()
    with pytest.raises(ValueError) as err:
        ep.check_endpoint("http://127.0.0.1:9", api_key=key, session=NoNetwork(), timeout_s=600)
    message = str(err.value)
    # refused, not retried until the 600 s deadline (the bound is loose: a traced run on busy cores is slow)
    assert time.monotonic() - started < 30 and not isinstance(err.value, EndpointCheckError)
    assert message.startswith("API key ") and "\n" not in message and len(message) <= MAX_LINE
    assert not leaked(message, key.strip() if len(key.strip()) >= 6 else KEY), message


@pytest.mark.parametrize("key", [BAD_KEYS["trailing CR (Windows key file)"], BAD_KEYS["trailing CRLF"],
                                 BAD_KEYS["non-ASCII"], BAD_KEYS["too short"]])
def test_cli_refuses_such_a_key_at_once_with_exit_2_and_one_line(key, capsys, monkeypatch):
    from infra.cli import main

    monkeypatch.setenv("KAITO_AKS_BAD_KEY", key)
    started = time.monotonic()
    code = main(["check-endpoint", "--url", "http://127.0.0.1:9", "--api-key-env", "KAITO_AKS_BAD_KEY"])
    err = capsys.readouterr().err
    assert code == 2 and time.monotonic() - started < 2
    assert err.count("\n") == 1 and err.startswith("--api-key-env KAITO_AKS_BAD_KEY: the API key ")
    assert not leaked(err, key.strip() if len(key.strip()) >= 6 else KEY), err


def test_cli_windows_key_file_as_a_real_process_exits_2_in_a_second_without_the_key():
    started = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "infra", "check-endpoint", "--url", "http://127.0.0.1:9",
                        "--api-key-env", "KAITO_AKS_KEY"], cwd=REPO, capture_output=True, text=True, timeout=60,
                       env={**os.environ, "KAITO_AKS_KEY": KEY + "\r\n"})
    assert p.returncode == 2, p.stderr
    assert time.monotonic() - started < 20  # interpreter start-up only: no retry until the 600 s deadline
    assert len(p.stderr.splitlines()) == 1 and "carriage return" in p.stderr and "Traceback" not in p.stderr
    assert not leaked(p.stdout + p.stderr)


BAD_URLS = {
    "port too big": ("http://127.0.0.1:99999", "port"),
    "port not a number": ("http://127.0.0.1:abc/v1", "port"),
    "port zero": ("http://127.0.0.1:0", "port"),
    "empty port": ("http://gw:/x", "port"),
    "space in path": ("http://gw/llama 8b", "space"),
    "space in host": ("http://g w/", "space"),
    "tab": ("http://gw/\tx", "tab"),
    "CR LF": ("http://gw/x\r\nHost: evil", "carriage return"),
    "no host": ("http:///v1", "no host"),
    "no host with port": ("http://:8000/v1", "no host"),
    "ftp": ("ftp://gw/x", "http:// or https://"),
    "file": ("file:///etc/passwd", "http:// or https://"),
    "no scheme": ("10.0.0.9:8000", "http:// or https://"),
    "bad IPv6": ("http://[::zz]:80/", "IPv6"),
    "bad host chars": ("http://gw!/", "host name"),
    "non-ASCII host": ("http://gätewäy/", "non-ASCII"),
    "too long": ("http://gw/" + "a" * 5000, "characters long"),
}


@pytest.mark.parametrize("url, why", BAD_URLS.values(), ids=BAD_URLS.keys())
def test_a_url_no_retry_can_fix_is_refused_at_once(url, why):
    started = time.monotonic()
    with pytest.raises(ValueError) as err:
        ep.check_endpoint(url, session=NoNetwork(), timeout_s=600)
    message = str(err.value)
    # refused, not retried until the 600 s deadline (the bound is loose: a traced run on busy cores is slow)
    assert time.monotonic() - started < 30 and not isinstance(err.value, EndpointCheckError)
    assert why in message and "\n" not in message and len(message) <= MAX_LINE, message


@pytest.mark.parametrize("url", ["http://127.0.0.1:99999", "http://127.0.0.1:abc", "http://gw/a b", "gopher://gw"])
def test_cli_bad_urls_exit_2_with_one_line_at_once(url, capsys):
    from infra.cli import main

    started = time.monotonic()
    assert main(["check-endpoint", "--url", url, "--timeout", "600"]) == 2
    err = capsys.readouterr().err
    assert time.monotonic() - started < 2 and err.count("\n") == 1 and err.startswith("check-endpoint: URL ")


SECRET_URLS = {
    "query": f"http://gw/llama?api-key={KEY}",
    "query and fragment": f"http://gw/?x=1&token={KEY}#{KEY}",
    "fragment": f"http://gw/#{KEY}",
    "userinfo": f"http://user:{KEY}@gw:8080/llama",
    "userinfo without password": f"http://{KEY}@gw/",
    "userinfo, other scheme": f"ftp://user:{KEY}@gw/?k={KEY}",
    "userinfo, no scheme": f"user:{KEY}@gw/x",
    "userinfo, bad port": f"http://u:{KEY}@gw:99999/",
    "query, space": f"http://gw/a b?k={KEY}",
}


@pytest.mark.parametrize("url", SECRET_URLS.values(), ids=SECRET_URLS.keys())
def test_secrets_in_a_url_are_never_echoed(url):
    with pytest.raises(ValueError) as err:
        ep.check_endpoint(url, session=NoNetwork())
    assert not leaked(str(err.value)), str(err.value)
    assert not leaked(ep.redact_url(url))


def test_redact_url_hides_userinfo_query_and_fragment():
    assert ep.redact_url(f"http://u:{KEY}@gw:8080/p?api-key={KEY}#x") == "http://***@gw:8080/p?***"
    assert ep.redact_url("https://gw.example.com/tiny") == "https://gw.example.com/tiny"
    assert ep.redact_url(f"https://gw/x#{KEY}") == "https://gw/x#***"
    assert len(ep.redact_url("http://gw/" + "a" * 10_000)) <= ep.URL_SHOWN_CHARS


class ClockedSession(requests.Session):
    """Raises ``exc`` on every request and counts them; the fake clock makes a retry loop visible."""

    def __init__(self, exc: BaseException) -> None:
        super().__init__()
        self.exc, self.calls = exc, 0

    def request(self, *a, **k):
        self.calls += 1
        raise self.exc


UNSENDABLE = {
    "InvalidHeader quoting the key": requests.exceptions.InvalidHeader(
        f"Invalid leading whitespace, reserved character(s), or return character(s) in header value: 'Bearer {KEY}\\r'"),
    "InvalidURL": requests.exceptions.InvalidURL(f"Failed to parse: http://gw:99999/v1/models?k={KEY}"),
    "InvalidSchema": requests.exceptions.InvalidSchema("No connection adapters were found"),
    "urllib3 LocationParseError (a ValueError)": ValueError(f"Failed to parse: {KEY}"),
    "OverflowError from a socket timeout": OverflowError("timestamp out of range for platform time_t"),
    "UnicodeEncodeError in a header": UnicodeEncodeError("latin-1", KEY + "é", len(KEY), len(KEY) + 1, "bad"),
}


@pytest.mark.parametrize("exc", UNSENDABLE.values(), ids=UNSENDABLE.keys())
def test_a_request_the_http_library_refuses_is_fatal_at_once_not_retried(exc):
    clock = {"now": 0.0}
    session = ClockedSession(exc)
    with pytest.raises(ValueError) as err:  # an argument problem (exit 2 from the CLI), not a dead endpoint
        ep.check_endpoint("http://gw", api_key=KEY, session=session, timeout_s=600, clock=lambda: clock["now"],
                          sleep=lambda s: clock.__setitem__("now", clock["now"] + s))
    assert session.calls == 1 and clock["now"] == 0.0
    message = str(err.value)
    assert "\n" not in message and len(message) <= MAX_LINE and not leaked(message), message
    assert "step 'ready'" in message


# =================================================================================================================
# 12. Secrets a server reflects: scrubbed from everything that leaves, in any case / encoding / cut
# =================================================================================================================
def test_a_models_list_that_lists_the_key_does_not_put_it_in_the_result(stub_factory, caplog):
    caplog.set_level(logging.DEBUG)
    stub = stub_factory(**routes(models=["tiny", KEY, KEY.upper(), f"org/{KEY.lower()}-v2"]))
    lines: list[str] = []
    result = ep.check_endpoint(stub.url, api_key=KEY, timeout_s=30, concurrency=1, log=lines.append)
    assert result.model == "tiny" and len(result.models_served) == 4
    assert {h.get("Authorization") for _, _, h in stub.seen} == {f"Bearer {KEY}"}  # it was sent...
    text = everything_produced(result, lines, caplog)
    assert not leaked(text), leaked(text)                                           # ...and never shown
    assert result.models_served[1] == "***" and any("several models served" in n for n in result.notes)


def test_the_sample_is_scrubbed_after_it_is_cut(stub_factory):
    # the model's answer quotes the key across the 200-character cut: the piece before "…" must go too
    for offset in range(ep.SAMPLE_CHARS - 12, ep.SAMPLE_CHARS + 2):
        stub = stub_factory(**routes(chat="x" * offset + KEY + " and more"))
        result = ep.check_endpoint(stub.url, api_key=KEY, timeout_s=30, concurrency=1)
        assert len(result.sample_text) <= ep.SAMPLE_CHARS
        assert not leaked(result.sample_text + ep.summarize(result) + json.dumps(result.to_dict())), offset


ODD_KEY = 'sk-Zq7/Vx2+Lw9="Rt4\\Np8&K<y'   # valid in a header; every escaping of it differs from it
ENCODED = {
    "upper": KEY.upper(),
    "lower": KEY.lower(),
    "swapcase": KEY.swapcase(),
    "json-escaped (as the body quotes it)": ODD_KEY,            # the stub's json.dumps escapes it
    "percent-encoded": urllib.parse.quote(ODD_KEY, safe=""),
    "percent-encoded, lower-case hex": urllib.parse.quote(ODD_KEY, safe="").lower(),
    "quote_plus": urllib.parse.quote_plus(ODD_KEY),
    "repr": repr(ODD_KEY),
    "html": html.escape(ODD_KEY),
    "base64 of the key": base64.b64encode(KEY.encode()).decode(),
    "base64 Basic user:key": base64.b64encode(f"user:{KEY}".encode()).decode(),
    "base64 of 'Bearer key'": base64.b64encode(f"Bearer {KEY}".encode()).decode(),
    "urlsafe base64": base64.urlsafe_b64encode(f"x:{ODD_KEY}".encode()).decode(),
    "hex": KEY.encode().hex(),
}


@pytest.mark.parametrize("form", ENCODED.values(), ids=ENCODED.keys())
def test_an_error_body_echoing_the_key_in_any_case_or_encoding_is_scrubbed(stub_factory, form):
    key = ODD_KEY if form in (ENCODED["json-escaped (as the body quotes it)"], ENCODED["percent-encoded"],
                              ENCODED["percent-encoded, lower-case hex"], ENCODED["quote_plus"], ENCODED["repr"],
                              ENCODED["html"], ENCODED["urlsafe base64"]) else KEY
    body = json.dumps({"error": {"message": f"invalid key {form}", "code": 400}}).encode()
    stub = stub_factory(_v1_models=lambda b: (400, {}, body))
    e = check_error(lambda: ep.check_endpoint(stub.url, api_key=key, timeout_s=30))
    assert e.status == 400 and "invalid key" in e.body_excerpt
    shown = str(e) + e.body_excerpt + e.reason
    assert form not in shown and not leaked(shown, key), (shown, leaked(shown, key))
    core = base64.b64encode(key.encode()).decode()[4:-4]
    assert core not in shown


@pytest.mark.parametrize("start", range(ep.EXCERPT_CHARS - 20, ep.EXCERPT_CHARS - 6))  # 6+ key chars before "…"
def test_a_body_excerpt_cut_inside_the_key_keeps_no_piece_of_it(stub_factory, start):
    body = ("x" * start + KEY.upper() + "y" * 50).encode()
    stub = stub_factory(_v1_chat_completions=lambda b: (500, {}, body))
    e = check_error(lambda: ep.check_endpoint(stub.url, api_key=KEY, timeout_s=30))
    assert e.step == "chat" and not leaked(str(e)), str(e)


def test_a_stream_error_quoting_the_key_is_scrubbed(stub_factory):
    event = json.dumps({"error": {"message": f"bad auth {KEY.upper()} " + "z" * 300}})
    stub = stub_factory(_v1_chat_completions=lambda b: (
        (200, {"Content-Type": "text/event-stream"}, f"data: {event}\n\n".encode()) if b.get("stream")
        else (200, {}, chat_reply("Paris"))))
    e = check_error(lambda: ep.check_endpoint(stub.url, api_key=KEY, timeout_s=30))
    assert e.step == "stream" and "error mid-stream" in e.reason and not leaked(str(e)), str(e)


def test_a_redirect_location_with_a_token_in_its_query_is_not_echoed(stub_factory):
    stub = stub_factory(_v1_models=lambda b: (307, {"Location": f"https://other.example/v1/models?token={KEY}"}, b""))
    e = check_error(lambda: ep.check_endpoint(stub.url, timeout_s=30))
    assert e.status == 307 and "redirected to https://other.example/v1/models?***" in e.reason
    assert not leaked(str(e))


def test_the_dynamic_providers_outputs_and_errors_carry_no_reflected_key(stub_factory):
    from components.endpoint_check import EndpointCheckProvider

    stub = stub_factory(**routes(models=["tiny", KEY.upper()], chat="y" * 195 + KEY))
    props = {"base_url": stub.url, "api_key": KEY, "timeout_s": 30.0, "request_timeout_s": 10.0, "concurrency": 1.0}
    outs = EndpointCheckProvider().create(props).outs
    assert outs.pop("api_key") == KEY  # the one secret output (marked secret), kept for refresh
    assert not leaked(json.dumps(outs)), leaked(json.dumps(outs))
    bad = stub_factory(_v1_models=lambda b: (403, {}, f"forbidden: {KEY.lower()}".encode()))
    with pytest.raises(Exception) as err:
        EndpointCheckProvider().create({**props, "base_url": bad.url})
    assert "step 'ready'" in str(err.value) and not leaked(str(err.value))
    with pytest.raises(Exception) as err:  # bad inputs: one line, no key
        EndpointCheckProvider().create({**props, "api_key": KEY + "\r\n"})
    assert "API key" in str(err.value) and not leaked(str(err.value))


def test_scrubber_forms_and_cuts():
    scrub = ep.Scrubber(KEY)
    assert scrub(f"a {KEY} b {KEY.swapcase()} c") == "a *** b *** c"
    assert scrub(f"tail {KEY[:5]}") == "tail ***"                # a cut at the end of a text
    assert scrub(f"{KEY[-5:]} head") == "*** head"                # a cut at the start
    assert scrub(f"x {KEY[:9]}… y") == "x ***… y"                 # a cut at an ellipsis
    assert scrub(f"x {KEY[:3]}") == f"x {KEY[:3]}"                # under MIN_CUT_PIECE: left alone
    assert scrub("ordinary text") == "ordinary text"
    assert ep.Scrubber("abc")("abc") == "abc" and ep.Scrubber(None)("x") == "x"


# =================================================================================================================
# 13. Bounded: nesting, sizes, numbers; an unexpected exception is one scrubbed line
# =================================================================================================================
@pytest.mark.parametrize("body", [b"[" * 100_000, b'{"a":' * 100_000, b"[" * 100_000 + b"]" * 100_000,
                                  b'{"data": ' + b"[" * 65 + b"]" * 65 + b"}"])
def test_deeply_nested_json_is_a_malformed_answer_not_a_recursion_error(stub_factory, body):
    stub = stub_factory(_v1_models=lambda b: (200, {}, body))
    e = check_error(lambda: ep.check_endpoint(stub.url, timeout_s=30))
    assert e.step == "ready" and f"nested deeper than {ep.MAX_JSON_DEPTH} levels" in e.reason
    assert "\n" not in str(e) and len(str(e)) <= MAX_LINE


def test_deeply_nested_stream_event_fails_the_stream_step(stub_factory):
    deep = "[" * 50_000
    stub = stub_factory(_v1_chat_completions=lambda b: (
        (200, {"Content-Type": "text/event-stream"}, f"data: {deep}\n\n".encode()) if b.get("stream")
        else (200, {}, chat_reply("Paris"))))
    e = check_error(lambda: ep.check_endpoint(stub.url, timeout_s=30))
    assert e.step == "stream" and "nested deeper" in e.reason and len(str(e)) <= MAX_LINE


def test_json_depth_bound_itself():
    assert ep.json_nesting_exceeds("[" * 65 + "]" * 65) and not ep.json_nesting_exceeds("[" * 64 + "]" * 64)
    assert not ep.json_nesting_exceeds('["' + "[" * 1000 + '"]')     # brackets inside strings don't count
    assert ep.json_nesting_exceeds("[" * 100_000)                     # unclosed ones do
    started = time.monotonic()
    assert ep.json_nesting_exceeds("[" * 4_000_000 + "]" * 4_000_000)
    assert time.monotonic() - started < 5
    with pytest.raises(ep.JsonTooDeepError):
        ep.loads_bounded(b'{"a": ' * 10_000)
    assert ep.loads_bounded(b'{"a": [1, {"b": "[[["}]}') == {"a": [1, {"b": "[[["}]}


def test_huge_model_ids_give_a_bounded_error_line(stub_factory):
    huge = ["m" * 5_000_000, "n" * 1000, *[f"model-{i}" for i in range(5000)]]
    stub = stub_factory(**routes(models=huge))
    e = check_error(lambda: ep.check_endpoint(stub.url, expected_model="llama-3.1-8b-instruct", timeout_s=60))
    assert e.step == "models" and "is not served; served: 5002 models, the first 3:" in e.reason
    assert "\n" not in str(e) and len(str(e)) <= MAX_LINE and len(e.body_excerpt) <= ep.EXCERPT_CHARS


def test_huge_model_ids_in_a_passing_result_are_bounded(stub_factory):
    stub = stub_factory(**routes(models=["m" * 100_000, *[f"model-{i}" for i in range(1000)]]))
    result = ep.check_endpoint(stub.url, timeout_s=60, concurrency=1)
    assert len(result.models_served) == ep.MAX_MODELS_KEPT
    assert all(len(m) <= ep.MAX_MODEL_ID_CHARS for m in result.models_served)
    assert len(result.model) <= ep.MAX_MODEL_ID_CHARS and all(len(n) <= MAX_LINE for n in result.notes)
    assert len(ep.summarize(result)) < 5_000 and len(json.dumps(result.to_dict())) < 100_000


@pytest.mark.parametrize("kwargs, message", [
    ({"timeout_s": 1e300}, "timeout 1e+300 must be at most 86400 seconds"),
    ({"timeout_s": float("nan")}, "timeout nan must be a positive number"),
    ({"request_timeout_s": 1e300}, "request timeout 1e+300 must be at most 3600 seconds"),
    ({"request_timeout_s": float("-inf")}, "must be a positive number"),
    ({"timeout_s": True}, "must be a number of seconds"),
    ({"concurrency": 2 ** 4000}, "must be an integer from 1 to 64"),
    ({"kaito_version": "9" * 100_000}, "KAITO version"),
    ({"runtime": "x" * 100_000}, "runtime"),
    ({"expected_model": "m" * 10_000}, "expected model"),
    ({"expected_model": "bad\nname"}, "expected model"),
])
def test_absurd_arguments_are_one_bounded_line(kwargs, message):
    with pytest.raises(ValueError) as err:
        ep.check_endpoint("http://127.0.0.1:9", session=NoNetwork(), **kwargs)
    assert message in str(err.value) and "\n" not in str(err.value) and len(str(err.value)) <= MAX_LINE


@pytest.mark.parametrize("argv, message", [
    (["--timeout", "1e300"], "must be at most 86400 seconds"),
    (["--timeout", "1e400"], "must be a positive number"),      # inf
    (["--timeout", "nan"], "must be a positive number"),
    (["--timeout=-inf"], "must be a positive number"),
    (["--timeout", "1e-400"], "must be a positive number"),     # 0.0
    (["--request-timeout", "1e300"], "must be at most 3600 seconds"),
    (["--request-timeout", "99999"], "must be at most 3600 seconds"),
    (["--concurrency", "9" * 5000], "is not an integer"),
    (["--timeout", "9" * 100_000], "must be"),
    (["--runtime", "x" * 100_000], "invalid choice"),
    (["--api-key-env", KEY], "not an environment variable name"),   # the key itself, pasted: never echoed
    (["--api-key", KEY], "--api-key is not an option"),               # not taken for --api-key-env either
    (["--api-key=" + KEY], "--api-key is not an option"),
])
def test_cli_absurd_numbers_and_pasted_keys_are_one_bounded_line_exit_2(argv, message, capsys):
    from infra.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["check-endpoint", "--url", "http://127.0.0.1:9", *argv])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and message in err
    assert err.count("\n") == 1 and len(err) <= MAX_LINE + 1 and not leaked(err), err


def test_an_unexpected_exception_in_the_check_is_one_scrubbed_line(stub_factory):
    class Exploding(requests.Session):
        def request(self, *a, **k):
            raise KeyError(f"internal state {KEY.upper()} " + "q" * 10_000)

    e = check_error(lambda: ep.check_endpoint("http://gw", api_key=KEY, session=Exploding(), timeout_s=30))
    assert e.step == "ready" and "unexpected KeyError" in e.reason
    assert "\n" not in str(e) and len(str(e)) <= MAX_LINE and not leaked(str(e))


def test_a_huge_content_length_does_not_crash(stub_factory):
    class Liar(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "9" * 5000)
            self.end_headers()
            self.wfile.write(b'{"data": [{"id": "tiny"}]}')
            self.close_connection = True

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Liar)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        e = check_error(lambda: ep.check_endpoint(f"http://127.0.0.1:{server.server_address[1]}", timeout_s=2,
                                                  request_timeout_s=1))
    finally:
        server.shutdown()
        server.server_close()
    assert "\n" not in str(e) and len(str(e)) <= MAX_LINE


def test_error_lines_are_bounded_whoever_builds_them():
    e = EndpointCheckError("http://gw/" + "u" * 10_000, "s" * 1000, "r\n" * 10_000, status=500,
                           body_excerpt="b" * 10_000, elapsed_s=1.0)
    assert "\n" not in str(e) and len(str(e)) <= MAX_LINE
    assert len(e.reason) <= ep.MAX_REASON_CHARS and len(e.body_excerpt) <= ep.EXCERPT_CHARS


# -- the CLI as a real process: no traceback, whatever the input ---------------------------------------------
HOSTILE_ARGV = [
    ["--url", "http://127.0.0.1:9", "--timeout", "1e300", "--request-timeout", "1e300"],
    ["--url", "http://[::1"],
    ["--url", "http://127.0.0.1:9", "--kaito-version", "1." + "9" * 5000],
    ["--url", "http://127.0.0.1:9", "--model", "m" * 100_000, "--timeout", "0.1"],
    ["--url", b"http://gw/\xff\xfe".decode("utf-8", "surrogateescape")],
    ["--url", "http://gw:65536"],
    ["--url", "http://127.0.0.1:9", "--api-key-env", "KAITO_AKS_SURROGATE_KEY"],
]


@pytest.mark.parametrize("argv", HOSTILE_ARGV, ids=range(len(HOSTILE_ARGV)))
def test_cli_never_prints_a_traceback(argv):
    env = {**os.environ, "KAITO_AKS_SURROGATE_KEY": KEY}
    env_bytes = {k.encode(): v.encode("utf-8", "surrogateescape") for k, v in env.items()}
    env_bytes[b"KAITO_AKS_SURROGATE_KEY"] = KEY.encode() + b"\xff"
    args = [a.encode("utf-8", "surrogateescape") for a in ["-m", "infra", "check-endpoint", *argv]]
    p = subprocess.run([sys.executable.encode(), *args], cwd=REPO, capture_output=True, timeout=60, env=env_bytes)
    err = p.stderr.decode("utf-8", "replace")
    assert p.returncode in (1, 2), err
    assert "Traceback" not in err and len(err.splitlines()) == 1 and len(err.splitlines()[0]) <= MAX_LINE, err
    assert not leaked(err + p.stdout.decode("utf-8", "replace"))
