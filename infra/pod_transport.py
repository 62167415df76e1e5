"""Reach one inference pod from the machine running ``pulumi up``: HTTP over a Kubernetes port-forward.

A surge rollout checks a new replica *before* any traffic moves to it, so the check can't use the replica's public
address (the endpoint Service still selects the old Workspace) and the gateway doesn't route to it yet. The check
goes where ``kubectl port-forward`` goes: through the API server and the kubelet into the pod's own network
namespace (``POST /api/v1/namespaces/<ns>/pods/<pod>/portforward``). That path needs only what ``pulumi up``
already has (the stack's kubeconfig, which deploys the Workspaces), works for private clusters whose API server the
deployer reaches, and is not subject to the inference pods' NetworkPolicy (which admits only the gateway or the
client ranges): the connection is opened inside the pod's network namespace, not through its interface.

Three parts, so that each is tested on its own:

- :func:`ready_pod` (pure): which pod of the Workspace to talk to -- the leader ``<workspace>-0`` of a multi-node
  group, otherwise the first Ready pod -- or why there is none yet (retried by the check until its deadline).
- :class:`ForwardingAdapter`: a ``requests`` transport whose every new connection is a socket handed out by a
  function; the endpoint check runs over it unchanged (retries, streams, the concurrency probe).
- :func:`kubernetes_opener`: that function for a real cluster, from the official Kubernetes client
  (``kubernetes.stream.portforward``, which gives one socket per forwarded connection).
"""
from __future__ import annotations

import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import requests
import urllib3
from urllib3.exceptions import NewConnectionError

from infra.endpoint import FORWARD_FAILURE

INFERENCE_PORT = 5000      # KAITO's inference containers listen here (the Service maps 80 -> 5000)


class NoReadyPodError(OSError):
    """The Workspace has no pod to talk to yet (an OSError: the check retries it like a refused connection)."""


@dataclass(frozen=True)
class PodTarget:
    """Which pod to forward to: the Workspace's pods by label, one named pod when it must be the leader."""

    namespace: str
    selector: dict[str, str]
    pod: str | None = None          # the multi-node leader (<workspace>-0); None: any Ready pod of the selector
    port: int = INFERENCE_PORT
    label: str = field(default="", compare=False)   # how messages name it, e.g. the Workspace

    @property
    def label_selector(self) -> str:
        return ",".join(f"{k}={v}" for k, v in sorted(self.selector.items()))

    def to_dict(self) -> dict[str, Any]:
        return {"namespace": self.namespace, "selector": dict(self.selector), "pod": self.pod, "port": self.port,
                "label": self.label}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> PodTarget:
        return cls(namespace=str(raw["namespace"]), selector={str(k): str(v) for k, v in raw["selector"].items()},
                   pod=str(raw["pod"]) if raw.get("pod") else None, port=int(raw.get("port") or INFERENCE_PORT),
                   label=str(raw.get("label") or ""))

    def base_url(self) -> str:
        """The URL the check reports (requests go through the port-forward, whatever its host says)."""
        who = self.pod or self.label or "pod"
        return f"http://{who}.{self.namespace}.port-forward:{self.port}"


def _is_ready(pod: Mapping[str, Any]) -> bool:
    status = pod.get("status") or {}
    if (pod.get("metadata") or {}).get("deletionTimestamp") or status.get("phase") != "Running":
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or ())


def ready_pod(pods: list[Mapping[str, Any]], target: PodTarget) -> str:
    """The name of the pod to forward to, from the pods ``kubectl get pods -l <selector> -o json`` lists; raises
    :class:`NoReadyPodError` with what is missing."""
    what = target.label or target.label_selector
    if target.pod:
        pod = next((p for p in pods if (p.get("metadata") or {}).get("name") == target.pod), None)
        if pod is None:
            raise NoReadyPodError(f"pod {target.pod} of {what} does not exist yet")
        if not _is_ready(pod):
            raise NoReadyPodError(f"pod {target.pod} of {what} is not Ready yet")
        return target.pod
    ready = sorted(p["metadata"]["name"] for p in pods if _is_ready(p))
    if not ready:
        raise NoReadyPodError(f"{what} has {len(pods)} pod(s), none Ready yet" if pods else f"{what} has no pod yet")
    return ready[0]


SocketOpener = Callable[[], Any]   # returns a connected socket (or a socket-like object with sendall/makefile/...)


class _ForwardedConnection(urllib3.connection.HTTPConnection):
    open_socket: SocketOpener

    def _new_conn(self) -> socket.socket:
        try:
            sock = type(self).open_socket()
        except OSError as err:
            # what requests reports as a ConnectionError: the check waits and retries, as for a refused connection
            raise NewConnectionError(self, f"{FORWARD_FAILURE}{err}") from None
        if isinstance(self.timeout, (int, float)):
            sock.settimeout(self.timeout)
        return sock


class ForwardingAdapter(requests.adapters.HTTPAdapter):
    """Every connection this adapter opens is ``open_socket()``; HTTP (keep-alive, chunked streams) runs on it."""

    def __init__(self, open_socket: SocketOpener, **kwargs: Any) -> None:
        connection = type("ForwardedConnection", (_ForwardedConnection,), {"open_socket": staticmethod(open_socket)})
        self._pool_class = type("ForwardedPool", (urllib3.HTTPConnectionPool,), {"ConnectionCls": connection})
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": self._pool_class}


def forwarding_session(open_socket: SocketOpener) -> requests.Session:
    """A session for ``infra.endpoint.check_endpoint(target.base_url(), session=...)``."""
    session = requests.Session()
    session.mount("http://", ForwardingAdapter(open_socket, pool_connections=1, pool_maxsize=64, max_retries=0))
    return session


def kubernetes_opener(kubeconfig: str | Mapping[str, Any], target: PodTarget) -> SocketOpener:
    """Open a port-forward to the target's pod for every new connection (what ``kubectl port-forward`` does)."""
    # imported here, not at the top: only a deploy needs the Kubernetes client (the plan and the CLI never do)
    import yaml
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException
    from kubernetes.stream import portforward

    loaded = yaml.safe_load(kubeconfig) if isinstance(kubeconfig, str) else dict(kubeconfig)
    api_client = config.new_client_from_config_dict(loaded)
    core = client.CoreV1Api(api_client)

    def open_socket() -> Any:
        try:
            listed = core.list_namespaced_pod(target.namespace, label_selector=target.label_selector,
                                              _request_timeout=30)
            pods = api_client.sanitize_for_serialization(listed).get("items", [])
            name = ready_pod(pods, target)
            forward = portforward(core.connect_get_namespaced_pod_portforward, name, target.namespace,
                                  ports=str(target.port))
        except ApiException as err:  # e.g. 403: the kubeconfig's identity may not create pods/portforward
            raise OSError(f"the Kubernetes API answered {err.status} {err.reason}") from None
        except OSError:
            raise
        except Exception as err:  # the websocket upgrade failed (websocket-client's own exceptions): retried
            raise OSError(f"{type(err).__name__}: {err}") from None
        return forward.socket(target.port)

    return open_socket
