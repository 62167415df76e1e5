"""Trivial upstreams for the gateway's nginx-only tests: a second real nginx that echoes what it received, and a
port that accepts connections but never answers.

The echo upstream answers every request with JSON naming the ``Authorization`` header, the request URI, method and
``X-Request-Id`` it got: what the gateway forwarded, seen from the model's side.
"""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request

from tests.servers.nginx import NGINX
from tests.servers.process import stop_process
from tests.servers.vllm import ServerUnavailableError, free_port

# `return` does not escape variables: the tests send header values without quotes or backslashes.
ECHO = ('{"auth":"$http_authorization","uri":"$request_uri","method":"$request_method",'
        '"request_id":"$http_x_request_id","x_api_key":"$http_x_api_key"}')


class EchoUpstream:
    """``nginx`` on 127.0.0.1:<port> answering 200 with :data:`ECHO` to everything."""

    def __init__(self) -> None:
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="kaito-upstream-"))
        (self.dir / "tmp").mkdir()
        os.chmod(self.dir, 0o755)
        os.chmod(self.dir / "tmp", 0o777)          # workers run as nobody when the master is root
        self.port = free_port()
        self.conf_path = self.dir / "nginx.conf"
        tmp = self.dir / "tmp"
        self.conf_path.write_text(f"""
worker_processes 1;
pid {self.dir / "nginx.pid"};
error_log {self.dir / "error.log"} warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server {{
        listen 127.0.0.1:{self.port};
        default_type application/json;
        location / {{
            return 200 '{ECHO}';
        }}
    }}
}}
""")
        self.proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 20) -> EchoUpstream:
        self.proc = subprocess.Popen([NGINX, "-p", str(self.dir), "-c", str(self.conf_path), "-g", "daemon off;"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://{self.address}/ready", timeout=1) as r:
                    json.loads(r.read())
                    return self
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.05)
        err = self.proc.stderr.read().decode(errors="replace") if self.proc.poll() is not None else ""
        self.stop()
        raise ServerUnavailableError(f"the echo upstream nginx did not come up: {err.strip()}")

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> EchoUpstream:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class SilentUpstream:
    """A listening socket that completes TCP handshakes (the kernel's backlog) and never answers: the gateway's
    read timeout fires (504)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"

    def close(self) -> None:
        self.sock.close()


def dead_address() -> str:
    """An address where nothing listens (connection refused: 502)."""
    return f"127.0.0.1:{free_port()}"
