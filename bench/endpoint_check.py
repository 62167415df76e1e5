"""Endpoint check against a real vLLM server: how soon after the server is ready the check passes, and what
the check costs compared with plain single requests.

1. Ready -> passed. A fresh vLLM server (tests/servers/vllm.py, the tiny local model) is launched and the check
   starts at the same moment, so it first sees "connection refused" and backs off. An independent poller hits
   ``/health`` every 20 ms to timestamp "server ready". Reported: detection delay (server ready -> the check's
   first good ``/v1/models``), and server ready -> check passed. Repeated ``--starts`` times (one server start each).
2. Overhead. With the server up: median of ``--reps`` runs of the whole check (concurrency 1 and the default 4)
   vs the median of plain single requests (one chat completion, one completion; ``requests.post``, new
   connection each, like a user's first call), and vs the sum of the same requests sent one by one.

    python -m bench.endpoint_check [--starts 3] [--reps 15]      # from the repository root

Needs the vLLM venv (bash tests/servers/install_vllm.sh).
"""
from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys
import threading
import time
import urllib.request

import requests

from infra import endpoint as ep
from tests.servers.vllm import VllmRuntime, VllmServer

ROOT = pathlib.Path(__file__).resolve().parents[1]

MODEL = "tiny-llama"


def health_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


def ready_to_passed(rt: VllmRuntime, model_dir: pathlib.Path, logs: pathlib.Path, i: int) -> dict[str, float]:
    srv = VllmServer(rt, model_dir, served_name=MODEL, log_path=logs / f"bench-start-{i}.log")
    box: dict[str, object] = {}

    def run_check() -> None:
        box["result"] = ep.check_endpoint(srv.base_url, expected_model=MODEL, timeout_s=300, request_timeout_s=10)
        box["passed_at"] = time.monotonic()

    srv.start()
    check_started = time.monotonic()
    t = threading.Thread(target=run_check)
    t.start()
    try:
        while not health_ok(srv.base_url):
            if not srv.running:
                raise SystemExit(f"vLLM exited: {srv.log_tail()}")
            time.sleep(0.02)
        ready_at = time.monotonic()
        t.join(timeout=300)
    finally:
        srv.stop()
    result = box["result"]
    assert isinstance(result, ep.EndpointResult)
    first_good = check_started + result.ready_after_s
    return {
        "server_start_s": ready_at - check_started,
        "detect_delay_s": first_good - ready_at,
        "ready_to_passed_s": float(box["passed_at"]) - ready_at,  # type: ignore[arg-type]
        "checks_after_ready_s": result.elapsed_s - result.ready_after_s,
    }


def timed_ms(fn) -> float:
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1000


def plain(url: str, path: str, body: dict | None) -> None:
    r = requests.post(url + path, json=body, timeout=30) if body is not None else requests.get(url + path, timeout=30)
    r.raise_for_status()
    if body is not None and body.get("stream"):
        for _ in r.iter_lines():
            pass
    else:
        r.json()


def overhead(url: str, reps: int) -> dict[str, float]:
    chat = {"model": MODEL, "messages": [{"role": "user", "content": ep.CHAT_PROMPT}], "temperature": 0,
            "max_tokens": ep.MAX_TOKENS}
    comp = {"model": MODEL, "prompt": ep.COMPLETION_PROMPT, "temperature": 0, "max_tokens": ep.MAX_TOKENS}
    probe = {**chat, "max_tokens": ep.PROBE_MAX_TOKENS}
    for _ in range(3):  # warm-up
        plain(url, "/v1/chat/completions", chat)
        ep.check_endpoint(url, concurrency=1, timeout_s=60)
    med = lambda f: statistics.median(timed_ms(f) for _ in range(reps))
    out = {
        "plain_chat_ms": med(lambda: plain(url, "/v1/chat/completions", chat)),
        "plain_completion_ms": med(lambda: plain(url, "/v1/completions", comp)),
        "plain_sequence_c1_ms": med(lambda: [plain(url, "/v1/models", None), plain(url, "/v1/chat/completions", chat),
                                             plain(url, "/v1/completions", comp),
                                             plain(url, "/v1/chat/completions", {**chat, "stream": True}),
                                             plain(url, "/v1/chat/completions", probe)]),
        "check_c1_ms": med(lambda: ep.check_endpoint(url, concurrency=1, timeout_s=60)),
        "check_c4_ms": med(lambda: ep.check_endpoint(url, concurrency=4, timeout_s=60)),
    }
    out["check_c1_over_plain_chat"] = out["check_c1_ms"] / out["plain_chat_ms"]
    out["check_c1_minus_plain_sequence_ms"] = out["check_c1_ms"] - out["plain_sequence_c1_ms"]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--starts", type=int, default=3, help="server starts for ready->passed (each ~30 s)")
    ap.add_argument("--reps", type=int, default=15, help="repetitions per overhead measurement (median)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    rt = VllmRuntime.discover()
    if rt is None:
        print("vLLM venv missing: bash tests/servers/install_vllm.sh", file=sys.stderr)
        return 2
    model_dir = rt.ensure_tiny_model()
    logs = ROOT / ".cache" / "bench-logs"
    logs.mkdir(parents=True, exist_ok=True)

    starts = [ready_to_passed(rt, model_dir, logs, i) for i in range(args.starts)]
    srv = VllmServer(rt, model_dir, served_name=MODEL, log_path=logs / "bench-overhead.log")
    with srv:
        srv.wait_ready()
        ov = overhead(srv.base_url, args.reps)

    if args.json:
        print(json.dumps({"starts": starts, "overhead": ov}, indent=2))
        return 0
    print(f"1. server ready -> check passed ({args.starts} fresh server starts; check started with the server)")
    print(f"   {'start':>5} {'server start s':>15} {'detect delay s':>15} {'ready->passed s':>16} {'checks after ready s':>21}")
    for i, s in enumerate(starts):
        print(f"   {i:>5} {s['server_start_s']:>15.2f} {s['detect_delay_s']:>15.2f} {s['ready_to_passed_s']:>16.2f} "
              f"{s['checks_after_ready_s']:>21.2f}")
    med = lambda k: statistics.median(s[k] for s in starts)
    print(f"   {'median':>5} {med('server_start_s'):>15.2f} {med('detect_delay_s'):>15.2f} {med('ready_to_passed_s'):>16.2f} "
          f"{med('checks_after_ready_s'):>21.2f}")
    print(f"2. overhead vs plain single requests (median of {args.reps}, server up)")
    for k, v in ov.items():
        print(f"   {k:<34} {v:>9.1f}" + ("x" if k.endswith("over_plain_chat") else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
