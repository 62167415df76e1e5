"""The surge rollout's pre-switch check runs over a Kubernetes port-forward (infra.pod_transport): here the same
transport carries the full endpoint check to a real vLLM server.

No kube-apiserver can run here, so the port-forward itself is replaced at its one seam, the function that opens a
connection: once with a plain TCP socket to the server, once with the exact socket type the official Kubernetes
client hands out (``kubernetes.stream.ws_client.PortForward._Port``: one end of an AF_UNIX socketpair wrapped in its
``_Socket``), relayed to the server the way the client's proxy thread relays it to the websocket. Everything above
the seam -- HTTP keep-alive, chunked streams, concurrent connections, waiting for a pod -- is the real code.
"""
from __future__ import annotations

import contextlib
import socket
import threading

import pytest
from kubernetes.stream.ws_client import PortForward

from infra.endpoint import EndpointCheckError, check_endpoint
from infra.pod_transport import NoReadyPodError, PodTarget, forwarding_session

MODEL = "tiny-llama"
FULL_CHECKS = ("ready", "models", "chat", "completions", "stream", "concurrency")
TARGET = PodTarget("kaito-aks", {"kaito.sh/workspace": "tiny-abc123"}, label="tiny-abc123")


def tcp_opener(server):
    return lambda: socket.create_connection(("127.0.0.1", server.port), timeout=10)


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


def kubernetes_socket_opener(server):
    """Sockets of the Kubernetes client's port-forward type, relayed to the server."""
    opened: list[PortForward._Port] = []

    def open_socket():
        port = PortForward._Port(0, TARGET.port)
        upstream = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        for a, b in ((port.python, upstream), (upstream, port.python)):
            threading.Thread(target=_pump, args=(a, b), daemon=True).start()
        opened.append(port)
        return port.socket

    open_socket.opened = opened
    return open_socket


@pytest.mark.parametrize("make_opener", [tcp_opener, kubernetes_socket_opener], ids=["tcp", "kubernetes-socket"])
def test_the_full_check_runs_over_forwarded_connections(vllm_server, make_opener):
    opener = make_opener(vllm_server)
    with forwarding_session(opener) as session:
        result = check_endpoint(TARGET.base_url(), expected_model=MODEL, timeout_s=120, concurrency=4,
                                session=session)
    assert result.checks == FULL_CHECKS and result.model_verified and result.ttft_ms is not None
    assert result.url == "http://tiny-abc123.kaito-aks.port-forward:5000"
    if hasattr(opener, "opened"):   # the concurrency probe opened several forwarded connections at once
        assert len(opener.opened) >= 2


def test_the_check_waits_for_a_ready_pod(vllm_server):
    calls = {"n": 0}
    connect = tcp_opener(vllm_server)

    def open_socket():
        calls["n"] += 1
        if calls["n"] <= 3:
            raise NoReadyPodError("tiny-abc123 has 1 pod(s), none Ready yet")
        return connect()

    with forwarding_session(open_socket) as session:
        result = check_endpoint(TARGET.base_url(), expected_model=MODEL, timeout_s=120, session=session)
    assert result.checks == FULL_CHECKS and calls["n"] >= 4 and result.ready_after_s > 0.1


def test_a_pod_that_never_gets_ready_fails_at_the_deadline_with_the_reason():
    def open_socket():
        raise NoReadyPodError("pod tiny-abc123-0 of tiny-abc123 is not Ready yet")

    with forwarding_session(open_socket) as session, pytest.raises(EndpointCheckError) as err:
        check_endpoint(TARGET.base_url(), timeout_s=3, session=session)
    message = str(err.value)
    assert "\n" not in message and "tiny-abc123.kaito-aks.port-forward" in message
    assert "is not Ready yet" in message and err.value.elapsed_s >= 2.5
