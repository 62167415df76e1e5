"""The gateway configuration kaito-aks generates, under a real nginx, in front of two real vLLM servers.

Two vLLM replicas of one model sit behind the gateway exactly as two KAITO replicas do in the cluster (one
upstream Service each). Requests go through nginx with real API keys; nothing in between is faked.
"""
from __future__ import annotations

import concurrent.futures
import http.server
import json
import pathlib
import shutil
import subprocess
import threading
import time

import pytest
import requests

from infra.api_keys import key_id
from infra.endpoint import check_endpoint
from infra.render.nginx import Route
from tests.servers.nginx import NginxGateway, nginx_available, stack_limits
from tests.servers.required import unavailable
from tests.servers.vllm import MAKE_TINY_MODEL, REPO, ServerUnavailableError, VllmRuntime, VllmServer

pytestmark = pytest.mark.servers
KEYS = ["sk-gw-test-alpha-3f9e1c", "sk-gw-test-beta-77d2aa"]   # keys of at least 16 characters
MODEL = "tiny-llama"
# The shared gateway answers many deliberately unauthenticated requests: don't let the failed-authentication
# limit (tested in test_gateway_nginx.py) turn them into 429s.
LIMITS = stack_limits(unauthenticated_per_minute=60_000)


def token_paced_model(runtime) -> pathlib.Path:
    """A larger random Llama (hidden 512, 8 layers, 82 MB): ~9 ms per token on this CPU, so a stream has
    observable gaps. The default 1.8 MB model is so fast that vLLM's own frontend sometimes sends a whole
    stream in one write, which would make any streaming assertion meaningless."""
    target = REPO / ".cache" / "tiny-model-paced"
    if not (target / "model.safetensors").exists():
        tmp = target.with_name(target.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        proc = subprocess.run([str(runtime.python), str(MAKE_TINY_MODEL), str(tmp), "--hidden", "512", "--heads", "8",
                               "--layers", "8"], capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            raise ServerUnavailableError(f"building the paced model failed: {proc.stderr[-300:]}")
        tmp.rename(target)
    return target


@pytest.fixture(scope="module")
def replicas():
    """Two real vLLM servers serving the same model, started in parallel."""
    if reason := nginx_available():
        unavailable(reason)
    runtime = VllmRuntime.discover()
    if runtime is None:
        unavailable("the vLLM venv is missing (run tests/servers/install_vllm.sh)")
    servers = []
    try:
        model_dir = token_paced_model(runtime)
        servers = [VllmServer(runtime, model_dir, served_name=MODEL).start() for _ in range(2)]
        for server in servers:
            server.wait_ready()
    except ServerUnavailableError as err:
        for server in servers:
            server.stop()
        unavailable(str(err))
    yield servers
    for server in servers:
        server.stop()


def routes(servers, name="tiny"):
    hosts = tuple(f"127.0.0.1:{s.port}" for s in servers)
    return ([Route(name, hosts, MODEL)],
            [Route(f"{name}-r{i}", (h,), MODEL) for i, h in enumerate(hosts)])


@pytest.fixture(scope="module")
def gateway(replicas):
    model_routes, replica_routes = routes(replicas)
    gw = NginxGateway(model_routes, replica_routes, KEYS, LIMITS)
    try:
        gw.start()
    except ServerUnavailableError as err:
        unavailable(str(err))
    yield gw
    gw.stop()


def auth(key=KEYS[0]):
    return {"Authorization": f"Bearer {key}"}


def chat(base, key=KEYS[0], **extra):
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 8, "temperature": 0,
            **extra}
    return requests.post(f"{base}/v1/chat/completions", json=body, headers=auth(key) if key else {}, timeout=60)


def test_valid_key_chat_and_completions(gateway):
    r = chat(f"{gateway.base_url}/tiny")
    assert r.status_code == 200, r.text
    assert r.json()["object"] == "chat.completion" and r.json()["choices"][0]["message"]["role"] == "assistant"
    r = requests.post(f"{gateway.base_url}/tiny/v1/completions", headers=auth(KEYS[1]), timeout=60,
                      json={"model": MODEL, "prompt": "The capital of France is", "max_tokens": 8, "temperature": 0})
    assert r.status_code == 200 and r.json()["object"] == "text_completion"
    listing = requests.get(f"{gateway.base_url}/v1/models", headers=auth(), timeout=10).json()
    assert [m["id"] for m in listing["data"]] == ["tiny"] and listing["data"][0]["served_model"] == MODEL
    upstream = requests.get(f"{gateway.base_url}/tiny/v1/models", headers=auth(), timeout=10).json()
    assert upstream["data"][0]["id"] == MODEL


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer sk-wrong"}, {"Authorization": KEYS[0]},
                                     {"Authorization": f"Basic {KEYS[0]}"},
                                     {"Authorization": f"Bearer {KEYS[0].upper()}"}])
def test_missing_or_wrong_key_is_401_openai_style(gateway, headers):
    for method, path in (("GET", "/v1/models"), ("POST", "/tiny/v1/chat/completions"), ("GET", "/nope/v1/models")):
        r = requests.request(method, gateway.base_url + path, headers=headers, json={}, timeout=10)
        assert r.status_code == 401
        assert r.headers["Content-Type"].startswith("application/json")
        error = r.json()["error"]
        assert error["code"] == "invalid_api_key" and error["type"] == "invalid_request_error" and error["message"]


def test_unknown_model_path_is_404(gateway):
    r = requests.post(f"{gateway.base_url}/no-such-model/v1/chat/completions", headers=auth(), json={}, timeout=10)
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"


def stream_spread(base: str) -> tuple[float, int]:
    """(share of the stream's duration between the first and the last read carrying SSE events, such reads)."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Count"}], "max_tokens": 64,
            "temperature": 0, "stream": True, "ignore_eos": True}
    started = time.monotonic()
    arrivals = []
    with requests.post(f"{base}/v1/chat/completions", json=body, headers=auth(), stream=True, timeout=60) as r:
        assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/event-stream")
        for chunk in r.iter_content(chunk_size=None):
            if b"data: " in chunk:
                arrivals.append(time.monotonic() - started)
    total = time.monotonic() - started
    return (arrivals[-1] - arrivals[0]) / total, len(arrivals)


def test_streaming_passes_through_unbuffered(gateway, replicas):
    spread, reads = stream_spread(f"{gateway.base_url}/tiny")
    direct_spread, direct_reads = stream_spread(replicas[0].base_url)
    # events arrive as they are generated, in many reads spread over the stream, as when calling vLLM directly
    assert reads >= 16 and spread > 0.6, (spread, reads, direct_spread, direct_reads)


class _BufferingProxy(http.server.BaseHTTPRequestHandler):
    """A misbehaving middlebox: reads the whole upstream response, then sends it (what the gateway must not do)."""

    upstream = ""

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        headers = {k: v for k, v in self.headers.items() if k.lower() in ("content-type", "authorization")}
        r = requests.post(self.upstream + self.path, data=body, headers=headers, timeout=60)
        self.send_response(r.status_code)
        self.send_header("Content-Type", r.headers["Content-Type"])
        self.send_header("Content-Length", str(len(r.content)))
        self.end_headers()
        self.wfile.write(r.content)

    def log_message(self, *args):
        pass


def test_buffering_would_be_detected(replicas):
    """The streaming test can fail: behind a buffering proxy the tokens arrive together at the end."""
    _BufferingProxy.upstream = replicas[0].base_url
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _BufferingProxy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        spread, reads = stream_spread(f"http://127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()
    assert not (reads >= 16 and spread > 0.6), (spread, reads)


def test_replicas_share_the_load(gateway, replicas):
    before = len(gateway.access_entries())
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(lambda _: chat(f"{gateway.base_url}/tiny").status_code, range(20)))
    assert statuses == [200] * 20
    entries = gateway.access_entries(at_least=before + 20)[before:]
    upstreams = [e["upstream"] for e in entries if e["status"] == 200]
    counts = {f"127.0.0.1:{s.port}": upstreams.count(f"127.0.0.1:{s.port}") for s in replicas}
    assert all(n >= 5 for n in counts.values()), counts


def test_per_replica_route_and_endpoint_check_through_the_gateway(gateway, replicas):
    result = check_endpoint(f"{gateway.base_url}/tiny", expected_model=MODEL, api_key=KEYS[0], timeout_s=60,
                            concurrency=2)
    assert result.model == MODEL
    for i, server in enumerate(replicas):
        r = chat(f"{gateway.base_url}/_replicas/tiny-r{i}")
        assert r.status_code == 200
        logged = gateway.entries_for(f"/_replicas/tiny-r{i}/v1/chat/completions")
        assert logged and {e["upstream"] for e in logged} == {f"127.0.0.1:{server.port}"}
    with pytest.raises(Exception) as err:
        check_endpoint(f"{gateway.base_url}/tiny", expected_model=MODEL, api_key="sk-wrong", timeout_s=10)
    assert "401" in str(err.value) and "sk-wrong" not in str(err.value)


def test_rate_limit_and_body_size_per_key(replicas):
    model_routes, replica_routes = routes(replicas)
    limits = stack_limits(rate_limit_per_minute=60, max_body_kib=1)    # burst 10
    with NginxGateway(model_routes, replica_routes, KEYS, limits) as gw:
        statuses = [requests.get(f"{gw.base_url}/tiny/v1/models", headers=auth(), timeout=10).status_code
                    for _ in range(25)]
        assert statuses.count(200) <= 12 and statuses.count(429) >= 13, statuses
        limited = requests.get(f"{gw.base_url}/tiny/v1/models", headers=auth(), timeout=10)
        assert limited.status_code == 429 and limited.json()["error"]["code"] == "rate_limit_exceeded"
        # another key has its own bucket
        assert requests.get(f"{gw.base_url}/tiny/v1/models", headers=auth(KEYS[1]), timeout=10).status_code == 200
        big = requests.post(f"{gw.base_url}/tiny/v1/completions", headers=auth(KEYS[1]), timeout=10,
                            data=json.dumps({"model": MODEL, "prompt": "x" * 4096}))
        assert big.status_code == 413 and big.json()["error"]["code"] == "request_too_large"


def test_key_rotation_without_failed_requests(replicas):
    model_routes, replica_routes = routes(replicas)
    with NginxGateway(model_routes, replica_routes, [KEYS[0]], stack_limits(rate_limit_per_minute=60000)) as gw:
        url = f"{gw.base_url}/tiny/v1/models"
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            def hammer(key):
                end, statuses = time.monotonic() + 3, []
                while time.monotonic() < end:
                    statuses.append(requests.get(url, headers=auth(key), timeout=10).status_code)
                return statuses
            during = pool.submit(hammer, KEYS[0])
            time.sleep(1)
            gw.reload([KEYS[0], KEYS[1]])          # add the new key; the old one keeps working
            assert set(during.result()) == {200}
        assert requests.get(url, headers=auth(KEYS[1]), timeout=10).status_code == 200
        gw.reload([KEYS[1]])                       # retire the old key
        assert requests.get(url, headers=auth(KEYS[0]), timeout=10).status_code == 401
        assert requests.get(url, headers=auth(KEYS[1]), timeout=10).status_code == 200
        log = gw.access_log.read_text()
    assert KEYS[0] not in log and KEYS[1] not in log and key_id(KEYS[1]) in log


# -- Config changes while a stream is in flight ---------------------------------------------------------------
# A change of the gateway's configuration (a model's upstream after a surge rollout, keys, limits) rolls the gateway
# pods: a new pod (maxSurge 1) with the new configuration, then the old pod's preStop hook -- the generated
# drain_command, run here exactly as the kubelet runs it, without the load-balancer delay -- and only then SIGTERM.
LONG_STREAM = {"model": MODEL, "messages": [{"role": "user", "content": "Count"}], "max_tokens": 400,
               "temperature": 0, "stream": True, "ignore_eos": True}


def stream_in_background(base: str):
    """Start a long streamed chat once its first event arrived; the future's outcome is (finish_reason, done, error):
    ("length", True, None) when all max_tokens tokens and then [DONE] arrived."""
    first = threading.Event()

    def run():
        finish, done = None, False
        try:
            with requests.post(f"{base}/v1/chat/completions", json=LONG_STREAM, headers=auth(), stream=True,
                               timeout=60) as r:
                assert r.status_code == 200, r.text
                for line in r.iter_lines():
                    if line.startswith(b"data: "):
                        if line == b"data: [DONE]":
                            done = True
                        else:
                            finish = json.loads(line[6:])["choices"][0].get("finish_reason") or finish
                            first.set()
            return finish, done, None
        except requests.RequestException as err:
            return finish, done, type(err).__name__
        finally:
            first.set()

    pool = concurrent.futures.ThreadPoolExecutor(1)
    future = pool.submit(run)
    pool.shutdown(wait=False)
    assert first.wait(60)
    return future


def upstream_of(gw: NginxGateway, path: str) -> str:
    return gw.entries_for(path)[-1]["upstream"]


def test_a_stream_in_flight_survives_a_gateway_pod_roll_and_new_requests_reach_the_new_upstream(replicas):
    from infra.render.gateway_objects import drain_command

    old_routes, _ = routes(replicas[:1])
    new_routes, _ = routes(replicas[1:])
    with NginxGateway(old_routes, [], KEYS, LIMITS) as old, NginxGateway(new_routes, [], KEYS, LIMITS) as new:
        stream = stream_in_background(f"{old.base_url}/tiny")
        started = time.monotonic()
        drain = subprocess.run(drain_command(str(old.conf_path), str(old.dir / "nginx.pid"), delay_seconds=0),
                               capture_output=True, text=True, timeout=120)
        drained_after = time.monotonic() - started
        outcome = stream.result(timeout=60)
        assert drain.returncode == 0, drain.stderr
        assert outcome == ("length", True, None)   # every token, then [DONE]
        assert old.proc.wait(timeout=10) == 0 and drained_after > 1.0   # the hook returned once nginx had exited
        with pytest.raises(requests.ConnectionError):                   # the old pod takes nothing new
            chat(f"{old.base_url}/tiny")
        assert chat(f"{new.base_url}/tiny").status_code == 200
        assert upstream_of(new, "/tiny/v1/chat/completions") == f"127.0.0.1:{replicas[1].port}"


def test_a_fast_shutdown_would_cut_the_stream(replicas):
    """The control: without the drain (SIGTERM straight away), the same stream is cut -- the test above can fail."""
    old_routes, _ = routes(replicas[:1])
    with NginxGateway(old_routes, [], KEYS, LIMITS) as old:
        stream = stream_in_background(f"{old.base_url}/tiny")
        old.proc.terminate()
        finish, done, _error = stream.result(timeout=60)
    assert finish is None and not done


def test_an_in_place_reload_keeps_the_stream_and_moves_new_requests(replicas):
    """The same guarantee from nginx's own graceful reload (`nginx -s reload`): old workers finish their streams."""
    old_routes, _ = routes(replicas[:1])
    new_routes, _ = routes(replicas[1:])
    with NginxGateway(old_routes, [], KEYS, LIMITS) as gw:
        stream = stream_in_background(f"{gw.base_url}/tiny")
        gw.routes = new_routes
        gw.reload(KEYS)
        assert chat(f"{gw.base_url}/tiny").status_code == 200
        assert upstream_of(gw, "/tiny/v1/chat/completions") == f"127.0.0.1:{replicas[1].port}"
        assert stream.result(timeout=60) == ("length", True, None)


def test_a_killed_replica_is_routed_around(gateway, replicas):
    """Runs last in this module: it kills replica 1."""
    replicas[1].kill()
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(lambda _: chat(f"{gateway.base_url}/tiny").status_code, range(12)))
    assert statuses == [200] * 12
    r = chat(f"{gateway.base_url}/_replicas/tiny-r1")
    assert r.status_code == 503 and r.json()["error"]["code"] == "model_unavailable"
