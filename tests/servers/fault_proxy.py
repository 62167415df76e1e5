"""A small fault-injecting HTTP reverse proxy for tests: the peer behind it is a real server (vLLM).

It forwards every request to ``upstream`` (streaming responses are relayed chunk by chunk, so SSE timing is
kept) unless a :class:`Rule` matches, which can:

- ``status``: answer itself (e.g. 503 + Retry-After, 500, 401), optionally echoing the request headers in the
  body (to test that a secret echoed by a server is scrubbed), the payload passed through ``transform`` if given
  (e.g. ``bytes.upper``: a server that echoes the key upper-cased); with ``stall``, it promises twice the payload
  in Content-Length, sends the payload and then nothing (an error page that never ends);
- ``rewrite``: forward, then pass the real (non-streamed) body through ``transform`` and send that, with a correct
  Content-Length (e.g. a ``/v1/models`` that lists the API key, a chat answer that quotes it);
- ``truncate``: forward, then send only half of the real body with the full Content-Length and close;
- ``malformed``: forward, then corrupt the real body (cut JSON; a non-JSON event in an SSE stream);
- ``drop_done``: forward an SSE stream without its ``data: [DONE]`` event;
- ``pause``: forward an SSE stream, holding everything after its first event for ``pause_s`` seconds (a server whose
  first chunk, the role, comes long before the first token);
- ``gzip``: forward, gzip the real body and say so in Content-Encoding (as nginx ``gzip on`` does);
- ``hang``: accept the request and never answer (until the proxy closes);
- ``stall``: forward, send the headers and the first part of the real body (the first event of a stream), then
  stop sending without closing (until the proxy closes);
- ``reset``: close the connection without any answer.

``on_match`` runs before the action (e.g. kill the upstream server mid-check). When the upstream is down the
proxy answers 502, like nginx. ``strip_prefix`` emulates a gateway route (``/gw/model/v1/...`` -> ``/v1/...``).
Every request is recorded in ``requests_seen`` (method, path, action, headers, body); ``max_in_flight`` is the
largest number of requests handled at once.
"""
from __future__ import annotations

import contextlib
import dataclasses
import gzip
import http.client
import http.server
import json
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
              "transfer-encoding", "upgrade", "host", "content-length"}


@dataclasses.dataclass
class Rule:
    action: str                       # status | rewrite | truncate | malformed | drop_done | gzip | hang | reset | pass
    path: str | None = None           # path prefix to match (None: every path)
    method: str | None = None
    body_contains: bytes | None = None  # e.g. b'"stream": true' to hit only streamed requests
    times: int | None = None          # how many requests it applies to (None: all)
    status: int = 503
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    body: bytes = b'{"error":"injected"}'
    echo_headers: bool = False
    stall: bool = False               # status: send the payload, then stall mid-body
    pause_s: float = 0.0              # pause: how long the rest of the stream waits after its first event
    transform: Callable[[bytes], bytes] | None = None   # status: the payload; rewrite: the real body
    on_match: Callable[[], None] | None = None
    hits: int = 0

    def matches(self, method: str, path: str, body: bytes = b"") -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        if self.method is not None and self.method != method:
            return False
        if self.body_contains is not None and self.body_contains not in body:
            return False
        return self.path is None or path.startswith(self.path)


@dataclasses.dataclass(frozen=True)
class Seen:
    method: str
    path: str
    action: str
    headers: dict[str, str]
    body: bytes = b""


class FaultProxy:
    def __init__(self, upstream: str, rules: list[Rule] | None = None, *, strip_prefix: str | None = None,
                 upstream_timeout_s: float = 60.0) -> None:
        u = urllib.parse.urlsplit(upstream)
        self.upstream_host = u.hostname or "127.0.0.1"
        self.upstream_port = u.port or 80
        self.rules = list(rules or [])
        self.strip_prefix = strip_prefix.rstrip("/") if strip_prefix else None
        self.upstream_timeout_s = upstream_timeout_s
        self.requests_seen: list[Seen] = []
        self.in_flight = 0
        self.max_in_flight = 0               # most requests handled at once (shows a probe really is parallel)
        self.release = threading.Event()
        self._lock = threading.Lock()
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"fault-proxy-{self.port}", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set_rules(self, rules: list[Rule]) -> None:
        with self._lock:
            self.rules = list(rules)

    def pick(self, method: str, path: str, body: bytes = b"") -> Rule | None:
        with self._lock:
            for rule in self.rules:
                if rule.matches(method, path, body):
                    rule.hits += 1
                    return rule
        return None

    def paths(self, action: str | None = None) -> list[str]:
        return [s.path for s in self.requests_seen if action is None or s.action == action]

    def close(self) -> None:
        self.release.set()  # wake hanging handlers
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _handler_for(proxy: FaultProxy) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, like a real gateway

        def log_message(self, *args: object) -> None:  # quiet
            pass

        def do_GET(self) -> None:
            self._handle()

        def do_POST(self) -> None:
            self._handle()

        def _handle(self) -> None:
            with proxy._lock:
                proxy.in_flight += 1
                proxy.max_in_flight = max(proxy.max_in_flight, proxy.in_flight)
            try:
                self._dispatch()
            finally:
                with proxy._lock:
                    proxy.in_flight -= 1

        def _dispatch(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            path = self.path
            if proxy.strip_prefix:
                if not path.startswith(proxy.strip_prefix + "/"):
                    self._send(404, b'{"detail":"no route"}')
                    proxy.requests_seen.append(Seen(self.command, self.path, "no-route", dict(self.headers)))
                    return
                path = path[len(proxy.strip_prefix):]
            rule = proxy.pick(self.command, path, body)
            action = rule.action if rule else "pass"
            proxy.requests_seen.append(Seen(self.command, self.path, action, dict(self.headers), body))
            if rule and rule.on_match:
                rule.on_match()
            if action == "status":
                payload = rule.body
                if rule.echo_headers:
                    # like a misbehaving server that echoes credentials: the Authorization header comes first
                    echoed = {"authorization": self.headers.get("Authorization"), **dict(self.headers)}
                    payload = json.dumps({"error": "injected", "request_headers": echoed}).encode()
                if rule.transform is not None:
                    payload = rule.transform(payload)
                if rule.stall:
                    self._send_and_stall(rule.status, payload, rule.headers)
                else:
                    self._send(rule.status, payload, rule.headers)
            elif action == "hang":
                proxy.release.wait(timeout=600)
                self._abort()
            elif action == "reset":
                self._abort()
            else:
                self._forward(path, body, action, rule)

        # -- helpers --------------------------------------------------------------------------------------
        def _send(self, status: int, payload: bytes, headers: dict[str, str] | None = None,
                  content_type: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            self.wfile.flush()

        def _send_and_stall(self, status: int, payload: bytes, headers: dict[str, str]) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(2 * len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            self.wfile.flush()
            proxy.release.wait(timeout=600)
            self._abort()

        def _abort(self) -> None:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)

        def _forward(self, path: str, body: bytes, action: str, rule: Rule | None = None) -> None:
            conn = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port,
                                              timeout=proxy.upstream_timeout_s)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            try:
                conn.request(self.command, path, body=body or None, headers=headers)
                up = conn.getresponse()
            except OSError as e:
                conn.close()
                self._send(502, json.dumps({"error": f"bad gateway: {type(e).__name__}"}).encode())
                return
            try:
                ctype = up.getheader("Content-Type", "")
                streaming = "text/event-stream" in ctype
                if streaming and action in ("pass", "drop_done", "malformed", "stall", "pause"):
                    self._relay_stream(up, action, rule.pause_s if rule is not None else 0.0)
                    return
                data = up.read()
                if action in ("truncate", "stall"):
                    self._truncated(up, data, stall=action == "stall")
                    return
                if action == "malformed":
                    data = data[: max(1, len(data) // 2)]  # a real answer cut mid-JSON, with a correct length
                if action == "gzip":
                    data = gzip.compress(data)
                if action == "rewrite" and rule is not None and rule.transform is not None:
                    data = rule.transform(data)
                self.send_response(up.status)
                for k, v in up.getheaders():
                    if k.lower() not in HOP_BY_HOP:
                        self.send_header(k, v)
                if action == "gzip":
                    self.send_header("Content-Encoding", "gzip")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                self.wfile.flush()
            finally:
                conn.close()

        def _truncated(self, up: http.client.HTTPResponse, data: bytes, stall: bool = False) -> None:
            self.send_response(up.status)
            for k, v in up.getheaders():
                if k.lower() not in HOP_BY_HOP:
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))  # promises the whole body...
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])             # ...sends half, then hangs up (or stalls)
            self.wfile.flush()
            if stall:
                proxy.release.wait(timeout=600)
            self._abort()

        def _relay_stream(self, up: http.client.HTTPResponse, action: str, pause_s: float = 0.0) -> None:
            self.send_response(up.status)
            for k, v in up.getheaders():
                if k.lower() not in HOP_BY_HOP:
                    self.send_header(k, v)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            first = True
            held = b""
            while True:
                chunk = up.read1(65536)
                if not chunk:
                    break
                if action == "pause" and pause_s:
                    held += chunk
                    end = held.find(b"\n\n")
                    if end == -1:
                        continue
                    self._chunk(held[: end + 2])       # the first event alone, then the wait, then the rest
                    time.sleep(pause_s)
                    chunk, held, pause_s = held[end + 2:], b"", 0.0
                    if not chunk:
                        continue
                if action == "drop_done":
                    chunk = chunk.replace(b"data: [DONE]\n\n", b"").replace(b"data: [DONE]\r\n\r\n", b"")
                if action == "malformed" and first:
                    chunk = b"data: {this is not json\n\n" + chunk
                first = False
                if chunk:
                    self._chunk(chunk)
                if action == "stall":
                    proxy.release.wait(timeout=600)
                    self._abort()
                    return
            self._chunk(b"")

        def _chunk(self, data: bytes) -> None:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

    return Handler
