"""Fixtures that start real vLLM OpenAI servers (tests/servers/vllm.py) for the integration tests.

Fixtures (all give :class:`tests.servers.vllm.VllmServer` objects; ``.base_url`` is ``http://127.0.0.1:<port>``):

``vllm_runtime`` (session)
    The installed vLLM venv (``tests/servers/install_vllm.sh``); skips (or fails, see below) when absent.
``tiny_model_dir`` (session)
    The tiny random Llama, built once into ``<repo>/.cache/tiny-model`` and reused.
``vllm_server`` (session)
    One shared server, served model name ``tiny-llama`` (:data:`SESSION_MODEL`). Tests must not stop it;
    put a :class:`tests.servers.fault_proxy.FaultProxy` in front to inject faults.
``vllm_servers`` (session)
    A pool of extra long-lived servers keyed by served name, started in parallel:
    ``a, b = vllm_servers.get_many(["replica-a", "replica-b"])``; asking again for a name returns the same
    server. For suites that need several replicas at once (e.g. a gateway balancing two vLLM servers).
``vllm_server_factory`` (function)
    ``srv = vllm_server_factory("name", start=False)`` for tests that control a server's lifetime (start late,
    kill mid-check). Every server it made is stopped when the test ends.

Each server costs ~25-40 s to start and ~3 GB of RAM: share the session server, prefer the pool to the factory.

Skipping: when the vLLM venv is missing or a server cannot start, the test is skipped with the reason --
unless ``KAITO_AKS_REQUIRE_SERVERS=1`` (CI sets it), where that is a failure. Tests using these fixtures are
marked ``servers`` automatically.
"""
from __future__ import annotations

import pathlib
import threading
from collections.abc import Callable, Iterator

import pytest

from tests.servers.required import unavailable
from tests.servers.vllm import ServerUnavailableError, VllmRuntime, VllmServer

SESSION_MODEL = "tiny-llama"
SERVER_FIXTURES = {"vllm_runtime", "tiny_model_dir", "vllm_server", "vllm_servers", "vllm_server_factory"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.servers)


@pytest.fixture(scope="session")
def vllm_runtime() -> VllmRuntime:
    rt = VllmRuntime.discover()
    if rt is None:
        unavailable(f"vLLM is not installed at {VllmRuntime.venv_path()} (run tests/servers/install_vllm.sh)")
    return rt


@pytest.fixture(scope="session")
def tiny_model_dir(vllm_runtime: VllmRuntime) -> pathlib.Path:
    try:
        return vllm_runtime.ensure_tiny_model()
    except (ServerUnavailableError, OSError) as e:
        unavailable(f"cannot build the tiny model: {e}")
        raise  # unreachable: unavailable() raises


def _start(server: VllmServer) -> VllmServer:
    try:
        return server.start().wait_ready()
    except (ServerUnavailableError, OSError) as e:
        server.stop()
        unavailable(f"vLLM server {server.served_name!r} did not start: {e}")
        raise


@pytest.fixture(scope="session")
def vllm_logs(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return tmp_path_factory.mktemp("vllm-logs")


@pytest.fixture(scope="session")
def vllm_server(vllm_runtime: VllmRuntime, tiny_model_dir: pathlib.Path, vllm_logs: pathlib.Path) -> Iterator[VllmServer]:
    srv = VllmServer(vllm_runtime, tiny_model_dir, served_name=SESSION_MODEL,
                     log_path=vllm_logs / f"{SESSION_MODEL}.log")
    _start(srv)
    try:
        yield srv
    finally:
        srv.stop()


class VllmServerPool:
    """Long-lived extra servers keyed by served name (see the module docstring)."""

    def __init__(self, runtime: VllmRuntime, model_dir: pathlib.Path, logs: pathlib.Path) -> None:
        self._runtime, self._model_dir, self._logs = runtime, model_dir, logs
        self._servers: dict[str, VllmServer] = {}
        self._lock = threading.Lock()

    def get(self, served_name: str) -> VllmServer:
        return self.get_many([served_name])[0]

    def get_many(self, served_names: list[str]) -> list[VllmServer]:
        """Start the missing ones together (in parallel), wait for all, return them in order."""
        with self._lock:
            new = []
            for name in served_names:
                if name not in self._servers or not self._servers[name].running:
                    srv = VllmServer(self._runtime, self._model_dir, served_name=name,
                                     log_path=self._logs / f"pool-{name}.log")
                    self._servers[name] = srv.start()
                    new.append(srv)
            for srv in new:
                _start(srv)
            return [self._servers[n] for n in served_names]

    def stop_all(self) -> None:
        for srv in self._servers.values():
            srv.stop()


@pytest.fixture(scope="session")
def vllm_servers(vllm_runtime: VllmRuntime, tiny_model_dir: pathlib.Path,
                 vllm_logs: pathlib.Path) -> Iterator[VllmServerPool]:
    pool = VllmServerPool(vllm_runtime, tiny_model_dir, vllm_logs)
    try:
        yield pool
    finally:
        pool.stop_all()


@pytest.fixture
def vllm_server_factory(vllm_runtime: VllmRuntime, tiny_model_dir: pathlib.Path,
                        tmp_path: pathlib.Path) -> Iterator[Callable[..., VllmServer]]:
    made: list[VllmServer] = []

    def make(served_name: str = SESSION_MODEL, *, start: bool = True, port: int | None = None) -> VllmServer:
        srv = VllmServer(vllm_runtime, tiny_model_dir, served_name=served_name, port=port,
                         log_path=tmp_path / f"vllm-{served_name}-{len(made)}.log")
        made.append(srv)
        return _start(srv) if start else srv

    try:
        yield make
    finally:
        for srv in made:
            srv.stop()
