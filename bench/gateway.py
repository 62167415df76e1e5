"""Latency the gateway adds: the generated nginx configuration in front of a real vLLM server vs the server direct.

    python -m bench.gateway [--requests 200]      # from the repository root

One real vLLM server (tests/servers) and one real nginx running infra.render.nginx's configuration with an API key.
For 1 and 8 concurrent clients it sends the same small completion request (8 tokens, temperature 0) directly and
through the gateway, alternating the two so both see the same server state, and prints p50/p95 and the difference.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import statistics
import sys
import time

import requests

from infra.render.nginx import Route
from tests.servers.nginx import NginxGateway, stack_limits
from tests.servers.vllm import VllmRuntime, VllmServer

KEY = "sk-bench-gateway-0001"
BODY = {"model": "tiny-llama", "prompt": "The capital of France is", "max_tokens": 8, "temperature": 0}


def timed(session: requests.Session, url: str, headers: dict) -> float:
    started = time.perf_counter()
    r = session.post(url, json=BODY, headers=headers, timeout=60)
    r.raise_for_status()
    return (time.perf_counter() - started) * 1000


def run(url: str, headers: dict, n: int, concurrency: int) -> list[float]:
    sessions = [requests.Session() for _ in range(concurrency)]
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        futures = [pool.submit(timed, sessions[i % concurrency], url, headers) for i in range(n)]
        return [f.result() for f in futures]


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200, help="per configuration and concurrency")
    args = parser.parse_args()
    runtime = VllmRuntime.discover()
    if runtime is None:
        sys.exit("the vLLM venv is missing: bash tests/servers/install_vllm.sh")
    server = VllmServer(runtime, runtime.ensure_tiny_model(), served_name="tiny-llama").start().wait_ready()
    hosts = (f"127.0.0.1:{server.port}",)
    gateway = NginxGateway([Route("tiny", hosts, "tiny-llama")], [], [KEY],
                           stack_limits(rate_limit_per_minute=600000)).start()
    try:
        direct = f"{server.base_url}/v1/completions"
        via = f"{gateway.base_url}/tiny/v1/completions"
        auth = {"Authorization": f"Bearer {KEY}"}
        run(direct, {}, 20, 2), run(via, auth, 20, 2)          # warm-up (vLLM's first requests are slower)
        print(f"{'clients':>7} {'path':8} {'p50 ms':>8} {'p95 ms':>8}  (n={args.requests} each)")
        for concurrency in (1, 8):
            d, g = [], []
            for _ in range(4):                                    # interleave: same server state for both
                d += run(direct, {}, args.requests // 4, concurrency)
                g += run(via, auth, args.requests // 4, concurrency)
            for name, values in (("direct", d), ("gateway", g)):
                print(f"{concurrency:7d} {name:8} {statistics.median(values):8.2f} {pct(values, 0.95):8.2f}")
            print(f"{concurrency:7d} {'added':8} {statistics.median(g) - statistics.median(d):8.2f} "
                  f"{pct(g, 0.95) - pct(d, 0.95):8.2f}")
    finally:
        gateway.stop()
        server.stop()


if __name__ == "__main__":
    main()
