"""The gateway's security behaviour under a real nginx alone: no vLLM needed, so it runs wherever nginx is.

The gateway runs the exact configuration kaito-aks generates (``render_nginx_conf``, tests/servers/nginx.py). The
models behind it are trivial upstreams (tests/servers/nginx_upstream.py): a second real nginx that echoes the
headers it receives (to prove what reaches a model), a port where nothing listens, one that never answers.
"""
from __future__ import annotations

import concurrent.futures
import http.client
import json
import socket
import time

import pytest

from infra.api_keys import key_id
from infra.render.nginx import Route
from tests.servers.nginx import NginxGateway, nginx_available, stack_limits
from tests.servers.nginx_upstream import EchoUpstream, SilentUpstream, dead_address
from tests.servers.required import unavailable
from tests.servers.vllm import ServerUnavailableError

pytestmark = pytest.mark.servers

# KEYS[1] holds every punctuation character a key may have; KEYS[2] and KEYS[3] the two that are regex syntax,
# alone: a key must match only itself, never as a pattern.
KEYS = ["sk-gw-nginx-Alpha-3f9e1c07", "sk.gw+nginx/Beta=~_-77d2aa0", "sk.gw.nginx.Gamma.5a5a5a",
        "sk-gw-nginx+Delta+6b6b6b"]
OPEN = stack_limits(rate_limit_per_minute=60_000, unauthenticated_per_minute=60_000, max_body_kib=1,
                     read_timeout_seconds=1, connect_timeout_seconds=1)


@pytest.fixture(scope="module")
def echo():
    if reason := nginx_available():
        unavailable(reason)
    upstream = EchoUpstream()
    try:
        upstream.start()
    except ServerUnavailableError as err:
        unavailable(str(err))
    yield upstream
    upstream.stop()


@pytest.fixture(scope="module")
def silent():
    upstream = SilentUpstream()
    yield upstream
    upstream.close()


def start(gw: NginxGateway) -> NginxGateway:
    try:
        return gw.start()
    except ServerUnavailableError as err:
        gw.stop()
        unavailable(str(err))
        raise


def make_gateway(echo, silent=None, limits=OPEN) -> NginxGateway:
    routes = [Route("tiny", (echo.address,), "tiny-llama"), Route("dead", (dead_address(),), "dead-llama")]
    if silent is not None:
        routes.append(Route("slow", (silent.address,), "slow-llama"))
    replicas = [Route("tiny-r0", (echo.address,), "tiny-llama"), Route("tiny-r1", (dead_address(),), "tiny-llama")]
    return start(NginxGateway(routes, replicas, KEYS, limits))


@pytest.fixture(scope="module")
def gateway(echo, silent):
    gw = make_gateway(echo, silent)
    yield gw
    gw.stop()


class Reply:
    def __init__(self, status: int, headers: http.client.HTTPMessage, body: bytes):
        self.status, self.headers, self.body = status, headers, body

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"Reply({self.status}, {self.headers.get('Content-Type')}, {self.body[:200]!r})"


def request(gw, method: str, path: str, headers=(), body: bytes | None = None) -> Reply:
    """One request on its own connection; ``headers`` is a list of pairs (a name may repeat, values are sent
    as they are, spaces included)."""
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=30)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in headers:
            conn.putheader(name, value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        r = conn.getresponse()
        return Reply(r.status, r.headers, r.read())
    finally:
        conn.close()


def raw(gw, data: bytes) -> Reply:
    """Bytes on the wire, for what no HTTP client would send."""
    with socket.create_connection(("127.0.0.1", gw.port), timeout=30) as sock:
        sock.sendall(data)
        r = http.client.HTTPResponse(sock)
        r.begin()
        return Reply(r.status, r.headers, r.read())


def get(gw, path: str, authorization: str | None = None, headers=()) -> Reply:
    return request(gw, "GET", path, ([("Authorization", authorization)] if authorization is not None else [])
                   + list(headers))


def bearer(key: str) -> str:
    return f"Bearer {key}"


def assert_openai_error(r: Reply, status: int, code: str | None = None) -> dict:
    assert r.status == status, r
    assert r.headers.get("Content-Type", "").startswith("application/json"), r
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"] and error["type"], r
    if code is not None:
        assert error["code"] == code, r
    return error


# ---------------------------------------------------------------------------------------------------------
# 1. The key compares exactly; the scheme word doesn't

@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("form", ["Bearer {}", "bearer {}", "BEARER {}", "bEaReR {}", "Bearer    {}", "Bearer {}   ",
                                  "   Bearer {}"])
def test_the_exact_key_authenticates_with_any_case_of_bearer(gateway, key, form):
    r = get(gateway, "/tiny/v1/models", form.format(key))
    assert r.status == 200, r
    assert r.json()["auth"] == ""                     # and the key never reaches the model


def key_variants(key: str) -> list[str]:
    """Strings that are not ``key`` but that a case-insensitive or regex-unescaped comparison would accept,
    or that are near misses."""
    variants = [key.upper(), key.lower(), key.swapcase(), key[0].swapcase() + key[1:], key[:-1] + key[-1].swapcase(),
                key[:-1], key + "x", "x" + key, key + key]
    if "." in key:
        variants.append(key.replace(".", "X"))                 # `.` unescaped matches any character
    if "+" in key:
        i = key.index("+")
        variants.append(key[:i] + key[i - 1] * 3 + key[i + 1:])  # `x+` unescaped matches "xxx"...
        variants.append(key.replace("+", ""))                    # ...and "x"
    return [v for v in variants if v != key]


WRONG_HEADERS = ([bearer(v) for key in KEYS for v in key_variants(key)]
                 + [KEYS[0], f"Basic {KEYS[0]}", f"Bearer{KEYS[0]}", f"Bearer\t{KEYS[0]}", f"Bearer {KEYS[0]} x",
                    f"Bearer {KEYS[0]},Bearer {KEYS[0]}", "Bearer ", "Bearer", "", f"Token {KEYS[1]}"])


@pytest.mark.parametrize("authorization", WRONG_HEADERS + [None])
def test_anything_but_the_exact_key_is_401(gateway, authorization):
    for method, path in (("GET", "/v1/models"), ("POST", "/tiny/v1/chat/completions"), ("GET", "/nope/v1/models"),
                         ("GET", "/_replicas/tiny-r0/v1/models"), ("GET", "/tiny")):
        headers = [("Authorization", authorization)] if authorization is not None else []
        r = request(gateway, method, path, headers, b"{}" if method == "POST" else None)
        assert_openai_error(r, 401, "invalid_api_key")
        assert r.headers["WWW-Authenticate"].startswith("Bearer")


def test_two_authorization_headers_are_rejected(gateway):
    for pair in ([KEYS[0], KEYS[0]], [KEYS[0], "sk-wrong-wrong-wrong"], ["sk-wrong-wrong-wrong", KEYS[1]]):
        r = request(gateway, "GET", "/tiny/v1/models", [("Authorization", bearer(k)) for k in pair])
        assert_openai_error(r, 400, "bad_request")


# ---------------------------------------------------------------------------------------------------------
# 7. What reaches the model, what the gateway answers itself

@pytest.mark.parametrize("path,upstream_uri", [("/tiny/v1/chat/completions", "/v1/chat/completions"),
                                               ("/_replicas/tiny-r0/v1/models?x=1", "/v1/models?x=1")])
def test_the_authorization_header_never_reaches_the_model(gateway, path, upstream_uri):
    for name in ("Authorization", "authorization", "AUTHORIZATION"):
        r = request(gateway, "POST", path, [(name, bearer(KEYS[1])), ("X-Api-Key", "visible")], b"{}")
        assert r.status == 200, r
        echoed = r.json()
        assert echoed["auth"] == "" and echoed["uri"] == upstream_uri and echoed["method"] == "POST"
        assert echoed["x_api_key"] == "visible" and len(echoed["request_id"]) == 32   # the echo does see headers


def test_models_listing_and_unknown_model(gateway):
    r = get(gateway, "/v1/models", bearer(KEYS[0]))
    assert r.status == 200 and r.headers["Content-Type"] == "application/json"
    assert [(m["id"], m["served_model"]) for m in r.json()["data"]] == [
        ("tiny", "tiny-llama"), ("dead", "dead-llama"), ("slow", "slow-llama")]
    for path in ("/no-such-model/v1/chat/completions", "/tinyx/v1/models", "/_replicas/nope/v1/models", "/"):
        assert_openai_error(get(gateway, path, bearer(KEYS[0])), 404, "model_not_found")


def test_text_nginx_returns_itself_survives_its_quoting(echo):
    """The model list and the error bodies are nginx string literals: quotes, backslashes (JSON's own escapes)
    and non-ASCII text come out as the JSON the gateway built, byte for byte."""
    odd = "we'ird \"name\" \\ é"
    gw = start(NginxGateway([Route("odd", (echo.address,), odd)], [], KEYS, OPEN))
    try:
        r = get(gw, "/v1/models", bearer(KEYS[0]))
        assert r.status == 200 and r.json()["data"][0]["served_model"] == odd, r
        assert assert_openai_error(get(gw, "/v1/models"), 401)["message"] == (
            "Missing or invalid API key: send 'Authorization: Bearer <key>'.")
    finally:
        gw.stop()


def test_request_body_limit(gateway):
    r = request(gateway, "POST", "/tiny/v1/completions", [("Authorization", bearer(KEYS[0]))], b"x" * 4096)
    assert_openai_error(r, 413, "request_too_large")
    assert request(gateway, "POST", "/tiny/v1/completions", [("Authorization", bearer(KEYS[0]))],
                   b"x" * 512).status == 200


# ---------------------------------------------------------------------------------------------------------
# 2. Rate limits: per key, and per client address for failed authentication

def burst_of(gw, n: int, authorization: str | None, path: str = "/tiny/v1/models") -> tuple[list[int], float]:
    started = time.monotonic()
    statuses = [get(gw, path, authorization).status for _ in range(n)]
    return statuses, time.monotonic() - started


def test_rate_limit_per_key(echo):
    gw = make_gateway(echo, limits=stack_limits(rate_limit_per_minute=60, unauthenticated_per_minute=60_000))
    try:
        statuses, seconds = burst_of(gw, 30, bearer(KEYS[0]))        # burst 10, then 1 per second
        assert set(statuses) == {200, 429} and statuses.count(200) <= 11 + int(seconds), (statuses, seconds)
        assert_openai_error(get(gw, "/tiny/v1/models", bearer(KEYS[0])), 429, "rate_limit_exceeded")
        assert get(gw, "/tiny/v1/models", bearer(KEYS[1])).status == 200    # another key has its own bucket
    finally:
        gw.stop()


@pytest.mark.parametrize("guess", ["sk-gw-nginx-wrong-000000", KEYS[0].upper(), None])
def test_failed_authentication_is_rate_limited_per_client(echo, guess):
    gw = make_gateway(echo, limits=stack_limits(rate_limit_per_minute=60_000, unauthenticated_per_minute=60))
    try:
        statuses, seconds = burst_of(gw, 150, bearer(guess) if guess else None)
        assert set(statuses) == {401, 429}, statuses
        assert statuses.count(401) <= 11 + int(seconds), (statuses.count(401), seconds)
        assert_openai_error(get(gw, "/v1/models", bearer(guess) if guess else None), 429, "rate_limit_exceeded")
        # the client's valid key is not locked out by its failures
        assert get(gw, "/tiny/v1/models", bearer(KEYS[0])).status == 200
        assert get(gw, "/v1/models", bearer(KEYS[1])).status == 200
    finally:
        gw.stop()


# ---------------------------------------------------------------------------------------------------------
# 5. Every response the gateway makes itself is OpenAI-style JSON; nothing redirects to the pod's port

LONG = "a" * 9000        # past nginx's 8 KiB request-line / header buffers
AUTH = f"Authorization: Bearer {KEYS[0]}\r\n".encode()


@pytest.mark.parametrize("what,send,status", [
    ("model without slash", lambda gw: get(gw, "/tiny", bearer(KEYS[0])), 404),
    ("replica without slash", lambda gw: get(gw, "/_replicas/tiny-r0", bearer(KEYS[0])), 404),
    ("no auth, without slash", lambda gw: get(gw, "/tiny"), 401),
    ("html extension", lambda gw: get(gw, "/index.html", bearer(KEYS[0])), 404),
    ("internal location", lambda gw: get(gw, "/_kaito_unauthenticated", bearer(KEYS[0])), 404),
    ("error page uri", lambda gw: get(gw, "/_kaito_error/401"), 404),
    ("malformed request line", lambda gw: raw(gw, b"GET /\x01 HTTP/1.1\r\nHost: x\r\n\r\n"), 400),
    ("garbage", lambda gw: raw(gw, b"HELLO\r\n\r\n"), 400),
    ("malformed header", lambda gw: raw(gw, b"GET /v1/models HTTP/1.1\r\nHost: x\r\n" + AUTH + b"Bad Header\r\n\r\n"),
     400),
    ("two Host headers", lambda gw: raw(gw, b"GET /v1/models HTTP/1.1\r\nHost: x\r\nHost: y\r\n" + AUTH + b"\r\n"),
     400),
    ("TRACE", lambda gw: request(gw, "TRACE", "/v1/models", [("Authorization", bearer(KEYS[0]))]), 405),
    ("body too large", lambda gw: request(gw, "POST", "/tiny/v1/completions",
                                          [("Authorization", bearer(KEYS[0]))], b"x" * 2048), 413),
    ("body too large, no key", lambda gw: request(gw, "POST", "/tiny/v1/completions", [], b"x" * 2048), 413),
    ("URI too long", lambda gw: get(gw, "/" + LONG, bearer(KEYS[0])), 414),
    ("headers too large", lambda gw: get(gw, "/v1/models", bearer(KEYS[0]), [("X-Big", LONG)]), 431),
    ("unknown transfer coding", lambda gw: raw(gw, b"POST /tiny/v1/completions HTTP/1.1\r\nHost: x\r\n" + AUTH
                                               + b"Transfer-Encoding: gzip\r\n\r\nx"), 501),
    ("HTTP/2.0 request line", lambda gw: raw(gw, b"GET /v1/models HTTP/2.0\r\nHost: x\r\n" + AUTH + b"\r\n"), 505),
    ("model down (502)", lambda gw: get(gw, "/dead/v1/models", bearer(KEYS[0])), 503),
    ("replica down (502)", lambda gw: get(gw, "/_replicas/tiny-r1/v1/models", bearer(KEYS[0])), 503),
    ("model silent (504)", lambda gw: get(gw, "/slow/v1/models", bearer(KEYS[0])), 503),
])
def test_every_error_is_openai_json(gateway, what, send, status):
    r = send(gateway)
    assert_openai_error(r, status)
    assert "Location" not in r.headers and b"<html" not in r.body.lower()


# ---------------------------------------------------------------------------------------------------------
# 4. No key in any log, whatever the client puts where

def test_no_key_in_any_log(echo):
    limits = stack_limits(rate_limit_per_minute=60, unauthenticated_per_minute=60, max_body_kib=1,
                           connect_timeout_seconds=1)
    gw = make_gateway(echo, limits=limits)
    wrong = "sk-gw-nginx-Wrong-9a8b7c6d"
    secrets = [KEYS[0], KEYS[1], wrong]
    key, auth = KEYS[0], bearer(KEYS[0])
    try:
        statuses = [
            get(gw, f"/tiny/v1/models?api_key={key}", auth).status,                         # 200
            get(gw, f"/tiny/{key}", auth).status,                                           # 200 (proxied)
            get(gw, f"/{key}/v1/models?key={wrong}", auth).status,                          # 404
            get(gw, f"/v1/models?key={key}", bearer(wrong)).status,                         # 401
            get(gw, f"/tiny/v1/models?{KEYS[1]}", None, [("X-Api-Key", key), ("User-Agent", key),
                                                         ("Referer", f"http://x/{key}")]).status,  # 401
            request(gw, "POST", f"/tiny/v1/completions?key={key}", [("Authorization", auth)], b"x" * 4096).status,
            get(gw, f"/dead/v1/models?key={key}", auth).status,                             # 502 -> 503
            get(gw, f"/_replicas/tiny-r1/{key}", auth).status,                              # 502 -> 503
            get(gw, f"/{key}" + LONG, auth).status,                                         # 414
            request(gw, "GET", f"/tiny/v1/models?{key}", [("Authorization", auth), ("Authorization", auth)]).status,
            raw(gw, f"{key.upper()} /v1/models HTTP/1.1\r\nHost: x\r\n\r\n".encode()).status,   # 400
        ]
        statuses += burst_of(gw, 20, auth, f"/tiny/v1/models?key={key}")[0]               # 429 per key
        statuses += burst_of(gw, 20, bearer(KEYS[1].upper()), f"/tiny/{KEYS[1]}")[0]      # 429 per client
        assert {200, 400, 401, 404, 413, 414, 429, 503} <= set(statuses), statuses
        entries = gw.access_entries(at_least=len(statuses))
        assert len(entries) >= len(statuses) - 3         # (nginx logs nothing for a request it can't parse)
        assert {key_id(KEYS[0]), ""} <= {e["key"] for e in entries}
        assert {e["path"] for e in entries} >= {"/tiny/v1/models", "/-", "/dead/v1/models"}
        logs = gw.log_text()
    finally:
        gw.stop()
    for secret in secrets:
        for form in (secret, secret.upper(), secret.lower()):
            assert form not in logs, f"a key is in nginx's logs: {form[:6]}..."


# ---------------------------------------------------------------------------------------------------------
# 8. nginx accepts the generated configuration

def test_nginx_accepts_the_configuration(gateway):
    check = gateway.test_config()
    assert check.returncode == 0, check.stderr


def test_concurrent_valid_and_invalid_requests_never_mix_up(gateway):
    """Under concurrency each request is judged on its own header (no state leaks between requests)."""
    jobs = [(bearer(KEYS[i % 2]) if i % 3 else bearer(KEYS[i % 2].upper()), 200 if i % 3 else 401) for i in range(60)]
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda job: (get(gateway, "/tiny/v1/models", job[0]).status, job[1]), jobs))
    assert all(got == expected for got, expected in results), results
