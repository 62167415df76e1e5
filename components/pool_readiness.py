"""PoolReadiness: a ``pulumi.dynamic`` gate between one GPU pool and its Workspace.

It completes when the pool's nodes are Ready with the pool's labels (and, where KAITO sizes from GPU Feature
Discovery labels, when those are present and uniform): :func:`infra.node_readiness.wait_until_ready` decides, over
the Node objects read with the official Kubernetes client (``kubernetes`` on PyPI) from the stack's kubeconfig.
A pool that doesn't get there fails ``pulumi up`` with one line naming the pool and what was missing, before the
Workspace exists (so KAITO never sees a half-ready pool and never provisions a second one).

Like ``components.endpoint_check``: the provider lives in this importable module (pickled by reference), imports
its clients inside the methods, keeps its own deadline (dynamic providers ignore customTimeouts) and marks the
kubeconfig secret.
"""
from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, Resource, ResourceProvider, UpdateResult

from infra.node_readiness import PoolExpectation, PoolNotReadyError, wait_until_ready

DEFAULT_TIMEOUT_S = 1800.0
WATCHED = ("expectation",)             # a new size, count or selector is a new pool: wait again
OUTPUT_KEYS = ("nodes", "summary")


def _list_nodes_with(kubeconfig: str, label_selector: str):
    """A function listing the selected Node objects as API JSON (what `kubectl get nodes -o json` shows)."""
    import yaml
    from kubernetes import client, config

    api_client = config.new_client_from_config_dict(yaml.safe_load(kubeconfig))
    core = client.CoreV1Api(api_client)

    def list_nodes() -> list[dict[str, Any]]:
        response = core.list_node(label_selector=label_selector, _request_timeout=30)
        return api_client.sanitize_for_serialization(response).get("items", [])

    return list_nodes


class PoolReadinessProvider(ResourceProvider):
    """Waits on create and when the expectation changes; read (refresh) reports without waiting."""

    serialize_as_secret_always = False

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed = [k for k in WATCHED if olds.get(k) != news.get(k)]
        return DiffResult(changes=bool(changed), replaces=[], stables=[] if changed else list(OUTPUT_KEYS),
                          delete_before_replace=False)

    def create(self, props: dict[str, Any]) -> CreateResult:
        return CreateResult(f"poolready-{uuid.uuid4().hex[:12]}", self._wait(props))

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(self._wait(news))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        return ReadResult(id_, dict(props))

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        return None

    def _wait(self, props: Mapping[str, Any]) -> dict[str, Any]:

        exp = PoolExpectation.from_dict(props["expectation"])
        list_nodes = _list_nodes_with(str(props["kubeconfig"]), exp.label_selector)
        try:
            verdict = wait_until_ready(list_nodes, exp, timeout_s=float(props.get("timeout_s") or DEFAULT_TIMEOUT_S))
        except PoolNotReadyError as err:
            raise Exception(f"GPU pool not ready: {err}") from None
        return {**props, "nodes": list(verdict.nodes), "summary": verdict.summary}


class PoolReadiness(Resource):
    """Outputs: ``nodes`` (the Ready nodes found), ``summary`` (one line)."""

    nodes: pulumi.Output[list[str]]
    summary: pulumi.Output[str]

    def __init__(self, resource_name: str, *, kubeconfig: pulumi.Input[str], expectation: dict[str, Any],
                 timeout_s: float = DEFAULT_TIMEOUT_S, opts: pulumi.ResourceOptions | None = None) -> None:
        props = {
            "kubeconfig": pulumi.Output.secret(kubeconfig),
            "expectation": expectation,
            "timeout_s": timeout_s,
            **{k: None for k in OUTPUT_KEYS},
        }
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(additional_secret_outputs=["kubeconfig"]))
        super().__init__(PoolReadinessProvider(), resource_name, props, opts)
