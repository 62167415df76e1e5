"""Real Prometheus (Debian's ``prometheus`` 2.42, with its ``promtool``), nginx-prometheus-exporter and mtail for the
observability tests, on 127.0.0.1 with free ports and temporary directories.

- :class:`Prometheus` runs the real server with a generated ``prometheus.yml`` (static targets) and rule files, and
  answers instant queries through its HTTP API (a PromQL error is an exception, not an empty result).
- :func:`relabel_configs` turns a ServiceMonitor's / PodMonitor's relabelings (prometheus-operator's camelCase
  RelabelConfig, what managed Prometheus reads) into Prometheus' own ``relabel_configs``; with static targets that
  carry the ``__meta_kubernetes_*`` labels Kubernetes discovery would give them, the real Prometheus applies exactly
  kaito-aks's relabelings.
- :class:`MetricsGateway` is the gateway's generated nginx configuration (tests/servers/nginx.py) with its metrics
  turned on: stub_status on a loopback port and the access log also sent as syslog datagrams, as in the pod.
- :class:`NginxExporter` and :class:`Mtail` are the gateway pod's two sidecars (Debian's prometheus-nginx-exporter
  0.11 and mtail 3.0.0~rc50; the pod runs the upstream images 1.5.3 and 3.0.9, same metric names and flags).
- :class:`StaticExposition` serves a recorded exposition (kube-state-metrics: there is no Kubernetes API here).
"""
from __future__ import annotations

import http.server
import json
import os
import pathlib
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import yaml

from infra.render.gateway_objects import MTAIL_PROGRAM_FILE
from infra.render.nginx import MTAIL_PROGRAM
from tests.servers.nginx import NginxGateway
from tests.servers.process import stop_process
from tests.servers.vllm import ServerUnavailableError, free_port

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
NGINX_EXPORTER = shutil.which("prometheus-nginx-exporter") or "/usr/bin/prometheus-nginx-exporter"
MTAIL = shutil.which("mtail") or "/usr/bin/mtail"
PACKAGES = {PROMETHEUS: "prometheus", PROMTOOL: "prometheus", NGINX_EXPORTER: "prometheus-nginx-exporter",
            MTAIL: "mtail"}


def missing(*binaries: str) -> str | None:
    """None when every binary is installed, else the skip reason naming the Debian packages."""
    absent = [b for b in binaries if not os.path.exists(b)]
    if not absent:
        return None
    packages = sorted({PACKAGES.get(b, b) for b in absent})
    return f"{', '.join(absent)} not installed (Debian packages {' '.join(packages)}; .ci/run installs them)"


class PromQLError(RuntimeError):
    """Prometheus refused a query (a parse or evaluation error): the message is Prometheus' own."""


def _wait_http(url: str, timeout_s: float, proc: subprocess.Popen | None, what: str, log: pathlib.Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ServerUnavailableError(f"{what} exited with {proc.returncode}: {log.read_text(errors='replace')[-800:]}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise ServerUnavailableError(f"{what} did not answer {url} in {timeout_s:.0f} s: {log.read_text(errors='replace')[-800:]}")


class _Process:
    """A child process in its own session with a log file; stop() terminates only it."""

    def __init__(self, name: str):
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix=f"kaito-{name}-"))
        self.log = self.dir / f"{name}.log"
        self.proc: subprocess.Popen | None = None
        self.name = name

    def _spawn(self, argv: list[str]) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         cwd=self.dir, start_new_session=True)

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self.start()  # type: ignore[attr-defined]

    def __exit__(self, *exc):
        self.stop()


def relabel_configs(operator_relabelings: list[dict]) -> list[dict]:
    """prometheus-operator RelabelConfig (camelCase) -> Prometheus relabel_config (snake_case), field by field."""
    keys = {"sourceLabels": "source_labels", "targetLabel": "target_label", "separator": "separator",
            "regex": "regex", "modulus": "modulus", "replacement": "replacement", "action": "action"}
    out = []
    for item in operator_relabelings:
        unknown = set(item) - set(keys)
        assert not unknown, f"relabeling fields this helper doesn't translate: {unknown}"
        out.append({keys[k]: (v.lower() if k == "action" else v) for k, v in item.items()})
    return out


class Prometheus(_Process):
    """The real Prometheus on 127.0.0.1:<free port>, scraping every second by default."""

    def __init__(self, scrape_configs: list[dict], rule_files: dict[str, str] | None = None,
                 scrape_interval: str = "1s", evaluation_interval: str = "1s"):
        super().__init__("prometheus")
        self.port = free_port()
        rule_paths = []
        for name, text in (rule_files or {}).items():
            (self.dir / name).write_text(text)
            rule_paths.append(str(self.dir / name))
        self.config = {"global": {"scrape_interval": scrape_interval, "scrape_timeout": scrape_interval,
                                  "evaluation_interval": evaluation_interval},
                       "rule_files": rule_paths, "scrape_configs": scrape_configs}
        (self.dir / "prometheus.yml").write_text(yaml.safe_dump(self.config, sort_keys=False))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30) -> Prometheus:
        check = subprocess.run([PROMTOOL, "check", "config", str(self.dir / "prometheus.yml")], capture_output=True,
                               text=True, timeout=60)
        if check.returncode != 0:
            raise ServerUnavailableError(f"promtool rejected the test configuration: {check.stdout}{check.stderr}")
        self._spawn([PROMETHEUS, f"--config.file={self.dir / 'prometheus.yml'}",
                     f"--storage.tsdb.path={self.dir / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}",
                     "--log.level=warn"])
        _wait_http(f"{self.url}/-/ready", timeout_s, self.proc, "prometheus", self.log)
        return self

    def api(self, path: str, params: dict | None = None) -> dict:
        data = urllib.parse.urlencode(params or {}, doseq=True).encode() if params is not None else None
        request = urllib.request.Request(f"{self.url}/api/v1/{path}", data=data)
        try:
            with urllib.request.urlopen(request, timeout=30) as r:
                body = json.load(r)
        except urllib.error.HTTPError as err:         # 400/422: a query Prometheus can't parse or evaluate
            body = json.load(err)
        if body.get("status") != "success":
            raise PromQLError(f"{body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        """An instant query: the result vector (a PromQL error raises :class:`PromQLError`)."""
        data = self.api("query", {"query": expr})
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        return data["result"]

    def metric_names(self) -> set[str]:
        return set(self.api("label/__name__/values"))

    def targets(self) -> list[dict]:
        return self.api("targets")["activeTargets"]

    def rules(self) -> list[dict]:
        return [rule for group in self.api("rules")["groups"] for rule in group["rules"]]

    def wait_until(self, predicate, timeout_s: float = 30, what: str = "condition"):
        deadline = time.monotonic() + timeout_s
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
            time.sleep(0.5)


class NginxExporter(_Process):
    """prometheus-nginx-exporter reading a stub_status URL (the gateway pod's `nginx-exporter` sidecar)."""

    def __init__(self, status_url: str):
        super().__init__("nginx-exporter")
        self.port, self.status_url = free_port(), status_url

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 20) -> NginxExporter:
        # the same flags as the pod's sidecar (infra/render/gateway_objects.py metrics_containers), on loopback
        self._spawn([NGINX_EXPORTER, f"--nginx.scrape-uri={self.status_url}",
                     f"--web.listen-address={self.address}"])
        _wait_http(f"http://{self.address}/metrics", timeout_s, self.proc, "nginx exporter", self.log)
        return self


# Debian's mtail (3.0.0~rc50) reads one datagram per poll (default every 250 ms) and the kernel drops the rest of a
# burst; upstream fixed it in 3.0.5 ("Return to read immediately after a successful read", google/mtail afd77e48,
# issue #685), and the pod runs 3.0.9. Polling every millisecond makes rc50 keep up (300 back-to-back requests, none
# lost); it is the only flag the tests add to the pod's command line.
RC50_POLL = ("-poll_interval", "1ms")


class Mtail(_Process):
    """mtail running the gateway's program on syslog datagrams (the gateway pod's `mtail` sidecar)."""

    def __init__(self, program: str = MTAIL_PROGRAM, extra: tuple[str, ...] = RC50_POLL):
        super().__init__("mtail")
        self.extra = extra
        self.port, self.syslog_port = free_port(), _free_udp_port()
        (self.dir / "progs").mkdir()
        (self.dir / "progs" / MTAIL_PROGRAM_FILE).write_text(program)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 20) -> Mtail:
        self._spawn([MTAIL, "-progs", str(self.dir / "progs"), "-logs", f"udp://127.0.0.1:{self.syslog_port}",
                     "-address", "127.0.0.1", "-port", str(self.port), "-logtostderr", *self.extra])
        _wait_http(f"http://{self.address}/metrics", timeout_s, self.proc, "mtail", self.log)
        return self

    def metrics_text(self) -> str:
        with urllib.request.urlopen(f"http://{self.address}/metrics", timeout=5) as r:
            return r.read().decode()


def _free_udp_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MetricsGateway(NginxGateway):
    """The generated gateway configuration with its metrics on: stub_status on a loopback port, access log also to
    ``syslog_port`` (mtail's)."""

    def __init__(self, routes, replica_routes, keys, limits, syslog_port: int):
        self.status_port, self.syslog_port = free_port(), syslog_port
        super().__init__(routes, replica_routes, keys, limits)

    def metrics_servers(self) -> dict[str, str]:
        return {"status_listen": f"127.0.0.1:{self.status_port}", "syslog_server": f"127.0.0.1:{self.syslog_port}"}

    @property
    def status_url(self) -> str:
        return f"http://127.0.0.1:{self.status_port}/stub_status"


class StaticExposition:
    """Serves a fixed Prometheus text exposition at /metrics (a recorded exporter), in a thread."""

    def __init__(self, text: str):
        body = text.encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):                      # noqa: N802
                self.send_response(200 if self.path == "/metrics" else 404)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def promtool(*args: str, cwd: pathlib.Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=120, cwd=cwd)
