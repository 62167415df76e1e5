"""EndpointCheck: a ``pulumi.dynamic`` resource that checks one model replica's endpoint after deploy.

``pulumi up`` creates it once the replica's Service has an address; the provider runs
:func:`infra.endpoint.check_endpoint` (wait until ready, served model, chat/completions/stream, concurrency probe)
and fails the deployment with the check's one-line reason when the endpoint is not right.

Design notes (docs/pulumi.md#dynamic-providers):

- **Pickled by reference.** The provider class lives in this importable module, so ``__provider`` is a short
  by-reference pickle (``components.endpoint_check.EndpointCheckProvider``): editing this file does not change
  ``__provider``, and the provider process (run from the project directory) imports the current code. The module
  therefore creates no clients or resources at import time (sessions and port-forwards are made per check).
- **serialize_as_secret_always = False.** The provider captures nothing secret (the API key is a *property*,
  marked secret on its own), so the serialized provider need not be a secret; that keeps state readable and
  avoids the cost of always-secret providers. It still becomes secret if a secret Output were ever captured.
- **Diff.** Re-checks only when what is checked changes: ``base_url``, ``expected_model``, ``runtime``,
  ``kaito_version``, ``api_key`` (a new key is verified before it is relied on, and refresh keeps a working key),
  or ``trigger`` (e.g. preset|size|nodes, so a redeployed replica is re-checked). ``__provider``, ``timeout_s``,
  ``request_timeout_s`` and ``concurrency`` never cause a re-check.
- **update returns its outputs** (a bare UpdateResult would wipe them, pulumi/pulumi#7809).
- **read re-checks**: ``pulumi refresh`` runs the check again and records fresh numbers. If the endpoint fails,
  read raises with the check's one-line message, so the refresh fails loudly instead of recording a stale pass.
- **Own deadline.** The dynamic provider host ignores ``customTimeouts``; ``timeout_s`` (default 2400 s, sized for
  big models that take tens of minutes to download and load) bounds the whole check, including the wait.
- **Secrets.** ``api_key`` is wrapped in ``Output.secret`` and listed, with ``sample_text``, in
  ``additional_secret_outputs``: outputs of a dynamic provider are plaintext in state unless marked. The key is
  kept in the state (secret) because ``read`` (refresh) needs it; check messages never contain it.
"""
from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from typing import Any

import pulumi
from pulumi.dynamic import (
    CheckFailure,
    CheckResult,
    CreateResult,
    DiffResult,
    ReadResult,
    Resource,
    ResourceProvider,
    UpdateResult,
)

from infra.catalog import Runtime
from infra.endpoint import (
    DEFAULT_KAITO_VERSION,
    MAX_REQUEST_TIMEOUT_S,
    MAX_TIMEOUT_S,
    EndpointCheckError,
    api_key_problem,
    api_surface,
    check_endpoint,
    normalize_base_url,
)
from infra.errors import bounded_repr
from infra.pod_transport import PodTarget, forwarding_session, kubernetes_opener
from infra.settings import DEFAULT_CHECK_CONCURRENCY, MAX_CHECK_CONCURRENCY, MIN_CHECK_CONCURRENCY

# pulumi.runtime.rpc.UNKNOWN: what check/diff see for inputs not known during preview.
UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"

DEFAULT_TIMEOUT_S = 2400.0   # tens of minutes: big models download and load before /v1/models answers
DEFAULT_REQUEST_TIMEOUT_S = 30.0

INPUT_DEFAULTS: dict[str, Any] = {
    "runtime": "vllm",
    "kaito_version": DEFAULT_KAITO_VERSION,
    "expected_model": None,
    "api_key": None,
    "timeout_s": DEFAULT_TIMEOUT_S,
    "request_timeout_s": DEFAULT_REQUEST_TIMEOUT_S,
    "concurrency": DEFAULT_CHECK_CONCURRENCY,
    "trigger": None,
    "pod_target": None,   # infra.pod_transport.PodTarget as a dict: check one pod through a port-forward
    "kubeconfig": None,   # secret; with pod_target only
}
INPUT_KEYS = ("base_url", *INPUT_DEFAULTS)
# Inputs whose change means the endpoint must be checked again (not the kubeconfig: its token rotates).
WATCHED = ("base_url", "expected_model", "runtime", "kaito_version", "api_key", "trigger", "pod_target")
OUTPUT_KEYS = ("served_model", "models_served", "model_verified", "api", "checks", "latency_ms", "ttft_ms",
               "tokens_per_s", "p50_ms", "p95_ms", "ready_after_s", "sample_text", "checked_at", "notes")
SECRET_OUTPUTS = ["api_key", "sample_text", "kubeconfig"]


def _known(v: Any) -> bool:
    return v is not None and v != UNKNOWN


def _inputs(props: Mapping[str, Any]) -> dict[str, Any]:
    """The check's inputs from props or state, defaults filled in (old states may lack newer keys)."""
    return {k: props.get(k, INPUT_DEFAULTS.get(k)) for k in INPUT_KEYS}


class EndpointCheckProvider(ResourceProvider):
    """CRUD for EndpointCheck. Stateless: every method builds what it needs (pickled by reference)."""

    serialize_as_secret_always = False

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        """Validate inputs without any network; unknown (preview) values are let through."""

        inputs = {**news, **{k: news.get(k, v) for k, v in INPUT_DEFAULTS.items()}}
        failures: list[CheckFailure] = []
        url = inputs.get("base_url")
        if url is None:
            failures.append(CheckFailure("base_url", "no endpoint address: the Service has none yet, or the endpoint "
                                         "is internal; set kaito-aks:endpointCheck.url or endpointCheck.enabled: "
                                         "false"))
        elif url != UNKNOWN:
            try:
                normalize_base_url(url)
            except ValueError as e:
                failures.append(CheckFailure("base_url", str(e)))
        if _known(inputs["runtime"]) and _known(inputs["kaito_version"]):
            try:
                api_surface(str(inputs["runtime"]), str(inputs["kaito_version"]))
            except ValueError as e:
                failures.append(CheckFailure("runtime", str(e)))
        for key, most in (("timeout_s", MAX_TIMEOUT_S), ("request_timeout_s", MAX_REQUEST_TIMEOUT_S)):
            v = inputs[key]
            if _known(v) and not (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                                  and 0 < v <= most):
                failures.append(CheckFailure(key, f"{bounded_repr(v)} must be a number of seconds above 0 and at "
                                                  f"most {most:g}"))
        key_value = inputs.get("api_key")
        if _known(key_value) and key_value != "":
            problem = api_key_problem(key_value)
            if problem:  # never quotes the key
                failures.append(CheckFailure("api_key", f"the API key {problem}"))
        if inputs.get("pod_target") and inputs.get("kubeconfig") is None:
            failures.append(CheckFailure("kubeconfig", "a check through a port-forward needs the cluster's kubeconfig"))
        n = inputs["concurrency"]
        if _known(n) and not (isinstance(n, (int, float)) and not isinstance(n, bool) and float(n).is_integer()
                              and MIN_CHECK_CONCURRENCY <= n <= MAX_CHECK_CONCURRENCY):
            failures.append(CheckFailure("concurrency", f"{n!r} must be an integer from {MIN_CHECK_CONCURRENCY} to "
                                                        f"{MAX_CHECK_CONCURRENCY}"))
        return CheckResult(inputs, failures)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        """Re-check (update) only when what is checked changed; never because of ``__provider``."""
        changed = [k for k in WATCHED
                   if news.get(k, INPUT_DEFAULTS.get(k)) == UNKNOWN
                   or olds.get(k, INPUT_DEFAULTS.get(k)) != news.get(k, INPUT_DEFAULTS.get(k))]
        stables = [k for k in OUTPUT_KEYS] if not changed else []
        return DiffResult(changes=bool(changed), replaces=[], stables=stables, delete_before_replace=False)

    def create(self, props: dict[str, Any]) -> CreateResult:
        return CreateResult(f"endpointcheck-{uuid.uuid4().hex[:16]}", self._run(props))

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(self._run(news))  # must return the outputs, or they are wiped

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        """``pulumi refresh`` re-checks the endpoint; a failing endpoint fails the refresh with the reason."""
        if not props.get("base_url"):
            return ReadResult(id_, dict(props))  # nothing to check (e.g. an import without state)
        return ReadResult(id_, self._run(props))

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        return None  # a check leaves nothing behind

    def _run(self, props: Mapping[str, Any]) -> dict[str, Any]:

        inputs = _inputs(props)
        session = None
        if inputs["pod_target"]:

            target = PodTarget.from_dict(inputs["pod_target"])
            session = forwarding_session(kubernetes_opener(str(inputs["kubeconfig"]), target))
        try:
            result = check_endpoint(
                str(inputs["base_url"]),
                runtime=str(inputs["runtime"]),
                kaito_version=str(inputs["kaito_version"]),
                expected_model=inputs["expected_model"] or None,
                api_key=inputs["api_key"] or None,
                timeout_s=float(inputs["timeout_s"]),
                request_timeout_s=float(inputs["request_timeout_s"]),
                concurrency=int(inputs["concurrency"]),
                session=session,
            )
        except EndpointCheckError as e:
            # A plain Exception with the one-line message: the host reports str(exc); nothing else to leak.
            raise Exception(f"endpoint check failed: {e}") from None
        except ValueError as e:
            raise Exception(f"endpoint check inputs: {e}") from None
        finally:
            if session is not None:
                session.close()
        r = result.to_dict()
        return {
            **inputs,
            "served_model": r["model"],
            "models_served": r["models_served"],
            "model_verified": r["model_verified"],
            "api": r["api"],
            "checks": r["checks"],
            "latency_ms": r["latency_ms"],
            "ttft_ms": r["ttft_ms"],
            "tokens_per_s": r["tokens_per_s"],
            "p50_ms": r["p50_ms"],
            "p95_ms": r["p95_ms"],
            "ready_after_s": r["ready_after_s"],
            "sample_text": r["sample_text"],
            "checked_at": r["checked_at"],
            "notes": r["notes"],
        }


def resource_options(opts: pulumi.ResourceOptions | None) -> pulumi.ResourceOptions:
    """The caller's options plus the secret outputs this resource always needs."""
    return pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(additional_secret_outputs=list(SECRET_OUTPUTS)))


class EndpointCheck(Resource, module="kaito", name="EndpointCheck"):
    """Post-deploy check of one replica's endpoint (type ``pulumi-python:dynamic/kaito:EndpointCheck``).

    Outputs: ``served_model`` (what ``/v1/models`` lists; None on KAITO 0.6 transformers), ``latency_ms``,
    ``ttft_ms``, ``tokens_per_s``, ``p50_ms``, ``p95_ms``, ``checks``, ``checked_at`` (ISO 8601 UTC), ``notes``,
    ``sample_text`` (secret), ``api_key`` (secret, kept for refresh).
    """

    served_model: pulumi.Output[str | None]
    models_served: pulumi.Output[list[str]]
    model_verified: pulumi.Output[bool]
    api: pulumi.Output[str]
    checks: pulumi.Output[list[str]]
    latency_ms: pulumi.Output[float]
    ttft_ms: pulumi.Output[float | None]
    tokens_per_s: pulumi.Output[float | None]
    p50_ms: pulumi.Output[float]
    p95_ms: pulumi.Output[float]
    ready_after_s: pulumi.Output[float]
    sample_text: pulumi.Output[str]
    checked_at: pulumi.Output[str]
    notes: pulumi.Output[list[str]]

    def __init__(
        self,
        resource_name: str,
        *,
        base_url: pulumi.Input[str | None],
        runtime: pulumi.Input[Runtime] = "vllm",
        kaito_version: pulumi.Input[str] = DEFAULT_KAITO_VERSION,
        expected_model: pulumi.Input[str | None] = None,
        api_key: pulumi.Input[str | None] = None,
        timeout_s: pulumi.Input[float] = DEFAULT_TIMEOUT_S,
        request_timeout_s: pulumi.Input[float] = DEFAULT_REQUEST_TIMEOUT_S,
        concurrency: pulumi.Input[int] = DEFAULT_CHECK_CONCURRENCY,
        trigger: pulumi.Input[str | None] = None,
        pod_target: dict[str, Any] | None = None,
        kubeconfig: pulumi.Input[str] | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        props: dict[str, Any] = {
            "base_url": base_url,
            "runtime": runtime,
            "kaito_version": kaito_version,
            "expected_model": expected_model,
            "api_key": pulumi.Output.secret(api_key) if api_key is not None else None,
            "timeout_s": timeout_s,
            "request_timeout_s": request_timeout_s,
            "concurrency": concurrency,
            "trigger": trigger,
            "pod_target": pod_target,
            "kubeconfig": pulumi.Output.secret(kubeconfig) if kubeconfig is not None else None,
            **{k: None for k in OUTPUT_KEYS},  # output-only properties: declared so the attributes exist
        }
        super().__init__(EndpointCheckProvider(), resource_name, props, resource_options(opts))

    def exports(self) -> dict[str, pulumi.Output[Any]]:
        """What a stack exports per replica."""
        return {"served_model": self.served_model, "latency_ms": self.latency_ms, "ttft_ms": self.ttft_ms,
                "tokens_per_s": self.tokens_per_s, "checked_at": self.checked_at}
