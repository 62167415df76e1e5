"""KaitoVersionGate: a ``pulumi.dynamic`` resource that stops `pulumi up` when the cluster runs another KAITO release
than the one the plan was sized for, before any GPU pool or Workspace is created.

It reads the ``kaito-workspace`` Deployment (and, if its image names no version, the KAITO CRDs) with the official
Kubernetes client from the stack's kubeconfig (:func:`infra.version_gate.read_running`);
:func:`infra.version_gate.gate_problem` decides. Every GPU pool and
Workspace depends on it. Its diff always reports a change, so each `pulumi up` reads the version again: AKS may move
the add-on to a new KAITO release between two deployments.

Like the other dynamic resources here: the provider lives in this importable module (pickled by reference), imports
its clients inside the methods, keeps its own deadline, and the kubeconfig is a secret.
"""
from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, Resource, ResourceProvider, UpdateResult

from infra.catalog import KaitoMode
from infra.version_gate import VersionGateError, read_running, wait_for_version

DEFAULT_TIMEOUT_S = 1200.0      # the add-on's controller appears a few minutes after the cluster
POLL_S = 10.0


def _kaito_mode(value: Any) -> KaitoMode:
    """The resource's ``mode`` input (a plain string in the provider's props), as the mode it names."""
    if value == "addon":
        return "addon"
    if value == "helm":
        return "helm"
    raise ValueError(f"mode {value!r} is neither addon nor helm")


class KaitoVersionGateProvider(ResourceProvider):
    serialize_as_secret_always = False

    def diff(self, _id: str, _olds: dict[str, Any], _news: dict[str, Any]) -> DiffResult:
        return DiffResult(changes=True, replaces=[], stables=[], delete_before_replace=False)

    def create(self, props: dict[str, Any]) -> CreateResult:
        return CreateResult(f"kaitoversion-{uuid.uuid4().hex[:12]}", self._check(props))

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(self._check(news))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        return ReadResult(id_, dict(props))

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        return None

    def _check(self, props: Mapping[str, Any]) -> dict[str, Any]:

        mode, planned = _kaito_mode(props["mode"]), str(props["planned_version"])
        try:
            running = wait_for_version(lambda: read_running(str(props["kubeconfig"]), mode), planned, mode,
                                       timeout_s=float(props.get("timeout_s") or DEFAULT_TIMEOUT_S), poll_s=POLL_S)
        except VersionGateError as err:
            raise Exception(f"KAITO version gate: {err}") from None
        return {**props, "running_version": running.shown, "evidence": running.evidence}


class KaitoVersionGate(Resource):
    """Outputs: ``running_version`` (what the cluster runs), ``evidence`` (how it was read)."""

    running_version: pulumi.Output[str]
    evidence: pulumi.Output[str]

    def __init__(self, resource_name: str, *, kubeconfig: pulumi.Input[str], mode: KaitoMode, planned_version: str,
                 timeout_s: float = DEFAULT_TIMEOUT_S, opts: pulumi.ResourceOptions | None = None) -> None:
        props = {"kubeconfig": pulumi.Output.secret(kubeconfig), "mode": mode, "planned_version": planned_version,
                 "timeout_s": timeout_s, "running_version": None, "evidence": None}
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(additional_secret_outputs=["kubeconfig"]))
        super().__init__(KaitoVersionGateProvider(), resource_name, props, opts)
