"""Run the gateway's generated nginx configuration under a real nginx (Debian's package) on 127.0.0.1.

The configuration is ``infra.render.nginx.render_nginx_conf`` itself, with only the machine-specific paths and
listen addresses filled in: what the tests exercise is what the cluster runs. ``KAITO_AKS_NGINX`` names another
nginx binary (e.g. a build of the image's version, 1.28) to run the same tests under.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
import subprocess
import tempfile
import time
import urllib.request

from infra.render.gateway_objects import limits_from
from infra.render.nginx import GatewayLimits, Route, render_keys_map, render_nginx_conf
from infra.settings import GatewaySettings
from tests.servers.process import stop_process
from tests.servers.vllm import ServerUnavailableError, free_port


def stack_limits(**overrides: int) -> GatewayLimits:
    """The gateway limits a stack gets by default (the gateway.* settings' defaults), with ``overrides``."""
    return dataclasses.replace(limits_from(GatewaySettings()), **overrides)

NGINX = os.environ.get("KAITO_AKS_NGINX") or shutil.which("nginx") or "/usr/sbin/nginx"


def nginx_available() -> str | None:
    """None when nginx can run here, else why not (the skip reason)."""
    if not os.path.exists(NGINX):
        return f"nginx is not installed at {NGINX} (Debian package `nginx`; .ci/run installs it)"
    return None


class NginxGateway:
    def __init__(self, routes: list[Route], replica_routes: list[Route], keys: list[str],
                 limits: GatewayLimits | None = None):
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="kaito-gw-"))
        (self.dir / "tmp").mkdir()
        os.chmod(self.dir, 0o755)
        os.chmod(self.dir / "tmp", 0o777)          # workers run as nobody when the master is root
        self.port, self.health_port = free_port(), free_port()
        self.keys_path = self.dir / "api-keys.map"
        self.conf_path = self.dir / "nginx.conf"
        self.access_log = self.dir / "access.log"
        self.error_log = self.dir / "error.log"
        self.routes, self.replica_routes, self.limits = routes, replica_routes, limits or stack_limits()
        self.write(keys)
        self.proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def metrics_servers(self) -> dict[str, str]:
        """render_nginx_conf's metrics arguments (stub_status, the syslog feed): none unless a subclass adds them."""
        return {}

    def write(self, keys: list[str]) -> None:
        self.keys_path.write_text(render_keys_map(keys))
        self.conf_path.write_text(render_nginx_conf(
            self.routes, self.replica_routes, str(self.keys_path), self.limits,
            listen=f"127.0.0.1:{self.port}", health_listen=f"127.0.0.1:{self.health_port}",
            temp_dir=str(self.dir / "tmp"), pid_path=str(self.dir / "nginx.pid"),
            access_log=str(self.access_log), error_log=str(self.error_log), **self.metrics_servers()))

    def test_config(self) -> subprocess.CompletedProcess:
        return subprocess.run([NGINX, "-t", "-q", "-p", str(self.dir), "-c", str(self.conf_path)],
                              capture_output=True, text=True, timeout=30)

    def start(self, timeout_s: float = 20) -> NginxGateway:
        check = self.test_config()
        if check.returncode != 0:
            raise ServerUnavailableError(f"nginx rejected the generated configuration: {check.stderr.strip()}")
        self.proc = subprocess.Popen([NGINX, "-p", str(self.dir), "-c", str(self.conf_path), "-g", "daemon off;"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/healthz", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise ServerUnavailableError(f"nginx did not come up: {self.error_log.read_text() if self.error_log.exists() else ''}")

    def reload(self, keys: list[str]) -> None:
        """New keys without a restart (what a rolling update achieves in the cluster, in one process)."""
        self.write(keys)
        subprocess.run([NGINX, "-p", str(self.dir), "-c", str(self.conf_path), "-s", "reload"], check=True,
                       capture_output=True, timeout=30)
        time.sleep(0.5)   # the old workers finish, new ones take the new configuration

    def access_entries(self, at_least: int = 0, timeout_s: float = 5) -> list[dict]:
        """The access log as JSON records; waits for ``at_least`` of them (nginx logs after it answers)."""
        deadline = time.monotonic() + timeout_s
        while True:
            lines = self.access_log.read_text().splitlines() if self.access_log.exists() else []
            entries = [json.loads(line) for line in lines if line.strip()]
            if len(entries) >= at_least or time.monotonic() > deadline:
                return entries
            time.sleep(0.05)

    def log_text(self) -> str:
        """Everything nginx logged: the access log and the error log."""
        return "".join(p.read_text(errors="replace") for p in (self.access_log, self.error_log) if p.exists())

    def entries_for(self, path: str, timeout_s: float = 5) -> list[dict]:
        """Access-log records of ``path``, waiting until at least one is written."""
        deadline = time.monotonic() + timeout_s
        while True:
            found = [e for e in self.access_entries() if e["path"] == path]
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.05)

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
